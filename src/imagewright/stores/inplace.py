"""The in-place store: image files that stay where they are, under directories an admin allowed.

``--store local=file-inplace:///srv/images`` declares ``/srv/images`` (and everything below
it) as a place whose files may be *registered* as images without being copied —
``imagewright image register-local /srv/images/debian-12.qcow2`` inspects the file where it
lies, hashes it, and records its location (Wakame-vdc's ``vdc-manage backupobject add`` /
``image add``, which register a file the storage node already has).

Why a scheme of its own rather than a flag on ``file://``: a file store *owns* its directory —
it writes there, and its sweep deletes every file no image names (``iter_locations``). An
in-place store owns nothing: it never writes (``writer`` refuses: uploads cannot go there), it
never deletes (deleting the image forgets the file; the file is the admin's), and it lists
nothing to the sweep. Mixing the two in one directory would make a file store's sweep delete
registered files as orphans, so ``spec`` refuses an in-place root that overlaps a file store's,
and an in-place store cannot be the default (the default takes uploads).

NOTE on paths (untrusted: a catalog row or an admin's typo could name anything): a location
belongs to the store only if, with every symbolic link resolved, it is a regular file inside
the root (resolved too); files are opened with ``O_NOFOLLOW``. The file must not change after
registration — its size and hashes are recorded; a download checks the size it serves.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from imagewright.errors import StoreError
from imagewright.stores.base import (
    DEFAULT_CHUNK_SIZE,
    BlobStore,
    BlobWriter,
    StoreInfo,
    StoreUsage,
    check_range,
)
from imagewright.stores.file import FileBlobReader, _stream


class InPlaceFileStore(BlobStore):
    """Registered files under ``root``, read where they are."""

    def __init__(self, store_id: str, root: Path) -> None:
        if not root.is_absolute():
            raise StoreError(f"The in-place store {store_id!r} needs an absolute directory, not {root}.")
        self.root = root
        self.info = StoreInfo(
            id=store_id,
            scheme="file-inplace",
            description=f"files registered in place under {root}",
            is_default=False,
        )

    # -- names ------------------------------------------------------------------------------

    def _resolved_root(self) -> Path:
        return Path(os.path.realpath(self.root))

    def path_inside(self, path: str | os.PathLike[str]) -> Path:
        """``path`` with its links resolved, if it is a regular file inside the root; else StoreError."""
        given = Path(path)
        if not given.is_absolute():
            given = Path.cwd() / given
        resolved = Path(os.path.realpath(given))
        root = self._resolved_root()
        if resolved == root or root not in resolved.parents:
            raise StoreError(
                f"{given} is not inside {self.root}, the directory the store {self.info.id!r} may "
                "register files from."
            )
        try:
            mode = resolved.stat().st_mode
        except FileNotFoundError:
            raise StoreError(f"There is no file {given}.") from None
        except OSError as err:
            raise StoreError(f"{given} cannot be looked at ({err.strerror}).") from None
        if not stat.S_ISREG(mode):
            raise StoreError(f"{given} is not a regular file.")
        return resolved

    def location_for(self, key: str) -> str:
        """``key`` is the file's path relative to the root."""
        return self.path_inside(self.root / key).as_uri()

    def location_of(self, path: str | os.PathLike[str]) -> str:
        return self.path_inside(path).as_uri()

    def _path_of(self, location: str) -> Path:
        parts = urlsplit(location)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise StoreError(f"The location {location!r} is not a file of the store {self.info.id!r}.")
        path = Path(unquote(parts.path))
        try:
            inside = self.path_inside(path)
        except StoreError:
            raise StoreError(
                f"The location {location!r} is not a file of the store {self.info.id!r}."
            ) from None
        if inside != path:
            raise StoreError(f"The location {location!r} is not a file of the store {self.info.id!r}.")
        return path

    def key_of(self, location: str) -> str:
        return str(self._path_of(location).relative_to(self._resolved_root()))

    def owns(self, location: str) -> bool:
        try:
            self._path_of(location)
        except StoreError:
            return False
        return True

    # -- the interface ----------------------------------------------------------------------

    def check(self) -> None:
        if not self.root.is_dir():
            raise StoreError(
                f"The directory {self.root} of the in-place store {self.info.id!r} does not exist."
            )
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise StoreError(
                f"The directory {self.root} of the in-place store {self.info.id!r} is not readable."
            )

    def writer(self, key: str, size_hint: int | None = None) -> BlobWriter:
        raise StoreError(
            f"The store {self.info.id!r} registers files where they are and takes no uploads; "
            "upload to another store, or register a file with 'imagewright image register-local'."
        )

    def _open(self, location: str) -> int:
        path = self._path_of(location)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as err:
            raise StoreError(f"The registered file {path} cannot be opened ({err.strerror}).") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreError(f"{path} is not a regular file.")
        return fd

    def open(self, location: str) -> FileBlobReader:
        return FileBlobReader(location, self._open(location))

    def read_chunks(
        self, location: str, start: int = 0, end: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Iterator[bytes]:
        check_range(start, end)
        if chunk_size <= 0:
            raise StoreError(f"The chunk size {chunk_size} is not positive.")
        fd = self._open(location)
        size = os.fstat(fd).st_size
        stop = size if end is None else min(end, size)
        if end is not None and end > size:
            os.close(fd)
            raise StoreError(f"The registered file at {location} is shorter than when it was registered.")
        return _stream(fd, location, min(start, stop), stop, chunk_size)

    def delete(self, location: str) -> None:
        """Nothing: the file is the admin's; the catalog forgets it."""

    def exists(self, location: str) -> bool:
        try:
            self._path_of(location)
        except StoreError:
            return False
        return True

    def iter_locations(self) -> Iterator[str]:
        """Nothing: the sweep must never take an admin's file for an orphan."""
        return iter(())

    def sweep_incomplete(self, older_than_seconds: float) -> list[str]:
        return []

    def usage(self) -> StoreUsage | None:
        try:
            st = os.statvfs(self.root)
        except OSError:
            return None
        return StoreUsage(capacity_bytes=st.f_blocks * st.f_frsize, free_bytes=st.f_bavail * st.f_frsize)
