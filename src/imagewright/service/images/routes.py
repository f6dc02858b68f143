"""Routes of the Image API v2 (see the package docstring): parse, call catalog/stores/gate, render."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagewright.catalog import image_policy, images, imports
from imagewright.catalog.accounts import utcnow
from imagewright.catalog.images import ImageQuery
from imagewright.catalog.models import Image
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import ConflictError, ForbiddenError, NotFoundError, RequestError, StoreError
from imagewright.service.http import (
    LOG,
    RangeNotSatisfiableError,
    Registry,
    blob_response,
    blocking,
    byte_range,
    caller_of,
    glance_error,
    guarded,
    http_exception_handlers,
    json_response,
    read_json,
    registry_of,
)
from imagewright.service.images import publishing, schemas
from imagewright.service.images.import_api import enabled_methods, import_routes
from imagewright.service.images.metadefs import metadef_routes
from imagewright.service.images.task_api import task_routes
from imagewright.service.images.upload import UnsupportedMediaTypeError, receive_upload
from imagewright.service.images.views import image_view, member_view

_route = guarded(glance_error)

#: Image API minor versions, newest first, as Glance lists them with multiple stores and no
#: image cache (``glance/api/versions.py``): 2.14 and 2.16 are the cache API we do not serve.
API_VERSIONS = (
    "2.15",
    "2.13",
    "2.12",
    "2.11",
    "2.10",
    "2.9",
    "2.8",
    "2.7",
    "2.6",
    "2.5",
    "2.4",
    "2.3",
    "2.2",
    "2.1",
    "2.0",
)
PATCH_MEDIA_TYPES = {
    "application/openstack-images-v2.1-json-patch": 10,
    "application/openstack-images-v2.0-json-patch": 4,
}
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
#: Query parameters that are not property filters.
_LIST_PARAMETERS = frozenset(
    {
        "limit",
        "marker",
        "sort",
        "sort_key",
        "sort_dir",
        "member_status",
        "visibility",
        "tag",
        "owner",
        "size_min",
        "size_max",
        "os_hidden",
        "protected",
        "checksum",
        "os_hash_value",
        *images.INTEGER_FILTER_KEYS,
        *images.OPERATOR_FILTER_KEYS,
        *images.TIME_FILTER_KEYS,
    }
)


# --- discovery ----------------------------------------------------------------------------------


def _versions(registry: Registry) -> dict[str, Any]:
    href = f"{registry.public_url}/image/v2/"
    return {
        "versions": [
            {
                "id": f"v{version}",
                "status": "CURRENT" if index == 0 else "SUPPORTED",
                "links": [{"rel": "self", "href": href}],
            }
            for index, version in enumerate(API_VERSIONS)
        ]
    }


@_route
async def versions(request: Request) -> Response:
    explicit = request.url.path.rstrip("/").endswith("/versions")
    return json_response(_versions(registry_of(request)), status=200 if explicit else 300)


@_route
async def show_schema(request: Request) -> Response:
    name = request.path_params["name"]
    all_schemas = schemas.schemas()
    if name not in all_schemas:
        raise NotFoundError(f"There is no schema named {name!r}.")
    return json_response(all_schemas[name])


@_route
async def info_stores(request: Request) -> Response:
    await caller_of(request)
    registry = registry_of(request)
    stores = []
    for info in registry.stores.infos():
        entry: dict[str, Any] = {"id": info.id, "description": info.description}
        if info.is_default:
            entry["default"] = "true"  # a string, as Glance's discovery API writes it
        stores.append(entry)
    return json_response({"stores": stores})


# --- images -------------------------------------------------------------------------------------


def _parse_operator(value: str) -> tuple[str, list[str]]:
    """Glance's ``in:"a","b"`` / ``eq:x`` / plain value."""
    operator, sep, rest = value.partition(":")
    if not sep or operator not in ("in", "eq"):
        return "eq", [value]
    if operator == "eq":
        return "eq", [rest]
    values = [
        part.strip() for part in re.findall(r'"((?:[^"\\]|\\.)*)"|([^,]+)', rest) for part in part if part
    ]
    return "in", [v.strip('"') for v in values] or [""]


def _parse_time(key: str, value: str) -> tuple[str, str, datetime]:
    operator, sep, moment_text = value.partition(":")
    if not sep or operator not in images.TIME_OPERATORS:
        operator, moment_text = "eq", value
    try:
        moment = datetime.fromisoformat(moment_text)
    except ValueError:
        raise RequestError(f'Bad "{key}" query filter format; use ISO 8601 DateTime notation.') from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return key, operator, moment


def _parse_bool(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise RequestError(f"{key} must be true or false, not {value!r}.")


def _parse_int(key: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise RequestError(f"{key} must be an integer, not {value!r}.") from None
    if number < minimum:
        raise RequestError(f"{key} must be at least {minimum}.")
    return number


def parse_list_query(request: Request) -> ImageQuery:
    params = request.query_params
    query = ImageQuery()
    if "limit" in params:
        query.limit = min(_parse_int("limit", params["limit"]), MAX_LIMIT)
    else:
        query.limit = DEFAULT_LIMIT
    query.marker = params.get("marker")
    member_status = params.get("member_status", "accepted")
    if member_status not in ("pending", "accepted", "rejected", "all"):
        raise RequestError(f"Invalid status: {member_status}; use pending, accepted, rejected or all.")
    query.member_status = member_status
    visibility = params.get("visibility")
    if visibility is not None and visibility not in ("community", "public", "private", "shared", "all"):
        raise RequestError(f"Invalid visibility value: {visibility}.")
    query.visibility = visibility
    query.tags = [tag.strip() for tag in params.getlist("tag")]
    query.owner = params.get("owner")
    if "size_min" in params:
        query.size_min = _parse_int("size_min", params["size_min"])
    if "size_max" in params:
        query.size_max = _parse_int("size_max", params["size_max"])
    query.os_hidden = _parse_bool("os_hidden", params["os_hidden"]) if "os_hidden" in params else False
    if "protected" in params:
        query.protected = _parse_bool("protected", params["protected"])
    query.checksum = params.get("checksum")
    query.os_hash_value = params.get("os_hash_value")
    for key in images.OPERATOR_FILTER_KEYS:
        if key in params:
            query.equals[key] = _parse_operator(params[key])[1]
    for key in images.INTEGER_FILTER_KEYS:
        # Glance compares any image column a filter names; these are its integer ones.
        if key in params:
            query.equals[key] = [_parse_int(key, params[key])]
    for key in images.TIME_FILTER_KEYS:
        if key in params:
            query.times.append(_parse_time(key, params[key]))
    query.properties = {key: value for key, value in params.items() if key not in _LIST_PARAMETERS}
    if "changes-since" in query.properties:
        raise RequestError('The "changes-since" filter is no longer available on v2.')
    query.sort = _parse_sort(request)
    return query


def _parse_sort(request: Request) -> list[tuple[str, str]]:
    params = request.query_params
    keys: list[str] = []
    directions: list[str] = []
    if "sort" in params:
        if "sort_key" in params or "sort_dir" in params:
            raise RequestError("Old and new sorting syntax cannot be combined.")
        for item in params["sort"].strip().split(","):
            key, _sep, direction = item.partition(":")
            keys.append(key.strip())
            directions.append(direction.strip() or "desc")
    else:
        keys = [key.strip() for key in params.getlist("sort_key")]
        directions = [direction.strip() for direction in params.getlist("sort_dir")]
        if len(directions) > 1 and len(directions) != len(keys):
            raise RequestError("Number of sort dirs does not match the number of sort keys.")
    for key in keys:
        if key not in images.SORT_KEYS:
            raise RequestError(
                f"Invalid sort key: {key}. It must be one of the following: {', '.join(images.SORT_KEYS)}."
            )
    for direction in directions:
        if direction not in ("asc", "desc"):
            raise RequestError(f"Invalid sort direction: {direction}.")
    if not keys:
        keys = ["created_at"]
    if not directions:
        directions = ["desc"]
    if len(directions) == 1:
        directions = directions * len(keys)
    return list(zip(keys, directions, strict=True))


@_route
async def list_images(request: Request) -> Response:
    caller = await caller_of(request)
    _require_project(caller)
    query = parse_list_query(request)
    registry = registry_of(request)

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            return [image_view(i, admin=caller.is_admin) for i in images.list_images(session, caller, query)]

    views = await blocking(work)
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
    body: dict[str, Any] = {
        "images": views,
        "schema": "/v2/schemas/images",
        "first": "/v2/images" + (f"?{urlencode(params)}" if params else ""),
    }
    if views and len(views) == query.limit:
        body["next"] = "/v2/images?" + urlencode([*params, ("marker", views[-1]["id"])])
    return json_response(body)


def _require_project(caller: AuthContext) -> None:
    if caller.project is None:
        raise ForbiddenError("The Image API needs a project-scoped token.")


def _split_create_body(body: Any) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object of image attributes.")
    values: dict[str, Any] = {}
    properties: dict[str, str] = {}
    tags: list[str] = []
    for name, raw in body.items():
        schemas.check_writable(name, creating=True)
        value = schemas.check_value(name, raw)
        if name == "tags":
            tags = value
        elif name in schemas.BASE:
            values[name] = value
        else:
            properties[name] = value
    if len(properties) > schemas.MAX_PROPERTIES:
        raise RequestError(f"An image may have at most {schemas.MAX_PROPERTIES} custom properties.")
    return values, properties, tags


@_route
async def create_image(request: Request) -> Response:
    caller = await caller_of(request)
    _require_project(caller)
    values, properties, tags = _split_create_body(await read_json(request))
    registry = registry_of(request)
    owner = values.get("owner", caller.project_id)
    values["owner"] = owner
    values.setdefault("visibility", "shared")
    image_policy.require_create(caller, owner, values["visibility"])

    def work() -> dict[str, Any]:
        with registry.catalog.writing() as session:
            return image_view(images.create_image(session, values, properties, tags))

    view = await blocking(work)
    headers = {
        "Location": f"{registry.public_url}/image/v2/images/{view['id']}",
        "OpenStack-image-store-ids": ",".join(info.id for info in registry.stores.infos()),
        "OpenStack-image-import-methods": ",".join(enabled_methods(registry)),
    }
    return json_response(view, status=201, headers=headers)


def _load(session: Session, caller: AuthContext, image_id: str, *, lock: bool = False) -> tuple[Image, Any]:
    image = images.get_image_for_update(session, image_id) if lock else images.get_image(session, image_id)
    membership = images.membership_of(session, image_id, caller.project_id)
    image_policy.require_visible(caller, image, membership)
    return image, membership


@_route
async def show_image(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id = request.path_params["image_id"]

    def work() -> dict[str, Any]:
        with registry.catalog.reading() as session:
            image, _membership = _load(session, caller, image_id)
            return image_view(image, admin=caller.is_admin)

    return json_response(await blocking(work))


# --- JSON patch ---------------------------------------------------------------------------------


def _decode_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise RequestError(f'Pointer `{pointer}` does not start with "/".')
    if pointer.endswith("/") or "//" in pointer:
        raise RequestError(f"Pointer `{pointer}` is not a valid JSON pointer.")
    if re.search("~[^01]", pointer) or pointer.endswith("~"):
        raise RequestError(f'Pointer `{pointer}` contains "~" not part of a recognized escape sequence.')
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _changes(body: Any, version: int) -> list[tuple[str, list[str], Any]]:
    if not isinstance(body, list):
        raise RequestError("A JSON patch is a list of operations.")
    changes = []
    for raw in body:
        if not isinstance(raw, dict):
            raise RequestError("Each JSON patch operation must be an object.")
        if version == 10:
            op = raw.get("op")
            if op not in ("add", "remove", "replace"):
                raise RequestError(
                    f"Invalid operation: `{op}`. It must be one of the following: add, remove, replace."
                )
            path = _decode_pointer(raw.get("path"))
        else:
            present = [key for key in ("add", "remove", "replace") if key in raw]
            if len(present) != 1:
                raise RequestError(
                    'Operation objects must contain exactly one member named "add", "remove", or "replace".'
                )
            op = present[0]
            path = _decode_pointer(raw[op])
        if op != "remove" and "value" not in raw:
            raise RequestError(f'Operation "{op}" requires a member named "value".')
        changes.append((op, path, raw.get("value")))
    return changes


def _apply_patch(
    session: Session,
    caller: AuthContext,
    image: Image,
    changes: list[tuple[str, list[str], Any]],
    version: int,
) -> None:
    values: dict[str, Any] = {}
    properties = {prop.name: prop.value for prop in image.properties}
    tags = [tag.value for tag in image.tags]
    for op, path, raw_value in changes:
        name = path[0]
        if name == "locations":
            # Glance with show_multiple_locations off (its default and ours: we never expose
            # locations) does not know the path at all.
            raise RequestError("Invalid JSON pointer for this resource: '/locations'.")
        schemas.check_writable(name, creating=False)
        if len(path) > 1:
            raise RequestError(f"The path /{'/'.join(path)} goes deeper than image attributes do.")
        if op == "remove":
            if name in schemas.BASE:
                raise ForbiddenError(f"Property {name} may not be removed.")
            if name not in properties:
                raise ConflictError(f"Property {name} does not exist.")
            del properties[name]
            continue
        value = schemas.check_value(name, raw_value)
        exists = name in schemas.BASE or name in properties
        if op == "replace" and not exists:
            raise ConflictError(f"Property {name} does not exist.")
        if op == "add" and exists and version == 4:
            raise ConflictError(f"Property {name} already present.")
        if name == "tags":
            tags = value
        elif name in schemas.BASE:
            if name == "visibility":
                image_policy.require_visibility_allowed(caller, value)
            if name == "owner":
                image_policy.require_set_owner(caller, image, value)
            values[name] = value
        else:
            properties[name] = value
    if len(tags) > schemas.MAX_TAGS:
        raise RequestError(f"An image may have at most {schemas.MAX_TAGS} tags.")
    if len(properties) > schemas.MAX_PROPERTIES:
        raise RequestError(f"An image may have at most {schemas.MAX_PROPERTIES} custom properties.")
    if values.get("visibility", image.visibility) != image.visibility:
        publishing.require_publishable(image.id, values["visibility"], properties)
    if ("disk_format" in values or "container_format" in values) and image.status != "queued":
        for key in ("disk_format", "container_format"):
            if key in values and values[key] != getattr(image, key):
                raise ForbiddenError(
                    f"The {key} of an image with data cannot change (status {image.status})."
                )
    images.save_image(session, image, values, properties, tags)


@_route
async def update_image(request: Request) -> Response:
    caller = await caller_of(request)
    media_type = request.headers.get("content-type", "").split(";")[0].strip()
    if media_type not in PATCH_MEDIA_TYPES:
        response = glance_error(
            415,
            f"Unsupported Content-Type {media_type or '(none)'}: an image update is a JSON patch sent as "
            "application/openstack-images-v2.1-json-patch.",
            {"Accept-Patch": ", ".join(PATCH_MEDIA_TYPES)},
        )
        return response
    version = PATCH_MEDIA_TYPES[media_type]
    changes = _changes(await read_json(request), version)
    registry = registry_of(request)
    image_id = request.path_params["image_id"]

    def work() -> dict[str, Any]:
        with registry.catalog.writing() as session:
            image, membership = _load(session, caller, image_id, lock=True)
            image_policy.require_owner_member(caller, image, membership, "modify")
            _apply_patch(session, caller, image, changes, version)
            return image_view(image, admin=caller.is_admin)

    return json_response(await blocking(work))


@_route
async def delete_image(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id = request.path_params["image_id"]

    def work() -> None:
        with registry.catalog.writing() as session:
            image, membership = _load(session, caller, image_id, lock=True)
            image_policy.require_owner_member(caller, image, membership, "delete")
            if image.protected:
                raise ForbiddenError(f"Image {image_id} is protected and cannot be deleted.")
            blobs = imports.all_blobs_of_image(image)
            images.delete_image(session, image)
        # The row is gone (committed); now the bytes. If this fails, the sweep finds the orphans.
        for blob in blobs:
            if blob.store_id not in registry.stores:
                continue
            try:
                registry.stores[blob.store_id].delete(blob.location)
            except StoreError as err:
                LOG.warning("the data of a deleted image stays until the next sweep: %s", err)

    await blocking(work)
    return Response(status_code=204)


async def _set_active_state(request: Request, target: str) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id = request.path_params["image_id"]
    doing = "deactivate" if target == "deactivated" else "reactivate"

    def work() -> None:
        with registry.catalog.writing() as session:
            image, membership = _load(session, caller, image_id, lock=True)
            image_policy.require_owner_member(caller, image, membership, doing)
            source = "active" if target == "deactivated" else "deactivated"
            if image.status == target:
                return
            if image.status != source:
                raise ForbiddenError(f"Not allowed to {doing} image in status '{image.status}'.")
            images.save_image(
                session,
                image,
                {"status": target},
                {p.name: p.value for p in image.properties},
                [t.value for t in image.tags],
            )

    await blocking(work)
    return Response(status_code=204)


@_route
async def deactivate(request: Request) -> Response:
    return await _set_active_state(request, "deactivated")


@_route
async def reactivate(request: Request) -> Response:
    return await _set_active_state(request, "active")


# --- tags ---------------------------------------------------------------------------------------


@_route
async def add_tag(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id, tag = request.path_params["image_id"], request.path_params["tag"]
    schemas.check_value("tags", [tag])

    def work() -> None:
        with registry.catalog.writing() as session:
            image, membership = _load(session, caller, image_id, lock=True)
            image_policy.require_owner_member(caller, image, membership, "modify")
            if (
                tag not in {t.value for t in image.tags}
                and images.count_tags(session, image_id) >= schemas.MAX_TAGS
            ):
                raise _TooManyError(
                    f"Maximum number of tags exceeded: an image may have at most {schemas.MAX_TAGS}."
                )
            images.add_tag(session, image, tag)

    await blocking(work)
    return Response(status_code=204)


class _TooManyError(RequestError):
    status = 413


@_route
async def delete_tag(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id, tag = request.path_params["image_id"], request.path_params["tag"]

    def work() -> None:
        with registry.catalog.writing() as session:
            image, membership = _load(session, caller, image_id, lock=True)
            image_policy.require_owner_member(caller, image, membership, "modify")
            images.remove_tag(session, image, tag)

    await blocking(work)
    return Response(status_code=204)


# --- data ---------------------------------------------------------------------------------------


@_route
async def upload(request: Request) -> Response:
    caller = await caller_of(request)
    try:
        await receive_upload(request, registry_of(request), caller, request.path_params["image_id"])
    except UnsupportedMediaTypeError as err:
        return glance_error(415, str(err), {})
    return Response(status_code=204)


@_route
async def download(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id = request.path_params["image_id"]

    def work() -> Image:
        with registry.catalog.reading() as session:
            image, membership = _load(session, caller, image_id)
            image_policy.require_download(caller, image, membership)
            return image

    image = await blocking(work)
    if image.status not in ("active", "deactivated") or not image.location or image.size is None:
        return Response(status_code=204)
    store = registry.stores[image.store_id or ""]
    size = image.size
    try:
        span = byte_range(request.headers.get("range"), size)
    except RangeNotSatisfiableError as err:
        return glance_error(416, str(err), {"Content-Range": f"bytes */{err.size}"})
    headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
    start, end = span if span is not None else (0, size)
    headers["Content-Length"] = str(end - start)
    if span is None:
        if image.checksum:
            headers["Content-MD5"] = image.checksum
    else:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return await blob_response(request, store, image.location, size, span, headers)


# --- members ------------------------------------------------------------------------------------


@_route
async def list_members(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id = request.path_params["image_id"]

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            image, _membership = _load(session, caller, image_id)
            members = image_policy.visible_members(caller, image, images.list_members(session, image_id))
            return [member_view(m) for m in members]

    return json_response({"members": await blocking(work), "schema": "/v2/schemas/members"})


@_route
async def show_member(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id, member_id = request.path_params["image_id"], request.path_params["member_id"]

    def work() -> dict[str, Any]:
        with registry.catalog.reading() as session:
            image, _membership = _load(session, caller, image_id)
            if image.visibility == "public" or not image_policy.may_show_member(caller, image, member_id):
                # Glance turns every refusal here into 404, to leak nothing.
                raise NotFoundError(f"{member_id} not found in the member list of the image {image_id}.")
            return member_view(images.get_member(session, image, member_id))

    return json_response(await blocking(work))


@_route
async def add_member(request: Request) -> Response:
    caller = await caller_of(request)
    body = await read_json(request)
    if not isinstance(body, dict) or "member" not in body:
        raise RequestError("Member to be added not specified.")
    member_id = body["member"]
    if not isinstance(member_id, str) or not member_id or len(member_id) > 255:
        raise RequestError("Member can't be empty.")
    registry = registry_of(request)
    image_id = request.path_params["image_id"]

    def work() -> dict[str, Any]:
        with registry.catalog.writing() as session:
            image, membership = _load(session, caller, image_id, lock=True)
            image_policy.require_add_member(caller, image, membership)
            if images.count_members(session, image_id) >= MAX_MEMBERS:
                raise _TooManyError(
                    f"Image member limit exceeded for image {image_id}: at most {MAX_MEMBERS}."
                )
            return member_view(images.add_member(session, image, member_id))

    return json_response(await blocking(work))


MAX_MEMBERS = 128


@_route
async def update_member(request: Request) -> Response:
    caller = await caller_of(request)
    body = await read_json(request)
    if not isinstance(body, dict) or "status" not in body:
        raise RequestError("Status not specified.")
    status = body["status"]
    if status not in image_policy.MEMBER_STATUSES:
        raise RequestError(f"Invalid status: {status}; use pending, accepted or rejected.")
    registry = registry_of(request)
    image_id, member_id = request.path_params["image_id"], request.path_params["member_id"]

    def work() -> dict[str, Any]:
        with registry.catalog.writing() as session:
            image, _membership = _load(session, caller, image_id, lock=True)
            if image.visibility == "public":
                raise ForbiddenError("Public images do not have members.")
            if not image_policy.may_show_member(caller, image, member_id):
                raise NotFoundError(f"{member_id} not found in the member list of the image {image_id}.")
            member = images.get_member(session, image, member_id)
            image_policy.require_change_member_status(caller, image, member_id)
            member.status = status
            member.updated_at = utcnow()
            session.flush()
            return member_view(member)

    return json_response(await blocking(work))


@_route
async def remove_member(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    image_id, member_id = request.path_params["image_id"], request.path_params["member_id"]

    def work() -> None:
        with registry.catalog.writing() as session:
            image, _membership = _load(session, caller, image_id, lock=True)
            if image.visibility == "public":
                raise ForbiddenError("Public images do not have members.")
            if not image_policy.may_show_member(caller, image, member_id):
                raise NotFoundError(f"{member_id} not found in the member list of the image {image_id}.")
            member = images.get_member(session, image, member_id)
            image_policy.require_remove_member(caller, image)
            session.delete(member)

    await blocking(work)
    return Response(status_code=204)


def build_images_app() -> Starlette:
    routes = [
        Route("/", versions, methods=["GET"]),
        Route("/versions", versions, methods=["GET"]),
        Route("/v2/schemas/{name}", show_schema, methods=["GET"]),
        Route("/v2/info/stores", info_stores, methods=["GET"]),
        Route("/v2/images", list_images, methods=["GET"]),
        Route("/v2/images", create_image, methods=["POST"]),
        Route("/v2/images/{image_id}", show_image, methods=["GET"]),
        Route("/v2/images/{image_id}", update_image, methods=["PATCH"]),
        Route("/v2/images/{image_id}", delete_image, methods=["DELETE"]),
        Route("/v2/images/{image_id}/file", upload, methods=["PUT"]),
        Route("/v2/images/{image_id}/file", download, methods=["GET"]),
        Route("/v2/images/{image_id}/tags/{tag}", add_tag, methods=["PUT"]),
        Route("/v2/images/{image_id}/tags/{tag}", delete_tag, methods=["DELETE"]),
        Route("/v2/images/{image_id}/actions/deactivate", deactivate, methods=["POST"]),
        Route("/v2/images/{image_id}/actions/reactivate", reactivate, methods=["POST"]),
        Route("/v2/images/{image_id}/members", list_members, methods=["GET"]),
        Route("/v2/images/{image_id}/members", add_member, methods=["POST"]),
        Route("/v2/images/{image_id}/members/{member_id}", show_member, methods=["GET"]),
        Route("/v2/images/{image_id}/members/{member_id}", update_member, methods=["PUT"]),
        Route("/v2/images/{image_id}/members/{member_id}", remove_member, methods=["DELETE"]),
        *import_routes(),
        *task_routes(),
        *metadef_routes(),
    ]
    return Starlette(routes=routes, exception_handlers=http_exception_handlers(glance_error))
