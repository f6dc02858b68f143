"""A guest's bytes as an ordered stream of grains, each deflated once, fed to every target.

``GrainStream`` is what qemu-img's raw output is streamed into (it is a
``StreamConsumer`` of convert's NBD sink: ``write(offset, data)`` and ``zeros(offset,
length)`` in ascending order). It cuts the bytes into 64 KiB grains, tells zero grains
apart (never compressed: their block is a constant), deflates the others in parallel
(``deflate.ParallelDeflater``) and hands every grain, in order, to each ``GrainTarget``: the
streamOptimized VMDK inside an OVA, a raw.gz, an EC2 bundle, a sparse raw file, a digest.
One read of the source, one compression, as many outputs as asked for.

A run of zero grains travels as one ``Grain`` (``count`` grains, ``length`` their bytes, up to
``MAX_ZERO_RUN`` grains): most of a disk is often zeros, and every target would otherwise
spend its per-grain cost on each of them (a 4 GiB disk with 1 GiB data is 49152 zero grains
for each target). Every target handles a run as ``count`` zero grains in a row.

Targets receive grains in batches (``GrainBatch``: the grains of one deflate task, up to 16
data grains and the zero runs between them), not one by one: with four targets on threads of
their own, per-grain Python (a few calls per grain per target) and the GIL hand-overs of
many small C calls were most of a publish's overhead. What every target of a batch would
otherwise each compute again is computed once, by the deflate worker, beside the
compression: the batch's deflate blocks joined (a gzip member's bytes), its CRC-32, and its
guest bytes as runs (consecutive data grains joined into one buffer, zeros as a length), so
a target hashes, writes or encrypts each batch in a few large calls that release the GIL.

The guest's bytes are not copied on their way: a source handed over as ``bytes`` (a raw
file's reads, a decompressed stream's pieces) is immutable, so its grains are views of it and
a run of side-by-side grains one view again (copying each grain and then joining the copies
was two copies of every data byte: about 4% of a publish's CPU).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from imagewright.package.deflate import (
    DEFAULT_LEVEL,
    GRAIN,
    DeflateBlock,
    ParallelDeflater,
    crc32_combine,
    zero_block,
    zero_crc32,
)

#: The most zero grains one ``Grain`` stands for (16 MiB).
MAX_ZERO_RUN = 256
#: Zeros to hash a run from (calloc'd: its pages are the kernel's shared zero page until written).
_ZEROS = bytes(MAX_ZERO_RUN * GRAIN)
_ZERO_GRAIN = bytes(GRAIN)


@dataclass(slots=True)
class Grain:
    """``length`` guest bytes at ``offset``; ``data`` is None when they are all zero.

    A zero grain may stand for ``count`` whole grains in a row (``length`` = count x GRAIN);
    its ``block`` is then the deflate block of one of them. A grain cut from a ``bytes`` the
    stream was handed (immutable: nobody writes it again) is a view of it, not a copy:
    ``source`` is that object and ``start`` where the grain begins in it, so consecutive
    grains of one source are joined into a run as one view again (``prepare_batch``).
    """

    offset: int
    length: int
    data: bytes | memoryview | None
    block: DeflateBlock | None = field(default=None, repr=False)
    count: int = 1
    source: bytes | None = field(default=None, repr=False)
    start: int = 0

    @property
    def index(self) -> int:
        return self.offset // GRAIN

    def bytes(self) -> bytes | memoryview:
        """The grain's bytes (a view of shared zeros for a zero grain or run)."""
        return self.data if self.data is not None else memoryview(_ZEROS)[: self.length]


@dataclass(slots=True)
class GuestRun:
    """``length`` guest bytes at ``offset``: ``data`` (consecutive data grains joined; a
    read-only view of an immutable ``bytes`` when they were cut from one), or zeros when
    ``data`` is None."""

    offset: int
    length: int
    data: bytes | memoryview | None


@dataclass(slots=True)
class GrainBatch:
    """Consecutive grains (``length`` guest bytes at ``offset``), with what targets share.

    ``deflated``: every grain's deflate block in order (a zero run's block ``count`` times),
    the bytes a gzip member of these guest bytes holds; ``crc32``: the CRC-32 of the guest
    bytes; ``runs``: the guest bytes as alternating data and zero runs.
    """

    grains: list[Grain]
    offset: int
    length: int
    crc32: int
    deflated: bytes
    runs: list[GuestRun]

    def pieces(self) -> Iterator[bytes | memoryview]:
        """The guest bytes in order, in pieces (zeros as views of one shared zero buffer)."""
        for run in self.runs:
            if run.data is not None:
                yield run.data
                continue
            for start in range(0, run.length, len(_ZEROS)):
                yield memoryview(_ZEROS)[: min(len(_ZEROS), run.length - start)]


def _close_run(runs: list[GuestRun], joining: list[Grain]) -> None:
    """The data grains of the last run, joined into its ``data``: one view of their source
    when they lie side by side in it (no copy), else their bytes joined."""
    if not joining:
        return
    first, last = joining[0], joining[-1]
    if len(joining) == 1:
        runs[-1].data = first.data
    elif first.source is not None and _contiguous(joining):
        runs[-1].data = memoryview(first.source)[first.start : last.start + last.length]
    else:
        runs[-1].data = b"".join(grain.data for grain in joining if grain.data is not None)


def _contiguous(grains: list[Grain]) -> bool:
    """The grains are consecutive pieces of one source object."""
    source, end = grains[0].source, grains[0].start
    for grain in grains:
        if grain.source is not source or grain.start != end:
            return False
        end += grain.length
    return True


def prepare_batch(tags: list[object], blocks: list[DeflateBlock]) -> GrainBatch:
    """The ``GrainBatch`` of grains just deflated (run by the deflate worker)."""
    grains: list[Grain] = []
    deflated: list[bytes] = []
    runs: list[GuestRun] = []
    joining: list[Grain] = []  # the data grains of the last run, while it grows
    crc = 0
    for tag, block in zip(tags, blocks, strict=True):
        assert isinstance(tag, Grain)
        grain = tag
        grain.block = block
        grains.append(grain)
        if grain.data is None:
            deflated.append(block.data * grain.count if grain.count > 1 else block.data)
            crc = crc32_combine(crc, zero_crc32(grain.length), grain.length)
            if runs and not joining:
                runs[-1].length += grain.length
            else:
                _close_run(runs, joining)
                joining = []
                runs.append(GuestRun(grain.offset, grain.length, None))
        else:
            deflated.append(block.data)
            crc = crc32_combine(crc, block.crc32, block.length)
            if joining:
                runs[-1].length += grain.length
            else:
                runs.append(GuestRun(grain.offset, grain.length, None))
            joining.append(grain)
    _close_run(runs, joining)
    first, end = grains[0], grains[-1]
    return GrainBatch(
        grains=grains,
        offset=first.offset,
        length=end.offset + end.length - first.offset,
        crc32=crc,
        deflated=b"".join(deflated),
        runs=runs,
    )


class GrainTarget(Protocol):
    """Receives every grain of the guest in order, batch by batch, then ``finish()``."""

    def batch(self, batch: GrainBatch) -> None: ...

    def finish(self) -> None: ...


class GrainStream:
    """Cuts an in-order byte stream of ``size`` bytes into grains for ``targets``.

    ``progress(done)`` is told how many guest bytes have been delivered to the targets.
    """

    def __init__(
        self,
        size: int,
        targets: Sequence[GrainTarget],
        *,
        level: int = DEFAULT_LEVEL,
        workers: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.size = size
        self.targets = list(targets)
        self.level = level
        self._progress = progress
        self._deflater: ParallelDeflater[GrainBatch] = ParallelDeflater(
            prepare_batch, self._deliver, level=level, workers=workers
        )
        self._buffer = bytearray()
        self._buffer_offset = 0  # guest offset of the grain being filled
        self.delivered = 0
        self.data_grains = 0
        self._finished = False

    # --- StreamConsumer ------------------------------------------------------------------

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._gap(offset)
        # A bytes object is immutable (convert's streams hand over fresh ones): whole grains
        # are views of it, not copies. Any other buffer may be reused once this returns.
        source = data if isinstance(data, bytes) else None
        view = memoryview(data)
        position, end = 0, len(view)
        while position < end:
            if not self._buffer and end - position >= GRAIN and self._remaining() >= GRAIN:
                # Whole grains straight from the caller's buffer.
                if source is not None:
                    self._grain(view[position : position + GRAIN], source, position)
                else:
                    self._grain(bytes(view[position : position + GRAIN]))
                position += GRAIN
                continue
            take = min(end - position, self._remaining() - len(self._buffer))
            self._buffer += view[position : position + take]
            position += take
            if len(self._buffer) == self._remaining():
                self._grain(bytes(self._buffer))
                self._buffer.clear()

    def zeros(self, offset: int, length: int) -> None:
        self._gap(offset)
        end = offset + length
        position = offset
        while position < end:
            if self._buffer or end - position < self._remaining():
                take = min(end - position, self._remaining() - len(self._buffer))
                self._buffer += bytes(take)
                position += take
                if len(self._buffer) == self._remaining():
                    self._grain(bytes(self._buffer))
                    self._buffer.clear()
                continue
            grain_length = self._remaining()
            if grain_length < GRAIN:
                self._zero_grain(grain_length)
                position += grain_length
                continue
            count = min((end - position) // GRAIN, (self.size - position) // GRAIN, MAX_ZERO_RUN)
            self._zero_grain(GRAIN, count)
            position += count * GRAIN

    def finish(self) -> None:
        """Deliver the trailing zeros and the last grains; then each target's ``finish``."""
        if self._finished:
            return
        self._gap(self.size)
        self._deflater.flush()
        self._finished = True
        self._deflater.close()
        # Targets on threads of their own finish side by side (flushes, fsyncs, read-backs).
        for target in self.targets:
            if isinstance(target, BackgroundTarget):
                target.start_finish()
        for target in self.targets:
            target.finish()

    def close(self) -> None:
        """Stop the workers (after an error; ``finish`` closes them itself)."""
        self._deflater.close()

    # --- internals -----------------------------------------------------------------------

    def _position(self) -> int:
        return self._buffer_offset + len(self._buffer)

    def _remaining(self) -> int:
        """Length of the grain being filled (the last one may be short)."""
        return min(GRAIN, self.size - self._buffer_offset)

    def _gap(self, offset: int) -> None:
        position = self._position()
        if offset < position:
            raise ValueError(f"grain stream: offset {offset} after {position}")
        if offset > self.size:
            raise ValueError(f"grain stream: offset {offset} beyond the size {self.size}")
        if offset > position:
            self.zeros(position, offset - position)

    def _grain(self, data: bytes | memoryview, source: bytes | None = None, start: int = 0) -> None:
        """One grain: ``data`` (a view of ``source`` at ``start``, when given)."""
        offset = self._buffer_offset
        length = len(data)
        self._buffer_offset += length
        zeros = _ZERO_GRAIN if length == GRAIN else _ZERO_GRAIN[:length]
        # bytes.startswith compares with memcmp; comparing a memoryview goes byte by byte.
        if source.startswith(zeros, start, start + length) if source is not None else data == zeros:
            self._deflater.submit(Grain(offset, length, None), None, zero_block(length, self.level))
        else:
            self.data_grains += 1
            self._deflater.submit(Grain(offset, length, data, source=source, start=start), data)

    def _zero_grain(self, length: int, count: int = 1) -> None:
        offset = self._buffer_offset
        self._buffer_offset += length * count
        self._deflater.submit(
            Grain(offset, length * count, None, count=count), None, zero_block(length, self.level)
        )

    def _deliver(self, batch: GrainBatch) -> None:
        for target in self.targets:
            target.batch(batch)
        self.delivered = batch.offset + batch.length
        if self._progress is not None:
            self._progress(self.delivered)


class DigestTarget:
    """Digests of the guest's bytes (``sha256`` and friends) as the grains pass."""

    def __init__(self, algorithms: Sequence[str]) -> None:
        self._hashers = {name: hashlib.new(name) for name in algorithms}

    def batch(self, batch: GrainBatch) -> None:
        for data in batch.pieces():
            for hasher in self._hashers.values():
                hasher.update(data)

    def finish(self) -> None:
        pass

    def hexdigests(self) -> dict[str, str]:
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}


class BackgroundTarget:
    """Runs another target's work on a thread of its own, fed in order through a bounded queue.

    When one pass feeds several targets (``publish``), each one's hashing, encryption and
    writing (all of which release the GIL) then run side by side instead of one after the
    other in the thread that receives qemu-img's stream; one queue hand-over per batch. The
    target's ``finish`` runs on that thread too: ``start_finish`` asks for it and returns, so
    several targets finish side by side; ``finish`` waits for it (and raises what failed).
    At most ``depth`` batches wait.
    """

    _FINISH = object()
    _DONE = object()

    def __init__(self, inner: GrainTarget, depth: int = 4) -> None:
        import queue
        import threading

        self.inner = inner
        self._queue: queue.Queue[object] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._finishing = False
        self._thread = threading.Thread(target=self._run, name="grain-target", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._DONE or (item is self._FINISH and self._error is not None):
                return
            if self._error is not None:
                continue  # drain: the error is raised in the feeding thread
            try:
                if item is self._FINISH:
                    self.inner.finish()
                else:
                    assert isinstance(item, GrainBatch)
                    self.inner.batch(item)
            except BaseException as err:  # noqa: BLE001 - handed to the feeding thread
                self._error = err
            if item is self._FINISH:
                return

    def batch(self, batch: GrainBatch) -> None:
        if self._error is not None:
            self.close()
            raise self._error
        self._queue.put(batch)

    def start_finish(self) -> None:
        """Ask for the inner target's ``finish`` (on its thread) once every batch is worked."""
        if not self._finishing and self._thread.is_alive():
            self._finishing = True
            self._queue.put(self._FINISH)

    def finish(self) -> None:
        self.start_finish()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread (idempotent); whatever was queued has been handled or dropped."""
        if self._thread.is_alive():
            self._queue.put(self._DONE)
            self._thread.join()
