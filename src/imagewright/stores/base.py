"""The blob store interface: what the registry asks of any place that keeps image bytes.

A store keeps *blobs*: immutable byte strings named by a *key* (the registry uses image ids).
Each blob has a *location*, a URL that ``location_for(key)`` derives deterministically and that
the catalog records (Glance's ``locations``). A blob becomes visible at its location only when
its writer finishes, all at once; until then nothing is there, whatever happens to the writer.

The model is glance_store's driver interface (``glance_store/driver.py``: ``add``, ``get``,
``delete``, ``get_size``; one class per scheme, Glance multi-store ids), cut down to what a
streaming, inspecting registry needs, with writes as a context manager instead of Glance's
"pass me a file object" so that the caller can inspect and hash the bytes as they pass.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from imagewright.errors import StoreError
from imagewright.files import io_error

#: A key is one path component that cannot be mistaken for a temp file, "." or "..":
#: an ASCII letter or digit first, then letters, digits, "_", "-" and ".".
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")

#: Default chunk size of ``read_chunks``: large enough for throughput, small enough for memory.
DEFAULT_CHUNK_SIZE = 1 << 20


def check_key(key: str) -> str:
    """Return ``key`` if it can name a blob, else raise StoreError with one sentence."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise StoreError(
            f"{key!r} cannot name a blob: use 1 to 200 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit."
        )
    return key


def check_range(start: int, end: int | None) -> None:
    """Refuse a negative or reversed byte range (``read_chunks`` takes Python slice bounds)."""
    if start < 0 or (end is not None and end < start):
        raise StoreError(f"The byte range {start}..{end} is not a range: it must satisfy 0 <= start <= end.")


@dataclass(frozen=True)
class StoreInfo:
    """How a store presents itself (Glance's ``GET /v2/info/stores`` entry)."""

    id: str  # "default", "fast", "bulk": the name given as NAME=URL, or "default"
    scheme: str  # "file" | "s3"
    description: str  # for people: "files under /srv/images", "S3 bucket images at http://..."
    is_default: bool


@dataclass(frozen=True)
class StoreUsage:
    """Capacity of the space a store writes into, where the store can know it (file stores)."""

    capacity_bytes: int
    free_bytes: int


class BlobReader(ABC):
    """Random access to one finished blob: a ``binary.ByteSource`` with ``close()``.

    ``pread`` returns fewer bytes than asked only at the end of the blob, and nothing at or past
    it; a failure to read raises StoreError. Use as a context manager.
    """

    location: str

    @property
    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def pread(self, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobWriter(ABC):
    """A new blob being written; a context manager.

    ``write`` streams bytes in; ``finish`` makes the blob durable and visible at ``location``
    (replacing a blob already there) and returns that location; ``abort`` removes everything
    written and is idempotent. Leaving the ``with`` block without ``finish`` — by an exception
    or not — aborts. A writer whose process dies (kill -9) leaves nothing at the location, only a
    temp file or multipart upload that ``BlobStore.sweep_incomplete`` removes later.
    """

    location: str
    bytes_written: int

    @abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    @abstractmethod
    def finish(self) -> str: ...

    @abstractmethod
    def abort(self) -> None: ...

    @property
    @abstractmethod
    def finished(self) -> bool: ...

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.finished:
            self.abort()


class BlobStore(ABC):
    """One place that keeps blobs (a directory, an S3 bucket and prefix)."""

    info: StoreInfo

    @abstractmethod
    def location_for(self, key: str) -> str:
        """The location a blob written under ``key`` has; deterministic, no I/O."""

    @abstractmethod
    def key_of(self, location: str) -> str:
        """The key of a location of this store; StoreError for any other location."""

    def owns(self, location: str) -> bool:
        """Whether ``location`` names a blob of this store (finished or not)."""
        try:
            self.key_of(location)
        except StoreError:
            return False
        return True

    @abstractmethod
    def check(self) -> None:
        """Verify that the store can be used now (directory writable, bucket reachable); StoreError if not."""

    @abstractmethod
    def writer(self, key: str, size_hint: int | None = None) -> BlobWriter:
        """A writer of a new blob for ``key``; ``size_hint`` (bytes expected, if known) sizes S3 parts."""

    def adopt(self, key: str, path: Path, progress: Callable[[int], None] | None = None) -> str:
        """Make the finished local file ``path`` the blob of ``key``; the file is consumed.

        The default streams it through ``writer`` (calling ``progress`` with the bytes written
        so far; an exception it raises aborts the blob) and removes it once the blob is
        finished; a store that can take the file as it is (the file store, on the same
        filesystem) moves it instead: a task that converted an image into its scratch directory
        stores it without copying a byte. On failure no blob appears and ``path`` stays the
        caller's.
        """
        try:
            with open(path, "rb") as source, self.writer(key, os.fstat(source.fileno()).st_size) as writer:
                while chunk := source.read(DEFAULT_CHUNK_SIZE):
                    writer.write(chunk)
                    if progress is not None:
                        progress(writer.bytes_written)
                location = writer.finish()
        except OSError as err:
            raise StoreError(str(io_error(err, path, "reading"))) from None
        path.unlink(missing_ok=True)
        return location

    @abstractmethod
    def open(self, location: str) -> BlobReader:
        """Random access to the finished blob at ``location``; StoreError if there is none."""

    @abstractmethod
    def read_chunks(
        self, location: str, start: int = 0, end: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Iterator[bytes]:
        """Stream ``blob[start:end]`` (Python slice bounds, ``end`` None = to the end) in chunks.

        No chunk is longer than ``chunk_size``; a range past the end is cut at the end, as a slice
        is. StoreError if there is no blob at ``location`` or reading fails midway.
        """

    def sendable_path(self, location: str, size: int) -> Path | None:
        """A local file holding exactly the ``size`` bytes of the blob, which an HTTP server may
        send by itself (zero-copy: ASGI ``http.response.pathsend``); None where there is none."""
        return None

    @abstractmethod
    def delete(self, location: str) -> None:
        """Remove the blob at ``location``; a missing blob is not an error."""

    @abstractmethod
    def exists(self, location: str) -> bool:
        """Whether a finished blob is at ``location``."""

    @abstractmethod
    def iter_locations(self) -> Iterator[str]:
        """Every finished blob of this store (for the registry's sweep against the catalog)."""

    @abstractmethod
    def sweep_incomplete(self, older_than_seconds: float) -> list[str]:
        """Remove what writers that died left (temp files, multipart uploads) idle longer than this.

        Returns a description of each removed item. A live writer in another process is left
        alone as long as it keeps writing more often than ``older_than_seconds``.
        """

    @abstractmethod
    def usage(self) -> StoreUsage | None:
        """Capacity and free space, or None where the store cannot know (S3)."""
