"""An NBD server that turns qemu-img's raw output into an in-order byte stream.

qemu-img writes images only into seekable files, so "convert, compress and hash in one
pass" is impossible with a file as its target. An NBD export is a target it accepts
(``-n -O raw nbd+unix:///?socket=S``); with one coroutine (``-m 1``) and without ``-W`` it
writes strictly in ascending order, and with ``--target-is-zero`` it skips zero regions
altogether. So this server sees the guest's bytes front to back and hands them to a
``StreamConsumer`` (hash, compress, write sparse) without ever holding more than one request.

Protocol (``nbd.py``): fixed newstyle handshake, simple replies only (structured replies
and metadata contexts are declined, so qemu never asks for block status), commands WRITE,
WRITE_ZEROES, TRIM, FLUSH, READ (answers zeros: nothing is stored) and DISC. Reference:
the NBD protocol document (nbd/doc/proto.md).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Protocol

from imagewright.errors import ImagewrightError
from imagewright.ops.convert.nbd import (
    CMD_DISC,
    CMD_FLUSH,
    CMD_READ,
    CMD_TRIM,
    CMD_WRITE,
    CMD_WRITE_ZEROES,
    EINVAL,
    EIO,
    MAX_REQUEST,
    REQUEST,
    REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC,
    TFLAG_HAS_FLAGS,
    TFLAG_SEND_FLUSH,
    TFLAG_SEND_TRIM,
    TFLAG_SEND_WRITE_ZEROES,
    NbdError,
    handshake,
    recv_exact,
    simple_reply,
)


class StreamConsumer(Protocol):
    """Receives the guest's bytes in ascending order; gaps between calls are zeros."""

    def write(self, offset: int, data: bytes | memoryview) -> None: ...

    def zeros(self, offset: int, length: int) -> None: ...


class SinkError(NbdError):
    """qemu-img did something the streaming sink cannot follow (e.g. an out-of-order write)."""


class NbdStreamSink:
    """Serve one NBD export of ``size`` bytes on a Unix socket; feed writes to ``consumer``.

    Use as a context manager: ``with NbdStreamSink(path, size, consumer) as sink:`` start
    qemu-img against ``sink.url``, wait for it, then ``sink.finish()`` (which raises any
    error the connection thread met, e.g. an out-of-order write).
    """

    def __init__(
        self,
        socket_path: str,
        size: int,
        consumer: StreamConsumer,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.size = size
        self._consumer = consumer
        self._on_progress = on_progress
        self._position = 0
        self._error: BaseException | None = None
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(socket_path)
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._serve, name="nbd-sink", daemon=True)
        self._done = threading.Event()

    @property
    def url(self) -> str:
        return f"nbd+unix:///?socket={self.socket_path}"

    @property
    def position(self) -> int:
        """How far the stream has been delivered (bytes)."""
        return self._position

    def __enter__(self) -> NbdStreamSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def finish(self, timeout: float = 30.0) -> None:
        """Wait for the client to disconnect; deliver the trailing zeros; re-raise errors."""
        self._done.wait(timeout)
        if self._error is not None:
            if isinstance(self._error, ImagewrightError):
                raise self._error
            raise SinkError(f"The streaming sink failed: {self._error}.")
        if not self._done.is_set():
            raise SinkError("qemu-img did not close its connection to the streaming sink.")
        if self._position < self.size:
            self._deliver_zeros(self._position, self.size - self._position)

    # --- connection handling -------------------------------------------------------------

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError as err:  # closed before anyone connected
            self._error = err
            self._done.set()
            return
        with conn:
            try:
                if self._handshake(conn):
                    self._transmission(conn)
            except BaseException as err:  # noqa: BLE001 - reported through finish()
                self._error = err
            finally:
                self._done.set()

    def _handshake(self, conn: socket.socket) -> bool:
        tflags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES
        return handshake(conn, self.size, tflags) is not None

    def _transmission(self, conn: socket.socket) -> None:
        buffer = bytearray(MAX_REQUEST)
        while True:
            magic, _flags, command, handle, offset, length = REQUEST.unpack(recv_exact(conn, REQUEST.size))
            if magic != REQUEST_MAGIC:
                raise SinkError("The NBD client sent a malformed request.")
            if command == CMD_DISC:
                return
            error = 0
            if command == CMD_WRITE:
                if length > MAX_REQUEST:
                    raise SinkError("The NBD client sent a write larger than 32 MiB.")
                data = recv_exact(conn, length, buffer)
                error = self._accept(offset, length, data)
            elif command in (CMD_WRITE_ZEROES, CMD_TRIM):
                error = self._accept(offset, length, None)
            elif command == CMD_READ:
                # Nothing is stored; a reader of the target (none is expected) sees zeros.
                conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, 0, handle))
                remaining = length
                while remaining:
                    chunk = min(remaining, 1 << 20)
                    conn.sendall(bytes(chunk))
                    remaining -= chunk
                continue
            elif command != CMD_FLUSH:
                error = EINVAL
            simple_reply(conn, handle, error)
            if error:
                return

    def _accept(self, offset: int, length: int, data: memoryview | None) -> int:
        if offset + length > self.size:
            self._error = SinkError("qemu-img wrote beyond the end of the streamed image.")
            return EINVAL
        if offset < self._position:
            # A zero/trim request over bytes already delivered as zeros is harmless.
            if data is None and offset + length <= self._position:
                return 0
            self._error = SinkError(
                f"qemu-img wrote out of order (offset {offset} after {self._position}); "
                "the output cannot be streamed."
            )
            return EIO
        if offset > self._position:
            self._deliver_zeros(self._position, offset - self._position)
        if data is None:
            self._deliver_zeros(offset, length)
        else:
            self._consumer.write(offset, data)
            self._advance(offset + length)
        return 0

    def _deliver_zeros(self, offset: int, length: int) -> None:
        self._consumer.zeros(offset, length)
        self._advance(offset + length)

    def _advance(self, position: int) -> None:
        self._position = position
        if self._on_progress is not None:
            self._on_progress(position)
