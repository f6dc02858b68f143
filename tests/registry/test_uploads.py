"""Uploads through the gate, and the faults: hostile images, lies about the format, kill -9, load.

Every hostile image the inspection refuses (tests/fixtures/hostile*.py) is refused on upload with
its reason in the error body, and nothing is kept: the image is ``queued`` again without data and
the store holds no file. A declared format that is not the content is refused both ways.
``kill -9`` of the server in the middle of an upload, then a restart, leaves no ``active`` image
with partial data and no orphan blob; ``kill -9`` of the client the same, while the server keeps
running. Fifty concurrent clients upload and download without a corrupted byte or a 5xx.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import require_program
from tests.fixtures.hostile import HostileCase, every_case
from tests.fixtures.registry import BIN, Api, RegistryServer
from tests.registry.conftest import BACKENDS, S3, make_server

CASES = every_case()


def declared_formats(case: HostileCase) -> tuple[str, str]:
    """What a client would declare for the file (the refusal must come from the safety check)."""
    name = case.name
    for prefix, disk in (
        ("qcow2", "qcow2"),
        ("qcow-", "qcow2"),
        ("vmdk", "vmdk"),
        ("vhdx", "vhdx"),
        ("vhd", "vhd"),
        ("vdi", "vdi"),
    ):
        if name.startswith(prefix):
            return disk, "bare"
    if name.startswith(("ova", "ovf")):
        return "vmdk", "ova"
    if name.startswith(("gzip", "xz", "zstd", "tar-gz")):
        return "raw", "compressed"
    return "raw", "bare"


def assert_nothing_kept(server: RegistryServer, api: Api, image_id: str) -> None:
    image = api.get(f"/image/v2/images/{image_id}").json()
    assert image["status"] == "queued"
    assert image["size"] is None and image["checksum"] is None and image["os_hash_value"] is None
    assert api.get(f"/image/v2/images/{image_id}/file").status_code == 204
    assert server.blobs() == []


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_upload_is_refused_with_its_reason(
    server: RegistryServer, admin: Api, case: HostileCase, tmp_path: Path
) -> None:
    path = case.build(tmp_path)
    disk_format, container_format = declared_formats(case)
    image = admin.create_image(name=case.name, disk_format=disk_format, container_format=container_format)
    response = admin.upload(image["id"], path.read_bytes())
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert case.reason.lower() in message.lower(), message
    assert "Traceback" not in message
    assert_nothing_kept(server, admin, image["id"])
    admin.delete(f"/image/v2/images/{image['id']}")


def _convert(tmp_path: Path, fmt: str, options: tuple[str, ...] = ()) -> Path:
    qemu_img = require_program("qemu-img")
    raw = tmp_path / "src.raw"
    raw.write_bytes(b"\x55" * 65536 + b"\0" * (4 << 20))
    out = tmp_path / f"img.{fmt}"
    subprocess.run([qemu_img, "convert", "-f", "raw", "-O", fmt, *options, str(raw), str(out)], check=True)
    return out


@pytest.mark.parametrize(
    ("content", "declared", "accepted"),
    [
        ("qcow2", "raw", False),
        ("raw", "qcow2", False),
        ("vpc", "vhd", True),
        ("vpc", "vmdk", False),
        ("vmdk", "vmdk", True),
        ("vmdk", "qcow2", False),
        ("vdi", "vdi", True),
        ("vhdx", "vhdx", True),
        ("qcow2", "qcow2", True),
        ("raw", "raw", True),
        ("raw", "iso", False),
    ],
)
def test_declared_disk_format_must_match(
    server: RegistryServer, admin: Api, tmp_path: Path, content: str, declared: str, accepted: bool
) -> None:
    path = _convert(tmp_path, content)
    image = admin.create_image(name=f"{content}-as-{declared}", disk_format=declared, container_format="bare")
    response = admin.upload(image["id"], path.read_bytes())
    if accepted:
        assert response.status_code == 204, response.text
        shown = admin.get(f"/image/v2/images/{image['id']}").json()
        assert shown["status"] == "active"
        info = subprocess.run(
            [require_program("qemu-img"), "info", "--output=json", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        import json

        assert shown["virtual_size"] == json.loads(info.stdout)["virtual-size"]
        assert admin.delete(f"/image/v2/images/{image['id']}").status_code == 204
        assert server.blobs() == []
    else:
        assert response.status_code == 400
        message = response.json()["message"]
        assert f"disk_format says {declared}" in message, message
        assert_nothing_kept(server, admin, image["id"])


def test_iso_and_containers(server: RegistryServer, admin: Api, tmp_path: Path) -> None:
    source = tmp_path / "dir"
    source.mkdir()
    (source / "hello.txt").write_text("hello")
    iso = tmp_path / "x.iso"
    subprocess.run([require_program("genisoimage"), "-quiet", "-o", str(iso), str(source)], check=True)
    for disk_format, container_format, data, ok in (
        ("iso", "bare", iso.read_bytes(), True),
        ("raw", "bare", iso.read_bytes(), True),  # an ISO is a valid raw disk
        ("raw", "compressed", _gzip(b"\0" * 65536), True),
        ("raw", "bare", _gzip(b"\0" * 65536), False),  # a gzip declared bare
        ("raw", "compressed", b"\0" * 65536, False),  # bare data declared compressed
    ):
        image = admin.create_image(name="c", disk_format=disk_format, container_format=container_format)
        response = admin.upload(image["id"], data)
        assert (response.status_code == 204) == ok, (disk_format, container_format, response.text)
        if not ok:
            assert "container" in response.json()["message"]
            assert_nothing_kept(server, admin, image["id"])
        admin.delete(f"/image/v2/images/{image['id']}")
    assert server.blobs() == []


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


# --- faults -------------------------------------------------------------------------------------

SLOW_UPLOAD = textwrap.dedent(
    """
    import sys, time, httpx
    url, token, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def body():
        sent = 0
        while sent < total:
            yield b"\\x5a" * (1 << 20)
            sent += 1 << 20
            print(sent, flush=True)
            time.sleep(0.05)
    headers = {"X-Auth-Token": token, "Content-Type": "application/octet-stream"}
    httpx.put(url, content=body(), headers=headers, timeout=600)
    """
)


def _start_slow_upload(
    server: RegistryServer, token: str, image_id: str, tmp_path: Path
) -> subprocess.Popen[str]:
    script = tmp_path / "slow_upload.py"
    script.write_text(SLOW_UPLOAD)
    return subprocess.Popen(
        [sys.executable, str(script), f"{server.url}/image/v2/images/{image_id}/file", token, str(512 << 20)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait_for_bytes(client: subprocess.Popen[str], at_least: int) -> None:
    assert client.stdout is not None
    for line in client.stdout:
        if int(line) >= at_least:
            return
    raise AssertionError("the uploading client stopped early")


def _status(server: RegistryServer, image_id: str) -> str:
    with server.api(server.token()) as api:
        return str(api.get(f"/image/v2/images/{image_id}").json()["status"])


@pytest.mark.parametrize("backend", [*BACKENDS, S3])
def test_kill9_server_mid_upload_then_restart(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    with make_server(request, tmp_path, backend) as server:
        token = server.token()
        with server.api(token) as api:
            image = api.create_image(name="interrupted", disk_format="raw", container_format="bare")
        client = _start_slow_upload(server, token, image["id"], tmp_path)
        _wait_for_bytes(client, 8 << 20)
        assert _status(server, image["id"]) == "saving"
        # (An S3 store starts its multipart upload with the first full part.)
        deadline = time.monotonic() + 60
        while not server.blobs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.blobs(), "the upload should be writing into the store"
        server.kill9()
        client.wait(timeout=60)
        server.start()  # the start-up sweep runs before the server answers
        with server.api(server.token()) as api:
            shown = api.get(f"/image/v2/images/{image['id']}").json()
            assert shown["status"] == "queued" and shown["size"] is None
            assert server.blobs() == []
            # The image can be uploaded again, completely.
            data = b"\x11" * (3 << 20)
            assert api.upload(image["id"], data).status_code == 204
            assert api.get(f"/image/v2/images/{image['id']}/file").content == data
            assert len(server.blobs()) == 1


def test_kill9_client_mid_upload(server: RegistryServer, admin: Api, tmp_path: Path) -> None:
    image = admin.create_image(name="client-dies", disk_format="raw", container_format="bare")
    client = _start_slow_upload(server, admin.client.headers["X-Auth-Token"], image["id"], tmp_path)
    _wait_for_bytes(client, 8 << 20)
    client.send_signal(signal.SIGKILL)
    client.wait()
    deadline = time.monotonic() + 60
    while _status(server, image["id"]) != "queued" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _status(server, image["id"]) == "queued"
    assert server.blobs() == []
    assert admin.delete(f"/image/v2/images/{image['id']}").status_code == 204


def test_fifty_concurrent_clients(server: RegistryServer, admin: Api) -> None:
    clients = 50
    payloads = [os.urandom(256 << 10) + bytes([n]) * (n * 4096) for n in range(clients)]
    ids = [
        admin.create_image(name=f"load-{n}", disk_format="raw", container_format="bare")["id"]
        for n in range(clients)
    ]
    token = admin.client.headers["X-Auth-Token"]
    failures: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with httpx.Client(base_url=server.url, headers={"X-Auth-Token": token}, timeout=300) as http:
            put = http.put(
                f"/image/v2/images/{ids[n]}/file",
                content=payloads[n],
                headers={"Content-Type": "application/octet-stream"},
            )
            got = http.get(f"/image/v2/images/{ids[n]}/file")
            listed = http.get("/image/v2/images", params={"limit": 10})
            with lock:
                statuses.extend([put.status_code, got.status_code, listed.status_code])
                if put.status_code != 204:
                    failures.append(f"{n}: upload {put.status_code} {put.text}")
                elif (
                    got.content != payloads[n]
                    or got.headers["Content-MD5"] != hashlib.md5(payloads[n]).hexdigest()
                ):
                    failures.append(f"{n}: download differs")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert all(status < 500 for status in statuses)
    for n, image_id in enumerate(ids):
        shown = admin.get(f"/image/v2/images/{image_id}").json()
        assert shown["checksum"] == hashlib.md5(payloads[n]).hexdigest()
        assert shown["os_hash_value"] == hashlib.sha512(payloads[n]).hexdigest()
        admin.delete(f"/image/v2/images/{image_id}")
    assert server.blobs() == []


# --- limits -------------------------------------------------------------------------------------


def test_max_image_size(tmp_path: Path) -> None:
    """``serve --max-image-size`` (Glance's image_size_cap): larger uploads get 413 and leave nothing,
    whether the client announces the size (Content-Length) or streams it (chunked)."""
    with RegistryServer(tmp_path / "data", extra_args=["--max-image-size", "4M"]) as server:
        assert "(images up to 4 MiB)" in server.log()
        with server.api(server.token()) as api:
            image = api.create_image(name="big", disk_format="raw", container_format="bare")
            announced = api.upload(image["id"], b"\x01" * ((4 << 20) + 1))
            assert announced.status_code == 413
            assert "4194304-byte limit" in announced.json()["message"]
            assert_nothing_kept(server, api, image["id"])

            def chunks() -> Iterator[bytes]:
                for _ in range(5):
                    yield b"\x02" * (1 << 20)

            streamed = api.upload(image["id"], chunks())
            assert streamed.status_code == 413, streamed.text
            assert_nothing_kept(server, api, image["id"])
            exact = api.upload(image["id"], b"\x03" * (4 << 20))
            assert exact.status_code == 204
            assert api.get(f"/image/v2/images/{image['id']}").json()["size"] == 4 << 20
    refused = subprocess.run(
        [str(BIN / "imagewright"), "serve", "--data-dir", str(tmp_path / "x"), "--max-image-size", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2 and "--max-image-size" in refused.stderr


def test_large_compressed_upload_is_refused_with_the_reason(
    server: RegistryServer, admin: Api, tmp_path: Path
) -> None:
    """A compressed container holding more data than the inspection may examine in memory is
    refused, saying so and what to do; the registry decompresses nothing to a scratch disk."""
    import gzip

    data = gzip.compress(os.urandom(40 << 20), compresslevel=1)
    image = admin.create_image(name="big.raw.gz", disk_format="raw", container_format="compressed")
    response = admin.upload(image["id"], data)
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("The image is refused: it is gzip-compressed and the gzip stream could not be")
    assert "upload large images uncompressed or as qcow2" in message
    assert_nothing_kept(server, admin, image["id"])
    admin.delete(f"/image/v2/images/{image['id']}")
