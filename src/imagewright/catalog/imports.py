"""The image side of interoperable import: staging, the import lock, activation, extra copies.

Glance's semantics (``glance/api/v2/images.py:import_image``, ``glance/async_/flows/
api_image_import.py``: ``ImportActionWrapper``, ``_ImportActions``, ``_ImportToStore``,
``_VerifyImageState``, ``_CompleteTask``):

- ``PUT /stage`` turns ``queued`` into ``uploading``; the staged bytes are a blob named by an
  ``image_locations`` row with status ``staging``. While bytes arrive the stager holds the
  upload lease (``upload_holder``/``upload_expires_at``, as an upload does); when they are all
  in, the lease is dropped and the image stays ``uploading`` (staged).
- ``POST /import`` takes the **import lock**: the property ``os_glance_import_task`` names the
  task; a second import while that task is pending or processing is a 409, a lock left by a
  finished task is taken over. The image goes ``importing`` (not for ``copy-image``, whose image
  stays ``active``); ``os_glance_importing_to_stores`` gains the target stores and
  ``os_glance_failed_import`` loses them.
- Success: ``importing`` → ``active`` with size, hashes and formats of the stored data; the
  first store written is the primary location, the others are ``active`` copies; each store
  leaves ``os_glance_importing_to_stores``, each failed one (``all_stores_must_succeed`` false)
  joins ``os_glance_failed_import``; the lock goes.
- Failure: back to ``queued`` (not ``copy-image``), the lock goes, the stores leave the
  importing list, and every blob the task wrote — and the staged data — is deleted by the
  caller from the locations returned here.

Every function takes the row lock (``get_image_for_update``) and checks that the caller's task
still holds the import lock, so a task that lost its lease cannot change the image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from imagewright.catalog.accounts import utcnow
from imagewright.catalog.models import Image, ImageLocation, ImageProperty
from imagewright.catalog.task_models import Export, Task
from imagewright.errors import ConflictError

IMPORT_TASK_PROPERTY = "os_glance_import_task"
IMPORTING_STORES_PROPERTY = "os_glance_importing_to_stores"
FAILED_IMPORT_PROPERTY = "os_glance_failed_import"


@dataclass(frozen=True)
class BlobRef:
    store_id: str
    location: str


def property_of(image: Image, name: str) -> str | None:
    for prop in image.properties:
        if prop.name == name:
            return prop.value
    return None


def set_property(image: Image, name: str, value: str | None) -> None:
    """Set (or, with None, remove) a property on a loaded image."""
    for prop in list(image.properties):
        if prop.name == name:
            if value is None:
                image.properties.remove(prop)
            else:
                prop.value = value
            return
    if value is not None:
        image.properties.append(ImageProperty(name=name, value=value))


def _merge_stores(image: Image, name: str, stores: Iterable[str], *, remove: bool = False) -> None:
    current = {store for store in (property_of(image, name) or "").split(",") if store}
    changed = current - set(stores) if remove else current | set(stores)
    set_property(image, name, ",".join(sorted(changed)))


def image_stores(image: Image) -> list[str]:
    """The stores holding the image's data: the primary one first, then the copies."""
    stores = [image.store_id] if image.store_id else []
    for extra in image.extra_locations:
        if extra.status == "active" and extra.store_id not in stores:
            stores.append(extra.store_id)
    return stores


# --- staging ------------------------------------------------------------------------------------


def claim_stage(
    session: Session, image: Image, holder: str, store_id: str, location: str, lease: timedelta
) -> bool:
    """``queued`` → ``uploading`` for ``holder``, recording the staging blob's location first."""
    now = utcnow()
    result = session.execute(
        update(Image)
        .where(Image.id == image.id, Image.status == "queued")
        .values(status="uploading", upload_holder=holder, upload_expires_at=now + lease, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    session.add(
        ImageLocation(
            location=location, image_id=image.id, store_id=store_id, status="staging", created_at=now
        )
    )
    session.flush()
    return True


def finish_stage(session: Session, image_id: str, holder: str, size: int) -> bool:
    """All staged bytes are in: drop the lease (the image stays ``uploading``, staged)."""
    result = session.execute(
        update(Image)
        .where(Image.id == image_id, Image.status == "uploading", Image.upload_holder == holder)
        .values(upload_holder=None, upload_expires_at=None, size=size, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def release_stage(session: Session, image_id: str, holder: str | None) -> list[BlobRef]:
    """``uploading`` → ``queued`` (a failed or abandoned stage); returns the staged blob to delete.

    ``holder`` None: whoever held it (the sweep, after checking that the holder is gone).
    """
    conditions = [Image.id == image_id, Image.status == "uploading"]
    if holder is not None:
        conditions.append(Image.upload_holder == holder)
    result = session.execute(
        update(Image)
        .where(*conditions)
        .values(status="queued", size=None, upload_holder=None, upload_expires_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return []
    return _drop_locations(session, image_id, status="staging")


@dataclass(frozen=True)
class StageInProgress:
    image_id: str
    holder: str | None
    expires_at: Any


def stages_in_progress(session: Session) -> list[StageInProgress]:
    rows = session.execute(
        select(Image.id, Image.upload_holder, Image.upload_expires_at).where(
            Image.status == "uploading", Image.upload_holder.is_not(None)
        )
    ).all()
    return [StageInProgress(*row) for row in rows]


def staging_blob(session: Session, image_id: str) -> BlobRef | None:
    row = session.scalars(
        select(ImageLocation).where(ImageLocation.image_id == image_id, ImageLocation.status == "staging")
    ).first()
    return BlobRef(row.store_id, row.location) if row is not None else None


# --- the import lock ----------------------------------------------------------------------------


def _lock_holder_active(session: Session, image: Image) -> str | None:
    """The task that holds the image's import lock, if it is still pending or processing."""
    task_id = property_of(image, IMPORT_TASK_PROPERTY)
    if not task_id:
        return None
    task = session.get(Task, task_id)
    if task is None or task.status not in ("pending", "processing"):
        return None
    return task_id


def begin_import(session: Session, image: Image, task_id: str, method: str, stores: Sequence[str]) -> None:
    """Take the import lock for ``task_id`` (the image row is locked by the caller)."""
    if _lock_holder_active(session, image) is not None:
        raise ConflictError(
            f"New operation on image '{image.id}' is not permitted as prior operation is still in progress."
        )
    set_property(image, IMPORT_TASK_PROPERTY, task_id)
    if method != "copy-image":
        image.status = "importing"
    _merge_stores(image, IMPORTING_STORES_PROPERTY, stores)
    _merge_stores(image, FAILED_IMPORT_PROPERTY, stores, remove=True)
    image.updated_at = utcnow()
    session.flush()


def holds_lock(image: Image, task_id: str) -> bool:
    return property_of(image, IMPORT_TASK_PROPERTY) == task_id


def add_pending_blob(session: Session, image_id: str, task_id: str, store_id: str, location: str) -> None:
    """Name a blob a task is about to write (before its first byte, for the sweep)."""
    session.add(
        ImageLocation(
            location=location,
            image_id=image_id,
            store_id=store_id,
            status="pending",
            task_id=task_id,
            created_at=utcnow(),
        )
    )
    session.flush()


def _drop_locations(
    session: Session, image_id: str, *, status: str, task_id: str | None = None
) -> list[BlobRef]:
    conditions = [ImageLocation.image_id == image_id, ImageLocation.status == status]
    if task_id is not None:
        conditions.append(ImageLocation.task_id == task_id)
    rows = list(session.scalars(select(ImageLocation).where(*conditions)))
    for row in rows:
        session.delete(row)
    session.flush()
    return [BlobRef(row.store_id, row.location) for row in rows]


def pending_blobs_of_task(session: Session, task_id: str) -> list[BlobRef]:
    rows = session.scalars(
        select(ImageLocation).where(ImageLocation.task_id == task_id, ImageLocation.status == "pending")
    )
    return [BlobRef(row.store_id, row.location) for row in rows]


def drop_pending_blobs(session: Session, task_id: str) -> list[BlobRef]:
    rows = list(
        session.scalars(
            select(ImageLocation).where(ImageLocation.task_id == task_id, ImageLocation.status == "pending")
        )
    )
    for row in rows:
        session.delete(row)
    session.flush()
    return [BlobRef(row.store_id, row.location) for row in rows]


#: An original kept beside its conversion: its row's status, and its properties' prefix.
ORIGINAL = "original"
ORIGINAL_PROPERTY_PREFIX = "os_imagewright_original_"


@dataclass(frozen=True)
class KeptOriginal:
    """The data of a converted import as it arrived (``--keep-original``): its blob and facts."""

    blob: BlobRef
    disk_format: str
    container_format: str
    size: int
    md5: str
    sha512: str

    def properties(self) -> dict[str, str]:
        """What the image shows of it (``os_imagewright_original_*``, read-only to clients)."""
        facts = {
            "disk_format": self.disk_format,
            "container_format": self.container_format,
            "size": str(self.size),
            "checksum": self.md5,
            "os_hash_algo": "sha512",
            "os_hash_value": self.sha512,
            "store": self.blob.store_id,
        }
        return {ORIGINAL_PROPERTY_PREFIX + name: value for name, value in facts.items()}


def complete_import(
    session: Session,
    image_id: str,
    task_id: str,
    *,
    values: dict[str, Any],
    written: Sequence[BlobRef],
    failed_stores: Sequence[str],
    stores: Sequence[str],
    properties: dict[str, str] | None = None,
    original: KeptOriginal | None = None,
) -> list[BlobRef] | None:
    """``importing`` → ``active`` with ``values`` and the blobs ``written`` (the first is primary).

    ``original``: the data as it arrived, kept (a pending blob of the task, or the staged one):
    its row becomes ``original`` and the image's ``os_imagewright_original_*`` properties say
    what it is. Returns the blobs to delete now (the staged data, unless kept), or None when the
    task no longer holds the image (deleted, or its lock taken over): the caller then deletes
    what it wrote.
    """
    image = session.scalars(select(Image).where(Image.id == image_id).with_for_update()).first()
    if image is None or not holds_lock(image, task_id) or image.status != "importing":
        return None
    primary, copies = written[0], written[1:]
    for key, value in values.items():
        setattr(image, key, value)
    image.status = "active"
    image.store_id, image.location = primary.store_id, primary.location
    session.execute(delete(ImageLocation).where(ImageLocation.location == primary.location))
    for copy in copies:
        session.execute(
            update(ImageLocation)
            .where(ImageLocation.location == copy.location)
            .values(status="active", task_id=None)
            .execution_options(synchronize_session=False)
        )
    if original is not None:
        session.execute(
            update(ImageLocation)
            .where(ImageLocation.location == original.blob.location, ImageLocation.image_id == image_id)
            .values(status=ORIGINAL, task_id=None)
            .execution_options(synchronize_session=False)
        )
        for name, value in original.properties().items():
            set_property(image, name, value)
    staged = _drop_locations(session, image_id, status="staging")
    for name, value in (properties or {}).items():
        set_property(image, name, value)
    set_property(image, IMPORT_TASK_PROPERTY, None)
    _merge_stores(image, IMPORTING_STORES_PROPERTY, stores, remove=True)
    _merge_stores(image, FAILED_IMPORT_PROPERTY, failed_stores)
    image.updated_at = utcnow()
    session.flush()
    session.expire(image, ["extra_locations"])
    return staged


def complete_copy(
    session: Session,
    image_id: str,
    task_id: str,
    *,
    written: Sequence[BlobRef],
    failed_stores: Sequence[str],
    stores: Sequence[str],
) -> bool:
    """copy-image done: the blobs ``written`` become ``active`` copies; False if the lock is lost."""
    image = session.scalars(select(Image).where(Image.id == image_id).with_for_update()).first()
    if image is None or not holds_lock(image, task_id) or image.status not in ("active", "deactivated"):
        return False
    for copy in written:
        session.execute(
            update(ImageLocation)
            .where(ImageLocation.location == copy.location)
            .values(status="active", task_id=None)
            .execution_options(synchronize_session=False)
        )
    set_property(image, IMPORT_TASK_PROPERTY, None)
    _merge_stores(image, IMPORTING_STORES_PROPERTY, stores, remove=True)
    _merge_stores(image, FAILED_IMPORT_PROPERTY, failed_stores)
    image.updated_at = utcnow()
    session.flush()
    return True


def revert_import(
    session: Session, image_id: str, task_id: str, method: str, failed_stores: Sequence[str]
) -> list[BlobRef]:
    """Undo a failed import: returns every blob to delete (what the task wrote, the staged data)."""
    blobs = drop_pending_blobs(session, task_id)
    image = session.scalars(select(Image).where(Image.id == image_id).with_for_update()).first()
    if image is None or not holds_lock(image, task_id):
        return blobs
    stores = [s for s in (property_of(image, IMPORTING_STORES_PROPERTY) or "").split(",") if s]
    if method != "copy-image":
        blobs += _drop_locations(session, image_id, status="staging")
        if image.status == "importing":
            image.status = "queued"
            image.size = None
    set_property(image, IMPORT_TASK_PROPERTY, None)
    _merge_stores(image, IMPORTING_STORES_PROPERTY, stores, remove=True)
    _merge_stores(image, FAILED_IMPORT_PROPERTY, failed_stores)
    image.updated_at = utcnow()
    session.flush()
    return blobs


def all_blobs_of_image(image: Image) -> list[BlobRef]:
    """Every blob an image row names (primary, copies, staged, pending): what deleting it removes."""
    blobs = [BlobRef(image.store_id, image.location)] if image.store_id and image.location else []
    blobs += [BlobRef(extra.store_id, extra.location) for extra in image.extra_locations]
    return blobs


def referenced_blob_locations(session: Session) -> set[str]:
    """Locations named by ``image_locations`` and ``exports`` (the sweep adds ``images.location``)."""
    named = set(session.scalars(select(ImageLocation.location)))
    named |= set(session.scalars(select(Export.location)))
    return named
