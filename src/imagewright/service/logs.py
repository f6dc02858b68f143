"""The registry's log lines: ``imagewright.*`` records to stderr, one line each, at ``--log-level``.

Neither ASGI server gives our loggers a handler: uvicorn configures only its own loggers, and
granian's root handler (``serving._run_granian``) drops what is below WARNING. Without one, Python
prints WARNING and above bare and drops INFO (the start-up sweep's summary, task progress, the
request lines). ``configure`` gives the ``imagewright`` logger its own stderr handler and stops
propagation, so a line appears once whatever the server did to the root logger; it runs in the
``serve`` process and again in each worker (``app.create_app``: workers may be fresh interpreters).

``RequestLog`` writes one INFO line per HTTP request when it ends: method, path (without the
query string: an export's download URL carries its signature there; no headers, so no token),
status, bytes sent and seconds. ``--log-level warning`` silences it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:  # the CLI imports LEVELS; Starlette loads only where a server runs
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: ``--log-level`` choices, most verbose first.
LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"

REQUESTS = logging.getLogger("imagewright.service.requests")


class _ServiceHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler ``configure`` installs (its class marks it, so it is installed once)."""


def configure(level: str) -> None:
    """``imagewright.*`` records at ``level`` (one of LEVELS) and above go to stderr."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    logger = logging.getLogger("imagewright")
    logger.setLevel(level.upper())
    if not any(isinstance(handler, _ServiceHandler) for handler in logger.handlers):
        handler = _ServiceHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    logger.propagate = False


def server_level(level: str) -> str:
    """The level of the ASGI server's own loggers: its warnings, unless only errors are wanted
    (its INFO lines repeat ours: the listening address, one access line per request)."""
    return "error" if level == "error" else "warning"


class RequestLog:
    """ASGI middleware: one INFO line per HTTP request, once its response is over."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not REQUESTS.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0
        sent = 0
        length = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent, length
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if bytes(name).lower() == b"content-length":
                        length = int(value)
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.pathsend":
                sent += length  # the server sends the file itself: all of it, as announced
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            # raw_path: as received (percent-escapes kept, so no control character reaches the log).
            raw = scope.get("raw_path") or quote(scope["path"]).encode()
            path = bytes(raw).partition(b"?")[0].decode("latin-1")
            REQUESTS.info(
                "%s %s %s %d B %.3f s",
                scope["method"],
                path,
                status or "-",
                sent,
                time.monotonic() - started,
            )
