"""The spoof matrix: no request ever reads another instance's data, and nothing answers 5xx.

Every answer of this module is recorded; at the end of each test the record is checked for
leaks (a body carrying another instance's id or user-data marker) and for server errors.

Cells: instance A's token used by B; B's signed headers sent from A's address (an untrusted
peer: headers ignored, A's data); forged, missing, duplicated and foreign signatures on the
forwarders' socket and from a trusted proxy; X-Forwarded-For on the token PUT (403) and from an
untrusted peer (ignored: a stranger stays a stranger); an expired token; TTL 0, 21601, -1, 1e3,
"60 s", "abc", empty, full-width digits; path traversal (``..``, ``%2e%2e``, ``//``); huge
headers; slow clients; other methods; an endpoint-disabled instance; strangers on every path.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.fixtures.metadata_service import (
    Answer,
    MetadataStack,
    parse_response,
    request,
    start_stack,
    unix_request,
)
from tests.metadata_service.conftest import ADDRESSES, USER_DATA, Fleet, make_fleet

from imagewright.metadata.forwarder import instance_signature

STRANGER = "127.0.0.99"
PROXY = "127.0.0.50"


@dataclass
class Recorder:
    fleet: Fleet
    answers: list[tuple[str, str, Answer]] = field(default_factory=list)

    def get(self, asker: str, path: str, source: str, **kwargs: object) -> Answer:
        answer = self.fleet.stack.get(path, source, **kwargs)  # type: ignore[arg-type]
        self.answers.append((asker, path, answer))
        return answer

    def raw(self, asker: str, label: str, answer: Answer) -> Answer:
        self.answers.append((asker, label, answer))
        return answer

    def check(self) -> None:
        markers = {name: [self.fleet.id(name).encode()] for name in self.fleet.views}
        for name, data in USER_DATA.items():
            markers[name].append(data.strip().splitlines()[-1])
        for asker, label, answer in self.answers:
            assert answer.status < 500, (asker, label, answer)
            for owner, owned in markers.items():
                if owner != asker:
                    assert not any(marker in answer.body for marker in owned), (asker, label, owner, answer)


@pytest.fixture(scope="module")
def proxied_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The fleet behind a service that trusts one proxy address (PROXY) for signed headers."""
    directory = tmp_path_factory.mktemp("spoof")
    stack = start_stack(directory / "data", extra_args=["--metadata-trusted-proxy", PROXY])
    try:
        yield make_fleet(stack, directory)
    finally:
        stack.server.stop()


@pytest.fixture
def recorder(proxied_fleet: Fleet) -> Iterator[Recorder]:
    recorded = Recorder(proxied_fleet)
    yield recorded
    recorded.check()


def secret(stack: MetadataStack) -> bytes:
    return stack.channel.proxy_secret()


def signed(stack: MetadataStack, instance_id: str, signature: str | None = None) -> dict[str, str]:
    return {
        "X-Instance-ID": instance_id,
        "X-Instance-ID-Signature": signature or instance_signature(secret(stack), instance_id),
    }


def test_tokens_are_bound_to_their_instance(recorder: Recorder) -> None:
    fleet = recorder.fleet
    token_a = fleet.stack.token(ADDRESSES["a"])
    token_b = fleet.stack.token(ADDRESSES["b"])
    with_token = {"X-aws-ec2-metadata-token": token_a}
    assert recorder.get("b", "/latest/user-data", ADDRESSES["b"], headers=with_token).status == 401
    assert (
        recorder.get("e", "/latest/meta-data/instance-id", ADDRESSES["e"], headers=with_token).status == 401
    )
    own = recorder.get(
        "b", "/latest/user-data", ADDRESSES["b"], headers={"X-aws-ec2-metadata-token": token_b}
    )
    assert (own.status, own.body) == (200, USER_DATA["b"])
    # optional instance: a valid token or none both work; a wrong one is 401
    assert recorder.get("a", "/latest/user-data", ADDRESSES["a"], headers=with_token).body == USER_DATA["a"]
    assert recorder.get("a", "/latest/user-data", ADDRESSES["a"]).body == USER_DATA["a"]
    bad = {"X-aws-ec2-metadata-token": token_a[:-4] + "AAA="}
    assert recorder.get("a", "/latest/user-data", ADDRESSES["a"], headers=bad).status == 401
    assert (
        recorder.get(
            "a", "/latest/user-data", ADDRESSES["a"], headers={"X-aws-ec2-metadata-token": "é"}
        ).status
        == 401
    )
    # required instance without a token
    assert recorder.get("b", "/latest/meta-data/instance-id", ADDRESSES["b"]).status == 401


def test_expired_token(recorder: Recorder) -> None:
    fleet = recorder.fleet
    token = fleet.stack.token(ADDRESSES["b"], ttl="1")
    fresh = recorder.get(
        "b", "/latest/meta-data/instance-id", ADDRESSES["b"], headers={"X-aws-ec2-metadata-token": token}
    )
    assert fresh.status == 200
    time.sleep(2.2)  # let the 1-second token expire (waiting, not timing: any later moment is also after)
    stale = recorder.get(
        "b", "/latest/meta-data/instance-id", ADDRESSES["b"], headers={"X-aws-ec2-metadata-token": token}
    )
    assert stale.status == 401


@pytest.mark.parametrize(
    "ttl", ["0", "21601", "-1", "1e3", "60 s", "abc", "", "99999999999999999999", "0x3c", "６０"]
)
def test_bad_ttl_is_400(ttl: str, recorder: Recorder) -> None:
    answer = recorder.get(
        "a",
        "/latest/api/token",
        ADDRESSES["a"],
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl},
    )
    assert answer.status == 400


def test_token_put_rules(recorder: Recorder) -> None:
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    assert recorder.get("a", "/latest/api/token", ADDRESSES["a"], method="PUT").status == 400
    xff = {**ttl, "X-Forwarded-For": ADDRESSES["a"]}
    assert recorder.get("a", "/latest/api/token", ADDRESSES["a"], method="PUT", headers=xff).status == 403
    assert recorder.get("a", "/latest/api/token", ADDRESSES["a"]).status == 405
    assert recorder.get("a", "/latest/meta-data/instance-id", ADDRESSES["a"], method="POST").status == 405
    assert recorder.get("a", "/latest/meta-data/instance-id", ADDRESSES["a"], method="DELETE").status == 405
    assert recorder.get("a", "/latest/meta-data/", ADDRESSES["a"], method="PUT", headers=ttl).status == 405
    issued = recorder.get("a", "/latest/api/token", ADDRESSES["a"], method="PUT", headers=ttl)
    assert issued.status == 200 and issued.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "60"
    head = recorder.get("a", "/latest/user-data", ADDRESSES["a"], method="HEAD")
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", str(len(USER_DATA["a"])))


def test_strangers_and_forwarded_for(recorder: Recorder) -> None:
    fleet = recorder.fleet
    paths = [
        "/",
        "/latest/",
        "/latest/meta-data/instance-id",
        "/latest/user-data",
        "/openstack/latest/meta_data.json",
    ]
    for path in paths:
        assert recorder.get("nobody", path, STRANGER).status == 404
        # X-Forwarded-For from an untrusted peer is ignored: still a stranger
        assert (
            recorder.get("nobody", path, STRANGER, headers={"X-Forwarded-For": ADDRESSES["a"]}).status == 404
        )
        assert (
            recorder.get("nobody", path, "127.0.0.1", headers={"X-Forwarded-For": ADDRESSES["a"]}).status
            == 404
        )
    # B's signed headers from A's address: an untrusted peer's headers are ignored -> A's own data
    answer = recorder.get(
        "a", "/latest/meta-data/instance-id", ADDRESSES["a"], headers=signed(fleet.stack, fleet.id("b"))
    )
    assert answer.text == fleet.id("a")
    # and from a stranger they give nothing
    assert (
        recorder.get(
            "nobody", "/latest/user-data", STRANGER, headers=signed(fleet.stack, fleet.id("b"))
        ).status
        == 404
    )
    # endpoint disabled: 404 for everything, the token too
    for path in ("/latest/meta-data/instance-id", "/openstack/latest/meta_data.json"):
        assert recorder.get("d", path, ADDRESSES["d"]).status == 404
    put = recorder.get(
        "d",
        "/latest/api/token",
        ADDRESSES["d"],
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    assert put.status == 404


def test_trusted_proxy_needs_a_valid_signature(recorder: Recorder) -> None:
    fleet = recorder.fleet
    stack = fleet.stack
    b = fleet.id("b")
    token_headers = {"X-aws-ec2-metadata-token": stack.token(ADDRESSES["b"])}
    good = recorder.get(
        "b", "/latest/meta-data/instance-id", PROXY, headers={**signed(stack, b), **token_headers}
    )
    assert good.text == b
    forged = signed(stack, b, signature=instance_signature(b"not-the-secret", b))
    assert recorder.get("nobody", "/latest/user-data", PROXY, headers=forged).status == 404
    foreign = signed(stack, b, signature=instance_signature(secret(stack), fleet.id("a")))
    assert recorder.get("nobody", "/latest/user-data", PROXY, headers=foreign).status == 404
    assert recorder.get("nobody", "/latest/user-data", PROXY).status == 404
    assert recorder.get("nobody", "/latest/user-data", PROXY, headers={"X-Instance-ID": b}).status == 404
    unknown = "i-0123456789abcdef0"
    assert recorder.get("nobody", "/latest/user-data", PROXY, headers=signed(stack, unknown)).status == 404


def test_forwarder_socket_needs_a_valid_signature(recorder: Recorder) -> None:
    fleet = recorder.fleet
    stack = fleet.stack
    path = stack.channel.socket_path
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    a, b = fleet.id("a"), fleet.id("b")

    def ask(headers: dict[str, str], target: str = "/latest/user-data") -> Answer:
        head = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return recorder.raw(
            "a", f"unix {target} {sorted(headers)}", unix_request(path, (head + "\r\n").encode())
        )

    assert ask(signed(stack, a)).body == USER_DATA["a"]
    assert ask({"X-Instance-ID": b, "X-Instance-ID-Signature": "0" * 64}).status == 404
    assert (
        ask({"X-Instance-ID": b, "X-Instance-ID-Signature": instance_signature(secret(stack), a)}).status
        == 404
    )
    assert ask({"X-Forwarded-For": ADDRESSES["b"]}).status == 404
    assert ask({}).status == 404
    # two X-Instance-ID headers (a signed one and another): refused, not "the first wins"
    raw = (
        f"GET /latest/user-data HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Instance-ID: {a}\r\n"
        f"X-Instance-ID: {b}\r\nX-Instance-ID-Signature: {instance_signature(secret(stack), a)}\r\n\r\n"
    )
    assert recorder.raw("a", "duplicate ids", unix_request(path, raw.encode())).status == 404


@pytest.mark.parametrize(
    "target",
    [
        "/latest/meta-data/../../",
        "/latest/meta-data/../../openstack/latest/meta_data.json",
        "/latest/meta-data/%2e%2e/%2e%2e/",
        "/latest/meta-data/..%2f..%2fuser-data",
        "//latest//user-data",
        "/latest/./user-data",
        "/../latest/user-data",
        "/latest/user-data/../../../etc/passwd",
        "/openstack/latest/../latest/user_data",
        "/latest/meta-data/public-keys/0=alice@example/openssh-key",
        "/" + "a/" * 2000,
    ],
)
def test_path_traversal_finds_nothing(target: str, recorder: Recorder) -> None:
    answer = recorder.get("e", target, ADDRESSES["e"])
    assert answer.status == 404


def test_huge_headers_and_slow_clients(recorder: Recorder) -> None:
    stack = recorder.fleet.stack
    port = stack.metadata_port
    # a 1 MiB header: answered 431 (or cut off) before it is read whole; never a 5xx, never data
    with socket.create_connection(("127.0.0.1", port), source_address=(ADDRESSES["a"], 0)) as sock:
        sock.settimeout(30)
        # the server may close the connection while we are still sending
        with contextlib.suppress(OSError):
            sock.sendall(
                b"GET /latest/user-data HTTP/1.1\r\nHost: x\r\nX-Big: " + b"x" * (1 << 20) + b"\r\n\r\n"
            )
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
    answer = recorder.raw("nobody", "huge header", parse_response(data))
    assert answer.status == 431 and USER_DATA["a"] not in answer.body
    # slow clients: twenty connections trickling a request head do not hold up anybody else
    slow = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", port), source_address=(STRANGER, 0))
        sock.sendall(b"GET /latest/user-data HTTP/1.1\r\nHo")
        slow.append(sock)
    try:
        answers = []

        def normal() -> None:
            answers.append(request(port, "/latest/meta-data/instance-id", source=ADDRESSES["e"]))

        workers = [threading.Thread(target=normal) for _ in range(10)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [answer.status for answer in answers] == [200] * 10
        for answer in answers:
            recorder.raw("e", "while slow clients wait", answer)
        for sock in slow:
            sock.sendall(b"st: x\r\nX-Forwarded-For: " + ADDRESSES["a"].encode() + b"\r\n\r\n")
        for sock in slow:
            sock.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            recorder.raw("nobody", "slow client", parse_response(data + b"\r\n\r\n"))
            assert parse_response(data + b"\r\n\r\n").status == 404
    finally:
        for sock in slow:
            sock.close()


def test_rate_limit(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "data", extra_args=["--metadata-rate-limit", "1"])
    try:
        instance = stack.create_instance("--name", "limited", "--address", "127.0.0.31")
        statuses = [stack.get("/latest/meta-data/instance-id", "127.0.0.31").status for _ in range(10)]
        # one request per second: the first is served; ten in a row (far less than 10 s) meet a 429
        assert statuses[0] == 200 and 429 in statuses and set(statuses) == {200, 429}
        # another instance has its own bucket
        other = stack.create_instance("--name", "other", "--address", "127.0.0.32")
        assert stack.get("/latest/meta-data/instance-id", "127.0.0.32").text == other["id"]
        line = f"127.0.0.31 {instance['id']} GET /latest/meta-data/instance-id 429"
        assert line in stack.access_log(waiting_for=line)
    finally:
        stack.server.stop()
