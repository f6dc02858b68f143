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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from imagewright.package.deflate import DEFAULT_LEVEL, GRAIN, DeflateBlock, ParallelDeflater, zero_block

#: The most zero grains one ``Grain`` stands for (16 MiB).
MAX_ZERO_RUN = 256
#: Zeros to hash a run from (calloc'd: its pages are the kernel's shared zero page until written).
_ZEROS = bytes(MAX_ZERO_RUN * GRAIN)
_ZERO_GRAIN = bytes(GRAIN)


@dataclass(slots=True)
class Grain:
    """``length`` guest bytes at ``offset``; ``data`` is None when they are all zero.

    A zero grain may stand for ``count`` whole grains in a row (``length`` = count x GRAIN);
    its ``block`` is then the deflate block of one of them.
    """

    offset: int
    length: int
    data: bytes | None
    block: DeflateBlock | None = field(default=None, repr=False)
    count: int = 1

    @property
    def index(self) -> int:
        return self.offset // GRAIN

    def bytes(self) -> bytes | memoryview:
        """The grain's bytes (a view of shared zeros for a zero grain or run)."""
        return self.data if self.data is not None else memoryview(_ZEROS)[: self.length]


class GrainTarget(Protocol):
    """Receives every grain of the guest in order, then ``finish()``."""

    def grain(self, grain: Grain) -> None: ...

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
        self._deflater = ParallelDeflater(self._deliver, level=level, workers=workers)
        self._buffer = bytearray()
        self._buffer_offset = 0  # guest offset of the grain being filled
        self.delivered = 0
        self.data_grains = 0
        self._finished = False

    # --- StreamConsumer ------------------------------------------------------------------

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._gap(offset)
        view = memoryview(data)
        while view:
            if not self._buffer and len(view) >= GRAIN and self._remaining() >= GRAIN:
                # Whole grains straight from the caller's buffer (copied: it is reused).
                self._grain(bytes(view[:GRAIN]))
                view = view[GRAIN:]
                continue
            take = min(len(view), self._remaining() - len(self._buffer))
            self._buffer += view[:take]
            view = view[take:]
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

    def _grain(self, data: bytes) -> None:
        offset = self._buffer_offset
        self._buffer_offset += len(data)
        if data == _ZERO_GRAIN[: len(data)]:
            self._deflater.submit(Grain(offset, len(data), None), None, zero_block(len(data), self.level))
        else:
            self.data_grains += 1
            self._deflater.submit(Grain(offset, len(data), data), data)

    def _zero_grain(self, length: int, count: int = 1) -> None:
        offset = self._buffer_offset
        self._buffer_offset += length * count
        self._deflater.submit(
            Grain(offset, length * count, None, count=count), None, zero_block(length, self.level)
        )

    def _deliver(self, tag: object, block: DeflateBlock) -> None:
        assert isinstance(tag, Grain)
        tag.block = block
        for target in self.targets:
            target.grain(tag)
        self.delivered = tag.offset + tag.length
        if self._progress is not None:
            self._progress(self.delivered)


class DigestTarget:
    """Digests of the guest's bytes (``sha256`` and friends) as the grains pass."""

    def __init__(self, algorithms: Sequence[str]) -> None:
        self._hashers = {name: hashlib.new(name) for name in algorithms}

    def grain(self, grain: Grain) -> None:
        data = grain.bytes()
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
    other in the thread that receives qemu-img's stream. Grains travel in batches of
    ``BATCH`` (one queue hand-over per batch, not per grain: with four targets the hand-overs
    of a mostly empty disk's 64 KiB grains otherwise cost more than the grains' work); at most
    ``depth`` batches wait.
    """

    _DONE = object()
    BATCH = 16

    def __init__(self, inner: GrainTarget, depth: int = 4) -> None:
        import queue
        import threading

        self.inner = inner
        self._queue: queue.Queue[object] = queue.Queue(depth)
        self._batch: list[Grain] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="grain-target", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if self._error is not None:
                continue  # drain: the error is raised in the feeding thread
            try:
                assert isinstance(item, list)
                for grain in item:
                    self.inner.grain(grain)
            except BaseException as err:  # noqa: BLE001 - handed to the feeding thread
                self._error = err

    def grain(self, grain: Grain) -> None:
        if self._error is not None:
            self.close()
            raise self._error
        self._batch.append(grain)
        if len(self._batch) >= self.BATCH:
            self._queue.put(self._batch)
            self._batch = []

    def finish(self) -> None:
        if self._batch and self._error is None:
            self._queue.put(self._batch)
            self._batch = []
        self.close()
        if self._error is not None:
            raise self._error
        self.inner.finish()

    def close(self) -> None:
        """Stop the thread (idempotent); whatever was queued has been handled or dropped."""
        if self._thread.is_alive():
            self._queue.put(self._DONE)
            self._thread.join()
