"""``GuestFS``: the one contract of guest file access, and the helpers built on it.

Every public method here is a template method (the shape of cloud-init's ``DataSource.get_data``
calling a datasource's ``_get_data``): it normalises the paths, checks every argument, looks up
what it needs, decides what the operation means (which mode a replaced file keeps, which
directories ``mkdir -p`` creates, whether a directory is empty) and says every refusal in one
sentence; only then does it call a backend's ``_primitive`` with checked, real paths. A backend
(``e2fs``: debugfs; ``libguestfs``: guestfish) implements the primitives and nothing else, so
both accept and refuse exactly the same calls with the same messages
(``tests/guest/test_contract.py`` runs the same cases against both).

The rules, decided once:
- a guest path is absolute, without NUL or line breaks, at most 4095 bytes (``model.guest_path``);
  a write resolves the parent's symbolic links inside the guest and names the real directory;
- a symbolic link target follows the same character rule (non-empty, no NUL, no line breaks;
  Linux itself allows line breaks, but a target is a path and imagewright refuses paths with
  line breaks everywhere), at most 4095 bytes (PATH_MAX - 1);
- a mode is 0 to 0o7777; a user or group id is 0 to 2^32 - 2 (2^32 - 1 is ``(uid_t) -1``, which
  ``chown(2)`` reads as "leave unchanged": no inode can be given it);
- ``chmod`` of a symbolic link is refused (Linux gives links no mode of their own);
  ``chown`` of one changes the link itself (``lchown``);
- a guest opened read-only refuses every write call, whether or not it would change anything.

Reads are cached until the next write (every write goes through ``_changing``), so a sequence
of reads costs one backend round per new batch of paths. Backends may queue writes and run them
in batches; a read always sees every earlier write.
"""

from __future__ import annotations

import fnmatch
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from imagewright.errors import GuestFilesystemError, InvalidArgumentError
from imagewright.guest.model import (
    MAX_PATH_BYTES,
    MAX_SYMLINK_HOPS,
    DirEntry,
    FileType,
    GuestFileNotFoundError,
    GuestStat,
    guest_path,
    join,
)

#: Largest file ``read_file`` returns in memory; bigger ones go through ``copy_out``.
DEFAULT_READ_LIMIT = 64 * 1024 * 1024
#: Most entries a recursive walk visits before deciding the tree is hostile.
MAX_WALK_ENTRIES = 1_000_000
#: Longest symbolic link target Linux accepts (PATH_MAX - 1).
MAX_LINK_TARGET = MAX_PATH_BYTES
#: Largest user or group id an inode can be given (2^32 - 1 means "unchanged" to chown).
MAX_ID = 2**32 - 2


def check_mode(mode: int) -> int:
    """``mode`` if it is a permission mode (0 to 0o7777, set-uid/set-gid/sticky included)."""
    if type(mode) is not int or not 0 <= mode <= 0o7777:
        shown = f"{mode:o}" if type(mode) is int else repr(mode)
        raise InvalidArgumentError(f"'{shown}' is not a file mode (0000 to 7777).")
    return mode


def check_id(value: int) -> int:
    """``value`` if it is a user or group id an inode can hold."""
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise InvalidArgumentError(f"{value!r} is not a user or group id (0 to {MAX_ID}).")
    return value


def check_link_target(target: str) -> str:
    """``target`` if it can be stored as a symbolic link's target (see the module docstring)."""
    if not isinstance(target, str) or not target or any(ch in target for ch in "\0\n\r"):
        raise InvalidArgumentError("A symbolic link target must be non-empty, without NUL or line breaks.")
    if len(target.encode("utf-8", "surrogateescape")) > MAX_LINK_TARGET:
        raise InvalidArgumentError(
            f"A symbolic link target is longer than Linux allows ({MAX_LINK_TARGET} bytes)."
        )
    return target


def host_path_ok(path: Path) -> str:
    """A host path as text, refusing names a backend's command language could not carry."""
    text = os.fspath(path)
    if any(ch in text for ch in "\0\n\r"):
        raise GuestFilesystemError(f"The host path {text!r} contains a control character.")
    return text


class GuestFS(ABC):
    """Files inside one guest filesystem. All paths are absolute guest paths."""

    def __init__(self, *, description: str, fs_type: str, writable: bool) -> None:
        #: What this filesystem is, for messages: "partition 1 (ext4) of disk.qcow2".
        self.description = description
        #: The filesystem type ("ext4", "xfs", ...).
        self.fs_type = fs_type
        self.writable = writable
        #: The qemu format of the image file the filesystem came from ("raw", "qcow2" ...).
        self.image_format = ""
        #: Set by the first write; a guest nothing was written to need not be saved.
        self.modified = False
        self._stat_cache: dict[str, GuestStat | None] = {}
        self._list_cache: dict[str, list[DirEntry]] = {}

    # ---- primitives every backend implements ------------------------------------------
    # Paths given to them are normalised; a write's parent is a real directory (no link).

    @abstractmethod
    def _lstat_many(self, paths: list[str]) -> dict[str, GuestStat | None]:
        """``lstat`` of each path; None where nothing is there."""

    @abstractmethod
    def _listdir_many(self, directories: list[str]) -> dict[str, list[DirEntry]]:
        """The entries of each directory (each is known to be a directory, not a link)."""

    @abstractmethod
    def _read_file(self, real: str, limit: int) -> bytes:
        """The content of the regular file ``real`` (known to be at most ``limit`` bytes)."""

    @abstractmethod
    def _copy_out(self, real: str, host_path: str) -> None:
        """Copy the regular file ``real`` to a new host file."""

    @abstractmethod
    def _write_file(
        self, real: str, content: bytes | Path, *, replaces: GuestStat | None, mode: int, uid: int, gid: int
    ) -> None:
        """Make ``real`` a regular file holding ``content`` (bytes, or an absolute host file
        to stream) with exactly this mode and owner. ``replaces`` is what is there now (a
        file, link or special file; never a directory), which goes."""

    @abstractmethod
    def _remove(self, targets: list[GuestStat]) -> None:
        """Remove each of these (found by ``lstat`` at their real paths); a directory with
        everything below it."""

    @abstractmethod
    def _set_mode(self, found: GuestStat, mode: int) -> None:
        """Set the permission bits of ``found`` (not a symbolic link)."""

    @abstractmethod
    def _set_owner(self, found: GuestStat, uid: int, gid: int) -> None:
        """Set the owner of ``found`` itself (a symbolic link is not followed)."""

    @abstractmethod
    def _symlink(self, target: str, real: str) -> None:
        """Create a symbolic link at ``real`` (nothing is there) pointing to ``target``."""

    @abstractmethod
    def _mkdir(self, real: str, *, mode: int, uid: int, gid: int) -> None:
        """Create the directory ``real`` (its parent exists, nothing is at ``real``)."""

    @abstractmethod
    def _truncate(self, real: str) -> None:
        """Cut the regular file ``real`` to zero bytes, keeping its inode, owner and mode."""

    @abstractmethod
    def flush(self) -> None:
        """Run every queued write now."""

    def close(self) -> None:
        """Finish: flush queued writes and release what the backend holds."""
        self.flush()

    @abstractmethod
    def discard(self) -> None:
        """Release what the backend holds without saving anything still queued (after a failure)."""

    def ready_for_writes(self) -> None:
        """Make now the checks the backend makes before its first write (ext2/3/4: a pending
        journal replayed, e2fsck finding the filesystem clean), so a caller learns that the
        guest cannot be edited before anything is written. Backends without such checks
        (libguestfs: its appliance refuses a filesystem it cannot mount) have nothing to do."""
        return None

    def _check(self) -> tuple[str, str] | None:
        """The filesystem's own checker on it as it is now: ``(checker, first problem)``, or
        None when clean or when the backend has no checker of its own."""
        return None

    # ---- reads ----------------------------------------------------------------------

    def stat_many(self, paths: Sequence[str]) -> dict[str, GuestStat | None]:
        """``lstat`` of each path (a final symlink is not followed); None where it is missing.

        Keyed by the normalised paths and by the caller's spellings.
        """
        checked = list(dict.fromkeys(guest_path(p) for p in paths))
        missing = [p for p in checked if p not in self._stat_cache]
        if missing:
            self._stat_cache.update(self._lstat_many(missing))
        result: dict[str, GuestStat | None] = {p: self._stat_cache[p] for p in checked}
        for original in paths:
            result.setdefault(original, result[guest_path(original)])
        return result

    def listdir_many(self, paths: Sequence[str]) -> dict[str, list[DirEntry]]:
        """The entries of each directory (not following a final symlink of the path itself)."""
        checked = list(dict.fromkeys(guest_path(p) for p in paths))
        found = self.stat_many([p for p in checked if p not in self._list_cache])
        for path, info in found.items():
            if info is None:
                raise GuestFileNotFoundError(f"{path} does not exist in {self.description}.")
            if not info.is_dir:
                raise GuestFilesystemError(f"{path} in {self.description} is not a directory.")
        listed = self._listed(checked)
        for original in paths:
            listed.setdefault(original, listed[guest_path(original)])
        return listed

    def _listed(self, directories: list[str]) -> dict[str, list[DirEntry]]:
        """Listings of paths known to be directories, through the cache."""
        missing = [p for p in directories if p not in self._list_cache]
        if missing:
            self._list_cache.update(self._listdir_many(missing))
        return {p: list(self._list_cache[p]) for p in directories}

    def read_file(self, path: str, *, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """The content of a regular file, following symbolic links."""
        real, found = self._regular(path)
        if found.size > limit:
            raise GuestFilesystemError(
                f"{path} in {self.description} is {found.size} bytes, more than the {limit} read at once."
            )
        return self._read_file(real, limit)

    def copy_out(self, path: str, host_path: Path) -> None:
        """Copy a regular guest file (links followed) to a new host file."""
        text = host_path_ok(host_path)
        real, _ = self._regular(path)
        self._copy_out(real, text)

    def readlink(self, path: str) -> str:
        """The target of a symbolic link."""
        found = self.stat(path)
        if not found.is_symlink or found.link_target is None:
            raise GuestFilesystemError(f"{found.path} in {self.description} is not a symbolic link.")
        return found.link_target

    def _regular(self, path: str) -> tuple[str, GuestStat]:
        """The real path of a regular file (links followed) and its inode."""
        real = self.resolve(path)
        found = self.stat_many([real])[real]
        assert found is not None
        if not found.is_file:
            raise GuestFilesystemError(f"{path} in {self.description} is a {found.type.value}, not a file.")
        return real, found

    # ---- writes -----------------------------------------------------------------------

    def _require_writable(self, what: str) -> None:
        if not self.writable:
            raise GuestFilesystemError(f"{self.description} was opened read-only; cannot {what}.")

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Around the primitives of one write: afterwards (even after a failure half-way)
        nothing read before is trusted, and the guest counts as modified."""
        try:
            yield
        finally:
            self._stat_cache.clear()
            self._list_cache.clear()
            self.modified = True

    def _real_paths(self, paths: Sequence[str]) -> dict[str, str]:
        """Each path with its parent's symbolic links resolved inside the guest; the parent
        must be a directory. One lookup for the common case of plain parents."""
        checked = [guest_path(p) for p in paths]
        parents = {p: p.rpartition("/")[0] or "/" for p in checked}
        found = self.stat_many([*parents.values(), *checked])
        result: dict[str, str] = {}
        for path in checked:
            if path == "/":
                result[path] = path
                continue
            parent = parents[path]
            info = found[parent]
            real_parent = parent
            if info is None or info.is_symlink:
                try:
                    real_parent = self.resolve(parent)
                except GuestFileNotFoundError:
                    raise GuestFileNotFoundError(
                        f"The directory {parent} does not exist in {self.description}."
                    ) from None
                info = self.stat_many([real_parent])[real_parent]
            if info is None or not info.is_dir:
                raise GuestFilesystemError(f"{parent} in {self.description} is not a directory.")
            result[path] = join(real_parent, path.rpartition("/")[2])
        return result

    def _real_path(self, path: str) -> str:
        return self._real_paths([path])[guest_path(path)]

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
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgumentError(f"The content of {path} must be bytes.")
        self._install(path, bytes(data), mode=mode, uid=uid, gid=gid)

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
        if not host_path.is_file():
            raise GuestFilesystemError(f"{host_path} is not a regular file on this machine.")
        self._install(path, host_path.absolute(), mode=mode, uid=uid, gid=gid)

    def _install(
        self, path: str, content: bytes | Path, *, mode: int | None, uid: int | None, gid: int | None
    ) -> None:
        path = guest_path(path)
        for given, check in ((mode, check_mode), (uid, check_id), (gid, check_id)):
            if given is not None:
                check(given)
        self._require_writable(f"write {path}")
        real = self._real_path(path)
        existing = self.stat_many([real])[real]
        if existing is not None and existing.is_dir:
            raise GuestFilesystemError(f"{path} in {self.description} is a directory.")
        keep = existing if existing is not None and existing.is_file else None
        with self._changing():
            self._write_file(
                real,
                content,
                replaces=existing,
                mode=mode if mode is not None else (keep.mode if keep else 0o644),
                uid=uid if uid is not None else (keep.uid if keep else 0),
                gid=gid if gid is not None else (keep.gid if keep else 0),
            )

    def delete(self, path: str, *, recursive: bool = False, missing_ok: bool = False) -> None:
        """Remove a file, link or special file; a directory only if empty or ``recursive``."""
        self.delete_many([path], recursive=recursive, missing_ok=missing_ok)

    def delete_many(
        self, paths: Sequence[str], *, recursive: bool = True, missing_ok: bool = True
    ) -> dict[str, GuestStat]:
        """Delete several paths (trees included); returns what was there, by normalised path."""
        wanted = list(dict.fromkeys(guest_path(p) for p in paths))
        if "/" in wanted:
            raise GuestFilesystemError("Refusing to delete the root directory of a guest.")
        self._require_writable(f"delete {wanted[0]}" if wanted else "delete")
        present = self.stat_many(wanted)
        absent = [p for p in wanted if present[p] is None]
        if absent and not missing_ok:
            raise GuestFileNotFoundError(f"{absent[0]} does not exist in {self.description}.")
        real = self._real_paths([p for p in wanted if present[p] is not None])
        found = self.stat_many(list(real.values()))
        deleted = {path: info for path, target in real.items() if (info := found[target]) is not None}
        if not recursive:
            directories = [info.path for info in deleted.values() if info.is_dir]
            listings = self._listed(directories)
            for path, info in deleted.items():
                if info.is_dir and listings[info.path]:
                    raise GuestFilesystemError(f"The directory {path} in {self.description} is not empty.")
        if deleted:
            with self._changing():
                self._remove(list(deleted.values()))
        return deleted

    def truncate(self, path: str) -> None:
        """Cut a regular file (links followed) to zero bytes, keeping its inode, owner and mode."""
        self.truncate_many([path])

    def truncate_many(self, paths: Sequence[str]) -> None:
        if not paths:
            return
        self._require_writable(f"truncate {paths[0]}")
        found = self.stat_many(paths)
        work: list[str] = []
        for path in paths:
            info = found[path]
            real = guest_path(path)
            if info is None or not info.is_file:
                real, info = self._regular(path)
            if info.size and real not in work:
                work.append(real)
        if work:
            with self._changing():
                for real in work:
                    self._truncate(real)

    def chmod(self, path: str, mode: int) -> None:
        """Set the permission bits (``0o7777``) of a path; a symbolic link is refused."""
        check_mode(mode)
        self._require_writable(f"set the mode of {path}")
        found = self.stat(path)
        if found.is_symlink:
            raise GuestFilesystemError(
                f"{found.path} in {self.description} is a symbolic link; "
                "Linux gives links no mode of their own."
            )
        with self._changing():
            self._set_mode(found, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        """Set the owner of a path (a final symlink itself)."""
        check_id(uid)
        check_id(gid)
        self._require_writable(f"set the owner of {path}")
        found = self.stat(path)
        with self._changing():
            self._set_owner(found, uid, gid)

    def symlink(self, target: str, path: str) -> None:
        """Create a symbolic link at ``path`` pointing to ``target`` (stored as given)."""
        check_link_target(target)
        path = guest_path(path)
        self._require_writable(f"create the symbolic link {path}")
        real = self._real_path(path)
        if self.stat_many([real])[real] is not None:
            raise GuestFilesystemError(f"{path} already exists in {self.description}.")
        with self._changing():
            self._symlink(target, real)

    def mkdir(
        self, path: str, *, parents: bool = False, mode: int = 0o755, uid: int = 0, gid: int = 0
    ) -> None:
        """Create a directory; with ``parents`` also missing parents, and no error if it exists."""
        path = guest_path(path)
        check_mode(mode)
        check_id(uid)
        check_id(gid)
        self._require_writable(f"create the directory {path}")
        prefixes = [path]
        while parents and prefixes[-1] != "/":
            prefixes.append(prefixes[-1].rpartition("/")[0] or "/")
        found = self.stat_many(prefixes)  # one lookup for every level
        missing: list[str] = []
        for current in prefixes:
            if current == "/":
                break
            info = found[current]
            if info is not None:
                if info.is_dir or (info.is_symlink and self.is_dir(current)):
                    break
                raise GuestFilesystemError(f"{current} in {self.description} exists and is not a directory.")
            missing.append(current)
        if not missing:
            if not parents:
                raise GuestFilesystemError(f"{path} already exists in {self.description}.")
            return
        base = self._real_path(missing[-1]).rpartition("/")[0] or "/"
        with self._changing():
            for created in reversed(missing):
                base = join(base, created.rpartition("/")[2])
                self._mkdir(base, mode=mode, uid=uid, gid=gid)

    def verify_edits(self) -> None:
        """After the last change: refuse a filesystem its own checker finds errors in (e2fsck -fn
        for ext2/3/4), so that the caller does not save it."""
        self.flush()
        found = self._check()
        if found is not None:
            checker, problem = found
            raise GuestFilesystemError(
                f"{checker} finds errors in {self.description} after editing ({problem}); "
                "the image was left unchanged."
            )

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
        """``realpath(3)`` inside the guest: every symbolic link followed, each relative target
        taken from the directory the link really is in (``/sbin/init -> ../lib/systemd/systemd``
        with ``/sbin -> usr/sbin`` is ``/usr/lib/systemd/systemd``), an absolute one from the
        guest's root. GuestFileNotFoundError if a component is missing (a link dangles)."""
        pending = [part for part in guest_path(path).split("/") if part]
        real = "/"
        hops = 0
        while pending:
            # One backend call for every prefix still ahead (cached; a link changes the guess).
            ahead, prefix = [], real
            for part in pending:
                if part == "..":
                    break
                prefix = join(prefix, part) if part != "." else prefix
                ahead.append(prefix)
            self.stat_many(ahead)
            part = pending.pop(0)
            if part == ".":
                continue
            if part == "..":
                real = real.rpartition("/")[0] or "/"
                continue
            candidate = join(real, part)
            found = self.lstat_or_none(candidate)
            if found is None:
                raise GuestFileNotFoundError(f"{guest_path(path)} does not exist in {self.description}.")
            if not found.is_symlink:
                real = candidate
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise GuestFilesystemError(
                    f"Too many levels of symbolic links at {guest_path(path)} in {self.description}."
                )
            target = found.link_target or ""
            if target.startswith("/"):
                real = "/"
            pending[:0] = [p for p in target.split("/") if p]
        return real

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
        self.listdir_many(level)  # refuses a top that is not a directory
        seen = 0
        while level:
            listings = self._listed(level)
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
            listings = self._listed(directories) if directories else {}
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
