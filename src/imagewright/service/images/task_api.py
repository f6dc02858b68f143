"""The tasks API (``/v2/tasks``, ``/v2/images/{id}/tasks``) and exports (our extension).

Tasks are rendered as Glance renders them (``glance/api/v2/tasks.py``: ``id``, ``type``,
``status``, ``owner``, ``input``, ``result``, ``message``, ``created_at``, ``updated_at``,
``expires_at``, ``self``, ``schema``; since v2.12 also ``image_id``, ``user_id``,
``request_id``), plus what Glance lacks: ``progress`` (``stage``, ``done``, ``total`` bytes)
and ``attempts``. Who sees a task: an admin any; a project its own (a task another project
started on a shared image is not shown to it: its input may name private URLs).

Exports: ``POST /v2/images/{id}/actions/export`` with ``{"format": …}`` (``qcow2``, ``vmdk``
streamOptimized, ``raw``, ``raw.gz``, ``raw.zst``, ``qcow2.gz``) — allowed to whoever may
download the image — answers 202 with the task; when it succeeds its result has a
``download_url`` valid until ``expires_at``. ``GET /v2/exports/{task}/{file}?expires=&signature=``
needs no token (the signature is the permission), serves ``Range`` (206/416) and the file's
md5 (``Content-MD5``, hex as Glance sends it) and sha256 (``X-Checksum-SHA256``).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagewright.catalog import exports, image_policy, images
from imagewright.catalog import tasks as task_rows
from imagewright.catalog.task_models import EXPORT_TASK_TYPE, Task
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import ConflictError, ForbiddenError, NotFoundError, RequestError
from imagewright.service.http import (
    RangeNotSatisfiableError,
    Registry,
    blob_response,
    blocking,
    byte_range,
    caller_of,
    glance_error,
    guarded,
    json_response,
    read_json,
    registry_of,
)
from imagewright.service.images.views import glance_time
from imagewright.service.tasks.exporting import EXPORT_FORMATS, signature_valid

_route = guarded(glance_error)

DEFAULT_LIMIT = 25
MAX_LIMIT = 1000


def task_view(task: Task, public_url: str, *, detail: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": task.id,
        "type": task.type,
        "status": task.status,
        "owner": task.owner,
        "image_id": task.image_id,
        "user_id": task.user_id,
        "request_id": task.request_id,
        "created_at": glance_time(task.created_at),
        "updated_at": glance_time(task.updated_at),
        "progress": {
            "stage": task.progress_stage,
            "done": task.progress_done,
            "total": task.progress_total,
        },
        "attempts": task.attempts,
        "self": f"/v2/tasks/{task.id}",
        "schema": "/v2/schemas/task",
    }
    if task.expires_at is not None:
        view["expires_at"] = glance_time(task.expires_at)
    if detail:
        result = task_rows.loads(task.result) if task.result else None
        if result is not None and "download_path" in result:
            result["download_url"] = public_url + result.pop("download_path")
        view.update({"input": task_rows.loads(task.input), "result": result, "message": task.message})
    return view


def _require_project(caller: AuthContext) -> None:
    if caller.project is None:
        raise ForbiddenError("The Image API needs a project-scoped token.")


def _may_see(caller: AuthContext, task: Task) -> bool:
    return caller.is_admin or (caller.project_id is not None and task.owner == caller.project_id)


@_route
async def list_tasks(request: Request) -> Response:
    caller = await caller_of(request)
    _require_project(caller)
    registry = registry_of(request)
    params = request.query_params
    query = task_rows.TaskQuery(
        owner=None if caller.is_admin else caller.project_id,
        status=params.get("status"),
        type=params.get("type"),
        sort_dir=params.get("sort_dir", "desc"),
        marker=params.get("marker"),
    )
    if query.sort_dir not in ("asc", "desc"):
        raise RequestError(f"Invalid sort direction: {query.sort_dir}.")
    if params.get("sort_key", "created_at") != "created_at":
        raise RequestError("Tasks are sorted by created_at only.")
    if "limit" in params:
        try:
            query.limit = min(int(params["limit"]), MAX_LIMIT)
        except ValueError:
            raise RequestError("limit param must be an integer.") from None
        if query.limit < 0:
            raise RequestError("limit param must be positive.")

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            return [
                task_view(task, registry.public_url, detail=False)
                for task in task_rows.list_tasks(session, query)
            ]

    views = await blocking(work)
    others = [(k, v) for k, v in params.multi_items() if k != "marker"]
    body: dict[str, Any] = {
        "tasks": views,
        "first": "/v2/tasks" + (f"?{urlencode(others)}" if others else ""),
        "schema": "/v2/schemas/tasks",
    }
    if views and len(views) == query.limit:
        body["next"] = "/v2/tasks?" + urlencode([*others, ("marker", views[-1]["id"])])
    return json_response(body)


@_route
async def show_task(request: Request) -> Response:
    caller = await caller_of(request)
    _require_project(caller)
    registry = registry_of(request)
    task_id = request.path_params["task_id"]

    def work() -> dict[str, Any]:
        with registry.catalog.reading() as session:
            task = task_rows.get_task(session, task_id)
            if not _may_see(caller, task):
                raise task_rows.task_not_found(task_id)
            return task_view(task, registry.public_url)

    return json_response(await blocking(work))


@_route
async def image_tasks(request: Request) -> Response:
    caller = await caller_of(request)
    _require_project(caller)
    registry = registry_of(request)
    image_id = request.path_params["image_id"]

    def work() -> list[dict[str, Any]]:
        with registry.catalog.reading() as session:
            image = images.get_image(session, image_id)
            image_policy.require_visible(
                caller, image, images.membership_of(session, image_id, caller.project_id)
            )
            return [
                task_view(task, registry.public_url)
                for task in task_rows.tasks_of_image(session, image_id)
                if _may_see(caller, task) or image_policy.is_owner(caller, image)
            ]

    return json_response({"tasks": await blocking(work)})


# --- exports ------------------------------------------------------------------------------------


@_route
async def export_image(request: Request) -> Response:
    caller = await caller_of(request)
    _require_project(caller)
    registry = registry_of(request)
    image_id = request.path_params["image_id"]
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("format"), str):
        raise RequestError(f'An export names its format: {{"format": one of {", ".join(EXPORT_FORMATS)}}}.')
    fmt = body["format"]
    if fmt not in EXPORT_FORMATS:
        raise RequestError(f"Unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}.")
    environment = registry.tasks
    assert environment is not None

    def work() -> dict[str, Any]:
        with registry.catalog.writing() as session:
            image = images.get_image(session, image_id)
            membership = images.membership_of(session, image_id, caller.project_id)
            image_policy.require_download(caller, image, membership)
            if image.status != "active" or not image.location:
                raise ConflictError(f"Only an active image can be exported (this one is {image.status}).")
            task = task_rows.create_task(
                session,
                task_type=EXPORT_TASK_TYPE,
                owner=caller.project_id,
                user_id=caller.user.id,
                image_id=image_id,
                task_input={"image_id": image_id, "format": fmt},
                private={"ttl_seconds": registry.config.export_ttl_seconds},
                queue=environment.queue.name,
                max_attempts=registry.config.task_attempts,
                request_id=request.headers.get("x-openstack-request-id"),
            )
            task_id = task.id
        _submit(registry, task_id)
        with registry.catalog.reading() as session:
            return task_view(task_rows.get_task(session, task_id), registry.public_url)

    view = await blocking(work)
    return json_response(
        view, status=202, headers={"Location": f"{registry.public_url}/image/v2/tasks/{view['id']}"}
    )


def _submit(registry: Registry, task_id: str) -> None:
    """Queue a committed task; if that fails, the task fails with the reason (and so does the call)."""
    environment = registry.tasks
    assert environment is not None
    try:
        environment.queue.submit(registry.catalog, task_id)
    except Exception as err:
        with registry.catalog.writing() as session:
            task_rows.fail_pending_task(session, task_id, f"The task could not be queued: {err}")
        raise


@_route
async def download_export(request: Request) -> Response:
    registry = registry_of(request)
    task_id, filename = request.path_params["task_id"], request.path_params["filename"]
    params = request.query_params
    expires_text, signature = params.get("expires", ""), params.get("signature", "")
    if not expires_text.isdigit() or not signature:
        raise ForbiddenError("This export URL is not signed; ask the export task for its download_url.")
    expires = int(expires_text)

    def work() -> tuple[str, str, int, dict[str, str]]:
        with registry.catalog.writing() as session:
            key = exports.shared_secret(session, exports.EXPORT_SIGNING_KEY)
            if not signature_valid(key, task_id, filename, expires, signature):
                raise ForbiddenError("The signature of this export URL is not valid.")
            if expires < time.time():
                raise ForbiddenError("This export URL has expired; export the image again.")
            row = exports.get_export(session, task_id)
            if row is None or row.filename != filename or row.size == 0:
                raise NotFoundError("The export is gone (expired or removed).")
            return row.store_id, row.location, row.size, json.loads(row.checksums)

    store_id, location, size, checksums = await blocking(work)
    try:
        span = byte_range(request.headers.get("range"), size)
    except RangeNotSatisfiableError as err:
        return glance_error(416, str(err), {"Content-Range": f"bytes */{err.size}"})
    start, end = span if span is not None else (0, size)
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    if "sha256" in checksums:
        headers["X-Checksum-SHA256"] = checksums["sha256"]
    if span is None:
        if "md5" in checksums:
            headers["Content-MD5"] = checksums["md5"]
    else:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return await blob_response(request, registry.stores[store_id], location, size, span, headers)


def task_routes() -> list[Route]:
    return [
        Route("/v2/tasks", list_tasks, methods=["GET"]),
        Route("/v2/tasks/{task_id}", show_task, methods=["GET"]),
        Route("/v2/images/{image_id}/tasks", image_tasks, methods=["GET"]),
        Route("/v2/images/{image_id}/actions/export", export_image, methods=["POST"]),
        Route("/v2/exports/{task_id}/{filename}", download_export, methods=["GET"]),
    ]
