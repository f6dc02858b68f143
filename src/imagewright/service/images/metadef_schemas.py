"""The metadata definitions' schemas (``/v2/schemas/metadefs/*``), as Glance serves them.

python-glanceclient builds its ``md-*`` models from these (warlock) and validates what it sends
and receives against them, so their shapes follow Glance's (``glance/api/v2/metadef_*.py``:
``get_schema``, ``get_collection_schema``, ``get_schema_definitions``); the descriptions are ours.
``/v2/schemas/metadefs/resource_type`` is the *association* schema, as in Glance.
"""

from __future__ import annotations

import copy
from typing import Any

_TYPES: list[Any] = ["array", "boolean", "integer", "number", "object", "string", None]
_LINKS = [
    {"rel": "first", "href": "{first}"},
    {"rel": "next", "href": "{next}"},
    {"rel": "describedby", "href": "{schema}"},
]


def _stamp(what: str, event: str) -> dict[str, Any]:
    return {
        "type": "string",
        "readOnly": True,
        "description": f"Date and time of {what} {event}",
        "format": "date-time",
    }


def _stamps(what: str) -> dict[str, Any]:
    return {"created_at": _stamp(what, "creation"), "updated_at": _stamp(f"the last {what}", "modification")}


def _property_fields() -> dict[str, Any]:
    return {
        "name": {"type": "string", "maxLength": 80},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "operators": {"type": "array", "items": {"type": "string"}},
        "type": {"type": "string", "enum": list(_TYPES)},
        "required": {"$ref": "#/definitions/stringArray"},
        "minimum": {"type": "number"},
        "maximum": {"type": "number"},
        "maxLength": {"$ref": "#/definitions/positiveInteger"},
        "minLength": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "pattern": {"type": "string", "format": "regex"},
        "enum": {"type": "array"},
        "readonly": {"type": "boolean"},
        "default": {},
        "items": {
            "type": "object",
            "properties": {"type": {"type": "string", "enum": list(_TYPES)}, "enum": {"type": "array"}},
        },
        "maxItems": {"$ref": "#/definitions/positiveInteger"},
        "minItems": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "uniqueItems": {"type": "boolean", "default": False},
        "additionalItems": {"type": "boolean"},
    }


def _definitions(*, with_property: bool, string_array_min_items: bool = False) -> dict[str, Any]:
    string_array: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    if string_array_min_items:
        string_array = {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True}
    definitions: dict[str, Any] = {
        "positiveInteger": {"type": "integer", "minimum": 0},
        "positiveIntegerDefault0": {"allOf": [{"$ref": "#/definitions/positiveInteger"}, {"default": 0}]},
        "stringArray": string_array,
    }
    if with_property:
        definitions["property"] = {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["title", "type"],
                "properties": _property_fields(),
            },
        }
    return definitions


def _links() -> dict[str, Any]:
    return {"schema": {"readOnly": True, "type": "string"}, "self": {"readOnly": True, "type": "string"}}


def association_schema() -> dict[str, Any]:
    return {
        "name": "resource_type_association",
        "properties": {
            "name": {
                "type": "string",
                "description": "The resource type (OS::Glance::Image, OS::Nova::Flavor, ...).",
                "maxLength": 80,
            },
            "prefix": {
                "type": "string",
                "description": "What the namespace's property names are prefixed with on this resource "
                "type, separator included (hw_ on images, hw: on flavors).",
                "maxLength": 80,
            },
            "properties_target": {
                "type": "string",
                "description": "Which of the resource's key/value sets the properties go to, where it "
                "has several (a volume's image metadata: image).",
                "maxLength": 80,
            },
            **_stamps("resource type association"),
        },
        "additionalProperties": False,
        "required": ["name"],
    }


def namespace_schema() -> dict[str, Any]:
    return {
        "name": "namespace",
        "properties": {
            "namespace": {"type": "string", "description": "The namespace's unique name.", "maxLength": 80},
            "display_name": {"type": "string", "description": "A name for people to read.", "maxLength": 80},
            "description": {"type": "string", "description": "What the namespace defines.", "maxLength": 500},
            "visibility": {
                "type": "string",
                "description": "public: every caller sees it; private: its owner's project and admins.",
                "enum": ["public", "private"],
            },
            "protected": {"type": "boolean", "description": "If true, the namespace cannot be deleted."},
            "owner": {
                "type": "string",
                "description": "The project that owns the namespace.",
                "maxLength": 255,
            },
            **_stamps("namespace"),
            **_links(),
            "resource_type_associations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "prefix": {"type": "string"},
                        "properties_target": {"type": "string"},
                    },
                },
            },
            "properties": {"$ref": "#/definitions/property"},
            "objects": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "required": {"$ref": "#/definitions/stringArray"},
                        "properties": {"$ref": "#/definitions/property"},
                    },
                },
            },
            "tags": {
                "type": "array",
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
        },
        "additionalProperties": False,
        "definitions": _definitions(with_property=True),
        "required": ["namespace"],
    }


def object_schema() -> dict[str, Any]:
    return {
        "name": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 80},
            "description": {"type": "string"},
            "required": {"$ref": "#/definitions/stringArray"},
            "properties": {"$ref": "#/definitions/property"},
            **_links(),
            **_stamps("object"),
        },
        "additionalProperties": False,
        "definitions": _definitions(with_property=True),
        "required": ["name"],
    }


def property_schema() -> dict[str, Any]:
    return {
        "name": "property",
        "properties": _property_fields(),
        "additionalProperties": False,
        "definitions": _definitions(with_property=False, string_array_min_items=True),
        "required": ["type", "title", "name"],
    }


def tag_schema() -> dict[str, Any]:
    return {
        "name": "tag",
        "properties": {"name": {"type": "string", "maxLength": 80}, **_stamps("tag")},
        "additionalProperties": False,
        "required": ["name"],
    }


def _collection(name: str, key: str, item: dict[str, Any], *, as_map: bool = False) -> dict[str, Any]:
    """Glance's CollectionSchema: the items without their definitions, which move up a level."""
    inner = copy.deepcopy(item)
    definitions = inner.pop("definitions", None)
    container: dict[str, Any] = (
        {"type": "object", "additionalProperties": inner} if as_map else {"type": "array", "items": inner}
    )
    schema: dict[str, Any] = {
        "name": name,
        "properties": {
            key: container,
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": copy.deepcopy(_LINKS),
    }
    if definitions is not None:
        schema["definitions"] = definitions
    return schema


def metadef_schemas() -> dict[str, dict[str, Any]]:
    """Every metadef schema, by its name below ``/v2/schemas/metadefs/``."""
    namespace, obj, prop, tag, association = (
        namespace_schema(),
        object_schema(),
        property_schema(),
        tag_schema(),
        association_schema(),
    )
    properties_item = copy.deepcopy(prop)
    properties_item["required"] = ["type", "title"]
    properties = _collection("properties", "properties", properties_item, as_map=True)
    return {
        "namespace": namespace,
        "namespaces": _collection("namespaces", "namespaces", namespace),
        "object": obj,
        "objects": _collection("objects", "objects", obj),
        "property": prop,
        "properties": properties,
        "tag": tag,
        "tags": _collection("tags", "tags", tag),
        "resource_type": association,
        "resource_types": _collection(
            "resource_type_associations", "resource_type_associations", association
        ),
    }
