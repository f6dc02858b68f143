"""Registering a file where it lies (Wakame-vdc style): ``imagewright image register-local PATH``.

An admin on the registry's machine names a file under an in-place store's directory
(``--store local=file-inplace:///srv/images``, see ``stores.inplace``). It is judged by the same
gate as an upload (``upload_gate.judge_upload``: unsafe content refused; the formats are what
the content is, or must match what the admin declares), hashed in one read (md5 ``checksum``,
sha512 ``os_hash_value``), read inside for its properties (OS, firmware, audit: see
``publishing``; a public registration of an image with secrets is refused like a public upload),
and becomes an ``active`` image whose location is the file itself — no byte is copied.
Deleting the image forgets the file and leaves it in place.

This works on the catalog directly (like ``imagewright accounts``), not through the API: making
a server open paths a request names, even an admin's request, is a door this design keeps shut;
the person registering a local file is on the machine that has it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from imagewright.catalog import images
from imagewright.catalog.accounts import ADMIN_PROJECT_NAME, find_project
from imagewright.errors import InvalidArgumentError, StoreError, UnsafeImageError
from imagewright.service.http import Registry
from imagewright.service.images import publishing, schemas
from imagewright.service.images.upload import HASH_ALGORITHM
from imagewright.service.images.views import image_view
from imagewright.stores.inplace import InPlaceFileStore
from imagewright.upload_gate import judge_upload


def in_place_store(registry: Registry, store_id: str | None) -> InPlaceFileStore:
    """The in-place store named ``store_id``, or the only one there is."""
    stores = [store for store in registry.stores if isinstance(store, InPlaceFileStore)]
    if store_id is None:
        if len(stores) != 1:
            raise InvalidArgumentError(
                "The registry has no in-place store (serve --store NAME=file-inplace:///DIR)."
                if not stores
                else f"The registry has several in-place stores ({', '.join(s.info.id for s in stores)}); "
                "name one with --store."
            )
        return stores[0]
    store = registry.stores[store_id]
    if not isinstance(store, InPlaceFileStore):
        raise InvalidArgumentError(
            f"The store {store_id!r} is not an in-place store (file-inplace://); its files are its own."
        )
    return store


def register_local(
    registry: Registry,
    path: Path,
    *,
    store_id: str | None = None,
    name: str | None = None,
    owner_project: str | None = None,
    visibility: str = "private",
    disk_format: str | None = None,
    container_format: str | None = None,
    properties: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Judge, hash and register ``path``; returns the image as the API shows it."""
    store = in_place_store(registry, store_id)
    location = store.location_of(path)
    with store.open(location) as reader:
        try:
            judged = judge_upload(reader, str(path), disk_format, container_format)
        except UnsafeImageError as err:
            raise UnsafeImageError(f"{path} is not registered: {err}", err.reasons) from err
        size = reader.size
    md5, sha512, read = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0
    for chunk in store.read_chunks(location, 0, size):
        md5.update(chunk)
        sha512.update(chunk)
        read += len(chunk)
    if read != size:
        raise StoreError(f"{path} changed while it was read ({read} of {size} bytes).")
    facts = publishing.content_facts(path, judged.report, judged.disk_format, judged.container_format)
    values: dict[str, Any] = {
        "name": name if name is not None else path.name,
        "disk_format": judged.disk_format,
        "container_format": judged.container_format,
        "visibility": visibility,
    }
    checked_properties: dict[str, str] = {}
    for key, raw in {**values, **(properties or {})}.items():
        schemas.check_writable(key, creating=True)
        value = schemas.check_value(key, raw)
        if key in schemas.BASE:
            values[key] = value
        else:
            checked_properties[key] = value
    with registry.catalog.writing() as session:
        owner = owner_project
        if owner is None:
            owner = find_project(session, ADMIN_PROJECT_NAME).id
        values["owner"] = owner
        image = images.create_image(session, values, checked_properties, [])
        images.save_image(
            session,
            image,
            {
                "status": "active",
                "store_id": store.info.id,
                "location": location,
                "size": size,
                "virtual_size": judged.virtual_size,
                "checksum": md5.hexdigest(),
                "os_hash_algo": HASH_ALGORITHM,
                "os_hash_value": sha512.hexdigest(),
            },
            {**checked_properties, **judged.properties},
            [],
        )
        publishing.apply_facts(image, facts, limit=schemas.MAX_PROPERTIES)
        publishing.require_publishable(image.id, image.visibility, publishing.property_dict(image))
        session.flush()
        return image_view(image)


def registry_of_data_dir(data_dir_option: str | None) -> Registry:
    """The catalog and stores the data dir's ``serve`` runs with (its recorded configuration)."""
    from imagewright.catalog.database import Catalog
    from imagewright.service.config import ServiceConfig
    from imagewright.service.datadir import read_config, resolve_data_dir
    from imagewright.stores import open_stores

    data_dir = resolve_data_dir(data_dir_option)
    recorded = read_config(data_dir) if data_dir.is_dir() else None
    if recorded is None:
        raise InvalidArgumentError(
            f"{data_dir} is not the data dir of a registry; start "
            f"'imagewright serve --data-dir {data_dir}' once."
        )
    config = ServiceConfig(
        data_dir=data_dir,
        database_url=recorded.database_url,
        store_specs=recorded.store_specs,
        public_url=recorded.public_url,
    )
    catalog = Catalog(config.database_url)
    catalog.check_schema()
    return Registry(config=config, catalog=catalog, stores=open_stores(list(config.store_specs), data_dir))
