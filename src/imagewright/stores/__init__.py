"""Blob stores: where the registry keeps image bytes — files under a directory, or S3 through boto3.

This package stands on ``imagewright.files`` (atomic files), ``imagewright.binary`` (ByteSource)
and ``imagewright.errors``; it never imports catalog/ or service/.

The interface (``base.py``; the registry codes against nothing else)::

    @dataclass(frozen=True)
    class StoreInfo:                  # one entry of GET /v2/info/stores (Glance multi-store)
        id: str                       # "default", or NAME from --store NAME=URL
        scheme: str                   # "file" | "s3"
        description: str
        is_default: bool

    class BlobStore(ABC):
        info: StoreInfo
        def location_for(self, key) -> str        # deterministic, no I/O: "file:///DIR/ab/<key>",
                                                  # "s3://bucket/prefix/<key>"; key = 1-200 of [A-Za-z0-9_.-],
                                                  # first a letter or digit (check_key)
        def key_of(self, location) -> str         # inverse of location_for; StoreError for a foreign location
        def owns(self, location) -> bool
        def check(self) -> None                   # usable now? (dir created + writable / bucket reachable)
        def writer(self, key, size_hint=None) -> BlobWriter   # size_hint: bytes expected (S3 part size)
        def adopt(self, key, path, progress=None) -> str   # a finished local file becomes the
                                                  # blob (consumed): file store: renamed in on the
                                                  # same filesystem; else streamed through writer()
        def open(self, location) -> BlobReader    # random access (inspection, Range downloads)
        def read_chunks(self, location, start=0, end=None, chunk_size=1 MiB) -> Iterator[bytes]
                                                  # blob[start:end] with slice semantics, streamed
        def delete(self, location) -> None        # idempotent
        def exists(self, location) -> bool
        def iter_locations(self) -> Iterator[str] # every finished blob (the registry's orphan sweep)
        def sweep_incomplete(self, older_than_seconds) -> list[str]
                                                  # what dead writers left; returns what went. file:
                                                  # temps of dead pids (any age) or idle > threshold;
                                                  # S3: multipart uploads with no part for > threshold
                                                  # (<= 0: every incomplete upload under the prefix)
        def usage(self) -> StoreUsage | None      # capacity_bytes, free_bytes (file); None (S3)

    class BlobWriter(ABC):            # context manager; leaving it without finish() aborts
        location: str                 # where the blob will be
        bytes_written: int
        finished: bool
        def write(self, data) -> None # streaming; file: zeros left as holes; S3: multipart parts
                                      # >= 8 MiB, one filling while the previous one uploads
        def finish(self) -> str       # durable + visible at location (replacing what was there)
        def abort(self) -> None       # removes everything written; idempotent; no-op after finish

    class BlobReader(ABC):            # a binary.ByteSource: size, pread(offset, length); close();
        location: str                 # context manager. S3: ranged GETs through a small block cache

    open_stores(specs: Sequence[str], data_dir: Path) -> StoreSet
        # --store values: "[NAME=]file:///abs/dir", "[NAME=]s3://BUCKET[/prefix]?endpoint=URL&region=R"
        # (also addressing=path|virtual, default=true); several must be named; the first or the one
        # with default=true is the default. No value: one file store "default" under DATA_DIR/images.
    StoreSet: store_set[id], .default, .infos(), .for_location(location), .check(), iteration

Stores: ``file.py`` (``FileStore``: ROOT/<key[:2]>/<key>, atomic + durable through
``imagewright.files``, sparse, a one-machine store) and ``s3.py`` (``S3Store``: any S3 through
boto3, imported only when an s3:// store is configured). Tests: ``tests/stores`` runs one
contract suite over both, against a real S3 server (``tests/fixtures/s3_server.py``: Swift +
s3api, the ``s3_server`` fixture, usable by any test).

Errors: every failure is a ``StoreError`` (an ``ImageIOError``) with one sentence: a bad spec,
a full disk ("The store 'default' is full: no space left on ..."), S3 credentials refused, a
missing bucket, an endpoint that cannot be reached (named), a location that is not the store's.
S3 credentials come only from boto3's standard chain, never from the URL.

The registry's protocol around a write: catalog row ``saving`` with the intended location and
an upload lease → ``writer.write()``… → ``finish()`` → inspect ``open(location)`` → ``active``
(or ``delete(location)``). Its startup/periodic sweep deletes the blobs of expired ``saving``
rows, calls ``sweep_incomplete()`` and deletes ``iter_locations()`` entries no row names.
"""

from __future__ import annotations

from imagewright.stores.base import (
    DEFAULT_CHUNK_SIZE,
    BlobReader,
    BlobStore,
    BlobWriter,
    StoreInfo,
    StoreUsage,
    check_key,
)
from imagewright.stores.spec import parse_store_spec, parse_store_specs
from imagewright.stores.storeset import StoreSet, open_store, open_stores

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "StoreInfo",
    "StoreSet",
    "StoreUsage",
    "check_key",
    "open_store",
    "open_stores",
    "parse_store_spec",
    "parse_store_specs",
]
