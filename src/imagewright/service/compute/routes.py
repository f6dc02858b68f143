"""Routes of the compute API (see the package docstring): parse, call ``catalog.instances``, render.

Request body of ``POST /compute/v1/instances`` (every field but ``name`` and ``image`` optional)::

    {"instance": {"name": "web1", "image": "<image id or name>", "hostname": "web1.example.com",
                  "keys": [{"name": "alice", "public_key": "ssh-ed25519 AAAA… alice"}],
                  "user_data": "<base64>", "vendor_data": {…}, "tags": {"role": "web"},
                  "addresses": ["10.0.0.5"], "macs": ["52:54:00:12:34:56"], "public_address": "…",
                  "network": "static:10.0.0.5/24,10.0.0.1", "instance_type": "m1.small",
                  "availability_zone": "nova",
                  "metadata_options": {"http_tokens": "required", "http_endpoint": "enabled"}}}

Answers: 201 ``{"instance": {…}}``; ``GET …/instances`` ``{"instances": […]}`` (an admin adds
``?all_projects=true`` for every project's); ``GET …/instances/{id}`` with its keys, user-data
(base64) and vendor data; ``DELETE`` 204. Errors are ``{"error": {"code", "title", "message"}}``
(Keystone's shape): 400 bad input, 401 no valid token, 403 not allowed (a reader creating), 404
unknown or another project's, 409 an address or MAC taken, 415 not JSON.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagewright.catalog import instances
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import ForbiddenError, InvalidArgumentError, RequestError
from imagewright.metadata.channel import MetadataChannel
from imagewright.metadata.instance import parse_ssh_public_keys
from imagewright.service.http import (
    blocking,
    caller_of,
    guarded,
    http_exception_handlers,
    json_response,
    keystone_error,
    read_json,
    registry_of,
)

_route = guarded(keystone_error)

_FIELDS = frozenset(
    {
        "name",
        "image",
        "hostname",
        "keys",
        "user_data",
        "vendor_data",
        "tags",
        "addresses",
        "macs",
        "public_address",
        "network",
        "instance_type",
        "availability_zone",
        "metadata_options",
    }
)


class UnsupportedMediaTypeError(RequestError):
    status = 415


def _text(body: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is not None and not isinstance(value, str):
        raise InvalidArgumentError(f"'{key}' must be a string.")
    return value


def _texts(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidArgumentError(f"'{key}' must be a list of strings.")
    return value


def _keys(body: dict[str, Any]) -> list[tuple[str, Any]]:
    value = body.get("keys", [])
    if not isinstance(value, list):
        raise InvalidArgumentError("'keys' must be a list of {name, public_key} objects.")
    keys = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("public_key"), str):
            raise InvalidArgumentError("Each key must be an object with a 'public_key' string.")
        name = item.get("name", f"key-{index}")
        if not isinstance(name, str):
            raise InvalidArgumentError("A key's 'name' must be a string.")
        (key,) = parse_ssh_public_keys(item["public_key"], f"The key {name!r}")[:1]
        keys.append((name, key))
    return keys


def _user_data(body: dict[str, Any]) -> bytes | None:
    value = body.get("user_data")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > instances.MAX_USER_DATA_BYTES * 4 // 3 + 4:
        raise InvalidArgumentError("'user_data' must be base64 text of at most 64 KiB of data.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError("'user_data' is not valid base64.") from None


def parse_create(document: Any) -> tuple[str, dict[str, Any]]:
    """(image ref, InstanceSpec.build arguments) from a request body."""
    if not isinstance(document, dict) or not isinstance(document.get("instance"), dict):
        raise InvalidArgumentError('The body must be {"instance": {...}}.')
    body: dict[str, Any] = document["instance"]
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidArgumentError(f"Unknown attribute(s): {', '.join(unknown[:5])}.")
    name, image = _text(body, "name"), _text(body, "image")
    if not name or not image:
        raise InvalidArgumentError("An instance needs a 'name' and an 'image'.")
    options = body.get("metadata_options", {})
    if not isinstance(options, dict) or set(options) - {"http_tokens", "http_endpoint"}:
        raise InvalidArgumentError("'metadata_options' takes http_tokens and http_endpoint.")
    tags = body.get("tags", {})
    if not isinstance(tags, dict):
        raise InvalidArgumentError("'tags' must be an object of strings.")
    arguments: dict[str, Any] = {
        "name": name,
        "hostname": _text(body, "hostname"),
        "keys": _keys(body),
        "user_data": _user_data(body),
        "vendor_data": body.get("vendor_data"),
        "tags": tags,
        "addresses": _texts(body, "addresses"),
        "macs": _texts(body, "macs"),
        "public_address": _text(body, "public_address"),
        "network": _text(body, "network", "dhcp"),
        "instance_type": _text(body, "instance_type", instances.DEFAULT_INSTANCE_TYPE),
        "availability_zone": _text(body, "availability_zone", instances.DEFAULT_AVAILABILITY_ZONE),
        "http_tokens": options.get("http_tokens", "optional"),
        "http_endpoint": options.get("http_endpoint", "enabled"),
    }
    return image, arguments


@_route
async def versions(request: Request) -> Response:
    href = f"{registry_of(request).public_url}/compute/v1/"
    return json_response(
        {"versions": [{"id": "v1", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}]}
    )


@_route
async def list_instances(request: Request) -> Response:
    caller = await caller_of(request)
    all_projects = request.query_params.get("all_projects", "").lower() in ("1", "true", "yes")
    if all_projects and not caller.is_admin:
        raise ForbiddenError("Only an admin may list every project's instances.")
    if not caller.has_role("reader"):
        raise ForbiddenError("You need a role on a project to list its instances.")
    registry = registry_of(request)

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            rows = instances.list_instances(session, None if all_projects else caller.project_id or "")
            return [instances.instance_view(row) for row in rows]

    return json_response({"instances": await blocking(work)})


@_route
async def create_instance(request: Request) -> Response:
    caller = await caller_of(request)
    if "json" not in request.headers.get("content-type", ""):
        raise UnsupportedMediaTypeError("The body must be JSON (Content-Type: application/json).")
    image_ref, arguments = parse_create(await read_json(request, max_bytes=256 * 1024))
    instances.require_change(caller, None, "create")
    if caller.project_id is None:
        raise ForbiddenError("Creating an instance needs a project-scoped token.")
    registry = registry_of(request)

    def work(owner: AuthContext) -> dict[str, Any]:
        with registry.catalog.writing() as session:
            image = instances.resolve_image(session, image_ref, owner.project_id, is_admin=owner.is_admin)
            spec = instances.InstanceSpec.build(image_id=image.id, **arguments)
            created = instances.create_instance(session, spec, owner.project_id or "")
            return instances.instance_view(created, with_user_data=True)

    return json_response({"instance": await blocking(work, caller)}, status=201)


@_route
async def show_instance(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    instance_id = request.path_params["instance_id"]

    def work() -> dict[str, Any]:
        with registry.catalog.reading() as session:
            row = instances.get_instance(session, instance_id)
            instances.require_visible(caller, row)
            return instances.instance_view(row, with_user_data=True)

    return json_response({"instance": await blocking(work)})


@_route
async def delete_instance(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    instance_id = request.path_params["instance_id"]

    def work() -> None:
        with registry.catalog.writing() as session:
            row = instances.get_instance(session, instance_id)
            instances.require_change(caller, row, "delete")
            instances.delete_instance(session, row)

    await blocking(work)
    # Its forwarder (if one was made for it on this host) has nothing left to sign for.
    MetadataChannel.for_data_dir(registry.config.data_dir).remove_forwarder(instance_id)
    return Response(status_code=204)


def build_compute_app() -> Starlette:
    routes = [
        Route("/", versions, methods=["GET"]),
        Route("/v1/instances", list_instances, methods=["GET"]),
        Route("/v1/instances", create_instance, methods=["POST"]),
        Route("/v1/instances/{instance_id}", show_instance, methods=["GET"]),
        Route("/v1/instances/{instance_id}", delete_instance, methods=["DELETE"]),
    ]
    return Starlette(routes=routes, exception_handlers=http_exception_handlers(keystone_error))
