"""An NBD server that hands qemu-img a disk it can only read forward: a decompressed stream.

qemu-img reads its sources by random access, so a compressed image was once decompressed to
a scratch file first: a second pass over the data and a scratch file as large as the data.
But ``qemu-img convert`` reads a *raw* source front to back: one chunk after the other, 2 MiB
each (one cluster each when compressing or writing streamOptimized VMDK), up to ``-m``
(8) requests in flight, issued in ascending order (``qemu-img.c``: ``convert_co_do_copy``
takes the next chunk under a lock and reads it; NBD requests go out in the order the
coroutines send them). Measured with QEMU 7.2 for every output format: every READ in
ascending order, none out of it. So the decompressed bytes can flow through a window:

- ``ForwardWindow``: the producer (a thread decompressing the source) appends pieces; the
  server takes what qemu-img reads. The producer may run ``ahead`` bytes past the furthest
  byte requested, and pieces are dropped once they lie more than ``behind`` bytes before it
  (the reorder window: requests in flight may arrive in any order among themselves). Memory
  stays at ``ahead + behind`` at most; runs of zeros are kept as lengths and cost nothing.
  A read before the window is refused with a clear error (``OutOfWindowError``): the source
  cannot be streamed that way. A read far ahead only costs decompressing what it skips.
- ``NbdStreamSource``: a read-only export of the window. Zeros travel as
  ``NBD_REPLY_TYPE_OFFSET_HOLE`` chunks (structured replies), data as ``OFFSET_DATA``
  chunks sent straight from the decompressed pieces (``sendmsg``, no copy).

Failure: when the producer refuses the stream (a CRC error, data after the end, a bomb ...)
the window holds the error; every read from then on is answered with an NBD error, so
qemu-img fails and its output is removed by the caller. The producer can also hold back the
last piece until the end of the stream has been judged, so that qemu-img never completes a
conversion of a stream that is refused at its very end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass

from imagewright.errors import ImagewrightError
from imagewright.ops.convert.nbd import (
    CHUNK,
    CMD_DISC,
    CMD_FLUSH,
    CMD_READ,
    CMD_TRIM,
    CMD_WRITE,
    CMD_WRITE_ZEROES,
    EINVAL,
    EIO,
    EPERM,
    MAX_REQUEST,
    REPLY_FLAG_DONE,
    REPLY_TYPE_ERROR,
    REPLY_TYPE_NONE,
    REPLY_TYPE_OFFSET_DATA,
    REPLY_TYPE_OFFSET_HOLE,
    REQUEST,
    REQUEST_MAGIC,
    SIMPLE_REPLY,
    SIMPLE_REPLY_MAGIC,
    STRUCTURED_REPLY_MAGIC,
    TFLAG_HAS_FLAGS,
    TFLAG_READ_ONLY,
    TFLAG_SEND_FLUSH,
    NbdError,
    handshake,
    recv_exact,
    simple_reply,
)

MiB = 1 << 20
#: How far the producer may run ahead of the furthest byte qemu-img asked for.
AHEAD = 16 * MiB
#: How far behind the furthest byte asked for a read may still start (reordered requests).
BEHIND = 32 * MiB


class OutOfWindowError(NbdError):
    """qemu-img asked for bytes of the stream that have already gone by."""


class StreamCancelledError(Exception):
    """The consumer went away (qemu-img ended, Ctrl-C): the producer stops."""


@dataclass(frozen=True)
class Segment:
    """A run of the stream: ``data`` bytes, or ``length`` zeros when ``data`` is None."""

    offset: int
    length: int
    data: bytes | None

    @property
    def end(self) -> int:
        return self.offset + self.length


class ForwardWindow:
    """The part of a forward-only stream between its producer and its reader; see the module
    docstring. ``size`` is the stream's length, announced to the reader up front."""

    def __init__(self, size: int, *, ahead: int = AHEAD, behind: int = BEHIND) -> None:
        self.size = size
        self._ahead = ahead
        self._behind = behind
        self._segments: deque[Segment] = deque()
        #: Everything before ``_base`` has been dropped; the producer has appended up to ``_end``.
        self._base = 0
        self._end = 0
        #: The furthest byte the reader asked for.
        self._mark = 0
        self._error: BaseException | None = None
        self._cancelled = False
        self._cond = threading.Condition()

    @property
    def produced(self) -> int:
        return self._end

    # --- producer side ------------------------------------------------------------------------

    def put(self, offset: int, data: bytes) -> None:
        """Append ``data`` at ``offset`` (== what was appended so far)."""
        self._append(Segment(offset, len(data), data))

    def put_zeros(self, offset: int, length: int) -> None:
        self._append(Segment(offset, length, None))

    def _append(self, segment: Segment) -> None:
        if segment.length <= 0:
            return
        with self._cond:
            if segment.offset != self._end or segment.end > self.size:
                raise AssertionError("the producer must append the stream in order, within its size")
            while self._end - self._mark >= self._ahead and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                raise StreamCancelledError
            last = self._segments[-1] if self._segments else None
            if segment.data is None and last is not None and last.data is None:
                self._segments[-1] = Segment(last.offset, last.length + segment.length, None)
            else:
                self._segments.append(segment)
            self._end = segment.end
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """The stream is refused (or broke): every read from now on fails with ``error``."""
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    # --- reader side --------------------------------------------------------------------------

    def cancel(self) -> None:
        """The reader is gone: the producer's next ``put`` raises StreamCancelledError."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def read(self, offset: int, length: int) -> list[Segment]:
        """The segments covering ``[offset, offset + length)``, waiting for the producer."""
        end = offset + length
        with self._cond:
            if offset < self._base:
                raise OutOfWindowError(
                    f"qemu-img read byte {offset} of the decompressed stream after byte {self._mark}, "
                    f"more than {self._behind // MiB} MiB back; the source cannot be streamed in this order."
                )
            if end > self._mark:
                self._mark = end
                self._cond.notify_all()
            while self._end < end and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            found = [s for s in self._segments if s.end > offset and s.offset < end]
            self._drop_before(self._mark - self._behind)
        return [_clip(segment, offset, end) for segment in found]

    def _drop_before(self, position: int) -> None:
        while self._segments and self._segments[0].end <= position:
            self._base = self._segments.popleft().end


def _clip(segment: Segment, start: int, end: int) -> Segment:
    lo, hi = max(segment.offset, start), min(segment.end, end)
    if lo == segment.offset and hi == segment.end:
        return segment
    data = None if segment.data is None else segment.data[lo - segment.offset : hi - segment.offset]
    return Segment(lo, hi - lo, data)


_HOLE = struct.Struct(">QI")
_OFFSET = struct.Struct(">Q")
_ERROR = struct.Struct(">IH")


class NbdStreamSource:
    """Serve ``window`` as a read-only NBD export on the Unix socket ``socket_path``.

    ``with NbdStreamSource(path, window) as source:`` run qemu-img against ``source.url``,
    then ``source.finish()`` re-raises what the connection met (an out-of-window read, the
    producer's refusal). Closing cancels the window, so a producer still running stops.
    """

    def __init__(self, socket_path: str, window: ForwardWindow) -> None:
        self.socket_path = socket_path
        self.window = window
        self._error: BaseException | None = None
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(socket_path)
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._serve, name="nbd-source", daemon=True)
        self._done = threading.Event()

    @property
    def url(self) -> str:
        return f"nbd+unix:///?socket={self.socket_path}"

    def __enter__(self) -> NbdStreamSource:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.window.cancel()
        with contextlib.suppress(OSError):
            self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    @property
    def error(self) -> BaseException | None:
        """What stopped the export: the window's error (a refusal) first, then the server's."""
        return self.window.error or self._error

    def finish(self, timeout: float = 30.0) -> None:
        """Wait for the client to disconnect; re-raise what went wrong."""
        self._done.wait(timeout)
        error = self.error
        if error is not None:
            if isinstance(error, ImagewrightError):
                raise error
            raise NbdError(f"The streaming source failed: {error}.")
        if not self._done.is_set():
            raise NbdError("qemu-img did not close its connection to the streaming source.")

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError as err:  # closed before anyone connected
            self._error = err
            self._done.set()
            return
        with conn:
            try:
                flags = TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_SEND_FLUSH
                agreed = handshake(conn, self.window.size, flags, offer_structured_replies=True)
                if agreed is not None:
                    self._transmission(conn, agreed.structured_replies)
            except BaseException as err:  # noqa: BLE001 - reported through finish()
                if self._error is None:
                    self._error = err
            finally:
                self.window.cancel()
                self._done.set()

    def _transmission(self, conn: socket.socket, structured: bool) -> None:
        while True:
            magic, _flags, command, handle, offset, length = REQUEST.unpack(recv_exact(conn, REQUEST.size))
            if magic != REQUEST_MAGIC:
                raise NbdError("The NBD client sent a malformed request.")
            if command == CMD_DISC:
                return
            if command == CMD_READ:
                if length > MAX_REQUEST or offset + length > self.window.size:
                    self._read_error(conn, handle, EINVAL, "read beyond the export", structured)
                    continue
                try:
                    segments = self.window.read(offset, length)
                except BaseException as err:
                    if self._error is None and self.window.error is None:
                        self._error = err
                    self._read_error(conn, handle, EIO, str(err), structured)
                    if isinstance(err, ImagewrightError):
                        continue  # qemu-img fails on the error and disconnects
                    raise
                self._read_reply(conn, handle, segments, structured)
            elif command == CMD_FLUSH:
                simple_reply(conn, handle)
            else:
                # A read-only export: writes, trims and zero writes are not for us.
                if command == CMD_WRITE:
                    if length > MAX_REQUEST:
                        raise NbdError("The NBD client sent a write larger than 32 MiB.")
                    recv_exact(conn, length)  # its data, discarded
                known = command in (CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES)
                simple_reply(conn, handle, EPERM if known else EINVAL)

    @staticmethod
    def _read_reply(conn: socket.socket, handle: int, segments: list[Segment], structured: bool) -> None:
        if not structured:
            header = SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, 0, handle)
            parts: list[bytes] = [header]
            for segment in segments:
                parts.append(segment.data if segment.data is not None else bytes(segment.length))
            _send_all(conn, parts)
            return
        if not segments:
            conn.sendall(CHUNK.pack(STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, REPLY_TYPE_NONE, handle, 0))
            return
        for index, segment in enumerate(segments):
            flags = REPLY_FLAG_DONE if index == len(segments) - 1 else 0
            if segment.data is None:
                chunk = CHUNK.pack(
                    STRUCTURED_REPLY_MAGIC, flags, REPLY_TYPE_OFFSET_HOLE, handle, _HOLE.size
                ) + _HOLE.pack(segment.offset, segment.length)
                conn.sendall(chunk)
            else:
                header = CHUNK.pack(
                    STRUCTURED_REPLY_MAGIC, flags, REPLY_TYPE_OFFSET_DATA, handle, 8 + segment.length
                ) + _OFFSET.pack(segment.offset)
                _send_all(conn, [header, segment.data])

    @staticmethod
    def _read_error(conn: socket.socket, handle: int, error: int, message: str, structured: bool) -> None:
        if not structured:
            simple_reply(conn, handle, error)
            return
        text = message.encode("utf-8", "replace")[:4096]
        payload = _ERROR.pack(error, len(text)) + text
        conn.sendall(
            CHUNK.pack(STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, handle, len(payload))
            + payload
        )


def _send_all(conn: socket.socket, parts: list[bytes]) -> None:
    """Send ``parts`` in order without joining them (``sendmsg`` gathers; a short send resumes)."""
    views = [memoryview(part) for part in parts if part]
    while views:
        sent = conn.sendmsg(views[:64])
        while sent and views:
            if sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0
