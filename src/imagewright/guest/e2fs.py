"""The ext2/3/4 backend: guest files through debugfs, without mounting anything.

Reads run at once (one debugfs process for a whole batch of paths). Writes are queued and
run together with the next read, or at ``flush``; debugfs is opened read-write only for a
batch that holds writes. debugfs reports most failures on its output and still exits 0, so
every queued command's output is checked against what success looks like for that command.

Path handling: debugfs's lookup (libext2fs ``ext2fs_namei``) follows symbolic links in the
middle of a path, inside the guest (an absolute link target starts at the guest's root),
but not a final one. Its commands that create or remove a name (``write``, ``mkdir``,
``symlink``, ``rm``) look the parent up the same way, so a parent that is itself a
symbolic link would be used as if it were the directory; every write here therefore
resolves the parent first and names the real directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import GuestFilesystemError, InvalidArgumentError
from imagewright.guest.base import DEFAULT_READ_LIMIT, GuestFS, host_path_ok
from imagewright.guest.model import (
    DirEntry,
    FileType,
    GuestFileNotFoundError,
    GuestStat,
    guest_path,
    join,
)
from imagewright.programs import e2fs
from imagewright.programs.e2fs import DebugfsCommand, command

#: Longest symbolic link target Linux accepts (PATH_MAX - 1).
MAX_LINK_TARGET = 4095

_TYPE_WORDS: dict[bytes, FileType] = {
    b"regular": FileType.REGULAR,
    b"directory": FileType.DIRECTORY,
    b"symlink": FileType.SYMLINK,
    b"character special": FileType.CHAR_DEVICE,
    b"block special": FileType.BLOCK_DEVICE,
    b"FIFO": FileType.FIFO,
    b"socket": FileType.SOCKET,
}

# debugfs "stat" (debugfs.c dump_inode), e.g.
#   Inode: 14   Type: symlink    Mode:  0777   Flags: 0x0
#   User:     0   Group:     0   Project:     0   Size: 9
#   Links: 1   Blockcount: 0
#    mtime: 0x6b029fd3:00000000 -- Sun Nov 22 07:54:59 2026      (small inodes: no ":extra")
#   Fast link dest: "/dev/null"
_STAT_HEAD = re.compile(rb"Inode: (\d+)\s+Type: ([A-Za-z ]+?)\s+Mode:\s+([0-7]+)\s+Flags:")
_STAT_OWNER = re.compile(rb"^User:\s*(\d+)\s+Group:\s*(\d+)(?:\s+Project:\s*\d+)?\s+Size:\s*(\d+)", re.M)
_STAT_LINKS = re.compile(rb"^Links:\s*(\d+)", re.M)
_STAT_MTIME = re.compile(rb"^\s*mtime:\s*0x([0-9a-fA-F]{1,8})(?::([0-9a-fA-F]{1,8}))?", re.M)
_FAST_LINK = b'Fast link dest: "'

# debugfs "ls -p" (ls.c): "/ino/mode/uid/gid/name/size/" per entry, size empty for
# directories. A name never contains '/', so a record parses unambiguously even when the
# name holds a line break.
_LS_RECORD = re.compile(rb"/(\d+)/([0-7]+)/(\d+)/(\d+)/([^/]*)/(\d*)/\n")

_NOT_FOUND_MARKERS = (b"File not found by ext2_lookup", b"Ext2 inode is not a directory")
_ALLOCATED = re.compile(rb"^Allocated inode: \d+\n?$")


def _decode(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _first_line(output: bytes) -> str:
    for line in output.split(b"\n"):
        if line.strip():
            return line.strip().decode("utf-8", "replace")
    return "no message"


def _expect_silence(output: bytes) -> bool:
    return not output.strip()


def _expect_allocated(output: bytes) -> bool:
    return bool(_ALLOCATED.match(output))


@dataclass(frozen=True)
class _Queued:
    command: DebugfsCommand
    #: What the command does, for the error message: "delete /etc/ssh/ssh_host_rsa_key".
    what: str
    accept: Callable[[bytes], bool]


class E2fsGuest(GuestFS):
    """An ext2/3/4 filesystem at ``offset`` bytes into a raw image file."""

    def __init__(
        self,
        raw_image: Path,
        *,
        offset: int = 0,
        writable: bool = False,
        fs_type: str = "ext4",
        description: str = "the guest filesystem",
        verify: bool = True,
    ) -> None:
        self.device = e2fs.device_name(raw_image, offset)
        self.writable = writable
        self.fs_type = fs_type
        self.description = description
        self._verify = verify
        self._pending: list[_Queued] = []
        self._scratch = Path(tempfile.mkdtemp(prefix="imagewright-guest-"))
        self._scratch_files: list[Path] = []
        self._counter = 0
        self._ready_for_writes = False
        self._broken: str | None = None
        #: Set once any write has run; ``check`` is only needed then.
        self.modified = False
        # Reads are cached until the next write is queued (every write goes through _queue),
        # so a sequence of reads costs one debugfs run per new batch of paths.
        self._stat_cache: dict[str, GuestStat | None] = {}
        self._list_cache: dict[str, list[DirEntry]] = {}

    # ---- running debugfs -----------------------------------------------------------

    def _run(self, reads: Sequence[DebugfsCommand]) -> list[bytes]:
        """Run queued writes, then ``reads``, in one debugfs process; outputs of the reads."""
        if self._broken is not None:
            raise GuestFilesystemError(self._broken)
        pending, self._pending = self._pending, []
        if not pending and not reads:
            return []
        # Scratch files hold data of queued writes; later ones belong to later batches.
        scratch_files, self._scratch_files = self._scratch_files, []
        if pending:
            self._prepare_for_writes()
        try:
            outputs = e2fs.run_debugfs(
                self.device, [q.command for q in pending] + list(reads), writable=bool(pending)
            )
        except BaseException:
            if pending:
                self._broken = f"An earlier change to {self.description} failed; it is left unfinished."
            raise
        finally:
            for scratch in scratch_files:
                scratch.unlink(missing_ok=True)
        if pending:
            self.modified = True
        for queued, output in zip(pending, outputs, strict=False):
            if not queued.accept(output):
                self._broken = f"An earlier change to {self.description} failed; it is left unfinished."
                raise GuestFilesystemError(
                    f"debugfs could not {queued.what} in {self.description}: {_first_line(output)}"
                )
        return outputs[len(pending) :]

    def _queue(
        self, cmd: DebugfsCommand, what: str, accept: Callable[[bytes], bool] = _expect_silence
    ) -> None:
        if not self.writable:
            raise GuestFilesystemError(f"{self.description} was opened read-only; cannot {what}.")
        if self._broken is not None:
            raise GuestFilesystemError(self._broken)
        cmd.line()  # validate now, so a bad name fails where it was given
        self._pending.append(_Queued(cmd, what, accept))
        self._stat_cache.clear()
        self._list_cache.clear()

    def _prepare_for_writes(self) -> None:
        """Before the first write: replay a pending journal, and refuse a damaged filesystem.

        A journal with unreplayed transactions would overwrite our changes at the next mount;
        a filesystem e2fsck already finds errors in would be made worse by any write.
        """
        if self._ready_for_writes:
            return
        superblock = e2fs.read_superblock(self.device)
        if superblock.needs_recovery:
            e2fs.e2fsck_replay_journal(self.device)
        if self._verify:
            result = e2fs.e2fsck_check(self.device)
            if not result.clean:
                raise GuestFilesystemError(
                    f"e2fsck finds errors in {self.description} before any change "
                    f"({result.first_problem()}); repair it with e2fsck -f first."
                )
        self._ready_for_writes = True

    def check(self) -> e2fs.FsckResult:
        """``e2fsck -fn`` of the filesystem as it is now (queued writes run first)."""
        self.flush()
        return e2fs.e2fsck_check(self.device)

    def flush(self) -> None:
        if self._pending:
            self._run([])

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop queued writes and the scratch directory (after a failure, or when done)."""
        self._pending = []
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _scratch_file(self) -> Path:
        self._counter += 1
        path = self._scratch / f"f{self._counter}"
        self._scratch_files.append(path)
        return path

    # ---- reads -------------------------------------------------------------------------

    def stat_many(self, paths: Sequence[str]) -> dict[str, GuestStat | None]:
        checked = list(dict.fromkeys(guest_path(p) for p in paths))
        missing = [p for p in checked if p not in self._stat_cache]
        if missing:
            self._stat_cache.update(self._stat_uncached(missing))
        result: dict[str, GuestStat | None] = {p: self._stat_cache[p] for p in checked}
        # Keep the caller's spelling as keys too (they are normalised the same way).
        for original in paths:
            result.setdefault(original, result[guest_path(original)])
        return result

    def _stat_uncached(self, checked: list[str]) -> dict[str, GuestStat | None]:
        outputs = self._run([command("stat", p) for p in checked])
        result: dict[str, GuestStat | None] = {}
        slow_links: list[str] = []
        for path, output in zip(checked, outputs, strict=True):
            found = self._parse_stat(path, output)
            result[path] = found
            if found is not None and found.is_symlink and found.link_target is None:
                slow_links.append(path)
        if slow_links:
            for path, target in zip(slow_links, self._dump_many(slow_links, MAX_LINK_TARGET), strict=True):
                old = result[path]
                assert old is not None
                result[path] = dataclasses.replace(old, link_target=_decode(target))
        return result

    def _parse_stat(self, path: str, output: bytes) -> GuestStat | None:
        head = _STAT_HEAD.match(output)
        if head is None:
            if any(marker in output for marker in _NOT_FOUND_MARKERS):
                return None
            raise GuestFilesystemError(
                f"debugfs cannot read {path} in {self.description}: {_first_line(output)}"
            )
        owner = _STAT_OWNER.search(output)
        links = _STAT_LINKS.search(output)
        mtime = _STAT_MTIME.search(output)
        if owner is None or links is None:
            raise GuestFilesystemError(f"debugfs printed an inode record for {path} imagewright cannot read.")
        file_type = _TYPE_WORDS.get(head.group(2).strip(), FileType.UNKNOWN)
        size = int(owner.group(3))
        seconds = 0
        if mtime is not None:
            base = int(mtime.group(1), 16)
            base = base - (1 << 32) if base & (1 << 31) else base
            extra = int(mtime.group(2), 16) if mtime.group(2) else 0
            seconds = base + ((extra & 3) << 32)
        target: str | None = None
        if file_type is FileType.SYMLINK:
            where = output.find(_FAST_LINK)
            if where >= 0:
                # The target is printed raw between quotes; its length is the inode size.
                start = where + len(_FAST_LINK)
                target = _decode(output[start : start + min(size, MAX_LINK_TARGET)])
        return GuestStat(
            path=path,
            type=file_type,
            mode=int(head.group(3), 8) & 0o7777,
            uid=int(owner.group(1)),
            gid=int(owner.group(2)),
            size=size,
            mtime=seconds,
            links=int(links.group(1)),
            inode=int(head.group(1)),
            link_target=target,
        )

    def _dump_many(self, paths: Sequence[str], limit: int) -> list[bytes]:
        """The data of each inode (regular files, slow symlinks), through host scratch files."""
        targets = [self._scratch / f"d{i}" for i in range(len(paths))]
        outputs = self._run([command("dump", p, str(t)) for p, t in zip(paths, targets, strict=True)])
        contents: list[bytes] = []
        try:
            for path, target, output in zip(paths, targets, outputs, strict=True):
                if output.strip() or not target.exists():
                    raise GuestFilesystemError(
                        f"debugfs cannot read {path} in {self.description}: {_first_line(output)}"
                    )
                if target.stat().st_size > limit:
                    raise GuestFilesystemError(f"{path} in {self.description} is larger than {limit} bytes.")
                contents.append(target.read_bytes())
        finally:
            for target in targets:
                target.unlink(missing_ok=True)
        return contents

    def listdir_many(self, paths: Sequence[str]) -> dict[str, list[DirEntry]]:
        checked = list(dict.fromkeys(guest_path(p) for p in paths))
        missing = [p for p in checked if p not in self._list_cache]
        if missing:
            outputs = self._run([command("ls", "-p", p) for p in missing])
            for path, output in zip(missing, outputs, strict=True):
                self._list_cache[path] = self._parse_listing(path, output)
        result = {p: list(self._list_cache[p]) for p in checked}
        for original in paths:
            result.setdefault(original, result[guest_path(original)])
        return result

    def _parse_listing(self, path: str, output: bytes) -> list[DirEntry]:
        entries: list[DirEntry] = []
        position = 0
        while position < len(output):
            if output[position : position + 1] == b"\n":
                position += 1
                continue
            record = _LS_RECORD.match(output, position)
            if record is None:
                if b"not a directory" in output:
                    raise GuestFilesystemError(f"{path} in {self.description} is not a directory.")
                if any(marker in output for marker in _NOT_FOUND_MARKERS):
                    raise GuestFileNotFoundError(f"{path} does not exist in {self.description}.")
                raise GuestFilesystemError(
                    f"debugfs cannot list {path} in {self.description}: {_first_line(output[position:])}"
                )
            position = record.end()
            name = _decode(record.group(5))
            if name in (".", ".."):
                continue
            mode = int(record.group(2), 8)
            entries.append(
                DirEntry(
                    name=name,
                    type=FileType.from_mode(mode),
                    mode=mode & 0o7777,
                    uid=int(record.group(3)),
                    gid=int(record.group(4)),
                    size=int(record.group(6) or 0),
                    inode=int(record.group(1)),
                )
            )
        return entries

    def _regular(self, path: str) -> tuple[str, GuestStat]:
        real = self.resolve(path)
        found = self.stat_many([real])[real]
        assert found is not None
        if not found.is_file:
            raise GuestFilesystemError(f"{path} in {self.description} is a {found.type.value}, not a file.")
        return real, found

    def read_file(self, path: str, *, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        real, found = self._regular(path)
        if found.size > limit:
            raise GuestFilesystemError(
                f"{path} in {self.description} is {found.size} bytes, more than the {limit} read at once."
            )
        return self._dump_many([real], limit)[0]

    def copy_out(self, path: str, host_path: Path) -> None:
        real, _ = self._regular(path)
        output = self._run([command("dump", real, host_path_ok(host_path))])[0]
        if output.strip():
            raise GuestFilesystemError(
                f"debugfs cannot read {path} in {self.description}: {_first_line(output)}"
            )

    def readlink(self, path: str) -> str:
        found = self.stat(path)
        if not found.is_symlink or found.link_target is None:
            raise GuestFilesystemError(f"{found.path} in {self.description} is not a symbolic link.")
        return found.link_target

    # ---- writes ------------------------------------------------------------------------

    def _real_path(self, path: str) -> str:
        """``path`` with its parent directory resolved (see the module docstring)."""
        return self._real_paths([path])[guest_path(path)]

    def _real_paths(self, paths: Sequence[str]) -> dict[str, str]:
        """Each path with its parent resolved; one debugfs run for the common case of parents
        that are plain directories (the paths themselves are stat'ed in the same run)."""
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
            if info is None or info.is_symlink:
                try:
                    real_parent = self.resolve(parent)
                except GuestFileNotFoundError:
                    raise GuestFileNotFoundError(
                        f"The directory {parent} does not exist in {self.description}."
                    ) from None
                info = self.stat_many([real_parent])[real_parent]
            else:
                real_parent = parent
            if info is None or not info.is_dir:
                raise GuestFilesystemError(f"{parent} in {self.description} is not a directory.")
            result[path] = join(real_parent, path.rpartition("/")[2])
        return result

    def _install(
        self,
        host_source: Callable[[], str],
        path: str,
        *,
        mode: int | None,
        uid: int | None,
        gid: int | None,
    ) -> None:
        """Queue writing a file; ``host_source`` names the host file once the reads are done
        (a scratch file made earlier would be dropped by the reads' own batch)."""
        real = self._real_path(path)
        existing = self.stat_many([real])[real]
        if existing is not None and existing.is_dir:
            raise GuestFilesystemError(f"{path} in {self.description} is a directory.")
        keep = existing if existing is not None and existing.is_file else None
        final_mode = _check_mode(mode) if mode is not None else (keep.mode if keep else 0o644)
        final_uid = _check_id(uid) if uid is not None else (keep.uid if keep else 0)
        final_gid = _check_id(gid) if gid is not None else (keep.gid if keep else 0)
        if existing is not None:
            self._queue(command("rm", real), f"replace {path}")
        self._queue(command("write", host_source(), real), f"write {path}", _expect_allocated)
        self._set_attributes(real, path, FileType.REGULAR, mode=final_mode, uid=final_uid, gid=final_gid)

    def _set_attributes(self, real: str, path: str, kind: FileType, *, mode: int, uid: int, gid: int) -> None:
        self._queue(command("sif", real, "mode", f"0{kind.ifmt | mode:o}"), f"set the mode of {path}")
        self._queue(command("sif", real, "uid", str(uid)), f"set the owner of {path}")
        self._queue(command("sif", real, "gid", str(gid)), f"set the group of {path}")

    def write_file(
        self,
        path: str,
        data: bytes,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        def source() -> str:
            scratch = self._scratch_file()
            scratch.write_bytes(data)
            return str(scratch)

        self._install(source, path, mode=mode, uid=uid, gid=gid)

    def copy_in(
        self,
        host_path: Path,
        path: str,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        if not host_path.is_file():
            raise GuestFilesystemError(f"{host_path} is not a regular file on this machine.")
        text = os.fspath(host_path.absolute())

        def source() -> str:
            if not any(ch in text for ch in "\0\n\r"):
                return text
            # debugfs reads one command per line: hand it a plainly named link instead.
            link = self._scratch_file()
            link.symlink_to(text)
            return str(link)

        self._install(source, path, mode=mode, uid=uid, gid=gid)

    def delete(self, path: str, *, recursive: bool = False, missing_ok: bool = False) -> None:
        self.delete_many([path], recursive=recursive, missing_ok=missing_ok)

    def delete_many(
        self, paths: Sequence[str], *, recursive: bool = True, missing_ok: bool = True
    ) -> dict[str, GuestStat]:
        if any(guest_path(p) == "/" for p in paths):
            raise GuestFilesystemError("Refusing to delete the root directory of a guest.")
        wanted = list(dict.fromkeys(guest_path(p) for p in paths))
        present = self.stat_many(wanted)
        absent = [p for p in wanted if present[p] is None]
        if absent and not missing_ok:
            raise GuestFileNotFoundError(f"{absent[0]} does not exist in {self.description}.")
        wanted = [p for p in wanted if present[p] is not None]
        real = self._real_paths(wanted)
        found = self.stat_many(list(real.values()))
        deleted: dict[str, GuestStat] = {}
        for path in wanted:
            info = found[real[path]]
            if info is not None:
                deleted[path] = info
        tops = [real[p] for p, info in deleted.items() if info.is_dir]
        files: list[str] = [real[p] for p, info in deleted.items() if not info.is_dir]
        directories: list[str] = list(tops)
        level = tops
        while level:
            listings = self.listdir_many(level)
            next_level: list[str] = []
            for directory in level:
                if listings[directory] and not recursive:
                    raise GuestFilesystemError(
                        f"The directory {directory} in {self.description} is not empty."
                    )
                for entry in listings[directory]:
                    child = join(directory, entry.name)
                    (next_level if entry.is_dir else files).append(child)
            directories += next_level
            level = next_level
        for child in files:
            self._queue(command("rm", child), f"delete {child}")
        # Deepest first: a directory is empty once everything below it is gone.
        for directory in sorted(directories, key=lambda d: d.count("/"), reverse=True):
            self._queue(command("rmdir", directory), f"remove the directory {directory}")
        return deleted

    def chmod(self, path: str, mode: int) -> None:
        found = self.stat(path)
        self._queue(
            command("sif", found.path, "mode", f"0{found.type.ifmt | _check_mode(mode):o}"),
            f"set the mode of {path}",
        )

    def chown(self, path: str, uid: int, gid: int) -> None:
        found = self.stat(path)
        self._queue(command("sif", found.path, "uid", str(_check_id(uid))), f"set the owner of {path}")
        self._queue(command("sif", found.path, "gid", str(_check_id(gid))), f"set the group of {path}")

    def symlink(self, target: str, path: str) -> None:
        if not target or any(ch in target for ch in "\0\n\r"):
            raise InvalidArgumentError(
                "A symbolic link target must be non-empty, without NUL or line breaks."
            )
        if len(target.encode("utf-8", "surrogateescape")) > MAX_LINK_TARGET:
            raise InvalidArgumentError("A symbolic link target is longer than Linux allows.")
        real = self._real_path(path)
        if self.stat_many([real])[real] is not None:
            raise GuestFilesystemError(f"{path} already exists in {self.description}.")
        self._queue(command("symlink", real, target), f"create the symbolic link {path}")

    def mkdir(
        self, path: str, *, parents: bool = False, mode: int = 0o755, uid: int = 0, gid: int = 0
    ) -> None:
        path = guest_path(path)
        _check_mode(mode)
        missing: list[str] = []
        current = path
        prefixes = [path]
        while parents and prefixes[-1] != "/":
            prefixes.append(prefixes[-1].rpartition("/")[0] or "/")
        self.stat_many(prefixes)  # one run for every level; the loop below reads the cache
        while current != "/":
            found = self.lstat_or_none(current)
            if found is not None:
                if found.is_dir or (found.is_symlink and self.is_dir(current)):
                    break
                raise GuestFilesystemError(f"{current} in {self.description} exists and is not a directory.")
            missing.append(current)
            if not parents:
                break
            current = current.rpartition("/")[0] or "/"
        if not missing:
            if not parents:
                raise GuestFilesystemError(f"{path} already exists in {self.description}.")
            return
        base = self._real_path(missing[-1]).rpartition("/")[0] or "/"
        for created in reversed(missing):
            real = join(base, created.rpartition("/")[2])
            self._queue(command("mkdir", real), f"create the directory {created}")
            self._set_attributes(
                real, created, FileType.DIRECTORY, mode=mode, uid=_check_id(uid), gid=_check_id(gid)
            )
            base = real

    def truncate(self, path: str) -> None:
        self.truncate_many([path])

    def truncate_many(self, paths: Sequence[str]) -> None:
        found = self.stat_many(paths)
        work: list[tuple[str, str]] = []
        for path in paths:
            info = found[path]
            if info is not None and info.is_file:
                real = info.path
            else:
                real, info = self._regular(path)
            if info.size:
                work.append((real, path))
        for real, path in work:
            self._queue(command("punch", real, "0"), f"truncate {path}")
            self._queue(command("sif", real, "size", "0"), f"truncate {path}")


def _check_mode(mode: int) -> int:
    if not 0 <= mode <= 0o7777:
        raise InvalidArgumentError(f"{mode:o} is not a file mode (0000 to 7777).")
    return mode


def _check_id(value: int) -> int:
    if not 0 <= value < 2**32 - 1:
        raise InvalidArgumentError(f"{value} is not a user or group id.")
    return value
