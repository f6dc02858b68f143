"""The registry on PostgreSQL with two named stores: ``fast`` (files) and ``bulk`` (S3, the default).

Against the real Swift S3 server (``tests/fixtures/s3_server.py``) and PostgreSQL, as a user
runs it: ``--store fast=file:///… --store bulk=s3://BUCKET/images/v1?endpoint=…&default=true``.
``/image/v2/info/stores`` lists both; an upload goes to the default store unless the client
names another with ``X-Image-Meta-Store`` (glanceclient's ``--store``), as in Glance's
multi-store; every byte is checked where it landed with an independent boto3 client or on
disk. The faults of ``test_uploads`` (hostile images, a client killed mid-upload, concurrent
clients) and the orphan sweep run here against S3 too; ``test_uploads`` has the server's
``kill -9`` on S3, ``test_openstack_clients`` the three client sessions, and
``test_isolation_matrix`` a slice of the matrix.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.fixtures.hostile import CASES
from tests.fixtures.registry import Api, RegistryServer
from tests.registry.conftest import S3_PREFIX
from tests.registry.test_uploads import (
    _start_slow_upload,
    _status,
    _wait_for_bytes,
    declared_formats,
)

#: A slice of the hostile catalogue, one of each family (the full catalogue runs on files).
HOSTILE_SLICE = [
    case
    for case in CASES
    if case.name
    in {
        "qcow2-backing-absolute-path",
        "qcow2-external-data-file",
        "vmdk-extent-absolute-path",
        "vhd-differencing-parent",
        "ova-symlink-member",
        "gzip-bomb",
        "gpt-overlapping-partitions",
    }
]


@pytest.fixture(scope="module")
def admin(s3_registry: RegistryServer) -> Api:
    with s3_registry.api(s3_registry.token()) as api:
        yield api  # type: ignore[misc]


def s3_object(server: RegistryServer, image_id: str) -> bytes:
    """The bytes of the image's blob, read from the bucket with a plain boto3 client."""
    place = server.s3_places[0]
    listed = place.client.list_objects_v2(Bucket=place.bucket, Prefix=f"{S3_PREFIX}/{image_id}.")
    keys = [item["Key"] for item in listed.get("Contents", [])]
    assert len(keys) == 1, keys
    return bytes(place.client.get_object(Bucket=place.bucket, Key=keys[0])["Body"].read())


def test_info_stores_lists_both(s3_registry: RegistryServer, admin: Api) -> None:
    stores = admin.get("/image/v2/info/stores").json()["stores"]
    assert [s["id"] for s in stores] == ["fast", "bulk"]
    assert [s.get("default") for s in stores] == [None, "true"]  # Glance's string
    assert stores[1]["description"].startswith("S3 bucket ")
    out = s3_registry.glance("stores-info").stdout
    assert "fast" in out and "bulk" in out


def test_uploads_choose_their_store(s3_registry: RegistryServer, admin: Api, tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"\0" * (5 << 20) + b"tail"
    to_default = admin.create_image(name="to-bulk", disk_format="raw", container_format="bare")
    assert admin.upload(to_default["id"], data).status_code == 204
    shown = admin.get(f"/image/v2/images/{to_default['id']}").json()
    assert shown["stores"] == "bulk" and shown["checksum"] == hashlib.md5(data).hexdigest()
    assert s3_object(s3_registry, to_default["id"]) == data
    ranged = admin.get(
        f"/image/v2/images/{to_default['id']}/file", headers={"Range": "bytes=3145720-3145735"}
    )
    assert ranged.status_code == 206 and ranged.content == data[3145720:3145736]

    to_fast = admin.create_image(name="to-fast", disk_format="raw", container_format="bare")
    response = admin.client.put(
        f"/image/v2/images/{to_fast['id']}/file",
        content=data,
        headers={"Content-Type": "application/octet-stream", "X-Image-Meta-Store": "fast"},
    )
    assert response.status_code == 204, response.text
    assert admin.get(f"/image/v2/images/{to_fast['id']}").json()["stores"] == "fast"
    fast_dir = s3_registry.file_store_dirs[0]
    files = [p for p in fast_dir.rglob(f"{to_fast['id']}.*") if p.is_file()]
    assert len(files) == 1 and files[0].read_bytes() == data
    assert admin.get(f"/image/v2/images/{to_fast['id']}/file").content == data

    nowhere = admin.create_image(name="to-nowhere", disk_format="raw", container_format="bare")
    refused = admin.client.put(
        f"/image/v2/images/{nowhere['id']}/file",
        content=b"x" * 1000,
        headers={"Content-Type": "application/octet-stream", "X-Image-Meta-Store": "elsewhere"},
    )
    assert refused.status_code == 400
    assert "no store named 'elsewhere'" in refused.json()["message"]
    assert admin.get(f"/image/v2/images/{nowhere['id']}").json()["status"] == "queued"

    # python-glanceclient's --store sends the same header.
    disk = tmp_path / "small.raw"
    disk.write_bytes(b"\x42" * 65536)
    out = s3_registry.glance(
        "image-create", "--name", "glance-fast", "--disk-format", "raw", "--container-format", "bare",
        "--file", str(disk), "--store", "fast",
    ).stdout  # fmt: skip
    assert "| stores" in out and "fast" in out.split("| stores", 1)[1].split("\n", 1)[0]

    for image in (to_default, to_fast, nowhere):
        assert admin.delete(f"/image/v2/images/{image['id']}").status_code == 204
    glance_fast = [i for i in admin.get("/image/v2/images").json()["images"] if i["name"] == "glance-fast"]
    assert admin.delete(f"/image/v2/images/{glance_fast[0]['id']}").status_code == 204
    assert s3_registry.blobs() == []


@pytest.mark.parametrize("case", HOSTILE_SLICE, ids=lambda case: case.name)
def test_hostile_upload_to_s3_is_refused_and_nothing_kept(
    s3_registry: RegistryServer, admin: Api, case: object, tmp_path: Path
) -> None:
    path = case.build(tmp_path)  # type: ignore[attr-defined]
    disk_format, container_format = declared_formats(case)  # type: ignore[arg-type]
    image = admin.create_image(name="hostile", disk_format=disk_format, container_format=container_format)
    response = admin.upload(image["id"], path.read_bytes())
    assert response.status_code == 400, response.text
    assert case.reason.lower() in response.json()["message"].lower()  # type: ignore[attr-defined]
    assert admin.get(f"/image/v2/images/{image['id']}").json()["status"] == "queued"
    assert s3_registry.blobs() == []
    admin.delete(f"/image/v2/images/{image['id']}")


def test_kill9_client_mid_upload_to_s3(s3_registry: RegistryServer, admin: Api, tmp_path: Path) -> None:
    image = admin.create_image(name="client-dies", disk_format="raw", container_format="bare")
    client = _start_slow_upload(s3_registry, admin.client.headers["X-Auth-Token"], image["id"], tmp_path)
    _wait_for_bytes(client, 24 << 20)  # past the first 8 MiB part: the multipart upload is open
    client.send_signal(signal.SIGKILL)
    client.wait()
    deadline = time.monotonic() + 60
    while _status(s3_registry, image["id"]) != "queued" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _status(s3_registry, image["id"]) == "queued"
    assert s3_registry.blobs() == []
    assert admin.delete(f"/image/v2/images/{image['id']}").status_code == 204


#: Issue 8: "50 concurrent clients uploading/downloading -> no corruption, no 5xx".
CONCURRENT_CLIENTS = 50


def test_concurrent_clients_on_s3(s3_registry: RegistryServer, admin: Api) -> None:
    """50 clients at once, each its own connection: half to the S3 default store, half to the
    file store; every upload 204, every download the same bytes, no image lost or doubled, every
    checksum right, and the bucket holds exactly the S3 half (read back with plain boto3)."""
    clients = CONCURRENT_CLIENTS
    payloads = [os.urandom(128 << 10) + bytes([n]) * (n * 4096) for n in range(clients)]
    token = admin.client.headers["X-Auth-Token"]
    failures: list[str] = []
    created: dict[int, str] = {}
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def worker(n: int) -> None:
        with httpx.Client(base_url=s3_registry.url, headers={"X-Auth-Token": token}, timeout=300) as http:
            start.wait()
            made = http.post(
                "/image/v2/images",
                json={"name": f"s3-load-{n}", "disk_format": "raw", "container_format": "bare"},
            )
            if made.status_code != 201:
                with lock:
                    failures.append(f"{n}: create {made.status_code} {made.text[:200]}")
                return
            image_id = made.json()["id"]
            with lock:
                created[n] = image_id
            store = {"X-Image-Meta-Store": "fast"} if n % 2 else {}
            put = http.put(
                f"/image/v2/images/{image_id}/file",
                content=payloads[n],
                headers={"Content-Type": "application/octet-stream", **store},
            )
            got = http.get(f"/image/v2/images/{image_id}/file")
            with lock:
                if put.status_code != 204:
                    failures.append(f"{n}: upload {put.status_code} {put.text[:200]}")
                elif got.status_code != 200 or got.content != payloads[n]:
                    failures.append(f"{n}: download {got.status_code}, {len(got.content)} bytes")
                elif got.headers.get("Content-MD5") != hashlib.md5(payloads[n]).hexdigest():
                    failures.append(f"{n}: Content-MD5 {got.headers.get('Content-MD5')}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert len(created) == clients and len(set(created.values())) == clients
    listed = admin.get("/image/v2/images", params={"limit": 1000}).json()["images"]
    ours = sorted(i["name"] for i in listed if i["name"].startswith("s3-load-"))
    assert ours == sorted(f"s3-load-{n}" for n in range(clients))  # none lost, none doubled
    place = s3_registry.s3_places[0]
    keys = [
        item["Key"]
        for item in place.client.list_objects_v2(Bucket=place.bucket, Prefix=f"{S3_PREFIX}/").get(
            "Contents", []
        )
    ]
    assert len(keys) == clients // 2, keys
    for n, image_id in sorted(created.items()):
        shown = admin.get(f"/image/v2/images/{image_id}").json()
        assert shown["status"] == "active" and shown["size"] == len(payloads[n])
        assert shown["stores"] == ("fast" if n % 2 else "bulk")
        assert shown["checksum"] == hashlib.md5(payloads[n]).hexdigest()
        assert shown["os_hash_value"] == hashlib.sha512(payloads[n]).hexdigest()
        if shown["stores"] == "bulk":
            assert s3_object(s3_registry, image_id) == payloads[n]
        admin.delete(f"/image/v2/images/{image_id}")
    assert s3_registry.blobs() == []


def test_startup_sweep_removes_orphan_s3_objects(s3_registry: RegistryServer) -> None:
    place = s3_registry.s3_places[0]
    orphan = f"{S3_PREFIX}/0rphan-left-by-a-crash.abc"
    place.client.put_object(Bucket=place.bucket, Key=orphan, Body=b"nobody names me")
    foreign = "elsewhere/not-ours"  # outside the store's prefix: never touched
    place.client.put_object(Bucket=place.bucket, Key=foreign, Body=b"x")
    s3_registry.stop()
    s3_registry.start()
    keys = [item["Key"] for item in place.client.list_objects_v2(Bucket=place.bucket).get("Contents", [])]
    assert orphan not in keys and foreign in keys
    assert "1 unreferenced blob(s) removed" in s3_registry.log()
    place.client.delete_object(Bucket=place.bucket, Key=foreign)
    assert json.loads(s3_registry.openstack("image", "list", "-f", "json").stdout) is not None
