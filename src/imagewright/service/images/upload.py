"""``PUT /v2/images/{id}/file``: stream into a store, hash on the way, judge, then activate.

The protocol (agreed with ``imagewright.stores``; Glance's status lifecycle):

1. Claim: the row goes ``queued`` → ``saving`` with the store (the default, or the one the
   ``X-Image-Meta-Store`` header names, as Glance's multi-store uploads do), the blob's location, this
   process as holder and a lease (one conditional UPDATE: two uploads of one image cannot both
   win; the loser gets 409).
2. Stream: request chunks are gathered into ~1 MiB blocks; each block is hashed (md5 for
   ``checksum``, sha512 for ``os_hash_value``) and written to the store's writer in a worker
   thread. Memory is bounded by one block; nothing goes to a temp disk beyond the store's own.
   The lease is renewed as bytes flow; more than ``image_size_cap`` bytes is refused (413).
3. Finish the blob, then judge it: the inspection opens the stored blob (random access) and
   refuses unsafe content or content that is not the declared ``disk_format`` /
   ``container_format`` (``upload_gate.judge_upload``); an OVA's manifest and signature are
   verified there too, and its signer is recorded in the properties ``upload_gate.OVA_PROPERTIES``.
   Then read what is inside (``publishing``): the OS, the firmware it needs, the audit.
4. ``saving`` → ``active`` with size, virtual_size, hashes and the content's properties (the
   owner's win) — only if this process still holds the lease (the sweep may have reset a
   stalled upload, the image may have been deleted), and not when the image is public and its
   data holds secrets (409, ``publishing.require_publishable``).

Any failure — the client going away, a refusal, a full store — deletes what was written and
puts the row back to ``queued`` without data (Glance's ``_restore``), so no image is ever
``active`` with partial or refused data. A ``kill -9`` in the middle leaves a ``saving`` row
with a lease and an incomplete write, which the sweep (``service.sweep``) resets and removes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from starlette.requests import ClientDisconnect, Request

from imagewright.catalog import image_policy, images
from imagewright.catalog.models import Image
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import ConflictError, RequestError, StoreError, UnsafeImageError
from imagewright.ops.inspect_os.properties import ImageFacts
from imagewright.service.http import Registry, blocking
from imagewright.service.images import publishing, schemas
from imagewright.service.leases import this_holder
from imagewright.stores import BlobStore, BlobWriter
from imagewright.upload_gate import GateResult, judge_upload

LOG = logging.getLogger("imagewright.service.upload")
T = TypeVar("T")

BLOCK_SIZE = 1 << 20
#: Under the data directory: local copies of blobs from stores that are not files, while their
#: guest is read (``publishing.blob_facts``).
SCRATCH_DIRECTORY = "scratch"
HASH_ALGORITHM = "sha512"


class PayloadTooLargeError(RequestError):
    status = 413


class Hashing:
    """md5 + sha512 of the bytes as they pass, and their count."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha512 = hashlib.sha512()
        self.size = 0

    def update(self, block: bytes | bytearray) -> None:
        self.md5.update(block)
        self.sha512.update(block)
        self.size += len(block)


def _claim(registry: Registry, caller: AuthContext, image_id: str, store: BlobStore) -> images.UploadClaim:
    holder = this_holder()
    # A fresh key per attempt: a retried upload never meets the leftovers of an earlier one.
    key = f"{image_id}.{uuid.uuid4().hex[:12]}"
    location = store.location_for(key)
    lease = timedelta(seconds=registry.config.upload_lease_seconds)
    with registry.catalog.writing() as session:
        image = images.get_image_for_update(session, image_id)
        membership = images.membership_of(session, image_id, caller.project_id)
        image_policy.require_owner_member(caller, image, membership, "upload data to")
        if image.status != "queued":
            raise ConflictError(f"Image status transition from {image.status} to saving is not allowed.")
        if not image.disk_format or not image.container_format:
            raise RequestError("Properties disk_format, container_format must be set prior to saving data.")
        if not images.claim_upload(session, image, holder, store.info.id, location, lease):
            raise ConflictError("Another upload of this image started first.")
        return images.UploadClaim(
            image_id, holder, store.info.id, location, image.disk_format, image.container_format
        )


def _release(
    registry: Registry, claim: images.UploadClaim, store: BlobStore, writer: BlobWriter | None
) -> None:
    """Undo an upload: remove what was written, put the row back to ``queued``."""
    try:
        if writer is not None and not writer.finished:
            writer.abort()
        store.delete(claim.location)
    except StoreError as err:
        LOG.warning("could not remove the blob of a failed upload (the sweep will): %s", err)
    with registry.catalog.writing() as session:
        images.release_upload(session, claim.image_id, claim.holder)


async def receive_upload(request: Request, registry: Registry, caller: AuthContext, image_id: str) -> None:
    content_type = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    if content_type != "application/octet-stream":
        raise UnsupportedMediaTypeError(
            f"Image data must be sent as application/octet-stream, not {content_type}."
        )
    expected = request.headers.get("content-length")
    cap = registry.config.image_size_cap
    if expected is not None and expected.isdigit() and int(expected) > cap:
        raise PayloadTooLargeError(
            f"The image is {expected} bytes, more than the {cap}-byte limit of this registry."
        )
    store = _chosen_store(request, registry)
    claim = await blocking(_claim, registry, caller, image_id, store)
    writer: BlobWriter | None = None
    try:
        size_hint = int(expected) if expected is not None and expected.isdigit() else None
        writer = await blocking(store.writer, store.key_of(claim.location), size_hint)
        hashing = Hashing()
        await stream_into(
            request,
            writer,
            hashing,
            cap,
            renew_every=registry.config.upload_lease_seconds / 4,
            renew=lambda: _renew(registry, claim),
        )
        if expected is not None and expected.isdigit() and hashing.size != int(expected):
            raise RequestError(f"The upload ended after {hashing.size} of {expected} bytes.")
        location = await blocking(writer.finish)
        if location != claim.location:
            raise StoreError(f"The store wrote the blob to {location}, not to {claim.location} as claimed.")
        judged = await blocking(_judge, store, claim)
        facts = await _renewing(
            registry,
            claim,
            lambda: publishing.blob_facts(
                store,
                claim.location,
                judged.report,
                judged.disk_format,
                judged.container_format,
                registry.config.data_dir / SCRATCH_DIRECTORY,
            ),
        )
        values: dict[str, Any] = {
            "size": hashing.size,
            "checksum": hashing.md5.hexdigest(),
            "os_hash_algo": HASH_ALGORITHM,
            "os_hash_value": hashing.sha512.hexdigest(),
            "virtual_size": judged.virtual_size,
        }
        if not await blocking(_activate, registry, claim, values, judged.properties, facts):
            raise ConflictError(
                "The image was deleted or its upload was taken over while the data was arriving."
            )
    except BaseException as err:
        await blocking(_release, registry, claim, store, writer)
        if isinstance(err, ClientDisconnect):
            LOG.info("client went away during the upload of %s; the image is queued again", image_id)
        if isinstance(err, StoreError) and " full" in str(err):
            raise PayloadTooLargeError(str(err)) from err
        raise


class UnsupportedMediaTypeError(RequestError):
    status = 415


#: The header a client names the store with (Glance multi-store: ``glance --store ID image-upload``).
STORE_HEADER = "x-image-meta-store"


def _chosen_store(request: Request, registry: Registry) -> BlobStore:
    """The store named by ``X-Image-Meta-Store`` (Glance's multi-store upload), else the default."""
    store_id = request.headers.get(STORE_HEADER, "").strip()
    if not store_id:
        return registry.stores.default
    if store_id not in registry.stores:
        known = ", ".join(info.id for info in registry.stores.infos())
        raise RequestError(
            f"There is no store named {store_id!r} (X-Image-Meta-Store); the stores are: {known}."
        )
    store = registry.stores[store_id]
    if store.info.scheme == "file-inplace":
        raise RequestError(
            f"The store {store_id!r} registers files where they lie and takes no uploads; "
            "upload to another store."
        )
    return store


async def stream_into(
    request: Request,
    writer: BlobWriter,
    hashing: Hashing,
    cap: int,
    *,
    renew_every: float,
    renew: Callable[[], bool],
) -> None:
    """Stream the request body into ``writer`` in ~1 MiB blocks, hashed, within ``cap`` bytes.

    ``renew`` (run in the thread pool every ``renew_every`` seconds while bytes flow) renews the
    writer's lease; when it answers False the lease is lost and the upload stops (409).
    """
    block = bytearray()
    renewed = time.monotonic()
    async for chunk in request.stream():
        if not chunk:
            continue
        block.extend(chunk)
        if hashing.size + len(block) > cap:
            raise PayloadTooLargeError(f"The image is larger than the {cap}-byte limit of this registry.")
        if len(block) >= BLOCK_SIZE:
            data = bytes(block)
            block.clear()
            await blocking(_write_block, writer, hashing, data)
            if time.monotonic() - renewed > renew_every:
                renewed = time.monotonic()
                if not await blocking(renew):
                    raise ConflictError(
                        "The upload lease was lost (the image was deleted or reset meanwhile)."
                    )
    if block:
        await blocking(_write_block, writer, hashing, bytes(block))


def _write_block(writer: BlobWriter, hashing: Hashing, data: bytes) -> None:
    hashing.update(data)
    writer.write(data)


def _renew(registry: Registry, claim: images.UploadClaim) -> bool:
    with registry.catalog.writing() as session:
        return images.renew_lease(
            session, claim.image_id, claim.holder, timedelta(seconds=registry.config.upload_lease_seconds)
        )


async def _renewing(registry: Registry, claim: images.UploadClaim, work: Callable[[], T]) -> T:
    """``work()`` in the thread pool, the upload's lease renewed while it runs (reading a guest
    may take longer than a lease: a filesystem only libguestfs reads starts an appliance)."""
    running = asyncio.ensure_future(blocking(work))
    every = registry.config.upload_lease_seconds / 4
    while not (await asyncio.wait({running}, timeout=every))[0]:
        if not await blocking(_renew, registry, claim):
            # The thread finishes on its own; what it read is not used.
            running.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise ConflictError("The upload lease was lost (the image was deleted or reset meanwhile).")
    return running.result()


def _judge(store: BlobStore, claim: images.UploadClaim) -> GateResult:
    with store.open(claim.location) as reader:
        try:
            return judge_upload(reader, claim.image_id, claim.disk_format, claim.container_format)
        except UnsafeImageError as err:
            raise RequestError(str(err)) from err


def _activate(
    registry: Registry,
    claim: images.UploadClaim,
    values: dict[str, Any],
    properties: dict[str, str],
    facts: ImageFacts,
) -> bool:
    """``saving`` → ``active`` with what the gate recorded (``properties``) and the content's
    properties filled in, unless the upload was taken over (False) or the image is public and
    its data holds secrets (409)."""
    with registry.catalog.writing() as session:
        image = session.scalars(select(Image).where(Image.id == claim.image_id).with_for_update()).first()
        if image is None or image.status != "saving" or image.upload_holder != claim.holder:
            return False
        publishing.apply_facts(image, facts, limit=schemas.MAX_PROPERTIES)
        publishing.require_publishable(image.id, image.visibility, publishing.property_dict(image))
        return images.finish_upload(session, claim.image_id, claim.holder, values, properties)
