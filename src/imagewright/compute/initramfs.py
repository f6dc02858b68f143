"""A writer for initramfs archives: cpio "newc" (SVR4, no CRC), gzip-compressed.

The kernel unpacks this format into its rootfs at boot (Documentation/driver-api/
early-userspace/buffer-format.rst). Writing it here rather than through ``cpio -o`` lets an
unprivileged build record what the archive must hold whatever the builder's own uid is:
every entry is owned by root, and device nodes such as ``/dev/console`` (which an init needs
before devtmpfs is mounted) are plain header records, no ``mknod`` needed.

Entry layout: the ASCII magic ``070701``, thirteen 8-digit hex fields (ino, mode, uid, gid,
nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize incl. NUL,
check = 0), the NUL-terminated name padded to a multiple of 4 bytes counted from the start of
the header, then the data padded to a multiple of 4. ``TRAILER!!!`` ends the archive.
"""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO

from imagewright.errors import InvalidArgumentError

_MAGIC = b"070701"
_CHUNK = 1 << 20


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


class InitramfsWriter:
    """Write a gzip-compressed newc archive entry by entry (streams file data in chunks)."""

    def __init__(self, path: Path, *, compresslevel: int = 6) -> None:
        self._raw: BinaryIO = path.open("wb")
        # mtime=0 in the gzip header: the same inputs give the same bytes.
        self._out: BinaryIO = gzip.GzipFile(  # type: ignore[assignment]
            filename="", mode="wb", fileobj=self._raw, compresslevel=compresslevel, mtime=0
        )
        self._inode = 1
        self._names: set[str] = set()

    def __enter__(self) -> InitramfsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._out.close()
            self._raw.close()

    def _header(
        self, name: str, mode: int, size: int, rdev: tuple[int, int] = (0, 0), nlink: int = 1
    ) -> None:
        encoded = name.encode("utf-8") + b"\0"
        fields = (
            self._inode,
            mode,
            0,  # uid: root
            0,  # gid: root
            nlink,
            0,  # mtime: reproducible
            size,
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        header = _MAGIC + b"".join(f"{value:08x}".encode("ascii") for value in fields)
        self._inode += 1
        self._out.write(header + encoded + _pad4(len(header) + len(encoded)))

    def _check_name(self, name: str) -> str:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise InvalidArgumentError(f"'{name}' is not a relative path inside an initramfs.")
        text = str(path)
        if text in self._names:
            raise InvalidArgumentError(f"The initramfs already holds '{text}'.")
        self._names.add(text)
        return text

    def add_directory(self, name: str, mode: int = 0o755) -> None:
        self._header(self._check_name(name), stat.S_IFDIR | mode, 0, nlink=2)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._header(self._check_name(name), stat.S_IFREG | mode, len(data))
        self._out.write(data + _pad4(len(data)))

    def add_file(self, name: str, source: Path, mode: int | None = None) -> None:
        """Copy a host file's content (following links) into the archive, in chunks."""
        size = source.stat().st_size
        if mode is None:
            mode = stat.S_IMODE(source.stat().st_mode)
        self._header(self._check_name(name), stat.S_IFREG | mode, size)
        written = 0
        with source.open("rb") as src:
            while chunk := src.read(_CHUNK):
                self._out.write(chunk)
                written += len(chunk)
        if written != size:
            raise InvalidArgumentError(f"{source} changed size while it was archived.")
        self._out.write(_pad4(size))

    def add_symlink(self, name: str, target: str) -> None:
        data = target.encode("utf-8")
        self._header(self._check_name(name), stat.S_IFLNK | 0o777, len(data))
        self._out.write(data + _pad4(len(data)))

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._header(self._check_name(name), stat.S_IFCHR | mode, 0, rdev=(major, minor))

    def close(self) -> None:
        self._header("TRAILER!!!", 0, 0, nlink=1)
        self._out.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
