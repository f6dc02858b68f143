"""Filesystems other than ext2/3/4 (xfs, btrfs, LVM ...): the libguestfs backend, or why not.

imagewright edits ext2/3/4 itself (debugfs, milliseconds per batch). For everything else the
tool of choice is libguestfs: it boots a small appliance VM whose kernel mounts the guest's
filesystem. Its Python binding imports only in Debian's system Python, not in a virtualenv, so
this backend drives ``guestfish`` as a program (``programs.guestfish``). When guestfish is not
installed, ``unavailable`` gives the one sentence to show instead.

Every call is one guestfish command (tens of milliseconds) after an appliance start of 13-20 s
under TCG: fine for prepare's few dozen files, not for bulk work. Only the primitives live
here; what a call means and what it refuses is ``base.GuestFS``'s.
"""

from __future__ import annotations

import shutil
import stat as stat_module
import tempfile
from pathlib import Path

from imagewright.errors import GuestFilesystemError
from imagewright.guest.base import GuestFS
from imagewright.guest.model import DirEntry, FileType, GuestStat, join
from imagewright.programs import guestfish
from imagewright.programs.guestfish import GuestfishCommandError, GuestfishSession


def available() -> bool:
    """True when guestfish is installed (the appliance may still fail to start; that is reported)."""
    return guestfish.available()


def unavailable(fs_type: str) -> GuestFilesystemError:
    """The one sentence explaining that a guest on ``fs_type`` cannot be edited here."""
    what = "is on LVM" if fs_type == "LVM2_member" else f"is {fs_type}"
    name = "LVM" if fs_type == "LVM2_member" else fs_type
    return GuestFilesystemError(
        f"The root filesystem {what}; imagewright edits ext2/3/4 directly and needs libguestfs "
        f"(Debian: libguestfs-tools) for {name}."
    )


def _c_int(value: int) -> str:
    """An id for guestfish's ``lchown``, whose arguments are C ``int``s: ids above 2^31 - 1
    are given as the negative number with the same 32 bits, which lchown(2) reads back."""
    return str(value - (1 << 32) if value >= 1 << 31 else value)


def _fields(output: bytes) -> dict[str, int]:
    """``key: number`` lines of guestfish's struct printing."""
    fields: dict[str, int] = {}
    for line in output.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip().lstrip("-").isdigit():
            fields[key.strip()] = int(value.strip())
    return fields


class LibguestfsGuest(GuestFS):
    """One filesystem of a raw disk, mounted inside a libguestfs appliance."""

    def __init__(
        self,
        raw_image: Path,
        *,
        partition: int | None,
        fs_type: str,
        writable: bool = False,
        description: str = "the guest filesystem",
        find_root: bool = False,
    ) -> None:
        super().__init__(description=description, fs_type=fs_type, writable=writable)
        self._scratch = Path(tempfile.mkdtemp(prefix="imagewright-guestfs-"))
        self._counter = 0
        self._session = GuestfishSession(raw_image, writable=writable)
        try:
            device = self._root_device(partition, fs_type, find_root=find_root)
            self._session.call("mount" if writable else "mount-ro", device, "/")
        except BaseException:
            self.discard()
            raise

    def _root_device(self, partition: int | None, fs_type: str, *, find_root: bool) -> str:
        if not (find_root or fs_type == "LVM2_member"):
            return "/dev/sda" if partition is None else f"/dev/sda{partition}"
        # libguestfs' inspection knows LVM and every filesystem; it wants a recognisable OS.
        roots = self._session.call("inspect-os").decode().split()
        if roots:
            return roots[0]
        # No OS it recognises (no binaries to read an architecture from): the first
        # filesystem holding /etc.
        for line in self._session.call("list-filesystems").decode().splitlines():
            device, _, kind = line.partition(":")
            if kind.strip() in ("", "unknown", "swap"):
                continue
            try:
                self._session.call("mount-ro", device.strip(), "/")
            except GuestfishCommandError:
                continue
            holds_etc = self._session.call("is-dir", "/etc").strip() == b"true"
            self._session.call("umount", "/")
            if holds_etc:
                return device.strip()
        raise GuestFilesystemError(f"libguestfs finds no filesystem holding /etc in {self.description}.")

    def _call(self, command: str, *args: str) -> bytes:
        return self._session.call(command, *args)

    def _scratch_file(self) -> Path:
        self._counter += 1
        return self._scratch / f"f{self._counter}"

    # ---- reads -------------------------------------------------------------------------

    def _lstat_many(self, paths: list[str]) -> dict[str, GuestStat | None]:
        return {path: self._lstat(path) for path in paths}

    def _lstat(self, path: str) -> GuestStat | None:
        try:
            fields = _fields(self._call("lstatns", path))
        except GuestfishCommandError as err:
            if err.missing:
                return None
            raise
        mode = fields.get("st_mode", 0)
        kind = FileType.from_mode(mode)
        target = (
            self._call("readlink", path).decode("utf-8", "surrogateescape").rstrip("\n")
            if (kind is FileType.SYMLINK)
            else None
        )
        return GuestStat(
            path=path,
            type=kind,
            mode=stat_module.S_IMODE(mode),
            uid=fields.get("st_uid", 0),
            gid=fields.get("st_gid", 0),
            size=fields.get("st_size", 0),
            mtime=fields.get("st_mtime_sec", 0),
            links=fields.get("st_nlink", 0),
            inode=fields.get("st_ino", 0),
            link_target=target,
        )

    def _listdir_many(self, directories: list[str]) -> dict[str, list[DirEntry]]:
        return {path: self._listdir(path) for path in directories}

    def _listdir(self, path: str) -> list[DirEntry]:
        names = self._call("ls", path).decode("utf-8", "surrogateescape").split("\n")
        entries: list[DirEntry] = []
        for name in names:
            if not name or name in (".", ".."):
                continue
            found = self._lstat(join(path, name))
            if found is None:
                continue
            entries.append(
                DirEntry(name, found.type, found.mode, found.uid, found.gid, found.size, found.inode)
            )
        return entries

    def _read_file(self, real: str, limit: int) -> bytes:
        target = self._scratch_file()
        try:
            self._call("download", real, str(target))
            if target.stat().st_size > limit:
                raise GuestFilesystemError(f"{real} in {self.description} is larger than {limit} bytes.")
            return target.read_bytes()
        finally:
            target.unlink(missing_ok=True)

    def _copy_out(self, real: str, host_path: str) -> None:
        self._call("download", real, host_path)

    # ---- writes ------------------------------------------------------------------------

    def _write_file(
        self, real: str, content: bytes | Path, *, replaces: GuestStat | None, mode: int, uid: int, gid: int
    ) -> None:
        if replaces is not None and not replaces.is_file:
            self._call("rm", real)  # a link or special file is replaced, not written through
        if isinstance(content, bytes):
            source = self._scratch_file()
            source.write_bytes(content)
            try:
                self._call("upload", str(source), real)
            finally:
                source.unlink(missing_ok=True)
        else:
            self._call("upload", str(content), real)
        self._own_and_mode(real, uid, gid, mode)

    def _own_and_mode(self, real: str, uid: int, gid: int, mode: int) -> None:
        # In this order: the kernel's chown(2) clears set-uid and set-gid of a non-directory.
        self._call("lchown", _c_int(uid), _c_int(gid), real)
        self._call("chmod", f"0{mode:o}", real)

    def _remove(self, targets: list[GuestStat]) -> None:
        for found in targets:
            self._call("rm-rf" if found.is_dir else "rm", found.path)

    def _set_mode(self, found: GuestStat, mode: int) -> None:
        self._call("chmod", f"0{mode:o}", found.path)

    def _set_owner(self, found: GuestStat, uid: int, gid: int) -> None:
        self._call("lchown", _c_int(uid), _c_int(gid), found.path)
        if found.mode & 0o6000 and not (found.is_dir or found.is_symlink):
            # The kernel's chown(2) cleared set-uid/set-gid; the contract changes only the owner.
            self._call("chmod", f"0{found.mode:o}", found.path)

    def _symlink(self, target: str, real: str) -> None:
        self._call("ln-s", target, real)

    def _mkdir(self, real: str, *, mode: int, uid: int, gid: int) -> None:
        self._call("mkdir", real)
        self._own_and_mode(real, uid, gid, mode)

    def _truncate(self, real: str) -> None:
        self._call("truncate", real)

    def flush(self) -> None:
        """Every command runs at once; nothing is queued."""

    def close(self) -> None:
        try:
            self._session.close()
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def discard(self) -> None:
        """Stop the appliance without caring about unsaved writes (the working copy is dropped)."""
        try:
            self._session.close()
        except GuestFilesystemError:
            pass
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)
