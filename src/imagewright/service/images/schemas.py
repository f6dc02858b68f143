"""The Image API's schemas (``/v2/schemas/*``) and the checks of what clients may write.

The schema is Glance's (``glance/api/v2/images.py:get_base_properties``, ``image_members.py``),
served as clients expect it: glanceclient reads ``/v2/schemas/image`` to build its models and
checks values against it before sending. ``check_value`` enforces the same rules on the server,
with one sentence per refusal; the attribute sets (read-only, reserved, base) are Glance's
``RequestDeserializer`` ones.
"""

from __future__ import annotations

import re
from typing import Any

from imagewright.errors import ForbiddenError, RequestError
from imagewright.ops.inspect_os.properties import AUDIT_PROPERTY
from imagewright.upload_gate import CONTAINER_FORMATS, DISK_FORMATS, OVA_PROPERTIES

IMAGE_STATUSES = (
    "queued",
    "saving",
    "active",
    "killed",
    "deleted",
    "uploading",
    "importing",
    "pending_delete",
    "deactivated",
)

#: Never writable (``RequestDeserializer._readonly_properties`` and ``_disallowed_properties``).
READ_ONLY = frozenset(
    {
        "created_at",
        "updated_at",
        "status",
        "checksum",
        "size",
        "virtual_size",
        "direct_url",
        "self",
        "file",
        "schema",
        "os_hash_algo",
        "os_hash_value",
        "stores",
    }
)
#: Properties only the registry writes (``publishing``): an audit a client could set would say
#: whatever the client liked.
REGISTRY_PROPERTIES = frozenset({AUDIT_PROPERTY})
#: Writable at creation only.
CREATE_ONLY = frozenset({"id"})
#: Glance's reserved names, and the properties this registry sets from what it verified in the
#: data (an OVA's signer: ``upload_gate.OVA_PROPERTIES``), which a client must not forge.
RESERVED = frozenset({"location", "deleted", "deleted_at", "locations", *OVA_PROPERTIES})
#: Glance's own prefix, and ours for the facts of an original kept beside its conversion
#: (``--keep-original``).
RESERVED_PREFIX = ("os_glance", "os_imagewright_original_")
#: Image columns (everything else a client sends is a custom property).
BASE = frozenset(
    {
        "id",
        "name",
        "visibility",
        "protected",
        "os_hidden",
        "owner",
        "container_format",
        "disk_format",
        "min_ram",
        "min_disk",
        "tags",
    }
)
MAX_TAGS = 128
MAX_PROPERTIES = 128
MAX_PROPERTY_VALUE = 65535
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MAX_INT = 2**31 - 1
#: The id pattern as Glance's schemas spell it (the same language as ``_UUID``).
_UUID_SCHEMA_PATTERN = (
    "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
)


def check_writable(name: str, *, creating: bool) -> None:
    """403 for attributes no client may write (Glance's wording)."""
    if name in READ_ONLY or name in REGISTRY_PROPERTIES or (name in CREATE_ONLY and not creating):
        raise ForbiddenError(f"Attribute '{name}' is read-only.")
    if name in RESERVED or name.startswith(RESERVED_PREFIX):
        raise ForbiddenError(f"Attribute '{name}' is reserved.")
    if len(name) > 255 or not name:
        raise RequestError("A custom property name must have 1 to 255 characters.")


def check_value(name: str, value: Any) -> Any:
    """The value for attribute ``name`` if the schema allows it; 400 with one sentence if not."""
    if name == "id":
        if not isinstance(value, str) or not _UUID.match(value):
            raise RequestError(f"{value!r} is not a valid image id (a UUID).")
        return value.lower()
    if name in ("name", "owner"):
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise RequestError(f"The {name} must be null or a string of at most 255 characters.")
        return value
    if name == "visibility":
        if value not in ("public", "private", "shared", "community"):
            raise RequestError(
                f"Invalid visibility value: {value}; use public, private, shared or community."
            )
        return value
    if name in ("protected", "os_hidden"):
        if not isinstance(value, bool):
            raise RequestError(f"{name} must be true or false, not {value!r}.")
        return value
    if name == "disk_format":
        if value is not None and value not in DISK_FORMATS:
            raise RequestError(f"Invalid disk_format {value!r}; use one of {', '.join(DISK_FORMATS)}.")
        return value
    if name == "container_format":
        if value is not None and value not in CONTAINER_FORMATS:
            raise RequestError(
                f"Invalid container_format {value!r}; use one of {', '.join(CONTAINER_FORMATS)}."
            )
        return value
    if name in ("min_ram", "min_disk"):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
            raise RequestError(f"{name} must be an integer from 0 to {_MAX_INT}, not {value!r}.")
        return value
    if name == "tags":
        if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t) <= 255 for t in value):
            raise RequestError("tags must be a list of strings of 1 to 255 characters.")
        unique = list(dict.fromkeys(value))
        if len(unique) > MAX_TAGS:
            raise RequestError(f"An image may have at most {MAX_TAGS} tags.")
        return unique
    if not isinstance(value, str):
        raise RequestError(f"The property {name!r} must be a string, not {type(value).__name__}.")
    if len(value) > MAX_PROPERTY_VALUE:
        raise RequestError(f"The property {name!r} is longer than {MAX_PROPERTY_VALUE} characters.")
    return value


def _null_or(kind: str) -> list[str]:
    return ["null", kind]


def image_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "id": {
            "type": "string",
            "description": "An identifier for the image",
            "pattern": _UUID_SCHEMA_PATTERN,
        },
        "name": {
            "type": _null_or("string"),
            "description": "Descriptive name for the image",
            "maxLength": 255,
        },
        "status": {
            "type": "string",
            "readOnly": True,
            "description": "Status of the image",
            "enum": list(IMAGE_STATUSES),
        },
        "visibility": {
            "type": "string",
            "description": "Scope of image accessibility",
            "enum": ["community", "public", "private", "shared"],
        },
        "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
        "os_hidden": {
            "type": "boolean",
            "description": "If true, image will not appear in default image list response.",
        },
        "checksum": {
            "type": _null_or("string"),
            "readOnly": True,
            "description": "md5 hash of image contents.",
            "maxLength": 32,
        },
        "os_hash_algo": {
            "type": _null_or("string"),
            "readOnly": True,
            "description": "Algorithm to calculate the os_hash_value",
            "maxLength": 64,
        },
        "os_hash_value": {
            "type": _null_or("string"),
            "readOnly": True,
            "description": (
                "Hexdigest of the image contents using the algorithm specified by the os_hash_algo"
            ),
            "maxLength": 128,
        },
        "owner": {"type": _null_or("string"), "description": "Owner of the image", "maxLength": 255},
        "size": {"type": _null_or("integer"), "readOnly": True, "description": "Size of image file in bytes"},
        "virtual_size": {
            "type": _null_or("integer"),
            "readOnly": True,
            "description": "Virtual size of image in bytes",
        },
        "container_format": {
            "type": _null_or("string"),
            "description": "Format of the container",
            "enum": [None, *CONTAINER_FORMATS],
        },
        "disk_format": {
            "type": _null_or("string"),
            "description": "Format of the disk",
            "enum": [None, *DISK_FORMATS],
        },
        "created_at": {
            "type": "string",
            "readOnly": True,
            "description": "Date and time of image registration",
        },
        "updated_at": {
            "type": "string",
            "readOnly": True,
            "description": "Date and time of the last image modification",
        },
        "tags": {
            "type": "array",
            "description": "List of strings related to the image",
            "items": {"type": "string", "maxLength": 255},
        },
        "direct_url": {
            "type": "string",
            "readOnly": True,
            "description": "URL to access the image file kept in external store",
        },
        "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
        "min_disk": {
            "type": "integer",
            "description": "Amount of disk space (in GB) required to boot image.",
        },
        "self": {"type": "string", "readOnly": True, "description": "An image self url"},
        "file": {"type": "string", "readOnly": True, "description": "An image file url"},
        "stores": {
            "type": "string",
            "readOnly": True,
            "description": (
                "Store in which image data resides.  Only present when the operator has enabled "
                "multiple stores.  May be a comma-separated list of store identifiers."
            ),
        },
        "schema": {"type": "string", "readOnly": True, "description": "An image schema url"},
        "locations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "url": {"type": "string", "maxLength": 255},
                    "metadata": {"type": "object"},
                    "validation_data": {
                        "description": (
                            "Values to be used to populate the corresponding image properties. If the "
                            "image status is not 'queued', values must exactly match those already "
                            "contained in the image properties."
                        ),
                        "type": "object",
                        "writeOnly": True,
                        "additionalProperties": False,
                        "properties": {
                            "checksum": {"type": "string", "minLength": 32, "maxLength": 32},
                            "os_hash_algo": {"type": "string", "maxLength": 64},
                            "os_hash_value": {"type": "string", "maxLength": 128},
                        },
                        "required": ["os_hash_algo", "os_hash_value"],
                    },
                },
                "required": ["url", "metadata"],
            },
            "description": "A set of URLs to access the image file kept in external store",
        },
    }
    return {
        "name": "image",
        "properties": properties,
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def _collection(name: str, item: dict[str, Any], *, paged: bool = True) -> dict[str, Any]:
    """Glance's collection schema; members are not paged (no first/next)."""
    properties: dict[str, Any] = {name: {"type": "array", "items": item}, "schema": {"type": "string"}}
    links = [{"rel": "describedby", "href": "{schema}"}]
    if paged:
        properties |= {"first": {"type": "string"}, "next": {"type": "string"}}
        links = [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"}, *links]
    return {"name": name, "properties": properties, "links": links}


def member_schema() -> dict[str, Any]:
    return {
        "name": "member",
        "properties": {
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "image_id": {
                "type": "string",
                "description": "An identifier for the image",
                "pattern": _UUID_SCHEMA_PATTERN,
            },
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "updated_at": {
                "type": "string",
                "description": "Date and time of last modification of image member",
            },
            "status": {
                "type": "string",
                "description": "The status of this image member",
                "enum": ["pending", "accepted", "rejected"],
            },
            "schema": {"type": "string", "readOnly": True},
        },
    }


def schemas() -> dict[str, dict[str, Any]]:
    """Every schema the API serves, by its path below ``/v2/schemas/``."""
    image = image_schema()
    member = member_schema()
    from imagewright.service.images.task_schemas import task_schemas

    return {
        "image": image,
        "images": _collection("images", image),
        "member": member,
        "members": _collection("members", member, paged=False),
        **task_schemas(),
    }
