"""One pass over a source: its guest bytes streamed once through every grain target.

``read_source`` admits the source (the safety gate, through convert's ``prepare_source``:
any format imagewright reads, compressed sources decompressed to a sparse scratch file
first); ``publish`` opens it as convert does instead (``ops.convert.open_source``: a
compressed raw disk streamed as it decompresses, no scratch copy). ``run_pass`` streams
either: qemu-img → convert's NBD sink (or the decompressing window) → ``GrainStream`` →
targets. ``SequentialFile`` is the sink targets write their files through (front to back,
hashed as written, errors as one sentence).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from imagewright.direct_io import DirectAppender, open_direct
from imagewright.formats.base import Limits
from imagewright.ops.convert import ImageSource, stream_raw
from imagewright.ops.convert.output import OutputFile
from imagewright.ops.convert.source import PreparedSource, prepare_source
from imagewright.package.deflate import DEFAULT_LEVEL
from imagewright.package.grains import BackgroundTarget, GrainStream, GrainTarget

#: ``progress(stage, done, total)`` as convert reports it ("decompressing", "packaging" ...).
Progress = Callable[[str, int, int | None], None]


def read_source(
    src: Path, scratch: Callable[[str], Path], limits: Limits | None = None, progress: Progress | None = None
) -> PreparedSource:
    """Admit ``src`` through the safety gate (convert's source preparation) or refuse it."""
    return prepare_source(src, scratch, limits or Limits(), progress)


def run_pass(
    source: ImageSource,
    targets: Sequence[GrainTarget],
    *,
    stage: str = "packaging",
    progress: Progress | None = None,
    level: int = DEFAULT_LEVEL,
    workers: int | None = None,
    concurrent: bool = False,
) -> GrainStream:
    """Stream ``source`` once through ``targets``; returns the finished stream (its counters).

    ``concurrent``: each target works on a thread of its own (``BackgroundTarget``), for a
    pass that feeds several.
    """
    size = source.virtual_size

    def report(done: int) -> None:
        if progress is not None:
            progress(stage, done, size)

    wrapped: list[BackgroundTarget] = [BackgroundTarget(t) for t in targets] if concurrent else []
    stream = GrainStream(size, wrapped or targets, level=level, workers=workers, progress=report)
    try:
        stream_raw(source, stream)
        stream.finish()
    finally:
        stream.close()
        for target in wrapped:
            target.close()
    return stream


class GatherBuffer:
    """Writes gathered in one fixed buffer, filled in place; ``sink`` gets each gathered run.

    A bytearray that grows, is copied out and cleared for every run reallocates and faults in
    fresh pages each time; one buffer for the writer's life does neither. A write of at least
    ``DIRECT`` bytes goes to ``sink`` as it is (after what was gathered before it): gathering
    is for the many small pieces (a grain's frame, a zero run's block), and copying a large
    one costs more than the extra call it saves (a qcow2's data runs, a batch's joined blocks).
    """

    DIRECT = 64 << 10

    def __init__(self, capacity: int, sink: Callable[[memoryview | bytes | bytearray], None]) -> None:
        self._view = memoryview(bytearray(capacity))
        self._capacity = capacity
        self._direct = min(self.DIRECT, capacity)
        self._sink = sink
        self.used = 0
        #: Every byte written so far.
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        length = len(data)
        self.size += length
        if length >= self._direct:
            self.flush()
            self._sink(data)
            return
        if self.used + length > self._capacity:
            self.flush()
        self._view[self.used : self.used + length] = data
        self.used += length

    def flush(self) -> None:
        if self.used:
            self._sink(self._view[: self.used])
            self.used = 0


class SequentialFile:
    """A file written front to back, hashed as written (``digests``), errors in one sentence.

    Writes are gathered into ``BUFFER``-sized blocks before they are hashed and written: the
    targets of a pass write a few bytes to a few dozen KiB per grain (a zero grain's deflate
    block is a handful of bytes), and one system call and one hash update per grain cost more
    CPU than the bytes themselves.

    The bytes written front to back go to the disk around the page cache where the filesystem
    allows it (``direct_io.DirectAppender``: ``O_DIRECT``, no copy into the cache); bytes
    written out of order (``write_at``: headers filled in at the end) go through the cache.

    ``writeback`` (only where the page cache is written): every ``WRITEBACK`` bytes, what is
    written so far is sent to the disk by a thread of its own (``fdatasync``), so the fsync of
    ``finish`` waits for the last stretch only, not for the whole file (a GiB takes the better
    part of a second to reach a disk, and the kernel starts on its own only when the dirty
    pages pile up or age).
    """

    BUFFER = 1 << 20
    WRITEBACK = 128 << 20

    def __init__(
        self,
        path: Path,
        algorithms: Sequence[str] = ("sha256",),
        *,
        start: int = 0,
        writeback: bool = False,
    ) -> None:
        self.path = path
        self._file = OutputFile(path)
        self._file.position = start
        self._direct: DirectAppender | None = None
        fd = open_direct(path, os.O_WRONLY)
        if fd is not None:
            self._direct = DirectAppender(path, fd, self._file.fileno(), start)
        self._hashers = {name: hashlib.new(name) for name in algorithms}
        self._buffer = GatherBuffer(self.BUFFER, self._emit)
        self._writeback = (
            ThreadPoolExecutor(1, thread_name_prefix="writeback")
            if writeback and self._direct is None
            else None
        )
        self._synced_to = start
        self._syncing: Future[None] | None = None

    @property
    def size(self) -> int:
        """Bytes written through ``write``."""
        return self._buffer.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer.write(data)

    def flush(self) -> None:
        """Hash and write what is gathered."""
        self._buffer.flush()

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        if self._direct is not None:
            self._direct.append(data)
        else:
            self._file.append(data)
        for hasher in self._hashers.values():
            hasher.update(data)
        if (
            self._writeback is not None
            and self._file.position - self._synced_to >= self.WRITEBACK
            and (self._syncing is None or self._syncing.done())
        ):
            self._wait_for_writeback()
            self._syncing = self._writeback.submit(self._file.sync_data)
            self._synced_to = self._file.position

    def _wait_for_writeback(self) -> None:
        if self._syncing is not None:
            syncing, self._syncing = self._syncing, None
            syncing.result()

    def write_at(self, offset: int, data: bytes) -> None:
        """Bytes out of order (headers filled in at the end); not hashed."""
        self.flush()
        if self._direct is not None:
            self._direct.flush()
        self._file.write_at(offset, data)

    @property
    def position(self) -> int:
        """Where the next byte written front to back goes."""
        appended = self._direct.position if self._direct is not None else self._file.position
        return appended + self._buffer.used

    def digests(self) -> dict[str, str]:
        self.flush()
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}

    def finish(self, size: int | None = None) -> None:
        """Flush to disk and close (``size``: the final length, when it differs)."""
        self.flush()
        self._wait_for_writeback()
        if self._writeback is not None:
            self._writeback.shutdown(wait=True)
        if self._direct is not None:
            self._direct.finish()
            if size is None:
                # A partial last block went out padded: cut the file where its bytes end.
                size = max(self._direct.position, self._file.position)
            self._direct.close()
        self._file.finish(size)

    def close(self) -> None:
        if self._writeback is not None:
            self._writeback.shutdown(wait=True)  # no fdatasync may outlive the descriptor
        if self._direct is not None:
            self._direct.close()
        self._file.close()
