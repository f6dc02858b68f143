"""Writing an output: checksums as bytes pass, compression wrappers, sparse streaming.

The output itself is a ``files.AtomicOutput``: written under a temporary name beside the
destination and renamed into place only when complete (see ``imagewright.files``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import lzma
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import zstandard
from isal import isal_zlib  # ISA-L's igzip: the same gzip format, several times faster on one core

from imagewright import direct_io
from imagewright.errors import ImageIOError
from imagewright.files import file_extents, io_error

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)


class Hashes:
    """Several digests updated together."""

    def __init__(self, algorithms: tuple[str, ...]) -> None:
        self._hashers = {name: hashlib.new(name) for name in algorithms}

    def update(self, data: bytes | memoryview) -> None:
        self._feed(data)

    def update_zeros(self, length: int) -> None:
        self._feed_zeros(length)

    def _feed(self, data: bytes | memoryview) -> None:
        for hasher in self._hashers.values():
            hasher.update(data)

    def _feed_zeros(self, length: int) -> None:
        while length:
            step = min(length, CHUNK)
            self._feed(_ZEROS[:step] if step < CHUNK else _ZEROS)
            length -= step

    def hexdigests(self) -> dict[str, str]:
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}

    def close(self) -> None:
        """Nothing to let go (see ``BackgroundHashes``)."""


class Lane:
    """A thread of its own that applies ``work`` to each item handed to it, in order.

    ``put`` returns once the item is queued (at most ``depth`` wait), so the caller goes on
    while the lane works; the first exception ``work`` raises stops the lane and is raised
    by the next ``put`` or by ``join``. Items must not change once handed over.
    """

    _DONE = object()

    def __init__(self, name: str, work: Callable[[Any], None], depth: int = 8) -> None:
        self._work = work
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not self._DONE:
            if self._error is not None:
                continue  # drained, not worked: put() raises the error
            try:
                self._work(item)
            except BaseException as err:  # noqa: BLE001 - raised in the caller's thread
                self._error = err

    def put(self, item: object) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def join(self) -> None:
        """Wait until every item was worked (or the lane failed); raise its error."""
        if self._thread.is_alive():
            self._queue.put(self._DONE)
            self._thread.join()
        if self._error is not None:
            raise self._error


class BackgroundHashes(Hashes):
    """``Hashes`` computed by threads of their own, one per algorithm: ``update`` hands an
    immutable buffer over and returns, so the caller writes or compresses it while it is
    hashed, and the digests are computed side by side (hashlib releases the GIL on large
    buffers; md5 and sha512 of an import's output take about as long each as the rest of the
    conversion). A buffer that may change later (a ``memoryview`` into a reused receive buffer)
    is copied once first: a copy costs a small part of hashing it; a view of a ``bytes`` object
    cannot change and is kept as it is."""

    def __init__(self, algorithms: tuple[str, ...], depth: int = 8) -> None:
        super().__init__(algorithms)
        self._lanes = [
            Lane(f"hashing-{name}", _hash_item(hasher), depth) for name, hasher in self._hashers.items()
        ]

    def update(self, data: bytes | memoryview) -> None:
        if self._lanes:
            item = data if isinstance(data, bytes) or _immutable_view(data) else bytes(data)
            for lane in self._lanes:
                lane.put(item)

    def update_zeros(self, length: int) -> None:
        if length > 0:
            for lane in self._lanes:
                lane.put(length)

    def hexdigests(self) -> dict[str, str]:
        self.close()
        return super().hexdigests()

    def close(self) -> None:
        for lane in self._lanes:
            lane.join()


def _immutable_view(data: bytes | memoryview) -> bool:
    """A view whose bytes nobody can change: one of a ``bytes`` object."""
    return isinstance(data, memoryview) and isinstance(data.obj, bytes)


def _hash_item(hasher: Any) -> Callable[[object], None]:
    """A lane's work: hash a buffer, or a run of that many zeros."""

    def work(item: object) -> None:
        if isinstance(item, int):
            length = item
            while length:
                step = min(length, CHUNK)
                hasher.update(_ZEROS[:step] if step < CHUNK else _ZEROS)
                length -= step
        else:
            assert isinstance(item, bytes | memoryview)
            hasher.update(item)

    return work


class Compressor(Protocol):
    def compress(self, data: bytes | memoryview) -> bytes: ...

    def flush(self) -> bytes: ...


def new_compressor(kind: str) -> Compressor:
    """A streaming compressor writing the standard file format of ``kind``."""
    if kind == "gzip":
        # igzip level 2 compresses about as well as gzip -3 at many times its speed; the
        # output is an ordinary gzip member any gunzip reads.
        return _ZlibLike(isal_zlib.compressobj(2, isal_zlib.DEFLATED, 16 + 15))
    if kind == "xz":
        return lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)
    if kind == "zstd":
        # Content size is unknown up front (it streams); the frame still says "no size".
        cctx = zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=True)
        return _ZstdStream(cctx)
    raise ValueError(kind)


class _ZlibLike:
    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def compress(self, data: bytes | memoryview) -> bytes:
        out: bytes = self._obj.compress(data)
        return out

    def flush(self) -> bytes:
        out: bytes = self._obj.flush()
        return out


class _ZstdStream:
    def __init__(self, cctx: zstandard.ZstdCompressor) -> None:
        self._obj = cctx.compressobj()

    def compress(self, data: bytes | memoryview) -> bytes:
        out: bytes = self._obj.compress(bytes(data))
        return out

    def flush(self) -> bytes:
        out: bytes = self._obj.flush()
        return out


class OutputFile:
    """An output file written front to back (or sparse), with write errors as one sentence."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise io_error(err, path, "creating") from None
        self.position = 0

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as err:
            raise io_error(err, self.path) from None
        self.position = max(self.position, offset)

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self.write_at(self.position, data)

    def fileno(self) -> int:
        """The descriptor (valid until ``finish`` or ``close``)."""
        return self._fd

    def sync_data(self) -> None:
        """Send what is written so far to the disk (``fdatasync``): ``finish`` then waits less."""
        try:
            os.fdatasync(self._fd)
        except OSError as err:
            raise io_error(err, self.path) from None

    def copy_at(self, offset: int, source_fd: int, source_offset: int, length: int) -> int:
        """Copy ``length`` bytes of ``source_fd`` at ``source_offset`` to ``offset``, in the
        kernel (``copy_file_range``: no trip through this process, and on a filesystem that
        shares extents, no copy at all); bytes past the end of the source are left as a hole.
        Returns how many bytes were copied."""
        copied = 0
        try:
            while copied < length:
                try:
                    done = os.copy_file_range(
                        source_fd, self._fd, length - copied, source_offset + copied, offset + copied
                    )
                except OSError as err:
                    if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    data = os.pread(source_fd, min(length - copied, 8 * CHUNK), source_offset + copied)
                    done = len(data)
                    if done:
                        self.write_at(offset + copied, data)
                if done == 0:
                    break
                copied += done
        except OSError as err:
            raise io_error(err, self.path) from None
        self.position = max(self.position, offset + copied)
        return copied

    def finish(self, size: int | None = None, *, durable: bool = True) -> None:
        """Set the final size (holes at the end of a sparse file) and flush to disk (not when
        ``durable`` is False: a scratch file read back soon from the page cache, then deleted)."""
        try:
            if size is not None:
                os.ftruncate(self._fd, size)
            if durable:
                os.fsync(self._fd)
        except OSError as err:
            raise io_error(err, self.path) from None
        finally:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class DirectOutputFile:
    """An output written front to back — data at rising offsets, holes between — with
    ``O_DIRECT`` where the filesystem allows it, else through the page cache (``OutputFile``).

    Through the page cache every byte is copied into freshly allocated cache pages that the
    kernel writes out anyway (the output is fsynced before it is kept): for a 1 GiB import,
    1–2 CPU-s on the bench machine, more than any other part of it but the digests; with
    ``O_DIRECT`` the disk reads a staging buffer (DMA), and what is left for the fsync is the
    last partial block and the metadata. The rules are ``direct_io``'s (whose staging buffer
    this uses): the address, offset and length of every direct transfer are aligned
    (``direct_io.ALIGN``); bytes are staged in a page-aligned buffer and written a whole
    buffer at a time; a gap (a hole) flushes what is staged, its partial last block padded
    with zeros — the gap's own bytes, which read as zeros — and the bytes in front of the next
    data within its block are staged as zeros too; the file is cut to its size at ``finish``.
    A filesystem that refuses ``O_DIRECT`` (at ``open``, or at a transfer) gets the same bytes
    through the page cache. One thread writes (the caller's).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._plain = OutputFile(path)
        try:
            fd = direct_io.open_direct(path, os.O_WRONLY)
        except BaseException:
            self._plain.close()
            raise
        self._fd = -1 if fd is None else fd
        self._stage = direct_io.StagingBuffer() if self._fd >= 0 else None
        #: File offset of the staged bytes (aligned), and how many are staged.
        self._base = 0
        self._used = 0
        #: The staged bytes hold data (not only the zeros in front of an unaligned start).
        self._staged_data = False

    @property
    def direct(self) -> bool:
        """Whether the writes go around the page cache (so far)."""
        return self._fd >= 0

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset``, at or after the end of what was written before."""
        end = self._base + self._used
        if offset < end:
            raise ValueError(f"{self.path} is written front to back ({offset} < {end})")
        if self._stage is None or self._fd < 0:
            self._plain.write_at(offset, data)
            self._base = offset + len(data)
            return
        if offset > end:
            start = offset - offset % direct_io.ALIGN
            if start <= end:  # within the block being staged: the gap's bytes, zeros
                self._put(memoryview(bytes(offset - end)))
            else:
                self._flush_staged()
                self._base, self._used = start, offset - start
                self._stage.zero(0, self._used)
        self._put(memoryview(data))
        self._staged_data = True

    def _put(self, view: memoryview) -> None:
        assert self._stage is not None
        done = 0
        while done < len(view):
            take = min(len(view) - done, direct_io.STAGE - self._used)
            self._stage.put(self._used, view[done : done + take])
            self._used += take
            done += take
            if self._used == direct_io.STAGE:
                self._write(self._stage.view, self._base)
                self._base += direct_io.STAGE
                self._used = 0

    def _flush_staged(self) -> None:
        """Write what is staged, its partial last block padded with zeros, and drop it."""
        if self._stage is not None and self._used and self._staged_data:
            padded = -(-self._used // direct_io.ALIGN) * direct_io.ALIGN
            self._stage.zero(self._used, padded)
            self._write(self._stage.view[:padded], self._base)
        self._base += self._used
        self._used = 0
        self._staged_data = False

    def _write(self, view: memoryview, offset: int) -> None:
        done = 0
        if self._fd >= 0:
            try:
                done = direct_io.write_direct(self._fd, view, offset)
            except OSError as err:
                raise io_error(err, self.path) from None
            if done == len(view):
                return
            self._close_direct()  # this filesystem wants otherwise: the page cache
        self._plain.write_at(offset + done, view[done:])

    def finish(self, size: int | None = None, *, durable: bool = True) -> None:
        """Write what is staged, set the final size, flush (as ``OutputFile.finish``)."""
        try:
            self._flush_staged()
        except BaseException:
            self.close()
            raise
        self._close_direct()
        self._plain.finish(size, durable=durable)

    def _close_direct(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self._close_direct()
        self._plain.close()
        if self._stage is not None:
            self._stage.release()
            self._stage = None


class ImageStreamWriter:
    """Receives an image's bytes in order (data and zero runs) and writes the output file.

    ``content`` hashes the image bytes; ``output`` hashes the file bytes. Without
    compression they are the same bytes, the file is written sparse (zero runs become holes)
    and only ``content`` is kept; the file is written by a thread of its own (``Lane``), so
    the writes (a copy into the page cache each, and whatever the kernel makes a writer wait
    for) overlap the hashing and whatever produces the bytes. With compression, every byte —
    zeros included — goes through the compressor and the compressed bytes are hashed as they
    are written.
    """

    def __init__(self, path: Path, *, compression: str | None, checksums: tuple[str, ...]) -> None:
        self.file = OutputFile(path)
        self.content: Hashes = BackgroundHashes(checksums)
        self.compression = compression
        self.output: Hashes = BackgroundHashes(checksums) if compression else self.content
        self._compressor = new_compressor(compression) if compression else None
        self._writing = Lane("writing", self._write_item) if compression is None else None
        self.bytes_in = 0

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._gap(offset)
        if self._writing is not None:
            # One immutable copy (none for bytes) shared by the hashing and the writing lanes.
            item = data if isinstance(data, bytes) else bytes(data)
            self.content.update(item)
            self._writing.put((offset, item))
        else:
            assert self._compressor is not None
            self.content.update(data)
            self._emit(self._compressor.compress(data))
        self.bytes_in = offset + len(data)

    def _write_item(self, item: tuple[int, bytes]) -> None:
        self.file.write_at(*item)

    def zeros(self, offset: int, length: int) -> None:
        self._gap(offset)
        self.content.update_zeros(length)
        if self._compressor is not None:
            remaining = length
            while remaining:
                step = min(remaining, CHUNK)
                self._emit(self._compressor.compress(_ZEROS[:step] if step < CHUNK else _ZEROS))
                remaining -= step
        self.bytes_in = offset + length

    def _gap(self, offset: int) -> None:
        if offset > self.bytes_in:
            self.zeros(self.bytes_in, offset - self.bytes_in)

    def _emit(self, data: bytes) -> None:
        if data:
            self.output.update(data)
            self.file.append(data)

    def finish(self, size: int, *, durable: bool = True) -> None:
        """Complete the stream at ``size`` bytes (trailing zeros) and close the file
        (``durable``: as ``OutputFile.finish``)."""
        self._gap(size)
        if self._compressor is not None:
            self._emit(self._compressor.flush())
            self.file.finish(durable=durable)
        else:
            assert self._writing is not None
            self._writing.join()
            self.file.finish(size, durable=durable)

    def close(self) -> None:
        if self._writing is not None:
            # Every queued write ends before the file is closed (an error is finish's to raise).
            with contextlib.suppress(BaseException):
                self._writing.join()
        self.file.close()
        self.content.close()
        self.output.close()


class StreamConsumer(Protocol):
    def write(self, offset: int, data: bytes | memoryview) -> None: ...

    def zeros(self, offset: int, length: int) -> None: ...


#: Bytes read at once when a finished file is streamed (hashed, compressed).
READ_CHUNK = 4 * CHUNK


def stream_file(
    path: Path, consumer: StreamConsumer, progress: Callable[[int, int], None] | None = None
) -> int:
    """Feed a file to ``consumer`` front to back; holes are passed as zero runs, not read.

    A thread reads ahead while the consumer works on the previous chunk: ``os.pread``,
    hashlib and the compressors all release the GIL, so reading overlaps hashing.
    """
    try:
        with path.open("rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            for offset, length, data in _read_ahead(f.fileno(), size, path):
                if data is None:
                    consumer.zeros(offset, length)
                else:
                    consumer.write(offset, data)
                if progress is not None:
                    progress(offset + length, size)
    except OSError as err:
        raise io_error(err, path, "reading") from None
    return size


def _read_ahead(fd: int, size: int, path: Path) -> Iterator[tuple[int, int, bytes | None]]:
    """``(offset, length, data or None for a hole)`` of the file, read by a thread two chunks ahead."""
    chunks: queue.Queue[tuple[int, int, bytes | None] | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def reader() -> None:
        try:
            for offset, length, is_data in file_extents(fd, size):
                if not is_data:
                    chunks.put((offset, length, None))
                    continue
                position, end = offset, offset + length
                while position < end and not stop.is_set():
                    data = os.pread(fd, min(READ_CHUNK, end - position), position)
                    if not data:
                        raise ImageIOError(f"{path} shrank while it was being read.")
                    chunks.put((position, len(data), data))
                    position += len(data)
                if stop.is_set():
                    return
            chunks.put(None)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer's thread
            chunks.put(err)

    thread = threading.Thread(target=reader, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            with contextlib.suppress(queue.Empty):
                chunks.get_nowait()
            thread.join(0.01)


class HashingConsumer:
    """A consumer that only hashes (for outputs another program wrote, or bytes to be written
    later). ``background``: one thread per digest (``BackgroundHashes``)."""

    def __init__(self, checksums: tuple[str, ...], *, background: bool = False) -> None:
        self.hashes: Hashes = BackgroundHashes(checksums) if background else Hashes(checksums)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self.hashes.update(data)

    def zeros(self, offset: int, length: int) -> None:
        self.hashes.update_zeros(length)
