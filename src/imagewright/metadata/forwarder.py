"""The per-instance metadata forwarder: one guest connection in, one signed request out.

QEMU's user network runs it once per guest connection to 169.254.169.254:80
(``guestfwd=tcp:169.254.169.254:80-cmd:python3 -m imagewright.metadata.forwarder …``, see
ENVIRONMENT.md "Guest networking for metadata") with the exchange on stdin/stdout. It reads
one HTTP request from the guest, adds who is asking — ``X-Instance-ID`` and
``X-Instance-ID-Signature``, HMAC-SHA256 of the instance id under the service's shared secret,
exactly as Nova's metadata proxy signs — and sends it over the metadata service's own channel,
a unix socket in the data dir (``metadata.channel``), then copies the answer back and exits,
which closes the guest's connection.

Why a unix socket and not 127.0.0.1: every local process shares the loopback address, so a
service that trusted it would trust them all. The socket lives in a 0700 directory of the data
dir; what the forwarder sends there is still checked (the signature), and it never holds the
shared secret itself, only its own instance's signature (read from a 0600 file named on the
command line, not given as an argument, which any local user could read in ``ps``).

What the guest cannot do through it (each a rule below): name another instance (guest
``X-Instance-ID*`` headers are dropped and ours added), smuggle a second request (one request
per connection, ``Connection: close`` upstream, whatever follows is discarded), send chunked
bodies (refused, 411), or hold the forwarder (the request head must arrive within
``DEADLINE_SECONDS`` and be at most ``MAX_HEAD_BYTES``; bodies at most ``MAX_BODY_BYTES``).
``X-Forwarded-For`` is passed on untouched: the service refuses IMDSv2 token requests that
carry one, so an HTTP proxy inside the guest cannot obtain a token (EC2's rule).

Stdlib only and no other imagewright module: this runs once per connection, so it must start
fast, and it runs as a plain script (``python3 -I -S forwarder.py``) inside QEMU's sandbox,
where nothing of imagewright's installation is visible.

Source: Nova ``api/metadata/handler.py`` (``_validate_shared_secret``: the signature over the
instance id), neutron ``agent/metadata/agent.py`` (the headers a proxy adds).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import select
import socket
import sys
import time

INSTANCE_ID_HEADER = "X-Instance-ID"
SIGNATURE_HEADER = "X-Instance-ID-Signature"
#: Headers of the guest's request that never reach the service.
DROPPED_HEADERS = frozenset(
    {
        "x-instance-id",
        "x-instance-id-signature",
        "x-tenant-id",
        "connection",
        "keep-alive",
        "proxy-connection",
        "content-length",
        "upgrade",
        "te",
    }
)
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100
MAX_BODY_BYTES = 64 * 1024
DEADLINE_SECONDS = 10.0
_CHUNK = 65536
_METHOD_RE = re.compile(rb"^[A-Z]{1,16}$")
_TARGET_RE = re.compile(rb"^/[\x21-\x7e]{0,8191}$")
_HEADER_NAME_RE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")


def instance_signature(secret: bytes, instance_id: str) -> str:
    """Nova's ``X-Instance-ID-Signature``: hex HMAC-SHA256 of the instance id under the secret."""
    return hmac.new(secret, instance_id.encode("utf-8"), hashlib.sha256).hexdigest()


class RefusedError(Exception):
    """The guest's request is not forwarded; ``status`` is answered instead."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _read_until(fd: int, buffer: bytearray, deadline: float, *, head: bool, want: int = 0) -> bool:
    """Read from ``fd`` until the head is complete (or ``want`` bytes are there); False on EOF."""
    while True:
        if head and (b"\r\n\r\n" in buffer or b"\n\n" in buffer):
            return True
        if not head and len(buffer) >= want:
            return True
        if head and len(buffer) > MAX_HEAD_BYTES:
            raise RefusedError(431, "Request Header Fields Too Large")
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise RefusedError(408, "Request Timeout")
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            return False
        buffer.extend(chunk)


def build_upstream_request(raw_head: bytes, body: bytes, instance_id: str, signature: str) -> bytes:
    """The guest's request line and headers, cleaned, with who is asking added."""
    lines = raw_head.replace(b"\r\n", b"\n").split(b"\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _METHOD_RE.match(parts[0]) or parts[2] not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise RefusedError(400, "Bad Request")
    method, target = parts[0], parts[1]
    if target.startswith(b"http://"):
        # An absolute URI (a proxy-style request): keep its path only.
        slash = target.find(b"/", len(b"http://"))
        target = target[slash:] if slash >= 0 else b"/"
    if not _TARGET_RE.match(target):
        raise RefusedError(400, "Bad Request")
    kept: list[bytes] = []
    has_host = False
    for line in lines[1:]:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            raise RefusedError(400, "Bad Request")  # obsolete line folding (RFC 9112 §5.2)
        name, sep, value = line.partition(b":")
        if not sep or not _HEADER_NAME_RE.match(name) or b"\x00" in value or b"\r" in value:
            raise RefusedError(400, "Bad Request")
        lower = name.lower()
        if lower == b"transfer-encoding":
            raise RefusedError(411, "Length Required")
        if lower.decode("ascii") in DROPPED_HEADERS:
            continue
        has_host = has_host or lower == b"host"
        kept.append(name + b": " + value.strip())
        if len(kept) > MAX_HEADERS:
            raise RefusedError(431, "Request Header Fields Too Large")
    if not has_host:
        kept.append(b"Host: 169.254.169.254")
    kept += [
        f"{INSTANCE_ID_HEADER}: {instance_id}".encode("ascii"),
        f"{SIGNATURE_HEADER}: {signature}".encode("ascii"),
        b"Connection: close",
        f"Content-Length: {len(body)}".encode("ascii"),
    ]
    return method + b" " + target + b" HTTP/1.1\r\n" + b"\r\n".join(kept) + b"\r\n\r\n" + body


def _content_length(raw_head: bytes) -> int:
    length = 0
    for line in raw_head.replace(b"\r\n", b"\n").split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            text = value.strip()
            if not text.isdigit() or len(text) > 9:
                raise RefusedError(400, "Bad Request")
            length = int(text)
    if length > MAX_BODY_BYTES:
        raise RefusedError(413, "Content Too Large")
    return length


def _answer(out_fd: int, status: int, reason: str) -> None:
    body = reason.encode("ascii") + b"\n"
    head = (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    _write_all(out_fd, head + body)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def relay(
    in_fd: int,
    out_fd: int,
    socket_path: str,
    instance_id: str,
    signature: str,
    *,
    deadline: float | None = None,
) -> int:
    """Forward one request from ``in_fd`` to the service and its answer to ``out_fd``; exit status."""
    deadline = deadline if deadline is not None else time.monotonic() + DEADLINE_SECONDS
    buffer = bytearray()
    try:
        if not _read_until(in_fd, buffer, deadline, head=True):
            if buffer:
                _answer(out_fd, 400, "Bad Request")
            return 0
        data = bytes(buffer)
        end = data.find(b"\r\n\r\n")
        end, skip = (end, 4) if end >= 0 else (data.find(b"\n\n"), 2)
        if end > MAX_HEAD_BYTES:
            raise RefusedError(431, "Request Header Fields Too Large")
        raw_head, rest = data[:end], bytearray(data[end + skip :])
        length = _content_length(raw_head)
        if length and not _read_until(in_fd, rest, deadline, head=False, want=length):
            _answer(out_fd, 400, "Bad Request")
            return 0
        request = build_upstream_request(raw_head, bytes(rest[:length]), instance_id, signature)
    except RefusedError as refused:
        _answer(out_fd, refused.status, refused.reason)
        return 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            upstream.settimeout(DEADLINE_SECONDS)
            upstream.connect(socket_path)
            upstream.sendall(request)
            while chunk := upstream.recv(_CHUNK):
                _write_all(out_fd, chunk)
    except OSError:
        # Nothing (or not everything) came back: the guest sees the service as unavailable,
        # which every metadata client retries.
        _answer(out_fd, 503, "Service Unavailable")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Forward one guest metadata request to the service.")
    parser.add_argument("--socket", required=True, help="the metadata service's unix socket")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--signature-file", required=True, help="holds this instance's signature")
    args = parser.parse_args(argv)
    try:
        with open(args.signature_file, encoding="ascii") as f:
            signature = f.read(256).strip()
    except (OSError, UnicodeDecodeError):
        _answer(sys.stdout.fileno(), 503, "Service Unavailable")
        return 1
    return relay(sys.stdin.fileno(), sys.stdout.fileno(), args.socket, args.instance_id, signature)


if __name__ == "__main__":
    sys.exit(main())
