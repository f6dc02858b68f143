"""Filesystems other than ext2/3/4 (xfs, btrfs, LVM ...): the libguestfs backend, or why not.

imagewright edits ext2/3/4 itself (debugfs, milliseconds per batch). For everything else the
tool of choice is libguestfs: it boots a small appliance VM whose kernel mounts the guest's
filesystem. Its Python binding imports only in Debian's system Python, not in a virtualenv, so
this backend drives ``guestfish`` as a program (``programs.guestfish``). When guestfish is not
installed, ``unavailable`` gives the one sentence to show instead.

Every call is one guestfish command (tens of milliseconds) after an appliance start of 13-20 s
under TCG: fine for prepare's few dozen files, not for bulk work.
"""

from __future__ import annotations

import shutil
import stat as stat_module
import tempfile
from collections.abc import Sequence
from pathlib import Path

from imagewright.errors import GuestFilesystemError, InvalidArgumentError
from imagewright.guest.base import DEFAULT_READ_LIMIT, GuestFS, host_path_ok
from imagewright.guest.model import DirEntry, FileType, GuestFileNotFoundError, GuestStat, guest_path, join
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
        self.writable = writable
        self.fs_type = fs_type
        self.description = description
        self.modified = False
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

    def _write(self, command: str, *args: str) -> bytes:
        if not self.writable:
            raise GuestFilesystemError(f"{self.description} was opened read-only; cannot {command}.")
        self.modified = True
        return self._session.call(command, *args)

    def _scratch_file(self) -> Path:
        self._counter += 1
        return self._scratch / f"f{self._counter}"

    # ---- reads -------------------------------------------------------------------------

    def stat_many(self, paths: Sequence[str]) -> dict[str, GuestStat | None]:
        result: dict[str, GuestStat | None] = {}
        for original in paths:
            path = guest_path(original)
            if path not in result:
                result[path] = self._lstat(path)
            result[original] = result[path]
        return result

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

    def listdir_many(self, paths: Sequence[str]) -> dict[str, list[DirEntry]]:
        result: dict[str, list[DirEntry]] = {}
        for original in paths:
            path = guest_path(original)
            if path not in result:
                result[path] = self._listdir(path)
            result[original] = result[path]
        return result

    def _listdir(self, path: str) -> list[DirEntry]:
        info = self._lstat(path)
        if info is None:
            raise GuestFileNotFoundError(f"{path} does not exist in {self.description}.")
        if not info.is_dir:
            raise GuestFilesystemError(f"{path} in {self.description} is not a directory.")
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

    def _regular(self, path: str) -> tuple[str, GuestStat]:
        real = self.resolve(path)
        found = self._lstat(real)
        if found is None or not found.is_file:
            kind = found.type.value if found else "missing path"
            raise GuestFilesystemError(f"{path} in {self.description} is a {kind}, not a file.")
        return real, found

    def read_file(self, path: str, *, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        real, found = self._regular(path)
        if found.size > limit:
            raise GuestFilesystemError(
                f"{path} in {self.description} is {found.size} bytes, more than the {limit} read at once."
            )
        target = self._scratch_file()
        try:
            self._call("download", real, str(target))
            return target.read_bytes()
        finally:
            target.unlink(missing_ok=True)

    def copy_out(self, path: str, host_path: Path) -> None:
        real, _ = self._regular(path)
        self._call("download", real, host_path_ok(host_path))

    def readlink(self, path: str) -> str:
        found = self.stat(path)
        if not found.is_symlink or found.link_target is None:
            raise GuestFilesystemError(f"{found.path} in {self.description} is not a symbolic link.")
        return found.link_target

    # ---- writes ------------------------------------------------------------------------

    def _install(self, source: str, path: str, *, mode: int | None, uid: int | None, gid: int | None) -> None:
        path = guest_path(path)
        parent = path.rpartition("/")[0] or "/"
        if not self.is_dir(parent):
            raise GuestFileNotFoundError(f"The directory {parent} does not exist in {self.description}.")
        existing = self._lstat(path)
        if existing is not None and existing.is_dir:
            raise GuestFilesystemError(f"{path} in {self.description} is a directory.")
        keep = existing if existing is not None and existing.is_file else None
        final_mode = mode if mode is not None else (keep.mode if keep else 0o644)
        final_uid = uid if uid is not None else (keep.uid if keep else 0)
        final_gid = gid if gid is not None else (keep.gid if keep else 0)
        if not 0 <= final_mode <= 0o7777:
            raise InvalidArgumentError(f"{final_mode:o} is not a file mode (0000 to 7777).")
        if existing is not None and not existing.is_file:
            self._write("rm", path)  # a link or special file is replaced, not written through
        self._write("upload", source, path)
        self._write("chmod", f"0{final_mode:o}", path)
        self._write("lchown", str(final_uid), str(final_gid), path)

    def write_file(
        self,
        path: str,
        data: bytes,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        source = self._scratch_file()
        source.write_bytes(data)
        try:
            self._install(str(source), path, mode=mode, uid=uid, gid=gid)
        finally:
            source.unlink(missing_ok=True)

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
        self._install(host_path_ok(host_path.absolute()), path, mode=mode, uid=uid, gid=gid)

    def delete(self, path: str, *, recursive: bool = False, missing_ok: bool = False) -> None:
        path = guest_path(path)
        if path == "/":
            raise GuestFilesystemError("Refusing to delete the root directory of a guest.")
        found = self._lstat(path)
        if found is None:
            if missing_ok:
                return
            raise GuestFileNotFoundError(f"{path} does not exist in {self.description}.")
        if not found.is_dir:
            self._write("rm", path)
        elif recursive:
            self._write("rm-rf", path)
        else:
            if self._call("ls", path).strip():
                raise GuestFilesystemError(f"The directory {path} in {self.description} is not empty.")
            self._write("rmdir", path)

    def chmod(self, path: str, mode: int) -> None:
        if not 0 <= mode <= 0o7777:
            raise InvalidArgumentError(f"{mode:o} is not a file mode (0000 to 7777).")
        self._write("chmod", f"0{mode:o}", self.stat(path).path)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._write("lchown", str(uid), str(gid), self.stat(path).path)

    def symlink(self, target: str, path: str) -> None:
        if not target or any(ch in target for ch in "\0\n"):
            raise InvalidArgumentError(
                "A symbolic link target must be non-empty, without NUL or line breaks."
            )
        path = guest_path(path)
        if self._lstat(path) is not None:
            raise GuestFilesystemError(f"{path} already exists in {self.description}.")
        self._write("ln-s", target, path)

    def mkdir(
        self, path: str, *, parents: bool = False, mode: int = 0o755, uid: int = 0, gid: int = 0
    ) -> None:
        path = guest_path(path)
        missing: list[str] = []
        current = path
        while current != "/":
            found = self._lstat(current)
            if found is not None:
                if found.is_dir or self.is_dir(current):
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
        for created in reversed(missing):
            try:
                self._write("mkdir", created)
            except GuestfishCommandError as err:
                if err.missing:
                    parent = created.rpartition("/")[0] or "/"
                    raise GuestFileNotFoundError(
                        f"The directory {parent} does not exist in {self.description}."
                    ) from None
                raise
            self._write("chmod", f"0{mode:o}", created)
            self._write("lchown", str(uid), str(gid), created)

    def truncate(self, path: str) -> None:
        real, found = self._regular(path)
        if found.size:
            self._write("truncate", real)

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
