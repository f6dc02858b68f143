"""A guest filesystem seen where the guest mounts it: a separate ``/boot`` as ``/boot/...``.

``inspect --os`` reads a root filesystem whose ``/etc/fstab`` mounts another filesystem of the
same disk at ``/boot`` (RHEL, CentOS and many hand-made images keep kernels and GRUB there). The
readers of /boot look at ``/boot/vmlinuz-*`` and ``/boot/grub2/grub.cfg``; on that filesystem
they are ``/vmlinuz-*`` and ``/grub2/grub.cfg``. ``MountedFilesystem`` answers for the
mount point and below from the inner filesystem, for the mount point's parents as plain
directories, and says everything else is not there. It is read-only, as every inspection is.

Symbolic links are resolved in the mounted namespace (``GuestFS.resolve``): an absolute link
``/boot/vmlinuz`` on the boot filesystem points where the running system would find it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from imagewright.errors import GuestFilesystemError
from imagewright.guest.base import GuestFS
from imagewright.guest.model import DirEntry, FileType, GuestStat, guest_path


class MountedFilesystem(GuestFS):
    """``inner`` (read-only) as if mounted at ``mountpoint``."""

    def __init__(self, inner: GuestFS, mountpoint: str) -> None:
        super().__init__(
            description=f"{inner.description}, mounted at {mountpoint}", fs_type=inner.fs_type, writable=False
        )
        self.inner = inner
        self.mountpoint = guest_path(mountpoint)
        self.image_format = inner.image_format

    def _inner_path(self, path: str) -> str | None:
        if path == self.mountpoint:
            return "/"
        if path.startswith(self.mountpoint + "/"):
            return path[len(self.mountpoint) :]
        return None

    def _is_parent(self, path: str) -> bool:
        """``path`` is ``/`` or a directory on the way to the mount point."""
        return path == "/" or self.mountpoint.startswith(path + "/")

    def _parent_stat(self, path: str) -> GuestStat:
        return GuestStat(path, FileType.DIRECTORY, 0o755, 0, 0, 0, 0, 2, 0)

    def _lstat_many(self, paths: list[str]) -> dict[str, GuestStat | None]:
        mapped = {path: self._inner_path(path) for path in paths}
        found = self.inner.stat_many([inner for inner in mapped.values() if inner is not None])
        result: dict[str, GuestStat | None] = {}
        for path, inner in mapped.items():
            if inner is not None:
                info = found[inner]
                result[path] = dataclasses.replace(info, path=path) if info is not None else None
            else:
                result[path] = self._parent_stat(path) if self._is_parent(path) else None
        return result

    def _listdir_many(self, directories: list[str]) -> dict[str, list[DirEntry]]:
        result: dict[str, list[DirEntry]] = {}
        for directory in directories:
            inner = self._inner_path(directory)
            if inner is not None:
                result[directory] = self.inner.listdir_many([inner])[inner]
                continue
            below = self.mountpoint[len(directory.rstrip("/")) + 1 :].split("/", 1)[0]
            result[directory] = [DirEntry(below, FileType.DIRECTORY, 0o755, 0, 0, 0, 0)]
        return result

    def _mapped(self, real: str) -> str:
        inner = self._inner_path(real)
        if inner is None:
            raise GuestFilesystemError(f"{real} is not on {self.description}.")
        return inner

    def _read_file(self, real: str, limit: int) -> bytes:
        return self.inner.read_file(self._mapped(real), limit=limit)

    def _copy_out(self, real: str, host_path: str) -> None:
        self.inner.copy_out(self._mapped(real), Path(host_path))

    # Read-only: GuestFS refuses every write before it reaches these (``_require_writable``).
    def _write_file(
        self, real: str, content: bytes | Path, *, replaces: GuestStat | None, mode: int, uid: int, gid: int
    ) -> None:
        raise GuestFilesystemError(f"{self.description} is read-only.")

    def _remove(self, targets: list[GuestStat]) -> None:
        raise GuestFilesystemError(f"{self.description} is read-only.")

    def _set_mode(self, found: GuestStat, mode: int) -> None:
        raise GuestFilesystemError(f"{self.description} is read-only.")

    def _set_owner(self, found: GuestStat, uid: int, gid: int) -> None:
        raise GuestFilesystemError(f"{self.description} is read-only.")

    def _symlink(self, target: str, real: str) -> None:
        raise GuestFilesystemError(f"{self.description} is read-only.")

    def _mkdir(self, real: str, *, mode: int, uid: int, gid: int) -> None:
        raise GuestFilesystemError(f"{self.description} is read-only.")

    def _truncate(self, real: str) -> None:
        raise GuestFilesystemError(f"{self.description} is read-only.")

    def flush(self) -> None:
        """Nothing is ever queued."""

    def discard(self) -> None:
        """The inner filesystem is its opener's to release."""
