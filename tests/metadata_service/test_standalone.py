"""``imagewright metadata serve``: the metadata service on its own, beside a registry that has none.

The registry (``imagewright serve`` without ``--metadata-listen``) owns the catalog; instances
are made with the real ``imagewright instance create``; the standalone service is started as
the process a user starts, and reached from the instances' fixed loopback addresses:

- it answers an instance by its address and nobody else; instances made or deleted while it
  runs are seen within its ``--cache-check`` interval (no restart);
- one service per data dir: a second one is refused in one sentence while the first lives,
  and after a ``kill -9`` the next one replaces the dead socket and serves;
- SIGTERM ends it with status 0, its socket removed and its access log flushed;
- a data dir that does not exist, a directory without a catalog (left as it was), a busy port and
  a bad listen address are one sentence each;
- it logs as ``imagewright serve`` does (``--log-level``, ``service.logs``' handler on stderr): its
  start-up line, its access lines with ``--access-log -``, and a failure of its catalog watch as
  one formatted ERROR record — nothing bare, nothing dropped.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.fixtures.metadata_service import IMAGE_BYTES, Answer, request
from tests.fixtures.registry import BIN, RegistryServer, _clean_env, free_port
from tests.fixtures.tools import run

from imagewright.metadata.channel import MetadataChannel

FIRST = "127.0.0.41"
LATER = "127.0.0.42"
STRANGER = "127.0.0.49"
USER_DATA = b"#!/bin/sh\necho standalone-user-data\n"


@dataclass
class Standalone:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    access_log: Path

    def get(self, path: str, source: str) -> Answer:
        return request(self.port, path, source=source)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def _start(data_dir: Path, work: Path, *extra: str, port: int | None = None) -> Standalone:
    port = port or free_port()
    log_path = work / f"metadata-{port}.log"
    access_log = work / f"access-{port}.log"
    argv = [
        str(BIN / "imagewright"), "metadata", "serve", "--data-dir", str(data_dir),
        "--listen", f"127.0.0.1:{port}", "--cache-check", "0.2", "--access-log", str(access_log), *extra,
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_clean_env())
    return Standalone(process, port, log_path, access_log)


def _wait_listening(service: Standalone) -> Standalone:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert service.process.poll() is None, f"metadata serve exited:\n{service.output()}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", service.port)) == 0:
                return service
        time.sleep(0.05)
    raise AssertionError(f"metadata serve did not listen within 60 s:\n{service.output()}")


def _stop(service: Standalone) -> int:
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
    return int(service.process.returncode)


def _eventually(check: str, predicate: object, timeout: float = 15.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, check
        time.sleep(0.1)


@dataclass
class Registry:
    server: RegistryServer
    image_id: str

    def instance(self, *args: str) -> str:
        out = self.server.imagewright("instance", "create", "--image", self.image_id, *args, "--json")
        return str(__import__("json").loads(out.stdout)["id"])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    server = RegistryServer(tmp_path_factory.mktemp("standalone") / "data")
    server.start()
    try:
        with server.api(server.token()) as admin:
            image = admin.create_image(name="tiny", disk_format="raw", container_format="bare")
            assert admin.upload(image["id"], IMAGE_BYTES).status_code == 204
        yield Registry(server, image["id"])
    finally:
        server.stop()


@pytest.fixture
def service(registry: Registry, tmp_path: Path) -> Iterator[Standalone]:
    running = _wait_listening(_start(registry.server.data_dir, tmp_path))
    try:
        yield running
    finally:
        _stop(running)


def test_answers_instances_by_address_and_sees_catalog_changes_without_restart(
    registry: Registry, service: Standalone
) -> None:
    user_data = registry.server.data_dir.parent / "user-data"
    user_data.write_bytes(USER_DATA)
    first = registry.instance("--name", "first", "--address", FIRST, "--user-data", str(user_data))
    _eventually(
        "the new instance is served",
        lambda: service.get("/latest/meta-data/instance-id", FIRST).status == 200,
    )
    assert service.get("/latest/meta-data/instance-id", FIRST).text == first
    assert service.get("/latest/user-data", FIRST).body == USER_DATA
    assert service.get("/latest/meta-data/local-ipv4", FIRST).text == FIRST
    assert service.get("/latest/meta-data/instance-id", STRANGER).status == 404
    assert service.get("/latest/user-data", STRANGER).status == 404

    later = registry.instance("--name", "later", "--address", LATER)
    _eventually(
        "an instance made while it runs is served",
        lambda: service.get("/latest/meta-data/instance-id", LATER).text == later,
    )
    registry.server.imagewright("instance", "delete", first)
    _eventually(
        "a deleted instance is forgotten",
        lambda: service.get("/latest/meta-data/instance-id", FIRST).status == 404,
    )
    assert service.get("/latest/user-data", FIRST).status == 404
    assert service.get("/latest/meta-data/instance-id", LATER).text == later

    assert _stop(service) == 0
    assert not MetadataChannel.for_data_dir(registry.server.data_dir).socket_path.exists()
    log = service.access_log.read_text()
    assert f"{LATER} {later} GET /latest/meta-data/instance-id 200" in log
    assert f"{STRANGER} - GET /latest/user-data 404" in log
    assert "Traceback" not in service.output()


def test_second_service_on_one_data_dir_is_refused_and_kill9_leftover_is_replaced(
    registry: Registry, tmp_path: Path
) -> None:
    address = "127.0.0.43"
    instance_id = registry.instance("--name", "third", "--address", address)
    first = _wait_listening(_start(registry.server.data_dir, tmp_path))
    try:
        second = _start(registry.server.data_dir, tmp_path)
        assert second.process.wait(timeout=60) != 0
        socket_path = MetadataChannel.for_data_dir(registry.server.data_dir).socket_path
        assert f"Another metadata service is listening on {socket_path}." in second.output()
        assert "Traceback" not in second.output()
        assert first.get("/latest/meta-data/instance-id", address).text == instance_id

        first.process.kill()
        first.process.wait()
        assert socket_path.exists(), "kill -9 leaves the socket file behind"
        third = _wait_listening(_start(registry.server.data_dir, tmp_path))
        try:
            assert third.get("/latest/meta-data/instance-id", address).text == instance_id
        finally:
            assert _stop(third) == 0
    finally:
        _stop(first)


def test_bad_start_up_input_is_one_sentence(registry: Registry, tmp_path: Path) -> None:
    missing = _start(tmp_path / "nowhere", tmp_path)
    assert missing.process.wait(timeout=60) == 2
    assert (
        f"There is no data dir {tmp_path / 'nowhere'}; start 'imagewright serve' once first."
        in missing.output()
    )

    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_data_dir = _start(empty, tmp_path)
    assert not_a_data_dir.process.wait(timeout=60) == 1
    assert "has no imagewright tables yet" in not_a_data_dir.output()
    assert os.listdir(empty) == [], "a refused start leaves no keys and no empty catalog behind"

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = _start(registry.server.data_dir, tmp_path, port=int(busy.getsockname()[1]))
        assert taken.process.wait(timeout=60) != 0
    assert f"The metadata service cannot listen on 127.0.0.1:{taken.port}" in taken.output()
    assert not MetadataChannel.for_data_dir(registry.server.data_dir).socket_path.exists(), (
        "a refused start leaves no socket behind"
    )

    bad = subprocess.run(
        [str(BIN / "imagewright"), "metadata", "serve", "--data-dir", str(registry.server.data_dir),
         "--listen", "not-an-address"],
        capture_output=True, text=True, env=_clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr + bad.stdout
    assert len((bad.stderr + bad.stdout).strip().splitlines()) <= 3, bad.stderr
    for output in (missing.output(), not_a_data_dir.output(), taken.output()):
        assert "Traceback" not in output
    assert os.listdir(MetadataChannel.for_data_dir(registry.server.data_dir).socket_path.parent) == []


#: ``service.logs.FORMAT``: "2026-12-07 13:40:00,123 INFO imagewright.metadata [4242]: ...".
RECORD = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} %s %s \[%d\]: %s"


def test_logs_like_serve_start_up_access_lines_and_errors(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    run(BIN / "imagewright", "db", "upgrade", "--data-dir", data_dir)  # a catalog, no registry running
    quiet = _wait_listening(_start(data_dir, tmp_path, "--log-level", "warning"))
    assert quiet.get("/latest/meta-data/instance-id", STRANGER).status == 404  # serving: signals handled
    assert _stop(quiet) == 0
    assert "INFO" not in quiet.output(), quiet.output()

    service = _wait_listening(_start(data_dir, tmp_path, "--log-level", "info", "--access-log", "-"))
    try:
        pid = service.process.pid
        socket_path = MetadataChannel.for_data_dir(data_dir).socket_path
        started = RECORD % ("INFO", re.escape("imagewright.metadata"), pid, re.escape(
            f"serving instance metadata on {socket_path} and 127.0.0.1:{service.port}; access log: -"
        ))  # fmt: skip
        _eventually("the start-up line is logged", lambda: re.search(started, service.output(), re.M))

        fetched = run(
            "curl", "-sS", "--noproxy", "*", "--interface", STRANGER, "-o", "/dev/null", "-w", "%{http_code}",
            f"http://127.0.0.1:{service.port}/latest/meta-data/instance-id",
        )  # fmt: skip
        assert fetched.stdout == b"404"
        access = re.compile(
            rf"^\S+Z {re.escape(STRANGER)} - GET /latest/meta-data/instance-id 404 \d+$", re.M
        )
        _eventually("the access line reaches stderr", lambda: access.search(service.output()))

        # Break the catalog under the running service: its watch fails, and says so in one record.
        with sqlite3.connect(data_dir / "catalog.sqlite") as catalog:
            catalog.execute("ALTER TABLE catalog_versions RENAME TO catalog_versions_gone")
        failed = RECORD % ("ERROR", re.escape("imagewright.metadata.cache"), pid, re.escape(
            "checking the catalog for instance changes failed"
        ))  # fmt: skip
        _eventually("the failed catalog check is logged", lambda: re.search(failed, service.output(), re.M))
        assert "no such table: catalog_versions" in service.output()
    finally:
        assert _stop(service) == 0
    stopped = RECORD % ("INFO", re.escape("imagewright.metadata"), pid, "the metadata service stopped$")
    assert re.search(stopped, service.output(), re.M), service.output()
