"""What both in-process NBD servers share: the protocol's numbers, the handshake, exact reads.

``nbd_sink`` receives qemu-img's raw output as an in-order stream; ``nbd_source`` serves a
decompressed disk to qemu-img as a forward-only stream. Both speak the fixed newstyle
handshake to one client (qemu's NBD client) over a Unix socket, with ``NBD_OPT_GO`` (or the
old ``NBD_OPT_EXPORT_NAME``); structured replies are agreed to only where the server uses
them (the source: holes are sent as ``NBD_REPLY_TYPE_OFFSET_HOLE`` chunks, not as zeros);
metadata contexts are declined, so qemu never asks for block status.

Reference: the NBD protocol document (``nbd/doc/proto.md``: "Fixed newstyle negotiation",
"Structured replies"); QEMU 7.2 ``nbd/client.c`` for what qemu sends.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from imagewright.errors import ImagewrightError

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8

REP_ACK = 1
REP_INFO = 3
REP_ERR_UNSUP = (1 << 31) | 1

INFO_EXPORT = 0

TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_WRITE_ZEROES = 6

REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_ERROR = (1 << 15) | 1

EPERM = 1
EIO = 5
EINVAL = 22

REQUEST = struct.Struct(">IHHQQI")
OPTION = struct.Struct(">QII")
SIMPLE_REPLY = struct.Struct(">IIQ")
#: Structured reply chunk header: magic, flags, type, handle, payload length.
CHUNK = struct.Struct(">IHHQI")
#: qemu sends (and asks) at most 32 MiB per request.
MAX_REQUEST = 32 * 1024 * 1024
MAX_OPTION_DATA = 64 * 1024


class NbdError(ImagewrightError):
    """qemu-img did something an in-process NBD server cannot follow."""


def recv_exact(sock: socket.socket, length: int, buffer: bytearray | None = None) -> memoryview:
    """Exactly ``length`` bytes from ``sock`` (into ``buffer`` when it is large enough)."""
    buf = buffer if buffer is not None and len(buffer) >= length else bytearray(length)
    view = memoryview(buf)[:length]
    got = 0
    while got < length:
        n = sock.recv_into(view[got:], length - got)
        if n == 0:
            raise ConnectionError("NBD client closed the connection")
        got += n
    return view


@dataclass(frozen=True)
class Agreed:
    """What the handshake settled."""

    structured_replies: bool


def handshake(
    conn: socket.socket, size: int, transmission_flags: int, *, offer_structured_replies: bool = False
) -> Agreed | None:
    """Serve the fixed newstyle handshake for one export of ``size`` bytes.

    Returns what was agreed, or None when the client aborted.
    """
    conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    (client_flags,) = struct.unpack(">I", recv_exact(conn, 4))
    no_zeroes = bool(client_flags & FLAG_NO_ZEROES)
    structured = False
    while True:
        magic, option, length = OPTION.unpack(recv_exact(conn, OPTION.size))
        if magic != IHAVEOPT or length > MAX_OPTION_DATA:
            raise NbdError("The NBD client sent a malformed option.")
        if length:
            recv_exact(conn, length)  # export name, info requests: there is one export, its info is sent
        if option == OPT_EXPORT_NAME:
            conn.sendall(struct.pack(">QH", size, transmission_flags) + (b"" if no_zeroes else bytes(124)))
            return Agreed(structured)
        if option == OPT_ABORT:
            _option_reply(conn, option, REP_ACK)
            return None
        if option == OPT_STRUCTURED_REPLY and offer_structured_replies and not length:
            structured = True
            _option_reply(conn, option, REP_ACK)
            continue
        if option in (OPT_GO, OPT_INFO):
            _option_reply(conn, option, REP_INFO, struct.pack(">HQH", INFO_EXPORT, size, transmission_flags))
            _option_reply(conn, option, REP_ACK)
            if option == OPT_GO:
                return Agreed(structured)
            continue
        _option_reply(conn, option, REP_ERR_UNSUP)


def _option_reply(conn: socket.socket, option: int, reply: int, data: bytes = b"") -> None:
    conn.sendall(struct.pack(">QIII", REPLY_MAGIC, option, reply, len(data)) + data)


def simple_reply(conn: socket.socket, handle: int, error: int = 0) -> None:
    conn.sendall(SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle))
