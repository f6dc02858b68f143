"""The ext2/3/4 backend: guest files through debugfs, without mounting anything.

Reads run at once (one debugfs process for a whole batch of paths). Writes are queued and
run together with the next read, or at ``flush``; debugfs is opened read-write only for a
batch that holds writes. debugfs reports most failures on its output and still exits 0, so
every queued command's output is checked against what success looks like for that command.

Path handling: debugfs's lookup (libext2fs ``ext2fs_namei``) follows symbolic links in the
middle of a path, inside the guest (an absolute link target starts at the guest's root),
but not a final one. Its commands that create or remove a name (``write``, ``mkdir``,
``symlink``, ``rm``) look the parent up the same way, so a parent that is itself a
symbolic link would be used as if it were the directory; ``GuestFS`` therefore hands every
primitive here a path whose parent is the real directory.

Only the primitives live here; what a call means and what it refuses is ``base.GuestFS``'s.
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

from imagewright.errors import GuestFilesystemError
from imagewright.guest.base import MAX_LINK_TARGET, GuestFS
from imagewright.guest.model import DirEntry, FileType, GuestFileNotFoundError, GuestStat, join
from imagewright.programs import e2fs
from imagewright.programs.e2fs import DebugfsCommand, command

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
# debugfs prints ids with %d: an id above 2^31 - 1 comes out negative (read back with _id).
_STAT_OWNER = re.compile(rb"^User:\s*(-?\d+)\s+Group:\s*(-?\d+)(?:\s+Project:\s*\S+)?\s+Size:\s*(\d+)", re.M)
_STAT_LINKS = re.compile(rb"^Links:\s*(\d+)", re.M)
_STAT_MTIME = re.compile(rb"^\s*mtime:\s*0x([0-9a-fA-F]{1,8})(?::([0-9a-fA-F]{1,8}))?", re.M)
_FAST_LINK = b'Fast link dest: "'

# debugfs "ls -p" (ls.c): "/ino/mode/uid/gid/name/size/" per entry, size empty for
# directories. A name never contains '/', so a record parses unambiguously even when the
# name holds a line break.
_LS_RECORD = re.compile(rb"/(\d+)/([0-7]+)/(-?\d+)/(-?\d+)/([^/]*)/(\d*)/\n")

_NOT_FOUND_MARKERS = (b"File not found by ext2_lookup", b"Ext2 inode is not a directory")
_ALLOCATED = re.compile(rb"^Allocated inode: \d+\n?$")


def _id(printed: bytes) -> int:
    """A uid or gid as debugfs printed it (signed 32-bit) as the unsigned id it is."""
    return int(printed) & 0xFFFFFFFF


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
        super().__init__(description=description, fs_type=fs_type, writable=writable)
        self.device = e2fs.device_name(raw_image, offset)
        self._verify = verify
        self._pending: list[_Queued] = []
        self._scratch = Path(tempfile.mkdtemp(prefix="imagewright-guest-"))
        self._scratch_files: list[Path] = []
        self._counter = 0
        self._ready_for_writes = False
        self._broken: str | None = None

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
        if self._broken is not None:
            raise GuestFilesystemError(self._broken)
        cmd.line()  # validate now, so a bad name fails where it was given
        self._pending.append(_Queued(cmd, what, accept))

    def ready_for_writes(self) -> None:
        self._prepare_for_writes()

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

    def _check(self) -> tuple[str, str] | None:
        result = e2fs.e2fsck_check(self.device)
        return None if result.clean else ("e2fsck", result.first_problem())

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

    def _lstat_many(self, paths: list[str]) -> dict[str, GuestStat | None]:
        outputs = self._run([command("stat", p) for p in paths])
        result: dict[str, GuestStat | None] = {}
        slow_links: list[str] = []
        for path, output in zip(paths, outputs, strict=True):
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
            uid=_id(owner.group(1)),
            gid=_id(owner.group(2)),
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

    def _listdir_many(self, directories: list[str]) -> dict[str, list[DirEntry]]:
        outputs = self._run([command("ls", "-p", p) for p in directories])
        return {path: self._parse_listing(path, out) for path, out in zip(directories, outputs, strict=True)}

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
                    uid=_id(record.group(3)),
                    gid=_id(record.group(4)),
                    size=int(record.group(6) or 0),
                    inode=int(record.group(1)),
                )
            )
        return entries

    def _read_file(self, real: str, limit: int) -> bytes:
        return self._dump_many([real], limit)[0]

    def _copy_out(self, real: str, host_path: str) -> None:
        output = self._run([command("dump", real, host_path)])[0]
        if output.strip():
            raise GuestFilesystemError(
                f"debugfs cannot read {real} in {self.description}: {_first_line(output)}"
            )

    # ---- writes ------------------------------------------------------------------------

    def _write_file(
        self, real: str, content: bytes | Path, *, replaces: GuestStat | None, mode: int, uid: int, gid: int
    ) -> None:
        if replaces is not None:
            self._queue(command("rm", real), f"replace {real}")
        self._queue(command("write", self._host_source(content), real), f"write {real}", _expect_allocated)
        self._set_attributes(real, FileType.REGULAR, mode=mode, uid=uid, gid=gid)

    def _host_source(self, content: bytes | Path) -> str:
        """A host file holding ``content`` that debugfs can be given by name."""
        if isinstance(content, bytes):
            scratch = self._scratch_file()
            scratch.write_bytes(content)
            return str(scratch)
        text = os.fspath(content)
        if not any(ch in text for ch in "\0\n\r"):
            return text
        # debugfs reads one command per line: hand it a plainly named link instead.
        link = self._scratch_file()
        link.symlink_to(text)
        return str(link)

    def _set_attributes(self, real: str, kind: FileType, *, mode: int, uid: int, gid: int) -> None:
        self._queue(command("sif", real, "mode", f"0{kind.ifmt | mode:o}"), f"set the mode of {real}")
        self._queue(command("sif", real, "uid", str(uid)), f"set the owner of {real}")
        self._queue(command("sif", real, "gid", str(gid)), f"set the group of {real}")

    def _remove(self, targets: list[GuestStat]) -> None:
        files = [t.path for t in targets if not t.is_dir]
        directories: list[str] = []
        for top in targets:
            if top.is_dir:
                for directory, entries in self.walk(top.path):
                    directories.append(directory)
                    files += [join(directory, e.name) for e in entries if not e.is_dir]
        for path in files:
            self._queue(command("rm", path), f"delete {path}")
        # Deepest first: a directory is empty once everything below it is gone.
        for directory in sorted(directories, key=lambda d: d.count("/"), reverse=True):
            self._queue(command("rmdir", directory), f"remove the directory {directory}")

    def _set_mode(self, found: GuestStat, mode: int) -> None:
        mode_text = f"0{found.type.ifmt | mode:o}"
        self._queue(command("sif", found.path, "mode", mode_text), f"set the mode of {found.path}")

    def _set_owner(self, found: GuestStat, uid: int, gid: int) -> None:
        self._queue(command("sif", found.path, "uid", str(uid)), f"set the owner of {found.path}")
        self._queue(command("sif", found.path, "gid", str(gid)), f"set the group of {found.path}")

    def _symlink(self, target: str, real: str) -> None:
        self._queue(command("symlink", real, target), f"create the symbolic link {real}")

    def _mkdir(self, real: str, *, mode: int, uid: int, gid: int) -> None:
        self._queue(command("mkdir", real), f"create the directory {real}")
        self._set_attributes(real, FileType.DIRECTORY, mode=mode, uid=uid, gid=gid)

    def _truncate(self, real: str) -> None:
        self._queue(command("punch", real, "0"), f"truncate {real}")
        self._queue(command("sif", real, "size", "0"), f"truncate {real}")
