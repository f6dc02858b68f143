"""Writing an output safely: temp name + rename, checksums as bytes pass, compression wrappers.

NOTE: an output is written under a hidden temporary name in the destination's directory
(``.NAME.iw-PID-RANDOM.part``) and renamed into place only when complete, so a failure, a
Ctrl-C or a killed child never leaves a partial image under the real name. Temp files left
by a process that was itself SIGKILLed are recognised by the dead PID in their name and
removed by the next run that writes the same output.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import lzma
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import zstandard
from isal import isal_zlib  # ISA-L's igzip: the same gzip format, several times faster on one core

from imagewright.errors import ImageIOError, OutputExistsError

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AtomicOutput:
    """A destination file that appears only when ``commit()`` is called.

    Also hands out scratch files in the same directory (same filesystem, same free space),
    all removed by ``cleanup()``.
    """

    def __init__(self, dst: Path, *, force: bool) -> None:
        self.dst = dst
        if dst.exists() and not force:
            raise OutputExistsError(f"{dst} already exists; use --force to overwrite it.")
        if dst.is_dir():
            raise OutputExistsError(f"{dst} is a directory.")
        parent = dst.parent
        if not parent.is_dir():
            raise ImageIOError(f"The output directory {parent} does not exist.")
        if not os.access(parent, os.W_OK):
            raise ImageIOError(f"The output directory {parent} is not writable.")
        self._remove_stale_temps()
        self._paths: list[Path] = []
        self.temp = self.scratch("part")

    def _prefix(self) -> str:
        return f".{self.dst.name}.iw-"

    def _remove_stale_temps(self) -> None:
        prefix = self._prefix()
        for entry in self.dst.parent.glob(f"{prefix}*"):
            pid_text = entry.name[len(prefix) :].split("-", 1)[0]
            if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                with contextlib.suppress(OSError):
                    entry.unlink()

    def scratch(self, suffix: str) -> Path:
        """A fresh path next to the output, removed by ``cleanup()`` unless committed."""
        path = self.dst.parent / f"{self._prefix()}{os.getpid()}-{secrets.token_hex(4)}.{suffix}"
        self._paths.append(path)
        return path

    def commit(self) -> None:
        try:
            os.replace(self.temp, self.dst)
        except OSError as err:
            raise ImageIOError(
                f"Could not move the finished output into place at {self.dst}: {err.strerror}."
            ) from None

    def cleanup(self) -> None:
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@contextlib.contextmanager
def atomic_output(dst: Path, *, force: bool) -> Iterator[AtomicOutput]:
    out = AtomicOutput(dst, force=force)
    try:
        yield out
    finally:
        out.cleanup()


class Hashes:
    """Several digests updated together."""

    def __init__(self, algorithms: tuple[str, ...]) -> None:
        self._hashers = {name: hashlib.new(name) for name in algorithms}

    def update(self, data: bytes | memoryview) -> None:
        for hasher in self._hashers.values():
            hasher.update(data)

    def update_zeros(self, length: int) -> None:
        while length:
            step = min(length, CHUNK)
            self.update(_ZEROS[:step] if step < CHUNK else _ZEROS)
            length -= step

    def hexdigests(self) -> dict[str, str]:
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}


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
            raise ImageIOError(f"Cannot create {path}: {err.strerror}.") from None
        self.position = 0

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as err:
            raise _write_error(self.path, err) from None
        self.position = max(self.position, offset)

    def append(self, data: bytes | memoryview) -> None:
        self.write_at(self.position, data)

    def finish(self, size: int | None = None) -> None:
        """Set the final size (holes at the end of a sparse file) and flush to disk."""
        try:
            if size is not None:
                os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError as err:
            raise _write_error(self.path, err) from None
        finally:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_error(path: Path, err: OSError) -> ImageIOError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ImageIOError(f"The disk holding {path.parent} is full; the output was not written.")
    if err.errno == errno.EFBIG:
        return ImageIOError(f"{path.parent} does not allow a file that large; the output was not written.")
    return ImageIOError(f"Writing {path} failed: {err.strerror}.")


class ImageStreamWriter:
    """Receives an image's bytes in order (data and zero runs) and writes the output file.

    ``content`` hashes the image bytes; ``output`` hashes the file bytes. Without
    compression they are the same bytes, the file is written sparse (zero runs become holes)
    and only ``content`` is kept. With compression, every byte — zeros included — goes
    through the compressor and the compressed bytes are hashed as they are written.
    """

    def __init__(self, path: Path, *, compression: str | None, checksums: tuple[str, ...]) -> None:
        self.file = OutputFile(path)
        self.content = Hashes(checksums)
        self.compression = compression
        self.output = Hashes(checksums) if compression else self.content
        self._compressor = new_compressor(compression) if compression else None
        self.bytes_in = 0

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._gap(offset)
        self.content.update(data)
        if self._compressor is None:
            self.file.write_at(offset, data)
        else:
            self._emit(self._compressor.compress(data))
        self.bytes_in = offset + len(data)

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

    def finish(self, size: int) -> None:
        """Complete the stream at ``size`` bytes (trailing zeros) and close the file."""
        self._gap(size)
        if self._compressor is not None:
            self._emit(self._compressor.flush())
            self.file.finish()
        else:
            self.file.finish(size)

    def close(self) -> None:
        self.file.close()


def file_extents(path: Path) -> list[tuple[int, int, bool]]:
    """(offset, length, is_data) runs of a file, from SEEK_DATA/SEEK_HOLE (holes read as zeros)."""
    extents: list[tuple[int, int, bool]] = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        position = 0
        while position < size:
            try:
                data = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                data = size
            if data > position:
                extents.append((position, data - position, False))
            if data >= size:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            extents.append((data, hole - data, True))
            position = hole
    finally:
        os.close(fd)
    return extents


class StreamConsumer(Protocol):
    def write(self, offset: int, data: bytes | memoryview) -> None: ...

    def zeros(self, offset: int, length: int) -> None: ...


def stream_file(
    path: Path, consumer: StreamConsumer, progress: Callable[[int, int], None] | None = None
) -> int:
    """Feed a file to ``consumer`` front to back; holes are passed as zero runs, not read."""
    size = path.stat().st_size
    done = 0
    try:
        with path.open("rb", buffering=0) as f:
            for offset, length, is_data in file_extents(path):
                if not is_data:
                    consumer.zeros(offset, length)
                else:
                    f.seek(offset)
                    remaining = length
                    position = offset
                    while remaining:
                        chunk = f.read(min(remaining, CHUNK * 4))
                        if not chunk:
                            raise ImageIOError(f"{path} shrank while it was being read.")
                        consumer.write(position, chunk)
                        position += len(chunk)
                        remaining -= len(chunk)
                done = offset + length
                if progress is not None:
                    progress(done, size)
    except OSError as err:
        raise ImageIOError(f"Reading {path} failed: {err.strerror}.") from None
    return size


class HashingConsumer:
    """A consumer that only hashes (for outputs another program wrote)."""

    def __init__(self, checksums: tuple[str, ...]) -> None:
        self.hashes = Hashes(checksums)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self.hashes.update(data)

    def zeros(self, offset: int, length: int) -> None:
        self.hashes.update_zeros(length)
