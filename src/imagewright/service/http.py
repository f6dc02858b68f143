"""What every API of the registry shares: the registry object, JSON, errors, the caller.

Routes are thin: they parse the request, call the catalog / stores / gate through ``blocking``
(SQLAlchemy and the stores are synchronous; they run in the thread pool so the event loop keeps
serving), and render. Errors are ``RequestError`` subclasses carrying their HTTP status; each
API renders them in its own shape (Keystone's ``{"error": {...}}``, Glance's ``{"message": ...}``)
through ``error_handlers``. Anything else is a bug: it is logged with its traceback on the
server and answered with one sentence, never a traceback.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from imagewright.catalog import tokens
from imagewright.catalog.database import Catalog
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import (
    CatalogError,
    ImagewrightError,
    InvalidArgumentError,
    NotAuthenticatedError,
    RequestError,
)
from imagewright.service.config import ServiceConfig
from imagewright.service.tasks.environment import TaskEnvironment
from imagewright.stores import BlobStore, StoreSet

LOG = logging.getLogger("imagewright.service")

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Registry:
    """Everything a request handler may use; one per worker process (``app.state.registry``)."""

    config: ServiceConfig
    catalog: Catalog
    stores: StoreSet
    #: Background work: the task queue and what runs tasks (``service.tasks``).
    tasks: TaskEnvironment | None = None

    @property
    def public_url(self) -> str:
        return self.config.public_url.rstrip("/")


def registry_of(request: Request) -> Registry:
    """The registry of this worker (put into every request's state by the app's lifespan)."""
    registry: Registry = request.state.registry
    return registry


async def blocking(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run synchronous catalog/store work in the thread pool."""
    return await run_in_threadpool(function, *args, **kwargs)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


async def read_json(request: Request, *, max_bytes: int = 1 << 20) -> Any:
    """The request body as JSON (at most ``max_bytes``); RequestError with one sentence otherwise."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise RequestError(f"The request body is larger than {max_bytes} bytes.")
    if not body:
        raise RequestError("The request body is empty; a JSON document was expected.")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(f"The request body is not valid JSON ({err}).") from None


def auth_token(request: Request) -> str | None:
    return request.headers.get("x-auth-token") or None


async def caller_of(request: Request) -> AuthContext:
    """The caller behind ``X-Auth-Token``; 401 without a valid one."""
    token = auth_token(request)
    if token is None:
        raise NotAuthenticatedError("This request needs a token (X-Auth-Token); get one from /identity/v3.")
    registry = registry_of(request)

    def resolve() -> AuthContext:
        with registry.catalog.reading() as session:
            return tokens.resolve(session, token)

    return await blocking(resolve)


# --- byte ranges --------------------------------------------------------------------------------

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiableError(RequestError):
    status = 416

    def __init__(self, size: int) -> None:
        super().__init__(f"The requested range is not satisfiable: the data has {size} bytes.")
        self.size = size


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single-range ``Range`` header; None for the whole blob."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        raise RangeNotSatisfiableError(size)
    first, last = match.groups()
    if first == "" and last == "":
        raise RangeNotSatisfiableError(size)
    if first == "":
        length = int(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiableError(size)
        return max(0, size - length), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or end <= start:
        raise RangeNotSatisfiableError(size)
    return start, end


# --- blob downloads -----------------------------------------------------------------------------

#: The chunks a download streams through Python: large enough that what each chunk costs (a
#: thread-pool hop, an ASGI message, a transport write) is small next to copying its bytes
#: (bench/registry_download on uvicorn: 4 MiB took about a fifth less server CPU than 1 MiB,
#: 256 KiB a third more; 8 MiB no less than 4), small enough that a download holds a few MiB.
DOWNLOAD_CHUNK_SIZE = 4 << 20

#: The ASGI extension by which the server sends a file itself (granian has it; uvicorn does not).
PATHSEND = "http.response.pathsend"


async def blob_response(
    request: Request,
    store: BlobStore,
    location: str,
    size: int,
    span: tuple[int, int] | None,
    headers: dict[str, str],
) -> Response:
    """``blob[span]`` (the whole blob for None): 206 for a span, else 200, with ``headers``.

    The whole blob of a file store leaves as ``http.response.pathsend`` where the server offers
    it: the server reads the file, no Python loop over chunks (and the worker's event loop is
    free meanwhile). Spans and S3 blobs stream in ``DOWNLOAD_CHUNK_SIZE`` chunks read in the
    thread pool. Nothing is hashed here: Content-MD5 comes from the catalog.
    """
    start, end = span if span is not None else (0, size)
    status = 200 if span is None else 206
    if (start, end) == (0, size) and PATHSEND in request.scope.get("extensions", {}):
        path = await blocking(store.sendable_path, location, size)
        if path is not None:
            return PathSendResponse(path, status, headers)
    chunks = await blocking(store.read_chunks, location, start, end, DOWNLOAD_CHUNK_SIZE)
    return StreamingResponse(iterate_in_threadpool(chunks), status_code=status, headers=headers)


class PathSendResponse(Response):
    """A whole blob sent by the ASGI server from its file (``http.response.pathsend``).

    Starlette's FileResponse would do the same, but also re-stats, adds ETag/Last-Modified and
    answers Range itself; the registry answers ranges with its own streaming path.
    """

    def __init__(self, path: Path, status: int, headers: dict[str, str]) -> None:
        super().__init__(status_code=status, headers=headers, media_type="application/octet-stream")
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": PATHSEND, "path": str(self.path)})


# --- errors -------------------------------------------------------------------------------------

ErrorRenderer = Callable[[int, str, dict[str, str]], Response]


def error_status_and_message(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, RequestError):
        return exc.status, _sentence(str(exc))
    if isinstance(exc, InvalidArgumentError):
        return 400, _sentence(str(exc))
    if isinstance(exc, HTTPException):
        return exc.status_code, _sentence(
            str(exc.detail) if exc.detail else HTTPStatus(exc.status_code).phrase
        )
    if isinstance(exc, CatalogError):
        LOG.error("catalog unavailable: %s", exc)
        return 503, _sentence(str(exc))
    if isinstance(exc, ImagewrightError):
        # A failure of the data path that names its cause (a store error, an I/O error).
        LOG.warning("request failed: %s", exc)
        return 500, _sentence(str(exc))
    LOG.exception("internal error")
    return 500, f"The registry failed unexpectedly ({type(exc).__name__}); the server log has the details."


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", "!", "?")) else text + "."


Endpoint = Callable[[Request], Awaitable[Response]]


def render_error(render: ErrorRenderer, request: Request, exc: Exception) -> Response:
    status, message = error_status_and_message(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = f'Keystone uri="{registry_of(request).public_url}/identity"'
    return render(status, message, headers)


def guarded(render: ErrorRenderer) -> Callable[[Endpoint], Endpoint]:
    """Wrap an endpoint so that every failure it raises is rendered by ``render``.

    (A handler for ``Exception`` in a mounted Starlette app re-raises after answering, which the
    parent app would answer again; catching here keeps one answer per request.)
    """

    def wrap(endpoint: Endpoint) -> Endpoint:
        async def guarded_endpoint(request: Request) -> Response:
            try:
                return await endpoint(request)
            except Exception as exc:  # noqa: BLE001 - every failure becomes one rendered answer
                return render_error(render, request, exc)

        guarded_endpoint.__name__ = endpoint.__name__
        guarded_endpoint.__doc__ = endpoint.__doc__
        return guarded_endpoint

    return wrap


def http_exception_handlers(render: ErrorRenderer) -> dict[Any, Any]:
    """Handlers for the router's own 404/405 (HTTPException), rendered in the API's shape."""

    async def handle(request: Request, exc: Exception) -> Response:
        return render_error(render, request, exc)

    return {HTTPException: handle}


def keystone_error(status: int, message: str, headers: dict[str, str]) -> Response:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return JSONResponse(
        {"error": {"code": status, "title": title, "message": message}}, status_code=status, headers=headers
    )


#: Where Glance's reason phrase (webob's) differs from Python's.
_WEBOB_PHRASES = {416: "Request Range Not Satisfiable"}


def glance_error(status: int, message: str, headers: dict[str, str]) -> Response:
    phrase = _WEBOB_PHRASES.get(status) or (
        HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    )
    return JSONResponse(
        {"message": message, "code": f"{status} {phrase}", "title": phrase},
        status_code=status,
        headers=headers,
    )
