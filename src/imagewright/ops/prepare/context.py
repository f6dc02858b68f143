"""``PrepareContext``: how an operation reads the guest and changes it, dry run or not.

Every change goes through one of the methods here, which records it and (unless dry-running)
performs it. So an operation is written once, and ``--dry-run`` lists exactly the files the
real run would touch.
"""

from __future__ import annotations

from collections.abc import Sequence

from imagewright.guest import GuestFS
from imagewright.ops.prepare.model import Change, PrepareOptions


class PrepareContext:
    def __init__(self, guest: GuestFS, options: PrepareOptions, *, dry_run: bool) -> None:
        self.guest = guest
        self.options = options
        self.dry_run = dry_run
        self.changes: list[Change] = []
        self.note = ""

    def begin(self) -> None:
        """Start a new operation: forget the previous one's changes and note."""
        self.changes = []
        self.note = ""

    def _record(self, action: str, path: str, detail: str = "") -> None:
        self.changes.append(Change(action, path, detail))

    # ---- changes ----------------------------------------------------------------------

    def delete(self, path: str, *, detail: str = "") -> None:
        """Delete a file, link or whole directory tree (nothing if it is not there)."""
        self.delete_many([path], detail=detail)

    def delete_many(self, paths: Sequence[str], *, detail: str = "") -> None:
        """Delete several paths; looked up together, which keeps a run fast."""
        if not paths:
            return
        if self.dry_run:
            found = self.guest.stat_many(paths)
            gone = {p: info for p in paths if (info := found[p]) is not None}
        else:
            gone = self.guest.delete_many(paths)
        for path, info in gone.items():
            self._record("delete", path, detail or ("directory and everything in it" if info.is_dir else ""))

    def truncate(self, path: str, *, detail: str = "") -> None:
        self.truncate_many([path], detail=detail)

    def truncate_many(self, paths: Sequence[str], *, detail: str = "") -> None:
        """Empty regular files, keeping inode, owner and mode."""
        if not paths:
            return
        for path in paths:
            self._record("truncate", path, detail)
        if not self.dry_run:
            self.guest.truncate_many(paths)

    def write(
        self,
        path: str,
        data: bytes,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        detail: str = "",
    ) -> None:
        """Create or replace a file; recorded as ``edit`` when a file was there before."""
        existed = self.guest.lstat_or_none(path) is not None
        self._record("edit" if existed else "write", path, detail)
        if not self.dry_run:
            self.guest.write_file(path, data, mode=mode, uid=uid, gid=gid)

    def symlink(self, target: str, path: str, *, detail: str = "") -> None:
        """Make ``path`` a symbolic link to ``target``, replacing whatever is there."""
        found = self.guest.lstat_or_none(path)
        if found is not None:
            if found.is_symlink and found.link_target == target:
                return
            what = "a link" if found.is_symlink else found.type.value
            detail = detail or f"replaces {what}"
        self._record("link", path, f"-> {target}" + (f"; {detail}" if detail else ""))
        if not self.dry_run:
            if found is not None:
                self.guest.delete(path, recursive=True)
            self.guest.symlink(target, path)

    def mkdir(self, path: str, *, mode: int = 0o755) -> None:
        """Create a directory and its missing parents (nothing if it exists)."""
        if self.guest.is_dir(path):
            return
        self._record("mkdir", path)
        if not self.dry_run:
            self.guest.mkdir(path, parents=True, mode=mode)

    def chmod(self, path: str, mode: int, *, detail: str = "") -> None:
        self._record("chmod", path, detail or f"mode {mode:04o}")
        if not self.dry_run:
            self.guest.chmod(path, mode)
