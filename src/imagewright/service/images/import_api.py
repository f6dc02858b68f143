"""Interoperable image import (Image API v2.6+): ``/v2/info/import``, ``/stage``, ``/import``.

- ``GET /v2/info/import``: the methods this registry runs — ``glance-direct``, ``web-download``,
  ``glance-download`` (when a remote region is configured, ``--glance-region``) and
  ``copy-image`` (only with more than one store: advertised with one, clients would wait for a
  copy that can never happen).
- ``PUT /v2/images/{id}/stage``: the data streams into a staging blob of the default store
  (lease and limits as an upload); ``queued`` → ``uploading``. 204.
- ``POST /v2/images/{id}/import`` (202): ``{"method": {"name": …, "uri": …}, "stores": […],
  "all_stores": bool, "all_stores_must_succeed": bool}`` (or the ``X-Image-Meta-Store``
  header) — Glance's checks in Glance's order and words (``glance/api/v2/images.py:
  import_image``): the image's status for the method (409), the import lock (409), the stores
  (409 for an unknown one), a web-download URI refused by the URL policy (400, with the reason).
  The task is created and the lock taken in one transaction, then queued.

Our extension: an image created without ``disk_format``/``container_format`` gets them from its
content (Glance answers 409); the content is inspected either way.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagewright.catalog import image_policy, images, imports
from imagewright.catalog import tasks as task_rows
from imagewright.catalog.models import Image
from imagewright.catalog.task_models import IMPORT_TASK_TYPE
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import ConflictError, ImagewrightError, RequestError, StoreError
from imagewright.service.http import (
    Registry,
    blocking,
    caller_of,
    glance_error,
    guarded,
    json_response,
    read_json,
    registry_of,
)
from imagewright.service.images.task_api import _submit
from imagewright.service.images.upload import Hashing, PayloadTooLargeError, stream_into
from imagewright.service.leases import this_holder
from imagewright.service.tasks.environment import conversion_for, parse_conversions, parse_regions
from imagewright.service.tasks.importing import ImportPlan
from imagewright.service.tasks.web_download import UrlPolicy, WebDownloadError, check_url
from imagewright.stores import BlobWriter

LOG = logging.getLogger("imagewright.service.import")
_route = guarded(glance_error)

METHODS = ("glance-direct", "web-download", "glance-download", "copy-image")


def enabled_methods(registry: Registry) -> list[str]:
    methods = ["glance-direct", "web-download"]
    if registry.config.glance_regions:
        methods.append("glance-download")
    if len(registry.stores) > 1:
        methods.append("copy-image")
    return methods


@_route
async def info_import(request: Request) -> Response:
    await caller_of(request)
    methods = enabled_methods(registry_of(request))
    return json_response(
        {"import-methods": {"description": "Import methods available.", "type": "array", "value": methods}}
    )


# --- stage --------------------------------------------------------------------------------------


def _claim_stage(registry: Registry, caller: AuthContext, image_id: str) -> tuple[str, str, str]:
    store = registry.stores.default
    holder = this_holder()
    location = store.location_for(f"{image_id}.stage.{uuid.uuid4().hex[:12]}")
    with registry.catalog.writing() as session:
        image = images.get_image_for_update(session, image_id)
        membership = images.membership_of(session, image_id, caller.project_id)
        image_policy.require_owner_member(caller, image, membership, "stage data for")
        if image.status != "queued":
            raise ConflictError(f"Image status transition from {image.status} to uploading is not allowed.")
        lease = timedelta(seconds=registry.config.upload_lease_seconds)
        if not imports.claim_stage(session, image, holder, store.info.id, location, lease):
            raise ConflictError("Another upload of this image started first.")
    return holder, store.info.id, location


def _renew_stage(registry: Registry, image_id: str, holder: str) -> bool:
    with registry.catalog.writing() as session:
        lease = timedelta(seconds=registry.config.upload_lease_seconds)
        return images.renew_lease(session, image_id, holder, lease, status="uploading")


@_route
async def stage(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id = request.path_params["image_id"]
    content_type = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    if content_type != "application/octet-stream":
        return glance_error(
            415, f"Image data must be sent as application/octet-stream, not {content_type}.", {}
        )
    cap = registry.config.image_size_cap
    expected = request.headers.get("content-length")
    if expected is not None and expected.isdigit() and int(expected) > cap:
        raise PayloadTooLargeError(
            f"The image is {expected} bytes, more than the {cap}-byte limit of this registry."
        )
    holder, store_id, location = await blocking(_claim_stage, registry, caller, image_id)
    store = registry.stores[store_id]
    writer: BlobWriter | None = None
    try:
        size_hint = int(expected) if expected is not None and expected.isdigit() else None
        writer = await blocking(store.writer, store.key_of(location), size_hint)
        hashing = Hashing()
        await stream_into(
            request,
            writer,
            hashing,
            cap,
            renew_every=registry.config.upload_lease_seconds / 4,
            renew=lambda: _renew_stage(registry, image_id, holder),
        )
        if expected is not None and expected.isdigit() and hashing.size != int(expected):
            raise RequestError(f"The upload ended after {hashing.size} of {expected} bytes.")
        if hashing.size == 0:
            raise RequestError("The staged data is empty.")
        await blocking(writer.finish)

        def finish() -> bool:
            with registry.catalog.writing() as session:
                return imports.finish_stage(session, image_id, holder, hashing.size)

        if not await blocking(finish):
            raise ConflictError("The image was deleted or its stage was reset while the data was arriving.")
    except BaseException as err:
        await blocking(_undo_stage, registry, image_id, holder, store_id, location, writer)
        if isinstance(err, StoreError) and " full" in str(err):
            raise PayloadTooLargeError(str(err)) from err
        raise
    return Response(status_code=204)


def _undo_stage(
    registry: Registry, image_id: str, holder: str, store_id: str, location: str, writer: BlobWriter | None
) -> None:
    store = registry.stores[store_id]
    try:
        if writer is not None and not writer.finished:
            writer.abort()
        store.delete(location)
    except StoreError as err:
        LOG.warning("could not remove staged data of a failed stage (the sweep will): %s", err)
    with registry.catalog.writing() as session:
        imports.release_stage(session, image_id, holder)


# --- import -------------------------------------------------------------------------------------


def _target_stores(registry: Registry, body: dict[str, Any], header: str | None) -> tuple[list[str], bool]:
    """The stores asked for (Glance's ``get_stores_from_request``), and whether ``all_stores``."""
    all_stores = body.get("all_stores", False)
    if not isinstance(all_stores, bool):
        raise RequestError("all_stores must be true or false.")
    stores = body.get("stores")
    if stores is not None and (not isinstance(stores, list) or not all(isinstance(s, str) for s in stores)):
        raise RequestError("stores must be a list of store identifiers.")
    if all_stores and stores:
        raise RequestError(
            "All_stores parameter can't be used with x-image-meta-store header or stores parameter."
        )
    if header and (stores or all_stores):
        raise RequestError("x-image-meta-store header can't be used with stores or all_stores.")
    if all_stores:
        return [info.id for info in registry.stores.infos()], True
    chosen = list(dict.fromkeys(stores or ([header] if header else [registry.stores.default.info.id])))
    for store_id in chosen:
        if store_id not in registry.stores:
            raise ConflictError(f"Unknown scheme '{store_id}' found in URI (there is no store {store_id}).")
    return chosen, False


def _conversion(registry: Registry, stores: list[str]) -> str | None:
    conversions = parse_conversions(registry.config.convert_to, [info.id for info in registry.stores.infos()])
    targets = {store: conversion_for(conversions, store) for store in stores}
    if len(set(targets.values())) > 1:
        described = ", ".join(f"{store}: {fmt or 'as imported'}" for store, fmt in targets.items())
        raise ConflictError(
            f"The stores asked for keep images in different formats ({described}); one image has one "
            "format: import into them separately."
        )
    return next(iter(targets.values()))


def _remote_image(registry: Registry, method: dict[str, Any]) -> tuple[str, str]:
    """(file URL, token) of a remote registry's image (glance-download), checked now."""
    region_name = method.get("glance_region")
    image_id = method.get("glance_image_id")
    if not isinstance(region_name, str) or not region_name:
        raise RequestError("'glance_region' needs to be set for glance-download import method.")
    if not isinstance(image_id, str) or not image_id:
        raise RequestError("'glance_image_id' needs to be set for glance-download import method.")
    try:
        uuid.UUID(image_id)
    except ValueError:
        raise RequestError(f"Remote image id does not look like a UUID: {image_id}.") from None
    regions = parse_regions(registry.config.glance_regions)
    region = regions.get(region_name)
    if region is None:
        raise RequestError(
            f"The region {region_name!r} is not one this registry copies from "
            f"(configured: {', '.join(regions) or 'none'})."
        )
    interface = method.get("glance_service_interface") or "public"
    from imagewright.service.tasks.remote import remote_image

    return remote_image(region, image_id, str(interface))


@_route
async def import_image(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id = request.path_params["image_id"]
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("method"), dict):
        raise RequestError('The import request needs a method: {"method": {"name": …}}.')
    method = body["method"]
    name = method.get("name")
    if name not in enabled_methods(registry):
        known = ", ".join(enabled_methods(registry))
        raise RequestError(f"Import method {name!r} is not available here; the methods are: {known}.")
    must_succeed = body.get("all_stores_must_succeed", True)
    if not isinstance(must_succeed, bool):
        raise RequestError("all_stores_must_succeed must be true or false.")
    stores, all_stores = _target_stores(registry, body, request.headers.get("x-image-meta-store"))
    uri = method.get("uri")
    if name == "web-download" and (not isinstance(uri, str) or not uri):
        raise RequestError("web-download needs the image's URI (method.uri).")
    environment = registry.tasks
    assert environment is not None
    config = registry.config

    def work() -> None:
        with registry.catalog.reading() as session:
            image = images.get_image(session, image_id)
            membership = images.membership_of(session, image_id, caller.project_id)
            image_policy.require_owner_member(caller, image, membership, "import data into")
            _check_status(image, name)
            present = imports.image_stores(image)
        targets = stores
        if name == "copy-image":
            if all_stores:
                targets = [store for store in stores if store not in present]
                if not targets:
                    return  # Glance: nothing to copy, nothing done
            else:
                for store in targets:
                    if store in present:
                        raise RequestError(f"Image is already present at store '{store}'.")
        convert_to = _conversion(registry, targets)
        if name == "copy-image" and convert_to is not None and convert_to != image.disk_format:
            raise ConflictError(
                f"The store(s) {', '.join(targets)} keep {convert_to} images and this image is "
                f"{image.disk_format}; copy-image does not convert."
            )
        remote_url = remote_token = None
        if name == "web-download":
            policy = UrlPolicy.from_prefixes(config.web_download_allow)
            try:
                check_url(str(uri), policy)
            except WebDownloadError as err:
                raise RequestError(f"URI for web-download does not pass filtering: {err}") from None
        if name == "glance-download":
            remote_url, remote_token = _remote_image(registry, method)
        plan = ImportPlan(
            method=name,
            stores=tuple(targets),
            all_stores_must_succeed=must_succeed,
            convert_to=None if name == "copy-image" else convert_to,
            keep_original=config.keep_original and name != "copy-image" and convert_to is not None,
            uri=str(uri) if name == "web-download" else None,
            allow=tuple(config.web_download_allow),
            max_bytes=config.image_size_cap,
            idle_timeout=config.web_download_idle_timeout,
            timeout=config.web_download_timeout,
            remote_url=remote_url,
            remote_token=remote_token,
        )
        with registry.catalog.writing() as session:
            image = images.get_image_for_update(session, image_id)
            _check_status(image, name)
            task = task_rows.create_task(
                session,
                task_type=IMPORT_TASK_TYPE,
                owner=caller.project_id,
                user_id=caller.user.id,
                image_id=image_id,
                task_input={"image_id": image_id, "import_req": body, "backend": list(targets)},
                private=plan.to_private(),
                queue=environment.queue.name,
                max_attempts=config.task_attempts,
                request_id=request.headers.get("x-openstack-request-id"),
            )
            imports.begin_import(session, image, task.id, name, targets)
            task_id = task.id
        try:
            _submit(registry, task_id)
        except ImagewrightError:
            with registry.catalog.writing() as session:
                imports.revert_import(session, image_id, task_id, name, [])
            raise

    await blocking(work)
    return Response(status_code=202)


def _check_status(image: Image, method: str) -> None:
    """Glance's status rules for each method (409 with Glance's sentence)."""
    if image.status == "active" and method != "copy-image":
        raise ConflictError("Image with status active cannot be target for import.")
    if image.status != "active" and method == "copy-image":
        raise ConflictError("Only images with status active can be targeted for copying.")
    if image.status != "queued" and method in ("web-download", "glance-download"):
        raise ConflictError(f"Image needs to be in 'queued' state to use '{method}' method.")
    if method == "glance-direct":
        if image.status != "uploading":
            raise ConflictError("Image needs to be staged before 'glance-direct' method can be used.")
        if image.upload_holder is not None:
            raise ConflictError("The image's data is still being staged.")


def import_routes() -> list[Route]:
    return [
        Route("/v2/info/import", info_import, methods=["GET"]),
        Route("/v2/images/{image_id}/stage", stage, methods=["PUT"]),
        Route("/v2/images/{image_id}/import", import_image, methods=["POST"]),
    ]
