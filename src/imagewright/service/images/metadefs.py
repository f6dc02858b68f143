"""``/v2/metadefs``: the metadata definitions catalog (Glance's API; rules in ``catalog.metadefs``).

Routes (Glance's ``glance/api/v2/router.py``), every one behind a token (401 without):

- ``/metadefs/namespaces``: GET (``limit``, ``marker``, ``sort_key``, ``sort_dir``,
  ``visibility``, ``resource_types=a,b``), POST (a whole namespace document; 201).
- ``/metadefs/namespaces/{ns}``: GET (``resource_type=R`` shows property names with R's
  prefix), PUT (the namespace's own attributes), DELETE.
- ``…/{ns}/objects`` GET/POST/DELETE(all), ``…/objects/{name}`` GET/PUT/DELETE; the same for
  ``properties`` (GET ``…/properties/{name}?resource_type=R`` takes the prefixed name) and
  ``tags`` (POST ``…/tags`` replaces all, or adds with ``X-Openstack-Append: true``;
  POST ``…/tags/{name}`` adds one; PUT renames).
- ``/metadefs/resource_types`` GET; ``…/{ns}/resource_types`` GET/POST;
  ``…/{ns}/resource_types/{name}`` DELETE.

Writes are admins' (403), after the namespace's visibility (404). Views render what Glance's
WSME models render: attributes that are not set are left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagewright.catalog import metadefs
from imagewright.catalog.models import (
    MetadefNamespace,
    MetadefNamespaceResourceType,
    MetadefObject,
    MetadefProperty,
    MetadefResourceType,
    MetadefTag,
)
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import NotFoundError, RequestError
from imagewright.service.http import (
    blocking,
    caller_of,
    glance_error,
    guarded,
    json_response,
    read_json,
    registry_of,
)
from imagewright.service.images.metadef_schemas import metadef_schemas
from imagewright.service.images.views import glance_time

_route = guarded(glance_error)
T = TypeVar("T")
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
_BASE = "/v2/metadefs/namespaces"


# --- views ------------------------------------------------------------------------------------


def _stamps(row: Any) -> dict[str, str]:
    return {"created_at": glance_time(row.created_at), "updated_at": glance_time(row.updated_at)}


def _set_only(view: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in view.items() if value is not None}


def namespace_view(namespace: MetadefNamespace) -> dict[str, Any]:
    return _set_only(
        {
            "namespace": namespace.namespace,
            "display_name": namespace.display_name,
            "description": namespace.description,
            "visibility": namespace.visibility,
            "protected": namespace.protected,
            "owner": namespace.owner,
            **_stamps(namespace),
            "schema": "/v2/schemas/metadefs/namespace",
            "self": f"{_BASE}/{namespace.namespace}",
        }
    )


def association_view(association: MetadefNamespaceResourceType) -> dict[str, Any]:
    return _set_only(
        {
            "name": association.resource_type.name,
            "prefix": association.prefix,
            "properties_target": association.properties_target,
            **_stamps(association),
        }
    )


def property_definition(row: MetadefProperty, prefix: str = "") -> tuple[str, dict[str, Any]]:
    definition = json.loads(row.json_schema)
    return prefix + row.name, definition


def property_view(row: MetadefProperty, shown_name: str | None = None) -> dict[str, Any]:
    name, definition = property_definition(row)
    return {"name": shown_name or name, **definition}


def object_view(namespace: MetadefNamespace, row: MetadefObject, prefix: str = "") -> dict[str, Any]:
    required = json.loads(row.required) if row.required is not None else None
    return _set_only(
        {
            "name": row.name,
            "description": row.description,
            "required": [prefix + name for name in required] if required is not None else None,
            "properties": {prefix + name: value for name, value in json.loads(row.json_schema).items()},
            **_stamps(row),
            "schema": "/v2/schemas/metadefs/object",
            "self": f"{_BASE}/{namespace.namespace}/objects/{row.name}",
        }
    )


def tag_view(row: MetadefTag) -> dict[str, Any]:
    return {"name": row.name, **_stamps(row)}


def resource_type_view(row: MetadefResourceType) -> dict[str, Any]:
    return {"name": row.name, **_stamps(row)}


def namespace_document(
    session: Session, namespace: MetadefNamespace, resource_type: str | None
) -> dict[str, Any]:
    """A namespace with everything in it (``GET …/namespaces/{ns}``); empty parts left out."""
    view = namespace_view(namespace)
    associations = metadefs.list_associations(session, namespace)
    prefix = ""
    if resource_type:
        prefix = next((a.prefix or "" for a in associations if a.resource_type.name == resource_type), "")
    objects = metadefs.list_objects(session, namespace, newest_first=False)
    if objects:
        view["objects"] = [object_view(namespace, row, prefix) for row in objects]
    if associations:
        view["resource_type_associations"] = [association_view(a) for a in associations]
    properties = dict(
        property_definition(row, prefix) for row in metadefs.list_properties(session, namespace)
    )
    if properties:
        view["properties"] = properties
    tags = metadefs.list_tags(session, namespace, newest_first=False)
    if tags:
        view["tags"] = [{"name": tag.name} for tag in tags]
    return view


# --- plumbing ---------------------------------------------------------------------------------


async def _in_namespace(
    request: Request,
    caller: AuthContext,
    work: Callable[[Session, AuthContext, MetadefNamespace], T],
    *,
    write: bool = False,
) -> T:
    """Resolve the namespace (404 if the caller cannot see it), then ``work`` in one transaction.

    Handlers resolve the caller first, before they read a body: no token is 401 whatever is sent.
    """
    registry = registry_of(request)
    name = request.path_params["namespace"]

    def run() -> T:
        transaction = registry.catalog.writing if write else registry.catalog.reading
        with transaction() as session:
            namespace = metadefs.get_namespace(session, caller, name, lock=write)
            if write:
                metadefs.require_admin(caller)
            return work(session, caller, namespace)

    return await blocking(run)


def _limit(request: Request) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise RequestError("limit param must be an integer.") from None
    if limit < 0:
        raise RequestError("limit param must be positive.")
    return min(limit, MAX_LIMIT)


# --- namespaces -------------------------------------------------------------------------------


@_route
async def list_namespaces(request: Request) -> Response:
    caller = await caller_of(request)
    registry = registry_of(request)
    params = request.query_params
    query = metadefs.NamespaceQuery(limit=_limit(request), marker=params.get("marker"))
    query.sort_dir = params.get("sort_dir", "desc")
    if query.sort_dir not in ("asc", "desc"):
        raise RequestError(f"Invalid sort direction: {query.sort_dir}.")
    query.sort_key = params.get("sort_key", "created_at")
    if query.sort_key not in metadefs.NAMESPACE_SORT_KEYS:
        raise RequestError(
            f"Invalid sort key: {query.sort_key}; use one of {', '.join(metadefs.NAMESPACE_SORT_KEYS)}."
        )
    visibility = params.get("visibility")
    if visibility is not None and visibility not in ("public", "private"):
        raise RequestError(f"Invalid visibility value: {visibility}.")
    query.visibility = visibility
    if params.get("resource_types"):
        query.resource_types = [name.strip() for name in params["resource_types"].split(",") if name.strip()]

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            views = []
            for namespace in metadefs.list_namespaces(session, caller, query):
                view = namespace_view(namespace)
                associations = metadefs.list_associations(session, namespace)
                if associations:
                    view["resource_type_associations"] = [association_view(a) for a in associations]
                views.append(view)
            return views

    views = await blocking(work)
    kept = [(key, value) for key, value in params.multi_items() if key != "marker"]
    body: dict[str, Any] = {
        "namespaces": views,
        "first": _BASE + (f"?{urlencode(kept)}" if kept else ""),
        "schema": "/v2/schemas/metadefs/namespaces",
    }
    if views and len(views) == query.limit:
        body["next"] = f"{_BASE}?{urlencode([*kept, ('marker', views[-1]['namespace'])])}"
    return json_response(body)


@_route
async def create_namespace(request: Request) -> Response:
    caller = await caller_of(request)
    metadefs.require_admin(caller)
    body = await read_json(request)
    registry = registry_of(request)

    def work() -> dict[str, Any]:
        with registry.catalog.writing() as session:
            namespace = metadefs.create_document(session, body, caller.project_id)
            return namespace_document(session, namespace, None)

    view = await blocking(work)
    return json_response(view, status=201, headers={"Location": view["self"]})


@_route
async def show_namespace(request: Request) -> Response:
    caller = await caller_of(request)
    resource_type = request.query_params.get("resource_type")
    return json_response(
        await _in_namespace(request, caller, lambda s, _c, ns: namespace_document(s, ns, resource_type))
    )


@_route
async def update_namespace(request: Request) -> Response:
    caller = await caller_of(request)
    body = await read_json(request)

    def work(session: Session, caller: AuthContext, namespace: MetadefNamespace) -> dict[str, Any]:
        values = metadefs.check_namespace_values(body, caller.project_id)
        for nested in ("resource_type_associations", "properties", "objects", "tags"):
            if nested in body:
                raise RequestError(
                    f"'{nested}' cannot be changed by updating the namespace; use its own API."
                )
        metadefs.update_namespace(session, namespace, values)
        return namespace_view(namespace)

    return json_response(await _in_namespace(request, caller, work, write=True))


@_route
async def delete_namespace(request: Request) -> Response:
    caller = await caller_of(request)
    await _in_namespace(request, caller, lambda s, _c, ns: metadefs.delete_namespace(s, ns), write=True)
    return Response(status_code=204)


def _delete_all(model: type[Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        caller = await caller_of(request)
        await _in_namespace(
            request, caller, lambda s, _c, ns: metadefs.delete_children(s, ns, model), write=True
        )
        return Response(status_code=204)

    endpoint.__name__ = f"delete_all_{model.__tablename__}"
    return _route(endpoint)


# --- objects ----------------------------------------------------------------------------------


@_route
async def list_objects(request: Request) -> Response:
    caller = await caller_of(request)

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> list[dict[str, Any]]:
        return [object_view(namespace, row) for row in metadefs.list_objects(session, namespace)]

    return json_response(
        {"objects": await _in_namespace(request, caller, work), "schema": "v2/schemas/metadefs/objects"}
    )


@_route
async def create_object(request: Request) -> Response:
    caller = await caller_of(request)
    body = await read_json(request)

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> dict[str, Any]:
        return object_view(namespace, metadefs.save_object(session, namespace, body))

    view = await _in_namespace(request, caller, work, write=True)
    return json_response(view, status=201, headers={"Location": view["self"]})


@_route
async def show_object(request: Request) -> Response:
    caller = await caller_of(request)
    name = request.path_params["name"]
    return json_response(
        await _in_namespace(
            request, caller, lambda s, _c, ns: object_view(ns, metadefs.get_object(s, ns, name))
        )
    )


@_route
async def update_object(request: Request) -> Response:
    caller = await caller_of(request)
    body = await read_json(request)
    name = request.path_params["name"]

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> dict[str, Any]:
        existing = metadefs.get_object(session, namespace, name)
        return object_view(namespace, metadefs.save_object(session, namespace, body, existing))

    return json_response(await _in_namespace(request, caller, work, write=True))


@_route
async def delete_object(request: Request) -> Response:
    caller = await caller_of(request)
    name = request.path_params["name"]

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> None:
        metadefs.delete_object(session, namespace, metadefs.get_object(session, namespace, name))

    await _in_namespace(request, caller, work, write=True)
    return Response(status_code=204)


# --- properties -------------------------------------------------------------------------------


@_route
async def list_properties(request: Request) -> Response:
    caller = await caller_of(request)

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> dict[str, Any]:
        return dict(property_definition(row) for row in metadefs.list_properties(session, namespace))

    return json_response({"properties": await _in_namespace(request, caller, work)})


@_route
async def create_property(request: Request) -> Response:
    caller = await caller_of(request)
    body = await read_json(request)

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> dict[str, Any]:
        return property_view(metadefs.save_property(session, namespace, body))

    return json_response(await _in_namespace(request, caller, work, write=True), status=201)


@_route
async def show_property(request: Request) -> Response:
    caller = await caller_of(request)
    name = request.path_params["name"]
    resource_type = request.query_params.get("resource_type")

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> dict[str, Any]:
        wanted = name
        if resource_type:
            prefix = metadefs.prefix_for(session, namespace, resource_type)
            if prefix is None or not name.startswith(prefix):
                raise NotFoundError(
                    f"Property {name} does not start with the expected resource type association prefix "
                    f"of '{prefix}'."
                )
            wanted = name[len(prefix) :]
        return property_view(metadefs.get_property(session, namespace, wanted))

    return json_response(await _in_namespace(request, caller, work))


@_route
async def update_property(request: Request) -> Response:
    caller = await caller_of(request)
    body = await read_json(request)
    name = request.path_params["name"]

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> dict[str, Any]:
        existing = metadefs.get_property(session, namespace, name)
        return property_view(metadefs.save_property(session, namespace, body, existing))

    return json_response(await _in_namespace(request, caller, work, write=True))


@_route
async def delete_property(request: Request) -> Response:
    caller = await caller_of(request)
    name = request.path_params["name"]

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> None:
        metadefs.delete_property(session, namespace, metadefs.get_property(session, namespace, name))

    await _in_namespace(request, caller, work, write=True)
    return Response(status_code=204)


# --- tags -------------------------------------------------------------------------------------


@_route
async def list_tags(request: Request) -> Response:
    caller = await caller_of(request)

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> list[dict[str, Any]]:
        return [tag_view(row) for row in metadefs.list_tags(session, namespace)]

    return json_response({"tags": await _in_namespace(request, caller, work)})


@_route
async def create_tags(request: Request) -> Response:
    caller = await caller_of(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
        raise RequestError('The body must be {"tags": [{"name": ...}, ...]}.')
    names = []
    for tag in body["tags"]:
        if not isinstance(tag, dict) or not isinstance(tag.get("name"), str):
            raise RequestError("Each tag must be an object with a 'name'.")
        names.append(tag["name"])
    append = request.headers.get("x-openstack-append", "").strip().lower() in (
        "true",
        "1",
        "yes",
        "on",
        "y",
        "t",
    )

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> list[dict[str, Any]]:
        return [{"name": row.name} for row in metadefs.add_tags(session, namespace, names, append=append)]

    return json_response({"tags": await _in_namespace(request, caller, work, write=True)}, status=201)


@_route
async def create_tag(request: Request) -> Response:
    caller = await caller_of(request)
    name = request.path_params["name"]

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> dict[str, Any]:
        return tag_view(metadefs.add_tag(session, namespace, name))

    return json_response(await _in_namespace(request, caller, work, write=True), status=201)


@_route
async def show_tag(request: Request) -> Response:
    caller = await caller_of(request)
    name = request.path_params["name"]
    return json_response(
        await _in_namespace(request, caller, lambda s, _c, ns: tag_view(metadefs.get_tag(s, ns, name)))
    )


@_route
async def update_tag(request: Request) -> Response:
    caller = await caller_of(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise RequestError("A tag must be a JSON object with a 'name'.")
    name = request.path_params["name"]

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> dict[str, Any]:
        tag = metadefs.get_tag(session, namespace, name)
        return tag_view(metadefs.rename_tag(session, namespace, tag, body.get("name")))

    return json_response(await _in_namespace(request, caller, work, write=True))


@_route
async def delete_tag(request: Request) -> Response:
    caller = await caller_of(request)
    name = request.path_params["name"]

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> None:
        metadefs.delete_tag(session, namespace, metadefs.get_tag(session, namespace, name))

    await _in_namespace(request, caller, work, write=True)
    return Response(status_code=204)


# --- resource types ---------------------------------------------------------------------------


@_route
async def list_resource_types(request: Request) -> Response:
    await caller_of(request)
    registry = registry_of(request)

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            return [resource_type_view(row) for row in metadefs.list_resource_types(session)]

    return json_response({"resource_types": await blocking(work)})


@_route
async def list_associations(request: Request) -> Response:
    caller = await caller_of(request)

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> list[dict[str, Any]]:
        return [association_view(a) for a in metadefs.list_associations(session, namespace)]

    return json_response({"resource_type_associations": await _in_namespace(request, caller, work)})


@_route
async def create_association(request: Request) -> Response:
    caller = await caller_of(request)
    body = await read_json(request)
    name, prefix, target = metadefs.check_association(body)

    def work(session: Session, _caller: AuthContext, namespace: MetadefNamespace) -> dict[str, Any]:
        return association_view(metadefs.associate(session, namespace, name, prefix, target))

    return json_response(await _in_namespace(request, caller, work, write=True), status=201)


@_route
async def delete_association(request: Request) -> Response:
    caller = await caller_of(request)
    name = request.path_params["name"]
    await _in_namespace(request, caller, lambda s, _c, ns: metadefs.dissociate(s, ns, name), write=True)
    return Response(status_code=204)


@_route
async def show_metadef_schema(request: Request) -> Response:
    name = request.path_params["name"]
    schemas = metadef_schemas()
    if name not in schemas:
        raise NotFoundError(f"There is no metadefs schema named {name!r}.")
    return json_response(schemas[name])


def metadef_routes() -> list[Route]:
    ns = _BASE.removeprefix("/v2") + "/{namespace}"
    routes = [
        Route("/v2/schemas/metadefs/{name}", show_metadef_schema, methods=["GET"]),
        Route("/v2/metadefs/resource_types", list_resource_types, methods=["GET"]),
        Route("/v2/metadefs/namespaces", list_namespaces, methods=["GET"]),
        Route("/v2/metadefs/namespaces", create_namespace, methods=["POST"]),
    ]
    table: list[tuple[str, Any, str]] = [
        ("", show_namespace, "GET"),
        ("", update_namespace, "PUT"),
        ("", delete_namespace, "DELETE"),
        ("/objects", list_objects, "GET"),
        ("/objects", create_object, "POST"),
        ("/objects", _delete_all(MetadefObject), "DELETE"),
        ("/objects/{name}", show_object, "GET"),
        ("/objects/{name}", update_object, "PUT"),
        ("/objects/{name}", delete_object, "DELETE"),
        ("/properties", list_properties, "GET"),
        ("/properties", create_property, "POST"),
        ("/properties", _delete_all(MetadefProperty), "DELETE"),
        ("/properties/{name}", show_property, "GET"),
        ("/properties/{name}", update_property, "PUT"),
        ("/properties/{name}", delete_property, "DELETE"),
        ("/tags", list_tags, "GET"),
        ("/tags", create_tags, "POST"),
        ("/tags", _delete_all(MetadefTag), "DELETE"),
        ("/tags/{name}", show_tag, "GET"),
        ("/tags/{name}", create_tag, "POST"),
        ("/tags/{name}", update_tag, "PUT"),
        ("/tags/{name}", delete_tag, "DELETE"),
        ("/resource_types", list_associations, "GET"),
        ("/resource_types", create_association, "POST"),
        ("/resource_types/{name}", delete_association, "DELETE"),
    ]
    routes += [Route(f"/v2{ns}{suffix}", endpoint, methods=[method]) for suffix, endpoint, method in table]
    return routes
