"""Temporary files next to the image being resized, and the one rename that replaces it.

NOTE: the original image is never written. Everything happens on files named
``.NAME.iw-resize-PID-RANDOM.SUFFIX`` in the image's own directory (same filesystem, so the
final ``os.replace`` is atomic and a reflink copy is possible); ``commit`` renames the
finished file over the image, and leaving the ``with`` block any other way — an error, a
Ctrl-C, a killed child program — removes every temporary file. Files left behind by a
process that was itself SIGKILLed are recognised by the dead PID in their name and removed
by the next resize of the same image.

Copies are a reflink (``FICLONE``) when the filesystem can, else a sparse copy of the data
ranges only (``SEEK_DATA``/``SEEK_HOLE`` and ``copy_file_range``): a 100 GiB image holding
2 GiB of data costs 2 GiB of free space and 2 GiB of I/O, not 100.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from imagewright.errors import ImageIOError
from imagewright.units import format_size

#: ``progress(done_bytes, total_bytes)``.
ByteProgress = Callable[[int, int | None], None]

_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_CHUNK = 8 * 1024 * 1024
#: Room left over on top of an estimate (metadata, rounding, the filesystem's own reserve).
SPACE_MARGIN = 16 * 1024 * 1024


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fingerprint(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def out_of_space_error(directory: Path, image: Path) -> ImageIOError:
    return ImageIOError(
        f"{directory} ran out of free space while {image.name} was being resized; "
        "the image was left as it was."
    )


def file_size_limit_error(image: Path) -> ImageIOError:
    return ImageIOError(
        f"A copy of {image.name} grew past this process's file size limit (ulimit -f: File too large); "
        "the image was left as it was."
    )


class Workspace:
    """Temporary files beside ``image``; ``commit`` puts one of them in its place."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self.directory = image.parent
        if not os.access(self.directory, os.W_OK):
            raise ImageIOError(
                f"Cannot resize {image}: its directory {self.directory} is not writable "
                "(the resized image is written next to it and renamed over it)."
            )
        self._fingerprint = _fingerprint(image)
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", image.name[:80])
        self._prefix = f".{stem}.iw-resize-"
        self._paths: list[Path] = []
        self._remove_stale()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _remove_stale(self) -> None:
        for entry in self.directory.glob(f"{self._prefix}*"):
            pid_text = entry.name[len(self._prefix) :].split("-", 1)[0]
            if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                with contextlib.suppress(OSError):
                    entry.unlink()

    def path(self, suffix: str) -> Path:
        """A fresh temporary path next to the image, removed by ``cleanup`` unless committed."""
        path = self.directory / f"{self._prefix}{os.getpid()}-{secrets.token_hex(4)}.{suffix}"
        self._paths.append(path)
        return path

    def free_space(self) -> int:
        return shutil.disk_usage(self.directory).free

    def require_space(self, needed: int, what: str) -> None:
        """ImageIOError in one sentence when ``needed`` bytes (plus a margin) are not free."""
        free = self.free_space()
        if needed + SPACE_MARGIN > free:
            raise ImageIOError(
                f"{self.directory} has {format_size(free)} free, but {what} needs about "
                f"{format_size(needed + SPACE_MARGIN)}; free some space (the image was not changed)."
            )

    def copy_image(self, suffix: str, progress: ByteProgress | None = None) -> Path:
        """A byte-identical copy of the image: a reflink if possible, else its data ranges only."""
        target = self.path(suffix)
        try:
            with self.image.open("rb") as fin, target.open("xb") as fout:
                size = os.fstat(fin.fileno()).st_size
                try:
                    fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
                except OSError:
                    pass
                else:
                    if progress is not None:
                        progress(size, size)
                    return target
                allocated = os.fstat(fin.fileno()).st_blocks * 512
                self.require_space(min(allocated, size), f"a copy of {self.image.name}")
                for start, end in _data_ranges(fin.fileno(), size):
                    _copy_range(fin.fileno(), fout.fileno(), start, end)
                    if progress is not None:
                        progress(end, size)
                fout.truncate(size)
                os.fsync(fout.fileno())
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise out_of_space_error(self.directory, self.image) from None
            if err.errno == errno.EFBIG:
                raise file_size_limit_error(self.image) from None
            raise ImageIOError(f"Cannot copy {self.image}: {err.strerror}.") from None
        return target

    def commit(self, result: Path) -> None:
        """Rename ``result`` over the image (after checking nobody changed the image meanwhile)."""
        if _fingerprint(self.image) != self._fingerprint:
            raise ImageIOError(
                f"{self.image} changed while imagewright was resizing it; the resize was not saved."
            )
        original = self.image.stat()
        try:
            _fsync(result)
            os.chmod(result, original.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):
                os.chown(result, original.st_uid, original.st_gid)
            os.replace(result, self.image)
        except OSError as err:
            raise ImageIOError(f"Could not put the resized image in place: {err.strerror}.") from None
        _fsync_directory(self.directory)

    def cleanup(self) -> None:
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def copy_region(source: Path, start: int, length: int, target: Path, target_start: int) -> None:
    """Copy bytes ``[start, start + length)`` of ``source`` to ``target`` at ``target_start``.

    Only the data ranges are copied: holes of ``source`` stay holes (or whatever ``target``
    already holds there, which callers ensure is the same zeros). ``target`` must exist.
    """
    with source.open("rb") as fin, target.open("r+b") as fout:
        for data_start, data_end in _data_ranges(fin.fileno(), start + length, start):
            _copy_range(fin.fileno(), fout.fileno(), data_start, data_end, target_start - start)
        os.fsync(fout.fileno())


def _data_ranges(fd: int, size: int, position: int = 0) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges of a file before ``size`` that hold data (all if holes are unknown)."""
    ranges: list[tuple[int, int]] = []
    first = position
    try:
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # only a hole remains
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            ranges.append((start, end))
            position = end
    except OSError:
        return [(first, size)] if size > first else []
    return ranges


def _copy_range(fin: int, fout: int, start: int, end: int, shift: int = 0) -> None:
    """Copy ``[start, end)`` of ``fin`` to ``fout`` at ``start + shift``."""
    position = start
    while position < end:
        length = min(_CHUNK, end - position)
        try:
            copied = os.copy_file_range(fin, fout, length, position, position + shift)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            copied = 0
        if copied <= 0:
            chunk = os.pread(fin, length, position)
            if not chunk:
                raise OSError(errno.EIO, "the image file ended early")
            copied = os.pwrite(fout, chunk, position + shift)
        position += copied
