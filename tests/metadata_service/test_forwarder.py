"""The per-instance forwarder (what QEMU's guestfwd runs per guest connection).

Driven as QEMU drives it: one process per connection, the exchange on its stdin/stdout. It names
its own instance whatever the guest sends, refuses what it cannot forward safely, and answers
503 when the service is not there.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.fixtures.metadata_service import parse_response
from tests.metadata_service.conftest import USER_DATA, Fleet

from imagewright.metadata import forwarder
from imagewright.metadata.channel import MetadataChannel
from imagewright.metadata.forwarder import instance_signature


def exchange(command: tuple[str, ...], raw: bytes) -> bytes:
    return subprocess.run(list(command), input=raw, capture_output=True, timeout=60, check=True).stdout


def test_forwarder_names_its_own_instance(fleet: Fleet) -> None:
    channel = fleet.stack.channel
    command = channel.forwarder_command(fleet.id("c"))
    signature_file = channel.signature_path(fleet.id("c"))
    assert oct(signature_file.stat().st_mode & 0o777) == "0o600"
    assert signature_file.read_text().strip() == instance_signature(channel.proxy_secret(), fleet.id("c"))
    # the guest claims to be instance a, with a's real signature: its headers are dropped
    a = fleet.id("a")
    claim = (
        f"X-Instance-ID: {a}\r\nX-Instance-ID-Signature: {instance_signature(channel.proxy_secret(), a)}\r\n"
    )
    answer = parse_response(
        exchange(command, f"GET /latest/meta-data/instance-id HTTP/1.0\r\n{claim}\r\n".encode())
    )
    assert (answer.status, answer.body) == (200, fleet.id("c").encode())
    # absolute-form target (a proxy-style request) and HTTP/1.1 keep-alive: one answer, then close
    raw = b"GET http://169.254.169.254/latest/meta-data/hostname HTTP/1.1\r\n"
    raw += b"Host: x\r\nConnection: keep-alive\r\n\r\n"
    answer = parse_response(exchange(command, raw))
    assert (answer.status, answer.body, answer.headers["connection"]) == (
        200,
        b"static-c.example.com",
        "close",
    )
    # a second, pipelined request on the same connection is not forwarded
    two = (
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\nGET /latest/user-data HTTP/1.1\r\n\r\n"
    )
    assert exchange(command, two).count(b"HTTP/1.1 ") == 1
    # X-Forwarded-For is passed on, so the token rule holds through the forwarder
    put = b"PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n"
    assert parse_response(exchange(command, put + b"X-Forwarded-For: 10.0.0.9\r\n\r\n")).status == 403
    put += b"Content-Length: 0\r\n\r\n"
    token = parse_response(exchange(command, put)).body
    get = b"GET /latest/meta-data/local-hostname HTTP/1.0\r\nX-aws-ec2-metadata-token: " + token + b"\r\n\r\n"
    assert parse_response(exchange(command, get)).body == b"static-c.example.com"
    # another instance's forwarder with a's token: foreign
    other = channel.forwarder_command(fleet.id("e"))
    assert parse_response(exchange(other, get)).status == 401
    channel.remove_forwarder(fleet.id("e"))
    assert not channel.signature_path(fleet.id("e")).exists()


def test_forwarder_refusals(fleet: Fleet) -> None:
    command = fleet.stack.channel.forwarder_command(fleet.id("a"))
    cases = [
        (b"GET /latest/user-data HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"GET /latest/user-data HTTP/1.1\r\nX-Big: " + b"x" * 20000 + b"\r\n\r\n", 431),
        (b"garbage\r\n\r\n", 400),
        (b"GET latest/user-data HTTP/1.0\r\n\r\n", 400),
        (b"GET /latest/user-data HTTP/2.0\r\n\r\n", 400),
        (b"GET /latest/user-data HTTP/1.0\r\n folded: header\r\n\r\n", 400),
        (b"GET /latest/user-data HTTP/1.0\r\nBad Header: x\r\n\r\n", 400),
        (b"PUT /latest/api/token HTTP/1.0\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET /latest/user-data HTTP/1.0\r\n", 400),  # the guest closed before the head ended
    ]
    for raw, status in cases:
        answer = parse_response(exchange(command, raw))
        assert answer.status == status, (raw[:60], answer)
        assert USER_DATA["a"] not in answer.body
    assert exchange(command, b"") == b""  # a connection closed at once: nothing to say


def test_forwarder_slow_guest_and_missing_service(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    out_read, out_write = os.pipe()
    os.write(write_end, b"GET /latest/user-data HTTP/1.0\r\nHo")  # and never the rest
    started = time.monotonic()
    forwarder.relay(
        read_end, out_write, str(tmp_path / "none.sock"), "i-0123456789abcdef0", "x", deadline=started + 0.5
    )
    os.close(out_write)
    assert parse_response(os.read(out_read, 65536)).status == 408
    for fd in (read_end, write_end, out_read):
        os.close(fd)
    # the service is not running: 503, which clients retry
    channel = MetadataChannel(tmp_path / "metadata")
    command = channel.forwarder_command("i-0123456789abcdef0")
    answer = parse_response(
        subprocess.run(
            list(command), input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=60, check=False
        ).stdout
    )
    assert answer.status == 503
