"""Schemas of tasks (Glance's ``/v2/schemas/task(s)``, with our progress) and of exports (ours)."""

from __future__ import annotations

from typing import Any

from imagewright.catalog.task_models import TASK_STATUSES, TASK_TYPES

_UUID_PATTERN = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"


def task_schema(*, partial: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "id": {"description": "An identifier for the task", "pattern": _UUID_PATTERN, "type": "string"},
        "type": {
            "description": "The type of task represented by this content",
            "enum": list(TASK_TYPES),
            "type": "string",
        },
        "status": {
            "description": "The current status of this task",
            "enum": list(TASK_STATUSES),
            "type": "string",
        },
        "input": {"description": "The parameters required by task, JSON blob", "type": ["null", "object"]},
        "result": {"description": "The result of current task, JSON blob", "type": ["null", "object"]},
        "owner": {"description": "An identifier for the owner of this task", "type": "string"},
        "message": {
            "description": (
                "Human-readable informative message only included when appropriate (usually on failure)"
            ),
            "type": "string",
        },
        "image_id": {"description": "Image associated with the task", "type": ["null", "string"]},
        "request_id": {
            "description": "Request ID of the request that created the task",
            "type": ["null", "string"],
        },
        "user_id": {"description": "User associated with the task", "type": ["null", "string"]},
        "expires_at": {
            "description": "Datetime when this resource would be subject to removal",
            "type": ["null", "string"],
        },
        "created_at": {"description": "Datetime when this resource was created", "type": "string"},
        "updated_at": {"description": "Datetime when this resource was updated", "type": "string"},
        "progress": {
            "description": "imagewright: the current stage and its bytes done of total (total may be null)",
            "type": "object",
            "properties": {
                "stage": {"type": ["null", "string"]},
                "done": {"type": "integer"},
                "total": {"type": ["null", "integer"]},
            },
        },
        "attempts": {
            "description": (
                "imagewright: how many times a worker started this task (one whose worker died runs again)"
            ),
            "type": "integer",
        },
        "self": {"type": "string"},
        "schema": {"type": "string"},
    }
    if partial:
        for hidden in ("input", "result", "message"):
            del properties[hidden]
    return {"name": "task", "properties": properties}


def tasks_schema() -> dict[str, Any]:
    return {
        "name": "tasks",
        "properties": {
            "tasks": {"type": "array", "items": task_schema(partial=True)},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def export_schema() -> dict[str, Any]:
    from imagewright.service.tasks.exporting import EXPORT_FORMATS

    return {
        "name": "export",
        "description": (
            "imagewright extension: POST /v2/images/{image_id}/actions/export with this body answers "
            "202 with an image_export task. When the task succeeds its result holds download_url — "
            "/image/v2/exports/{task}/{file}?expires=T&signature=S, valid until expires_at without a "
            "token, served with Range, Content-MD5 and X-Checksum-SHA256 — plus size and checksums "
            "(md5, sha256) of the file. Who may download the image may export it."
        ),
        "properties": {
            "format": {
                "description": "The file to make: qcow2, vmdk (streamOptimized), raw, compressed raw/qcow2",
                "type": "string",
                "enum": list(EXPORT_FORMATS),
            }
        },
        "required": ["format"],
    }


def task_schemas() -> dict[str, dict[str, Any]]:
    return {"task": task_schema(), "tasks": tasks_schema(), "export": export_schema()}
