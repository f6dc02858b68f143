"""The metadata definitions catalog: which properties, objects and tags a resource may carry.

Glance's metadefs (``/v2/metadefs``) are what Horizon and other clients read to offer property
pickers ("CPU architecture", "OS distro" …) with titles, types and allowed values; the values
themselves live on the images. A *namespace* groups property definitions (JSON-schema
fragments), *objects* (named groups of properties), *tags*, and *resource type associations*
(which resources — ``OS::Glance::Image``, ``OS::Nova::Flavor`` … — the namespace applies to,
with the prefix its properties take there, e.g. ``hw_`` on images, ``hw:`` on flavors).

Rules (Glance's default policy, ``glance/policies/metadef.py``, and its database layer,
``glance/db/sqlalchemy/metadef_api/namespace.py:_is_namespace_visible``, and domain,
``glance/domain/__init__.py``):

- read: any authenticated caller; a namespace is visible when it is public, has no owner, is
  owned by the caller's project, or the caller is an admin. An invisible namespace is 404, as a
  missing one (its existence is not revealed).
- write (create, update, delete anything, associate resource types): admins only (403), after
  the visibility check (404 first).
- a ``protected`` namespace cannot be deleted, nor can anything in it (403).
- names are unique: namespaces globally, objects/properties/tags within their namespace (tags
  case-insensitively), resource types globally (409).

The default set (``metadef_defaults/*.json``, package data, written for imagewright from the
properties clouds act on — Glance's ``etc/metadefs`` and Nova's image property reference —
not copied) is loaded by ``load_defaults`` when the metadef tables are created, so an admin's
later deletions stay deleted across restarts.

Repositories take a ``Session`` and never commit; the caller's ``with`` block is the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, true
from sqlalchemy.orm import Session

from imagewright.catalog.accounts import utcnow
from imagewright.catalog.models import (
    MetadefNamespace,
    MetadefNamespaceResourceType,
    MetadefObject,
    MetadefProperty,
    MetadefResourceType,
    MetadefTag,
)
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import ConflictError, ForbiddenError, NotFoundError, RequestError

NAME_MAX = 80
DESCRIPTION_MAX = 500
OWNER_MAX = 255
NAMESPACE_SORT_KEYS = ("created_at", "updated_at", "namespace", "display_name", "visibility", "owner")
PROPERTY_TYPES = ("array", "boolean", "integer", "number", "object", "string")
#: Keys a property definition may have, and the JSON type each must be.
PROPERTY_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "title": (str,),
    "description": (str,),
    "type": (str,),
    "operators": (list,),
    "default": (str, int, float, bool, list, dict),
    "readonly": (bool,),
    "minimum": (int, float),
    "maximum": (int, float),
    "enum": (list,),
    "pattern": (str,),
    "minLength": (int,),
    "maxLength": (int,),
    "confidential": (bool,),
    "items": (dict,),
    "uniqueItems": (bool,),
    "minItems": (int,),
    "maxItems": (int,),
    "additionalItems": (bool,),
    "required": (list,),
}
#: Revision that created the metadef tables (defaults are loaded when a catalog passes it).
METADEF_REVISION = "0003"
DEFAULTS_PACKAGE = "imagewright.catalog.metadef_defaults"


def not_authorized() -> ForbiddenError:
    return ForbiddenError("You are not authorized to complete this action.")


def require_admin(caller: AuthContext) -> None:
    """Every metadef write is an admin's (Glance's ``metadef_admin`` rule)."""
    if not caller.is_admin:
        raise not_authorized()


def namespace_not_found(name: str) -> NotFoundError:
    return NotFoundError(f"Metadata definition namespace={name} was not found.")


# --- checks of what clients send ------------------------------------------------------------------


def _text(what: str, value: Any, limit: int, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise RequestError(f"{what} is required.")
        return None
    if not isinstance(value, str):
        raise RequestError(f"{what} must be a string.")
    if required and not value.strip():
        raise RequestError(f"{what} cannot be empty.")
    if len(value) > limit:
        raise RequestError(f"{what} is longer than {limit} characters.")
    return value


def check_name(what: str, value: Any) -> str:
    name = _text(what, value, NAME_MAX, required=True)
    assert name is not None
    return name


def check_property(name: str, definition: Any) -> dict[str, Any]:
    """A property definition as stored: Glance's ``PropertyType`` keys, each of its JSON type."""
    check_name("A property name", name)
    if not isinstance(definition, dict):
        raise RequestError(f"The definition of the property {name!r} must be a JSON object.")
    unknown = sorted(set(definition) - set(PROPERTY_KEYS))
    if unknown:
        raise RequestError(
            f"The property {name!r} has attributes no definition may have: {', '.join(unknown)}."
        )
    for key, value in definition.items():
        kinds = PROPERTY_KEYS[key]
        if isinstance(value, bool) and bool not in kinds:
            raise RequestError(f"{key!r} of the property {name!r} has the wrong type.")
        if not isinstance(value, kinds):
            raise RequestError(f"{key!r} of the property {name!r} has the wrong type.")
    for key in ("title", "type"):
        if key not in definition:
            raise RequestError(f"The property {name!r} needs a {key!r}.")
    if definition["type"] not in PROPERTY_TYPES:
        raise RequestError(
            f"The type {definition['type']!r} of the property {name!r} is not one of "
            f"{', '.join(PROPERTY_TYPES)}."
        )
    items = definition.get("items")
    if items is not None and (set(items) - {"type", "enum"} or not isinstance(items.get("type", ""), str)):
        raise RequestError(f"'items' of the property {name!r} may only name a 'type' and an 'enum'.")
    stored = {key: value for key, value in definition.items() if key != "name"}
    if len(json.dumps(stored)) > 65535:
        raise RequestError(f"The definition of the property {name!r} is too large.")
    return stored


def check_object(body: Any) -> tuple[str, str | None, list[str] | None, dict[str, dict[str, Any]]]:
    if not isinstance(body, dict):
        raise RequestError("A metadata definition object must be a JSON object.")
    unknown = sorted(set(body) - {"name", "description", "required", "properties"})
    if unknown:
        raise RequestError(f"A metadata definition object may not have: {', '.join(unknown)}.")
    name = check_name("The object name", body.get("name"))
    description = _text("The object description", body.get("description"), 65535)
    required = body.get("required")
    if required is not None and (
        not isinstance(required, list) or not all(isinstance(item, str) for item in required)
    ):
        raise RequestError(f"'required' of the object {name!r} must be a list of property names.")
    properties = body.get("properties") or {}
    if not isinstance(properties, dict):
        raise RequestError(f"'properties' of the object {name!r} must be a JSON object.")
    return name, description, required, {key: check_property(key, value) for key, value in properties.items()}


# --- visibility -------------------------------------------------------------------------------


def _visible(caller: AuthContext) -> ColumnElement[bool]:
    if caller.is_admin:
        return true()
    return or_(
        MetadefNamespace.visibility == "public",
        MetadefNamespace.owner.is_(None),
        MetadefNamespace.owner == (caller.project_id or ""),
    )


def get_namespace(
    session: Session, caller: AuthContext, name: str, *, lock: bool = False
) -> MetadefNamespace:
    """The namespace ``name`` if the caller may see it; else 404 (Glance hides it)."""
    query = select(MetadefNamespace).where(MetadefNamespace.namespace == name, _visible(caller))
    if lock:
        query = query.with_for_update()
    found = session.scalars(query).first()
    if found is None:
        raise namespace_not_found(name)
    return found


@dataclass
class NamespaceQuery:
    visibility: str | None = None
    resource_types: list[str] = field(default_factory=list)
    sort_key: str = "created_at"
    sort_dir: str = "desc"
    marker: str | None = None
    limit: int = 25


def _sort_column(key: str) -> ColumnElement[Any]:
    column = getattr(MetadefNamespace, key)
    if key in ("display_name", "owner"):
        return func.coalesce(column, "")
    return column  # type: ignore[no-any-return]


def list_namespaces(session: Session, caller: AuthContext, query: NamespaceQuery) -> list[MetadefNamespace]:
    conditions: list[ColumnElement[bool]] = [_visible(caller)]
    if query.visibility is not None:
        conditions.append(MetadefNamespace.visibility == query.visibility)
    if query.resource_types:
        associated = (
            select(MetadefNamespaceResourceType.namespace_id)
            .join(MetadefResourceType)
            .where(MetadefResourceType.name.in_(query.resource_types))
        )
        conditions.append(MetadefNamespace.id.in_(associated))
    key = _sort_column(query.sort_key)
    descending = query.sort_dir == "desc"
    if query.marker is not None:
        marker = get_namespace(session, caller, query.marker)
        marker_key = getattr(marker, query.sort_key)
        if query.sort_key in ("display_name", "owner"):
            marker_key = marker_key or ""
        if descending:
            conditions.append(or_(key < marker_key, and_(key == marker_key, MetadefNamespace.id < marker.id)))
        else:
            conditions.append(or_(key > marker_key, and_(key == marker_key, MetadefNamespace.id > marker.id)))
    order = (key.desc(), MetadefNamespace.id.desc()) if descending else (key.asc(), MetadefNamespace.id.asc())
    return list(
        session.scalars(select(MetadefNamespace).where(*conditions).order_by(*order).limit(query.limit))
    )


def _namespace_exists(session: Session, name: str, *, other_than: int | None = None) -> bool:
    query = select(MetadefNamespace.id).where(MetadefNamespace.namespace == name)
    if other_than is not None:
        query = query.where(MetadefNamespace.id != other_than)
    return session.scalars(query).first() is not None


def check_namespace_values(body: Any, default_owner: str | None) -> dict[str, Any]:
    """The namespace's own attributes from a create/update body (Glance's defaults)."""
    if not isinstance(body, dict):
        raise RequestError("A metadata definition namespace must be a JSON object.")
    for key in ("self", "schema", "created_at", "updated_at"):
        if key in body:
            raise ForbiddenError(f"Attribute '{key}' is read-only.")
    allowed = {
        "namespace",
        "display_name",
        "description",
        "visibility",
        "protected",
        "owner",
        "resource_type_associations",
        "properties",
        "objects",
        "tags",
    }
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"A metadata definition namespace may not have: {', '.join(unknown)}.")
    visibility = body.get("visibility") or "private"
    if visibility not in ("public", "private"):
        raise RequestError(f"Invalid visibility value: {visibility}; use public or private.")
    protected = body.get("protected", False)
    if protected is None:
        protected = False
    if not isinstance(protected, bool):
        raise RequestError("protected must be true or false.")
    return {
        "namespace": check_name("The namespace", body.get("namespace")),
        "display_name": _text("display_name", body.get("display_name"), NAME_MAX),
        "description": _text("description", body.get("description"), DESCRIPTION_MAX),
        "visibility": visibility,
        "protected": protected,
        "owner": _text("owner", body.get("owner"), OWNER_MAX) or default_owner,
    }


def create_namespace(session: Session, values: dict[str, Any]) -> MetadefNamespace:
    if _namespace_exists(session, values["namespace"]):
        raise ConflictError(f"The metadata definition namespace={values['namespace']} already exists.")
    now = utcnow()
    namespace = MetadefNamespace(**values, created_at=now, updated_at=now)
    session.add(namespace)
    session.flush()
    return namespace


def update_namespace(session: Session, namespace: MetadefNamespace, values: dict[str, Any]) -> None:
    if values["namespace"] != namespace.namespace and _namespace_exists(
        session, values["namespace"], other_than=namespace.id
    ):
        raise ConflictError(f"The metadata definition namespace={values['namespace']} already exists.")
    for key, value in values.items():
        setattr(namespace, key, value)
    namespace.updated_at = utcnow()
    session.flush()


def _require_unprotected(namespace: MetadefNamespace, what: str) -> None:
    if namespace.protected:
        raise ForbiddenError(f"Metadata definition {what} is protected and cannot be deleted.")


def delete_namespace(session: Session, namespace: MetadefNamespace) -> None:
    _require_unprotected(namespace, f"namespace {namespace.namespace}")
    session.delete(namespace)
    session.flush()


def delete_children(session: Session, namespace: MetadefNamespace, model: type[Any]) -> None:
    """``DELETE …/objects`` (or properties, tags): everything of one kind in the namespace."""
    _require_unprotected(namespace, f"namespace {namespace.namespace}")
    session.execute(delete(model).where(model.namespace_id == namespace.id))
    namespace.updated_at = utcnow()


# --- objects ----------------------------------------------------------------------------------


def list_objects(
    session: Session, namespace: MetadefNamespace, *, newest_first: bool = True
) -> list[MetadefObject]:
    order = (
        (MetadefObject.created_at.desc(), MetadefObject.id.desc())
        if newest_first
        else (MetadefObject.id.asc(),)
    )
    query = select(MetadefObject).where(MetadefObject.namespace_id == namespace.id).order_by(*order)
    return list(session.scalars(query))


def get_object(session: Session, namespace: MetadefNamespace, name: str) -> MetadefObject:
    found = session.scalars(
        select(MetadefObject).where(MetadefObject.namespace_id == namespace.id, MetadefObject.name == name)
    ).first()
    if found is None:
        raise NotFoundError(
            f"The metadata definition object with name={name} was not found in "
            f"namespace={namespace.namespace}."
        )
    return found


def _object_exists(session: Session, namespace: MetadefNamespace, name: str, other_than: int | None) -> bool:
    query = select(MetadefObject.id).where(
        MetadefObject.namespace_id == namespace.id, MetadefObject.name == name
    )
    if other_than is not None:
        query = query.where(MetadefObject.id != other_than)
    return session.scalars(query).first() is not None


def save_object(
    session: Session, namespace: MetadefNamespace, body: Any, existing: MetadefObject | None = None
) -> MetadefObject:
    name, description, required, properties = check_object(body)
    if _object_exists(session, namespace, name, existing.id if existing else None):
        raise ConflictError(
            f"A metadata definition object with name={name} already exists in "
            f"namespace={namespace.namespace}."
        )
    now = utcnow()
    target = existing or MetadefObject(namespace_id=namespace.id, created_at=now)
    target.name = name
    target.description = description
    target.required = json.dumps(required) if required is not None else None
    target.json_schema = json.dumps(properties)
    target.updated_at = now
    if existing is None:
        session.add(target)
    session.flush()
    return target


def delete_object(session: Session, namespace: MetadefNamespace, found: MetadefObject) -> None:
    _require_unprotected(namespace, f"object {found.name}")
    session.delete(found)


# --- properties -------------------------------------------------------------------------------


def list_properties(session: Session, namespace: MetadefNamespace) -> list[MetadefProperty]:
    query = (
        select(MetadefProperty)
        .where(MetadefProperty.namespace_id == namespace.id)
        .order_by(MetadefProperty.id)
    )
    return list(session.scalars(query))


def get_property(session: Session, namespace: MetadefNamespace, name: str) -> MetadefProperty:
    found = session.scalars(
        select(MetadefProperty).where(
            MetadefProperty.namespace_id == namespace.id, MetadefProperty.name == name
        )
    ).first()
    if found is None:
        raise NotFoundError(
            f"The metadata definition property with name={name} was not found in "
            f"namespace={namespace.namespace}."
        )
    return found


def save_property(
    session: Session, namespace: MetadefNamespace, body: Any, existing: MetadefProperty | None = None
) -> MetadefProperty:
    if not isinstance(body, dict):
        raise RequestError("A metadata definition property must be a JSON object.")
    name = check_name("The property name", body.get("name"))
    stored = check_property(name, body)
    clash = select(MetadefProperty.id).where(
        MetadefProperty.namespace_id == namespace.id, MetadefProperty.name == name
    )
    if existing is not None:
        clash = clash.where(MetadefProperty.id != existing.id)
    if session.scalars(clash).first() is not None:
        raise ConflictError(
            f"A metadata definition property with name={name} already exists in "
            f"namespace={namespace.namespace}."
        )
    now = utcnow()
    target = existing or MetadefProperty(namespace_id=namespace.id, created_at=now)
    target.name = name
    target.json_schema = json.dumps(stored)
    target.updated_at = now
    if existing is None:
        session.add(target)
    session.flush()
    return target


def delete_property(session: Session, namespace: MetadefNamespace, found: MetadefProperty) -> None:
    _require_unprotected(namespace, f"property {found.name}")
    session.delete(found)


# --- tags -------------------------------------------------------------------------------------


def list_tags(
    session: Session, namespace: MetadefNamespace, *, newest_first: bool = True
) -> list[MetadefTag]:
    order = (MetadefTag.created_at.desc(), MetadefTag.id.desc()) if newest_first else (MetadefTag.id.asc(),)
    return list(
        session.scalars(select(MetadefTag).where(MetadefTag.namespace_id == namespace.id).order_by(*order))
    )


def get_tag(session: Session, namespace: MetadefNamespace, name: str) -> MetadefTag:
    found = session.scalars(
        select(MetadefTag).where(MetadefTag.namespace_id == namespace.id, MetadefTag.name == name)
    ).first()
    if found is None:
        raise NotFoundError(
            f"The metadata definition tag with name={name} was not found in namespace={namespace.namespace}."
        )
    return found


def _duplicate_tag(namespace: MetadefNamespace, name: str) -> ConflictError:
    return ConflictError(
        f"A metadata tag with name={name} already exists in namespace={namespace.namespace} "
        "(tag names are case insensitive)."
    )


def _tag_taken(session: Session, namespace: MetadefNamespace, name: str, other_than: int | None) -> bool:
    query = select(MetadefTag.id).where(
        MetadefTag.namespace_id == namespace.id, func.lower(MetadefTag.name) == name.lower()
    )
    if other_than is not None:
        query = query.where(MetadefTag.id != other_than)
    return session.scalars(query).first() is not None


def add_tag(session: Session, namespace: MetadefNamespace, name: str) -> MetadefTag:
    name = check_name("The tag name", name)
    if _tag_taken(session, namespace, name, None):
        raise _duplicate_tag(namespace, name)
    now = utcnow()
    tag = MetadefTag(namespace_id=namespace.id, name=name, created_at=now, updated_at=now)
    session.add(tag)
    session.flush()
    return tag


def add_tags(
    session: Session, namespace: MetadefNamespace, names: Sequence[str], *, append: bool
) -> list[MetadefTag]:
    """``POST …/tags``: replace every tag (or, with ``X-Openstack-Append: true``, add)."""
    lowered = [name.lower() for name in names]
    if len(set(lowered)) != len(lowered):
        duplicate = next(name for name in names if lowered.count(name.lower()) > 1)
        raise _duplicate_tag(namespace, duplicate)
    if not append:
        session.execute(delete(MetadefTag).where(MetadefTag.namespace_id == namespace.id))
        session.flush()
    return [add_tag(session, namespace, name) for name in names]


def rename_tag(session: Session, namespace: MetadefNamespace, tag: MetadefTag, name: Any) -> MetadefTag:
    name = check_name("The tag name", name)
    if _tag_taken(session, namespace, name, tag.id):
        raise _duplicate_tag(namespace, name)
    tag.name = name
    tag.updated_at = utcnow()
    session.flush()
    return tag


def delete_tag(session: Session, namespace: MetadefNamespace, tag: MetadefTag) -> None:
    _require_unprotected(namespace, f"tag {tag.name}")
    session.delete(tag)


# --- resource types ---------------------------------------------------------------------------


def list_resource_types(session: Session) -> list[MetadefResourceType]:
    return list(session.scalars(select(MetadefResourceType).order_by(MetadefResourceType.id)))


def list_associations(session: Session, namespace: MetadefNamespace) -> list[MetadefNamespaceResourceType]:
    query = (
        select(MetadefNamespaceResourceType)
        .where(MetadefNamespaceResourceType.namespace_id == namespace.id)
        .order_by(MetadefNamespaceResourceType.created_at, MetadefNamespaceResourceType.resource_type_id)
    )
    return list(session.scalars(query))


def check_association(body: Any) -> tuple[str, str | None, str | None]:
    if not isinstance(body, dict):
        raise RequestError("A resource type association must be a JSON object.")
    unknown = sorted(set(body) - {"name", "prefix", "properties_target", "created_at", "updated_at"})
    if unknown:
        raise RequestError(f"A resource type association may not have: {', '.join(unknown)}.")
    return (
        check_name("The resource type name", body.get("name")),
        _text("prefix", body.get("prefix"), NAME_MAX),
        _text("properties_target", body.get("properties_target"), NAME_MAX),
    )


def associate(
    session: Session, namespace: MetadefNamespace, name: str, prefix: str | None, target: str | None
) -> MetadefNamespaceResourceType:
    """Associate a resource type (created on first use, as Glance does) with the namespace."""
    now = utcnow()
    resource_type = session.scalars(
        select(MetadefResourceType).where(MetadefResourceType.name == name)
    ).first()
    if resource_type is None:
        resource_type = MetadefResourceType(name=name, protected=False, created_at=now, updated_at=now)
        session.add(resource_type)
        session.flush()
    elif session.get(MetadefNamespaceResourceType, (resource_type.id, namespace.id)) is not None:
        raise ConflictError(
            f"The metadata definition resource-type association of resource-type={name} to "
            f"namespace={namespace.namespace} already exists."
        )
    association = MetadefNamespaceResourceType(
        resource_type_id=resource_type.id,
        namespace_id=namespace.id,
        prefix=prefix,
        properties_target=target,
        created_at=now,
        updated_at=now,
    )
    association.resource_type = resource_type
    session.add(association)
    session.flush()
    return association


def dissociate(session: Session, namespace: MetadefNamespace, name: str) -> None:
    association = session.scalars(
        select(MetadefNamespaceResourceType)
        .join(MetadefResourceType)
        .where(MetadefNamespaceResourceType.namespace_id == namespace.id, MetadefResourceType.name == name)
    ).first()
    if association is None:
        raise NotFoundError(
            f"The metadata definition resource-type association of resource-type={name} to "
            f"namespace={namespace.namespace}, was not found."
        )
    if namespace.protected:
        raise ForbiddenError(
            f"Metadata definition resource-type-association {name} is protected and cannot be deleted."
        )
    session.delete(association)


def prefix_for(session: Session, namespace: MetadefNamespace, resource_type: str) -> str | None:
    for association in list_associations(session, namespace):
        if association.resource_type.name == resource_type:
            return association.prefix
    return None


# --- whole namespaces, as documents -------------------------------------------------------------


def create_document(session: Session, body: Any, default_owner: str | None) -> MetadefNamespace:
    """A namespace with everything it holds (the body of ``POST /v2/metadefs/namespaces``)."""
    values = check_namespace_values(body, default_owner)
    namespace = create_namespace(session, values)
    for association in _list_of(body, "resource_type_associations"):
        associate(session, namespace, *check_association(association))
    properties = body.get("properties") or {}
    if not isinstance(properties, dict):
        raise RequestError("'properties' of a namespace must be a JSON object.")
    for name, definition in properties.items():
        if not isinstance(definition, dict):
            raise RequestError(f"The definition of the property {name!r} must be a JSON object.")
        save_property(session, namespace, {**definition, "name": name})
    for obj in _list_of(body, "objects"):
        save_object(session, namespace, obj)
    tags = _list_of(body, "tags")
    for tag in tags:
        if not isinstance(tag, dict) or set(tag) - {"name", "created_at", "updated_at"}:
            raise RequestError("Each tag must be an object with a 'name'.")
    add_tags(
        session,
        namespace,
        [str(tag.get("name")) if tag.get("name") is not None else "" for tag in tags],
        append=True,
    )
    return namespace


def _list_of(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key) or []
    if not isinstance(value, list):
        raise RequestError(f"'{key}' of a namespace must be a list.")
    return value


def default_documents() -> Iterable[dict[str, Any]]:
    """The shipped default namespaces (package data), in file-name order."""
    folder = resources.files(DEFAULTS_PACKAGE)
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".json"):
            yield json.loads(entry.read_text(encoding="utf-8"))


def load_defaults(session: Session) -> list[str]:
    """Load every default namespace that is not there yet; returns the names loaded."""
    loaded = []
    for document in default_documents():
        if not _namespace_exists(session, document["namespace"]):
            create_document(session, document, None)
            loaded.append(document["namespace"])
    return loaded


def load_defaults_after_upgrade(session: Session, revision_before: str | None) -> list[str]:
    """Load the defaults when the upgrade just created the metadef tables (first start)."""
    if revision_before is None or revision_before < METADEF_REVISION:
        return load_defaults(session)
    return []
