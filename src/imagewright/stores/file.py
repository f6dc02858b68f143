"""The file store: one file per blob under a directory, fanned out by the key's first two characters.

Layout: ``ROOT/<key[:2]>/<key>`` (``ROOT/3f/3f2a…``), so that no directory holds more than a
slice of the blobs; location ``file:///ROOT/<key[:2]>/<key>`` (``Path.as_uri``: percent-quoted).
Glance's filesystem store keeps ``<datadir>/<image id>`` flat; the fan-out is git's object
store's, for directories that hold hundreds of thousands of images.

Writes go through ``imagewright.files.AtomicOutput``: a hidden temp file beside the target
(``.<key>.iw-<pid>-<random>.part``), fsynced, renamed into place, the directory fsynced — a
reader sees the whole blob or none, also after a crash or a power cut once ``finish`` returned.
``adopt`` does the same with a finished file on the store's filesystem (an import's converted
scratch file): fsynced and renamed in, so a 1 GiB image is stored without being copied.
Writes are sparse: a 64 KiB-aligned piece of zeros (or the zero part of one cut by a write's
edges) is skipped, left a hole, so a raw image costs the space of its data (Glance's store
writes every zero); blobs are written once, front to back, so what is skipped reads as zeros.
Reads are sparse-aware: ``read_chunks`` asks ``SEEK_DATA``/``SEEK_HOLE`` (``files.data_ranges``)
and hands out zeros for holes without reading them.

A full disk (ENOSPC, EDQUOT) aborts the writer — its temp file goes — and says "The store 'x'
is full" in one sentence. ``sweep_incomplete`` removes the temp files of writers whose process
is gone (the pid in the name, ``files.sweep_leftovers``), and any temp file idle (unmodified) for
longer than the threshold, which covers a dead writer whose pid was reused.

NOTE: the file store is a one-machine store (pids identify writers only on this machine); many
machines share S3. Locations are checked strictly (``key_of``): a location that is not exactly
``location_for(key)`` of this store is refused, so no catalog entry can make it read, delete or
list a file outside ROOT; files are opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from imagewright.errors import ImageIOError, StoreError
from imagewright.files import AtomicOutput, data_ranges, fsync_directory, io_error, sweep_leftovers
from imagewright.stores.base import (
    DEFAULT_CHUNK_SIZE,
    KEY_PATTERN,
    BlobReader,
    BlobStore,
    BlobWriter,
    StoreInfo,
    StoreUsage,
    check_key,
    check_range,
)

#: Writes are examined for zeros in pieces this long, aligned to it in the blob.
HOLE_GRAIN = 64 * 1024
_ZERO_GRAIN = bytes(HOLE_GRAIN)
_ZERO_CHUNK = bytes(DEFAULT_CHUNK_SIZE)
_FULL = (errno.ENOSPC, errno.EDQUOT)
#: Final permissions of a blob: the registry's user reads and writes, its group reads.
BLOB_MODE = 0o640


class FileStore(BlobStore):
    """Blobs as files under ``root``."""

    def __init__(self, store_id: str, root: Path, *, is_default: bool = False) -> None:
        if not root.is_absolute():
            raise StoreError(f"The file store {store_id!r} needs an absolute directory, not {root}.")
        self.root = root
        self._uri_prefix = root.as_uri().rstrip("/") + "/"
        self.info = StoreInfo(
            id=store_id, scheme="file", description=f"files under {root}", is_default=is_default
        )

    # -- names ------------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / key

    def location_for(self, key: str) -> str:
        return self.path_for(check_key(key)).as_uri()

    def key_of(self, location: str) -> str:
        rest = location[len(self._uri_prefix) :] if location.startswith(self._uri_prefix) else ""
        fanout, _, key = rest.partition("/")
        if not KEY_PATTERN.fullmatch(key) or fanout != key[:2]:
            raise StoreError(f"The location {location!r} is not a blob of the store {self.info.id!r}.")
        return key

    def _path_of(self, location: str) -> Path:
        return self.path_for(self.key_of(location))

    def full_error(self, err: OSError, key: str) -> StoreError:
        return StoreError(
            f"The store {self.info.id!r} is full: no space left on {self.root} while writing {key} "
            f"({err.strerror})."
        )

    # -- the interface ----------------------------------------------------------------------

    def check(self) -> None:
        try:
            if not self.root.is_dir():
                self.root.mkdir(parents=True, exist_ok=True)
                fsync_directory(self.root.parent)
        except ImageIOError as err:
            raise StoreError(str(err)) from None
        except OSError as err:
            raise StoreError(
                f"The directory {self.root} of the store {self.info.id!r} cannot be created ({err.strerror})."
            ) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreError(f"The directory {self.root} of the store {self.info.id!r} is not writable.")

    def writer(self, key: str, size_hint: int | None = None) -> FileBlobWriter:
        return FileBlobWriter(self, check_key(key))

    def adopt(self, key: str, path: Path, progress: Callable[[int], None] | None = None) -> str:
        """Rename ``path`` into place when the store's directory is on its filesystem, else copy it.

        The file is fsynced, given the blob mode, renamed over the blob's place and the
        directory fsynced: the same all-or-nothing appearance as a writer's ``finish``, without
        a copy. Across filesystems (or mounts: ``EXDEV``) it is streamed as any store does.
        """
        target = self.path_for(check_key(key))
        self._make_fanout(target, key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY)
        except OSError as err:
            raise StoreError(str(io_error(err, path, "reading"))) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreError(f"{path} is not a regular file; it cannot become a blob.")
            os.fsync(fd)
            os.fchmod(fd, BLOB_MODE)
            os.rename(path, target)
        except OSError as err:
            if err.errno == errno.EXDEV:
                return super().adopt(key, path, progress)
            raise StoreError(str(io_error(err, target, "placing"))) from None
        finally:
            os.close(fd)
        try:
            fsync_directory(target.parent)
        except ImageIOError as err:
            raise StoreError(str(err)) from None
        return target.as_uri()

    def _make_fanout(self, path: Path, key: str) -> None:
        """Create the fan-out directory of the blob ``path`` (and record it durably) if missing."""
        try:
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True, exist_ok=True)
                fsync_directory(path.parent.parent)  # the new fan-out directory's own entry
        except ImageIOError as err:
            raise StoreError(str(err)) from None
        except OSError as err:
            if err.errno in _FULL:
                raise self.full_error(err, key) from None
            raise StoreError(str(io_error(err, path.parent, "creating"))) from None

    def open(self, location: str) -> FileBlobReader:
        return FileBlobReader(location, self._open_blob(location))

    def _open_blob(self, location: str) -> int:
        path = self._path_of(location)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise StoreError(f"There is no blob at {location}.") from None
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise StoreError(f"{path} is a symbolic link, not a blob.") from None
            raise StoreError(f"The blob at {location} cannot be opened ({err.strerror}).") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreError(f"{path} is not a regular file, so not a blob.")
        return fd

    def read_chunks(
        self, location: str, start: int = 0, end: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Iterator[bytes]:
        """Open now (a missing blob fails here); then stream data, and zeros for holes unread."""
        check_range(start, end)
        if chunk_size <= 0:
            raise StoreError(f"The chunk size {chunk_size} is not positive.")
        fd = self._open_blob(location)
        size = os.fstat(fd).st_size
        stop = size if end is None else min(end, size)
        return _stream(fd, location, min(start, stop), stop, chunk_size)

    def sendable_path(self, location: str, size: int) -> Path | None:
        """The blob's own file (a regular file, not a link: checked as ``open`` checks it)."""
        fd = self._open_blob(location)
        try:
            if os.fstat(fd).st_size != size:
                return None
        finally:
            os.close(fd)
        return self._path_of(location)

    def delete(self, location: str) -> None:
        path = self._path_of(location)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as err:
            raise StoreError(f"The blob at {location} cannot be deleted ({err.strerror}).") from None
        try:
            fsync_directory(path.parent)
        except ImageIOError as err:
            raise StoreError(str(err)) from None

    def exists(self, location: str) -> bool:
        try:
            return stat.S_ISREG(self._path_of(location).lstat().st_mode)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise StoreError(f"The blob at {location} cannot be looked at ({err.strerror}).") from None

    def _fanout_directories(self) -> list[Path]:
        try:
            with os.scandir(self.root) as entries:
                return [
                    Path(e.path)
                    for e in entries
                    if e.is_dir(follow_symlinks=False) and KEY_PATTERN.fullmatch(e.name) and len(e.name) <= 2
                ]
        except FileNotFoundError:
            return []
        except OSError as err:
            raise StoreError(
                f"The directory {self.root} of the store {self.info.id!r} cannot be listed."
            ) from err

    def iter_locations(self) -> Iterator[str]:
        for directory in self._fanout_directories():
            try:
                with os.scandir(directory) as entries:
                    names = [
                        e.name
                        for e in entries
                        if e.is_file(follow_symlinks=False)
                        and KEY_PATTERN.fullmatch(e.name)
                        and e.name[:2] == directory.name
                    ]
            except OSError as err:
                raise StoreError(
                    f"The directory {directory} of the store {self.info.id!r} cannot be listed."
                ) from err
            for name in names:
                yield self.location_for(name)

    def sweep_incomplete(self, older_than_seconds: float) -> list[str]:
        """Temp files of dead writers (any age), and temp files unmodified for ``older_than_seconds``."""
        removed: list[str] = []
        now = time.time()
        for directory in self._fanout_directories():
            removed.extend(str(p) for p in sweep_leftovers(directory))
            try:
                with os.scandir(directory) as entries:
                    # Keys never start with "."; every hidden file in a fan-out directory is a temp.
                    temps = [
                        e for e in entries if e.name.startswith(".") and e.is_file(follow_symlinks=False)
                    ]
                for entry in temps:
                    if now - entry.stat(follow_symlinks=False).st_mtime >= older_than_seconds:
                        os.unlink(entry.path)
                        removed.append(entry.path)
            except FileNotFoundError:
                continue  # removed meanwhile (another sweep, a writer finishing)
            except OSError as err:
                raise StoreError(
                    f"Sweeping {directory} of the store {self.info.id!r} failed ({err.strerror})."
                ) from None
        return removed

    def usage(self) -> StoreUsage | None:
        where = self.root
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            st = os.statvfs(where)
        except OSError as err:
            raise StoreError(f"The space left in {where} cannot be measured ({err.strerror}).") from None
        return StoreUsage(capacity_bytes=st.f_blocks * st.f_frsize, free_bytes=st.f_bavail * st.f_frsize)


def _stream(fd: int, location: str, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
    zero = _ZERO_CHUNK if chunk_size == DEFAULT_CHUNK_SIZE else bytes(chunk_size)
    try:
        position = start
        for data_start, data_end in data_ranges(fd, start, end):
            while position < data_start:  # a hole: zeros, nothing read
                step = min(chunk_size, data_start - position)
                yield zero if step == chunk_size else zero[:step]
                position += step
            while position < data_end:
                chunk = os.pread(fd, min(chunk_size, data_end - position), position)
                if not chunk:
                    raise StoreError(f"The blob at {location} ended early, at byte {position}.")
                yield chunk
                position += len(chunk)
        while position < end:
            step = min(chunk_size, end - position)
            yield zero if step == chunk_size else zero[:step]
            position += step
    except OSError as err:
        raise StoreError(f"Reading the blob at {location} failed ({err.strerror}).") from None
    finally:
        os.close(fd)


class FileBlobWriter(BlobWriter):
    """A temp file beside the blob's place (``files.AtomicOutput``), written sparsely."""

    def __init__(self, store: FileStore, key: str) -> None:
        self._store = store
        self._key = key
        path = store.path_for(key)
        self.location = path.as_uri()
        self.bytes_written = 0
        self._state = "open"
        store._make_fanout(path, key)
        try:
            self._out = AtomicOutput(path, force=True, mode=BLOB_MODE)
        except ImageIOError as err:
            raise StoreError(str(err)) from None
        except OSError as err:
            if err.errno in _FULL:
                raise store.full_error(err, key) from None
            raise StoreError(str(io_error(err, path.parent, "creating"))) from None
        try:
            self._fd = os.open(self._out.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as err:
            self._out.cleanup()
            raise StoreError(str(io_error(err, self._out.path, "opening"))) from None

    @property
    def finished(self) -> bool:
        return self._state == "finished"

    @property
    def temp_path(self) -> Path:
        return self._out.path

    def _require_open(self) -> None:
        if self._state != "open":
            raise StoreError(f"The writer of {self.location} was already {self._state}.")

    def _fail(self, err: OSError, doing: str) -> StoreError:
        self.abort()
        if err.errno in _FULL:
            return self._store.full_error(err, self._key)
        return StoreError(str(io_error(err, self._store.path_for(self._key), doing)))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._require_open()
        view = memoryview(data).cast("B")
        size, base = len(view), self.bytes_written
        run_start = position = 0
        try:
            while position < size:
                step = min(size - position, HOLE_GRAIN - (base + position) % HOLE_GRAIN)
                # Zeros need not be written: what is never written reads as zeros. The first and
                # last bytes decide most grains of data without a copy.
                if (
                    view[position] == 0
                    and view[position + step - 1] == 0
                    and bytes(view[position : position + step])
                    == (_ZERO_GRAIN if step == HOLE_GRAIN else bytes(step))
                ):
                    self._pwrite(view[run_start:position], base + run_start)
                    run_start = position + step
                position += step
            self._pwrite(view[run_start:size], base + run_start)
            if run_start == size and size:
                os.ftruncate(self._fd, base + size)  # a hole at the end: the size (and mtime) move on
        except OSError as err:
            raise self._fail(err, "writing") from None
        self.bytes_written = base + size

    def _pwrite(self, view: memoryview, offset: int) -> None:
        while len(view):
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def finish(self) -> str:
        self._require_open()
        try:
            os.ftruncate(self._fd, self.bytes_written)
            os.close(self._fd)
        except OSError as err:
            raise self._fail(err, "finishing") from None
        self._fd = -1
        try:
            self._out.commit()  # fsync, rename over the target, fsync the directory
        except ImageIOError as err:
            self.abort()
            raise StoreError(str(err)) from None
        self._state = "finished"
        return self.location

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._out.cleanup()


class FileBlobReader(BlobReader):
    """A finished blob opened read-only (``O_NOFOLLOW``)."""

    def __init__(self, location: str, fd: int) -> None:
        self.location = location
        self._fd = fd
        self._size = os.fstat(fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        if self._fd < 0:
            raise StoreError(f"The blob at {self.location} was already closed.")
        if offset < 0 or length <= 0 or offset >= self._size:
            return b""
        try:
            return os.pread(self._fd, min(length, self._size - offset), offset)
        except OSError as err:
            raise StoreError(f"Reading the blob at {self.location} failed ({err.strerror}).") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
