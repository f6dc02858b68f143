"""``GuestFS``: the file operations every backend offers, and the helpers built on them.

A backend implements the primitives (``stat_many``, ``listdir_many``, ``read_file``, the
writes); ``walk``, ``glob``, ``exists`` and friends are written once here on top of them.
Backends may queue writes and run them in batches; a read always sees every earlier write.
"""

from __future__ import annotations

import fnmatch
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from imagewright.errors import GuestFilesystemError
from imagewright.guest.model import (
    MAX_SYMLINK_HOPS,
    DirEntry,
    FileType,
    GuestFileNotFoundError,
    GuestStat,
    guest_path,
    join,
    resolve_link,
)

#: Largest file ``read_file`` returns in memory; bigger ones go through ``copy_out``.
DEFAULT_READ_LIMIT = 64 * 1024 * 1024
#: Most entries a recursive walk visits before deciding the tree is hostile.
MAX_WALK_ENTRIES = 1_000_000


class GuestFS(ABC):
    """Files inside one guest filesystem. All paths are absolute guest paths."""

    #: What this filesystem is, for messages: "partition 1 (ext4) of disk.qcow2".
    description: str = "the guest filesystem"
    #: The filesystem type ("ext4", "xfs", ...).
    fs_type: str = ""
    #: The qemu format of the image file the filesystem came from ("raw", "qcow2" ...).
    image_format: str = ""
    writable: bool = False

    # ---- primitives every backend implements ------------------------------------------

    @abstractmethod
    def stat_many(self, paths: Sequence[str]) -> dict[str, GuestStat | None]:
        """``lstat`` of each path (a final symlink is not followed); None where it is missing."""

    @abstractmethod
    def listdir_many(self, paths: Sequence[str]) -> dict[str, list[DirEntry]]:
        """The entries of each directory (not following a final symlink of the path itself)."""

    @abstractmethod
    def read_file(self, path: str, *, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """The content of a regular file, following symbolic links."""

    @abstractmethod
    def copy_out(self, path: str, host_path: Path) -> None:
        """Copy a regular guest file (links followed) to a new host file."""

    @abstractmethod
    def write_file(
        self,
        path: str,
        data: bytes,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        """Create or replace a regular file. Replacing keeps its mode and owner unless given;
        a new file is 0644 root:root unless given. A symbolic link at ``path`` is replaced."""

    @abstractmethod
    def copy_in(
        self,
        host_path: Path,
        path: str,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        """Like ``write_file`` with the content of a host file (streamed, not read into memory)."""

    @abstractmethod
    def delete(self, path: str, *, recursive: bool = False, missing_ok: bool = False) -> None:
        """Remove a file, link or special file; a directory only if empty or ``recursive``."""

    def delete_many(
        self, paths: Sequence[str], *, recursive: bool = True, missing_ok: bool = True
    ) -> dict[str, GuestStat]:
        """Delete several paths (trees included); returns what was there, by path.

        Backends override this to look everything up at once.
        """
        found = self.stat_many(paths)
        deleted: dict[str, GuestStat] = {}
        for path in paths:
            info = found[path]
            if info is None and missing_ok:
                continue
            self.delete(path, recursive=recursive, missing_ok=missing_ok)
            if info is not None:
                deleted[guest_path(path)] = info
        return deleted

    def truncate_many(self, paths: Sequence[str]) -> None:
        for path in paths:
            self.truncate(path)

    @abstractmethod
    def chmod(self, path: str, mode: int) -> None:
        """Set the permission bits (``0o7777``) of a path (a final symlink itself)."""

    @abstractmethod
    def chown(self, path: str, uid: int, gid: int) -> None:
        """Set the owner of a path (a final symlink itself)."""

    @abstractmethod
    def symlink(self, target: str, path: str) -> None:
        """Create a symbolic link at ``path`` pointing to ``target`` (stored as given)."""

    @abstractmethod
    def mkdir(
        self, path: str, *, parents: bool = False, mode: int = 0o755, uid: int = 0, gid: int = 0
    ) -> None:
        """Create a directory; with ``parents`` also missing parents, and no error if it exists."""

    @abstractmethod
    def truncate(self, path: str) -> None:
        """Cut a regular file to zero bytes, keeping its inode, owner and mode."""

    @abstractmethod
    def readlink(self, path: str) -> str:
        """The target of a symbolic link."""

    @abstractmethod
    def flush(self) -> None:
        """Run every queued write now."""

    def close(self) -> None:
        """Finish: flush queued writes and release what the backend holds."""
        self.flush()

    @abstractmethod
    def discard(self) -> None:
        """Release what the backend holds without saving anything still queued (after a failure)."""

    # ---- helpers built on the primitives -------------------------------------------

    def stat(self, path: str, *, follow: bool = False) -> GuestStat:
        """The inode at ``path``; a final symbolic link is followed only with ``follow``."""
        path = guest_path(path)
        if follow:
            path = self.resolve(path)
        found = self.stat_many([path])[path]
        if found is None:
            raise GuestFileNotFoundError(f"{path} does not exist in {self.description}.")
        return found

    def lstat_or_none(self, path: str) -> GuestStat | None:
        path = guest_path(path)
        return self.stat_many([path])[path]

    def exists(self, path: str) -> bool:
        """True if something (even a dangling symbolic link) is at ``path``."""
        return self.lstat_or_none(path) is not None

    def is_dir(self, path: str) -> bool:
        """True if ``path`` is a directory or a link to one."""
        try:
            return self.stat(path, follow=True).is_dir
        except GuestFileNotFoundError:
            return False

    def is_file(self, path: str) -> bool:
        """True if ``path`` is a regular file or a link to one."""
        try:
            return self.stat(path, follow=True).is_file
        except GuestFileNotFoundError:
            return False

    def resolve(self, path: str) -> str:
        """``path`` with final symbolic links followed (intermediate ones are followed by the
        lookup itself); GuestFileNotFoundError if a link dangles."""
        path = guest_path(path)
        for _ in range(MAX_SYMLINK_HOPS):
            found = self.stat_many([path])[path]
            if found is None:
                raise GuestFileNotFoundError(f"{path} does not exist in {self.description}.")
            if not found.is_symlink:
                return path
            path = resolve_link(path, found.link_target or "")
        raise GuestFilesystemError(f"Too many levels of symbolic links at {path} in {self.description}.")

    def listdir(self, path: str) -> list[DirEntry]:
        """The entries of a directory (a link to a directory is followed)."""
        real = self.resolve(path)
        return self.listdir_many([real])[real]

    def walk(self, top: str) -> Iterator[tuple[str, list[DirEntry]]]:
        """``(directory, entries)`` for ``top`` and every directory below it, top first.

        Symbolic links to directories are not descended into (no loops, no escaping ``top``).
        One backend call per depth level keeps it fast on wide trees.
        """
        level = [self.resolve(top)]
        seen = 0
        while level:
            listings = self.listdir_many(level)
            next_level: list[str] = []
            for directory in level:
                entries = listings[directory]
                seen += len(entries)
                if seen > MAX_WALK_ENTRIES:
                    raise GuestFilesystemError(
                        f"{top} in {self.description} holds more than {MAX_WALK_ENTRIES} entries."
                    )
                yield directory, entries
                next_level += [join(directory, e.name) for e in entries if e.is_dir]
            level = next_level

    def glob(self, pattern: str) -> list[str]:
        """Paths matching a shell-style pattern, one wildcard level per component.

        Unlike a shell, ``*`` also matches names starting with '.', as sysprep wants
        (``/tmp/*`` must include ``/tmp/.X11-unix``). Sorted; missing parents give no match.
        """
        pattern = guest_path(pattern)
        parts = [p for p in pattern.split("/") if p]
        current = ["/"]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if not _has_magic(part):
                candidates = [join(c, part) for c in current]
                if last:
                    found = self.stat_many(candidates)
                    current = [c for c in candidates if found[c] is not None]
                else:
                    current = candidates
                continue
            directories = self.existing_dirs(current)
            listings = self.listdir_many(directories) if directories else {}
            matched: list[str] = []
            for directory in directories:
                for entry in listings[directory]:
                    if fnmatch.fnmatchcase(entry.name, part):
                        matched.append(join(directory, entry.name))
            current = matched
            if not current:
                return []
        return sorted(current)

    def existing_dirs(self, paths: Iterable[str]) -> list[str]:
        """The real paths of those ``paths`` that are directories (final links followed),
        in order, without repeats; one lookup for all of them."""
        wanted = [guest_path(p) for p in paths]
        found = self.stat_many(wanted)
        result: list[str] = []
        for path in wanted:
            real, info = path, found[path]
            if info is not None and info.is_symlink:
                try:
                    real = self.resolve(path)
                except GuestFileNotFoundError:
                    continue
                info = self.stat_many([real])[real]
            if info is not None and info.is_dir and real not in result:
                result.append(real)
        return result

    def read_text(self, path: str, *, limit: int = DEFAULT_READ_LIMIT) -> str:
        """A file's content as text (UTF-8; undecodable bytes kept as surrogate escapes)."""
        return self.read_file(path, limit=limit).decode("utf-8", "surrogateescape")

    def write_text(
        self, path: str, text: str, *, mode: int | None = None, uid: int | None = None, gid: int | None = None
    ) -> None:
        self.write_file(path, text.encode("utf-8", "surrogateescape"), mode=mode, uid=uid, gid=gid)

    def file_type(self, path: str) -> FileType | None:
        found = self.lstat_or_none(path)
        return None if found is None else found.type


def _has_magic(part: str) -> bool:
    return any(ch in part for ch in "*?[")


def host_path_ok(path: Path) -> str:
    """A host path as text, refusing names debugfs could not be given."""
    text = os.fspath(path)
    if any(ch in text for ch in "\0\n\r"):
        raise GuestFilesystemError(f"The host path {text!r} contains a control character.")
    return text
