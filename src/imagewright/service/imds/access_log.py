"""The metadata service's access log: one line per request, written in batches.

A line is ``TIME SOURCE INSTANCE METHOD PATH STATUS BYTES``, for example::

    2026-12-08T10:00:01Z 10.0.0.5 i-0b1c2d3e4f5a6b7c8 GET /latest/meta-data/instance-id 200 19
    2026-12-08T10:00:02Z forwarder i-0b1c2d3e4f5a6b7c8 PUT /latest/api/token 200 56
    2026-12-08T10:00:03Z 10.9.9.9 - GET /latest/user-data 404 9

SOURCE is the peer address (``forwarder`` for the unix channel); INSTANCE is ``-`` when the
request named none. The path is the client's, escaped (``\\n``, ``\\x1b`` …) and cut at 256
characters, so no request can forge a line. Lines are buffered and written every
``FLUSH_SECONDS`` or at ``FLUSH_BYTES`` with one ``os.write`` on an ``O_APPEND`` descriptor:
logging costs about a microsecond per request, not a system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time

from imagewright.errors import ImageIOError

FLUSH_SECONDS = 0.5
FLUSH_BYTES = 64 * 1024
MAX_PATH_SHOWN = 256


def shown_path(path: str) -> str:
    if len(path) > MAX_PATH_SHOWN:
        path = path[:MAX_PATH_SHOWN] + "..."
    if path.isprintable() and " " not in path:
        return path
    return path.encode("unicode_escape").decode("ascii").replace(" ", "\\x20")


class AccessLog:
    def __init__(self, target: str | None) -> None:
        """``target``: a file path, ``-`` for stderr, or None for no log."""
        self._fd: int | None = None
        self._own = False
        if target == "-":
            self._fd = sys.stderr.fileno()
        elif target is not None:
            try:
                self._fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            except OSError as err:
                raise ImageIOError(f"The access log {target} cannot be opened: {err.strerror}.") from None
            self._own = True
        self._lines: list[str] = []
        self._size = 0
        self._second = -1
        self._stamp = ""

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def write(
        self, source: str, instance_id: str | None, method: str, path: str, status: int, length: int
    ) -> None:
        if self._fd is None:
            return
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        line = f"{self._stamp} {source} {instance_id or '-'} {method} {shown_path(path)} {status} {length}\n"
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._fd is None or not self._lines:
            return
        data = "".join(self._lines).encode("utf-8", "backslashreplace")
        self._lines.clear()
        self._size = 0
        with contextlib.suppress(OSError):  # a full disk loses log lines, never requests
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]

    async def flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()

    def close(self) -> None:
        self.flush()
        if self._own and self._fd is not None:
            os.close(self._fd)
        self._fd = None
