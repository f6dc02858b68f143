"""The stores a registry runs with: ``open_stores(--store values, data dir)`` → ``StoreSet``.

No ``--store`` at all gives the embedded default: one file store ``default`` under
``DATA_DIR/images`` (also when every ``--store`` is an in-place one, which takes no uploads).
The S3 store (and boto3 with it) is imported only when an ``s3://``
value is given, so commands that never touch S3 do not pay for importing it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

from imagewright.errors import StoreError
from imagewright.stores.base import BlobStore, StoreInfo
from imagewright.stores.spec import (
    FileStoreSpec,
    InPlaceStoreSpec,
    StoreSpec,
    parse_store_specs,
    refuse_overlaps,
)


class StoreSet:
    """Named stores, one of them the default; iterates over the stores in the order given."""

    def __init__(self, stores: Sequence[BlobStore]) -> None:
        if not stores:
            raise StoreError("A registry needs at least one store.")
        self._by_id: dict[str, BlobStore] = {}
        for store in stores:
            if store.info.id in self._by_id:
                raise StoreError(f"Two stores are named {store.info.id!r}.")
            self._by_id[store.info.id] = store
        defaults = [s for s in stores if s.info.is_default]
        if len(defaults) != 1:
            raise StoreError("Exactly one store must be the default.")
        self.default = defaults[0]

    def __getitem__(self, store_id: str) -> BlobStore:
        try:
            return self._by_id[store_id]
        except KeyError:
            raise StoreError(
                f"There is no store named {store_id!r}; the stores are: {', '.join(self._by_id)}."
            ) from None

    def __contains__(self, store_id: object) -> bool:
        return store_id in self._by_id

    def __iter__(self) -> Iterator[BlobStore]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def by_id(self) -> Mapping[str, BlobStore]:
        return dict(self._by_id)

    def infos(self) -> list[StoreInfo]:
        """What ``GET /v2/info/stores`` lists, in the order the stores were given."""
        return [s.info for s in self._by_id.values()]

    def for_location(self, location: str) -> BlobStore:
        """The store a location belongs to (the catalog's recorded store id is authoritative)."""
        for store in self._by_id.values():
            if store.owns(location):
                return store
        raise StoreError(f"The location {location!r} belongs to none of the configured stores.")

    def check(self) -> None:
        """``check()`` every store: a registry calls this before it serves."""
        for store in self._by_id.values():
            store.check()


def open_store(spec: StoreSpec) -> BlobStore:
    """The store a parsed spec describes (no I/O: ``check()`` reaches it)."""
    store: BlobStore
    if isinstance(spec, InPlaceStoreSpec):
        from imagewright.stores.inplace import InPlaceFileStore

        store = InPlaceFileStore(spec.id, Path(spec.root))
    elif isinstance(spec, FileStoreSpec):
        from imagewright.stores.file import FileStore

        store = FileStore(spec.id, Path(spec.root), is_default=spec.is_default)
    else:
        from imagewright.stores.s3 import S3Store

        store = S3Store(
            spec.id,
            spec.bucket,
            prefix=spec.prefix,
            endpoint=spec.endpoint,
            region=spec.region,
            addressing=spec.addressing,
            is_default=spec.is_default,
        )
    return store


def open_stores(specs: Sequence[str], data_dir: Path) -> StoreSet:
    """The stores named by ``--store`` values, or the embedded default under ``data_dir/images``."""
    parsed: list[StoreSpec] = parse_store_specs(specs) if specs else []
    if all(isinstance(s, InPlaceStoreSpec) for s in parsed):
        # No store that takes uploads was named: the embedded default one takes them.
        root = PurePosixPath(Path(data_dir).absolute() / "images")
        parsed.insert(0, FileStoreSpec(id="default", is_default=True, root=root))
        refuse_overlaps(parsed)
    if not any(s.is_default for s in parsed):
        # The first store that takes uploads (an in-place store takes none).
        first = next(i for i, s in enumerate(parsed) if not isinstance(s, InPlaceStoreSpec))
        parsed[first] = dataclasses.replace(parsed[first], is_default=True)
    return StoreSet([open_store(s) for s in parsed])
