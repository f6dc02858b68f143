"""What a guest file looks like to imagewright: types, stat records, listings, checked paths.

Guest file names are bytes on disk; imagewright carries them as ``str`` decoded as UTF-8 with
surrogate escapes, so a name that is not UTF-8 still round-trips exactly.
"""

from __future__ import annotations

import posixpath
import stat as stat_module
from dataclasses import dataclass
from enum import StrEnum

from imagewright.errors import GuestFilesystemError, InvalidArgumentError

#: The longest guest path accepted (Linux PATH_MAX includes the NUL).
MAX_PATH_BYTES = 4095
#: How many symbolic links a lookup follows before calling it a loop (Linux: 40).
MAX_SYMLINK_HOPS = 40


class GuestFileNotFoundError(GuestFilesystemError):
    """A path does not exist in the guest (or one of its parents is not a directory)."""


class FileType(StrEnum):
    REGULAR = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    CHAR_DEVICE = "char-device"
    BLOCK_DEVICE = "block-device"
    FIFO = "fifo"
    SOCKET = "socket"
    UNKNOWN = "unknown"

    @classmethod
    def from_mode(cls, mode: int) -> FileType:
        """The type encoded in the high bits of an inode's ``i_mode``."""
        kind = stat_module.S_IFMT(mode)
        return _TYPE_BY_IFMT.get(kind, cls.UNKNOWN)

    @property
    def ifmt(self) -> int:
        """The ``S_IFxxx`` bits of this type (0 for UNKNOWN)."""
        for bits, kind in _TYPE_BY_IFMT.items():
            if kind is self:
                return bits
        return 0

    @property
    def letter(self) -> str:
        """The first character ``ls -l`` prints for this type."""
        return {
            FileType.REGULAR: "-",
            FileType.DIRECTORY: "d",
            FileType.SYMLINK: "l",
            FileType.CHAR_DEVICE: "c",
            FileType.BLOCK_DEVICE: "b",
            FileType.FIFO: "p",
            FileType.SOCKET: "s",
        }.get(self, "?")


_TYPE_BY_IFMT: dict[int, FileType] = {
    stat_module.S_IFREG: FileType.REGULAR,
    stat_module.S_IFDIR: FileType.DIRECTORY,
    stat_module.S_IFLNK: FileType.SYMLINK,
    stat_module.S_IFCHR: FileType.CHAR_DEVICE,
    stat_module.S_IFBLK: FileType.BLOCK_DEVICE,
    stat_module.S_IFIFO: FileType.FIFO,
    stat_module.S_IFSOCK: FileType.SOCKET,
}


@dataclass(frozen=True)
class GuestStat:
    """One inode as seen through its path; a final symbolic link is not followed (like lstat)."""

    path: str
    type: FileType
    #: Permission bits including set-uid, set-gid and sticky (``mode & 0o7777``).
    mode: int
    uid: int
    gid: int
    size: int
    #: Seconds since the epoch.
    mtime: int
    links: int
    inode: int
    #: Where a symbolic link points; None for everything else.
    link_target: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.type is FileType.DIRECTORY

    @property
    def is_file(self) -> bool:
        return self.type is FileType.REGULAR

    @property
    def is_symlink(self) -> bool:
        return self.type is FileType.SYMLINK

    def permissions(self) -> str:
        """``ls -l`` style, e.g. ``-rw-r--r--``."""
        return stat_module.filemode(self.type.ifmt | self.mode)

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "type": self.type.value,
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "mtime": self.mtime,
            "links": self.links,
            "inode": self.inode,
            "link_target": self.link_target,
        }


@dataclass(frozen=True)
class DirEntry:
    """One name in a directory listing (``.`` and ``..`` are never listed)."""

    name: str
    type: FileType
    mode: int
    uid: int
    gid: int
    size: int
    inode: int

    @property
    def is_dir(self) -> bool:
        return self.type is FileType.DIRECTORY

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type.value,
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "inode": self.inode,
        }


def guest_path(path: str) -> str:
    """``path`` checked and normalised: absolute, no NUL or line breaks, no ``.``/``..``/``//``.

    ``..`` is resolved lexically (``/etc/../var`` is ``/var``), which is what a guest path
    typed by a user means; symbolic links are resolved by the backend, not here.
    """
    if not isinstance(path, str) or not path:
        raise InvalidArgumentError("A guest path must be a non-empty string.")
    if not path.startswith("/"):
        raise InvalidArgumentError(f"The guest path '{path}' must be absolute (start with '/').")
    for bad, name in (("\0", "a NUL character"), ("\n", "a line break"), ("\r", "a carriage return")):
        if bad in path:
            raise InvalidArgumentError(f"The guest path {path!r} contains {name}.")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if len(normal.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise InvalidArgumentError("The guest path is longer than a Linux path can be.")
    return normal


def join(directory: str, name: str) -> str:
    """``directory/name`` for a name read from a listing (which never contains '/')."""
    if "/" in name or name in ("", ".", ".."):
        raise GuestFilesystemError(f"The guest directory {directory} lists an impossible name {name!r}.")
    return directory.rstrip("/") + "/" + name


def resolve_link(link_path: str, target: str) -> str:
    """The absolute guest path a symbolic link at ``link_path`` with ``target`` points to.

    Absolute targets are taken inside the guest (the guest's root, not the host's).
    """
    combined = target if target.startswith("/") else posixpath.join(posixpath.dirname(link_path), target)
    return guest_path(combined) if combined else "/"
