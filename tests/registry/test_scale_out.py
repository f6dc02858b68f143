"""Several ``imagewright serve`` processes on one PostgreSQL and one S3 bucket, as a user scales out.

Three servers are started exactly as a user behind a load balancer would start them: each its
own data dir and port, all with the same ``--database postgresql://…`` and the same
``--store bulk=s3://BUCKET/PREFIX?endpoint=…&default=true`` (the real Swift S3 fixture). The
first one creates the schema and the admin; the others find them. Clients are spread over the
servers round-robin, the way a load balancer would spread them, and the tests check that:

- the catalog is one: a token from one server works on all, an image created on one is uploaded
  through a second and downloaded through a third, every list on every server shows the same
  images, checksums are right and the bucket holds exactly one object per image;
- concurrent writers of one image through different servers behave: JSON-patches of different
  properties are all kept (the row lock serializes them, none is lost), the same v2.0 ``add``
  wins once and conflicts with 409 otherwise, and of several uploads of one image exactly one
  is accepted (204) while the others get 409 — the stored bytes are the winner's, whole;
- a ``kill -9`` of one server in the middle of an upload leaves no ``active`` image with partial
  data: another server's periodic sweep (``--sweep-interval 1``) sees that the holder of the
  upload lease is a dead process of this host, puts the image back to ``queued`` and removes the
  open multipart upload; the bucket is empty of it, and the image can be uploaded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.registry import RegistryServer, S3Place
from tests.fixtures.s3_server import S3Server
from tests.registry.test_uploads import _start_slow_upload, _wait_for_bytes

PREFIX = "scale/v1"
SERVERS = 3
OCTETS = {"Content-Type": "application/octet-stream"}
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


class Cluster:
    def __init__(self, servers: list[RegistryServer], place: S3Place, token: str) -> None:
        self.servers = servers
        self.place = place
        self.token = token

    def client(self, n: int) -> httpx.Client:
        """A client of server ``n % SERVERS`` (what a round-robin balancer hands out)."""
        server = self.servers[n % len(self.servers)]
        return httpx.Client(base_url=f"{server.url}/image", headers={"X-Auth-Token": self.token}, timeout=300)

    def objects(self) -> list[str]:
        listed = self.place.client.list_objects_v2(Bucket=self.place.bucket, Prefix=f"{PREFIX}/")
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def multipart_uploads(self) -> list[str]:
        listed = self.place.client.list_multipart_uploads(Bucket=self.place.bucket, Prefix=f"{PREFIX}/")
        return sorted(item["Key"] for item in listed.get("Uploads", []))

    def object_of(self, image_id: str) -> bytes:
        keys = [key for key in self.objects() if key.startswith(f"{PREFIX}/{image_id}.")]
        assert len(keys) == 1, keys
        return bytes(self.place.client.get_object(Bucket=self.place.bucket, Key=keys[0])["Body"].read())


@pytest.fixture(scope="module")
def cluster(
    pg: PostgresCluster, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("scale-out")
    database = str(pg.fresh_database())
    bucket = s3_server.new_bucket("scale")
    store = f"bulk=s3://{bucket}/{PREFIX}?endpoint={s3_server.endpoint}&default=true"
    place = S3Place(s3_server.client(), bucket, PREFIX)
    servers = [
        RegistryServer(
            base / f"data-{n}",
            database=database,
            extra_args=["--store", store, "--sweep-interval", "1"],
            env=s3_server.env(),
            s3_places=[place],
        )
        for n in range(SERVERS)
    ]
    try:
        for server in servers:  # the first creates the schema and the admin
            server.start()
        yield Cluster(servers, place, servers[0].token())
    finally:
        for server in servers:
            server.stop()


def _create(http: httpx.Client, name: str) -> str:
    made = http.post("/v2/images", json={"name": name, "disk_format": "raw", "container_format": "bare"})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def test_one_catalog_across_servers(cluster: Cluster) -> None:
    """30 clients, each creating on server n, uploading through n+1, downloading through n+2."""
    clients = 30
    payloads = [os.urandom(64 << 10) + bytes([n]) * (n * 8192) for n in range(clients)]
    made: dict[int, str] = {}
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def worker(n: int) -> None:
        with cluster.client(n) as first, cluster.client(n + 1) as second, cluster.client(n + 2) as third:
            start.wait()
            image_id = _create(first, f"scale-{n}")
            with lock:
                made[n] = image_id
            shown = second.get(f"/v2/images/{image_id}")  # read-after-write on another server
            put = second.put(f"/v2/images/{image_id}/file", content=payloads[n], headers=OCTETS)
            got = third.get(f"/v2/images/{image_id}/file")
            with lock:
                if shown.status_code != 200 or shown.json()["status"] != "queued":
                    failures.append(f"{n}: show on the next server {shown.status_code} {shown.text[:200]}")
                if put.status_code != 204:
                    failures.append(f"{n}: upload {put.status_code} {put.text[:200]}")
                elif got.content != payloads[n]:
                    failures.append(f"{n}: download {got.status_code}, {len(got.content)} bytes")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert len(set(made.values())) == clients
    listings = []
    for n in range(SERVERS):
        with cluster.client(n) as http:
            listed = http.get("/v2/images", params={"limit": 1000, "sort_key": "name"}).json()["images"]
            listings.append(
                [(i["id"], i["status"], i["checksum"]) for i in listed if i["name"].startswith("scale-")]
            )
    assert listings[0] == listings[1] == listings[2]
    assert len(listings[0]) == clients
    by_id = {image_id: n for n, image_id in made.items()}
    for image_id, status, checksum in listings[0]:
        assert status == "active"
        assert checksum == hashlib.md5(payloads[by_id[image_id]]).hexdigest()
        assert cluster.object_of(image_id) == payloads[by_id[image_id]]
    assert len(cluster.objects()) == clients and cluster.multipart_uploads() == []
    # A delete through one server is seen by the others at once, and the object goes.
    for n, image_id in made.items():
        with cluster.client(n + 1) as http:
            assert http.delete(f"/v2/images/{image_id}").status_code == 204
        with cluster.client(n + 2) as http:
            assert http.get(f"/v2/images/{image_id}").status_code == 404
    assert cluster.objects() == []


def test_concurrent_patches_through_different_servers(cluster: Cluster) -> None:
    with cluster.client(0) as http:
        image_id = _create(http, "patched")
    writers = 12
    answers: list[tuple[int, int, dict[str, Any]]] = []
    lock = threading.Lock()
    start = threading.Barrier(writers)

    def patch(n: int, ops: list[dict[str, Any]], media_type: str) -> None:
        with cluster.client(n) as http:
            start.wait()
            response = http.patch(
                f"/v2/images/{image_id}", content=json.dumps(ops), headers={"Content-Type": media_type}
            )
            with lock:
                answers.append((n, response.status_code, response.json()))

    # Different properties at once: every one is kept (no lost update).
    threads = [
        threading.Thread(
            target=patch,
            args=(n, [{"op": "add", "path": f"/prop_{n}", "value": str(n)}], PATCH["Content-Type"]),
        )
        for n in range(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(status for _, status, _ in answers) == [200] * writers, answers
    for n in range(SERVERS):
        with cluster.client(n) as http:
            shown = http.get(f"/v2/images/{image_id}").json()
            assert {f"prop_{k}": str(k) for k in range(writers)}.items() <= shown.items()

    # The same v2.0 "add" (which refuses an existing property) at once: one wins, the rest 409.
    answers.clear()
    start = threading.Barrier(writers)
    threads = [
        threading.Thread(
            target=patch,
            args=(
                n,
                [{"add": "/contested", "value": f"writer-{n}"}],
                "application/openstack-images-v2.0-json-patch",
            ),
        )
        for n in range(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(status for _, status, _ in answers)
    assert statuses == [200] + [409] * (writers - 1), answers
    winner = next(body for _, status, body in answers if status == 200)["contested"]
    for n in range(SERVERS):
        with cluster.client(n) as http:
            shown = http.get(f"/v2/images/{image_id}").json()
            assert shown["contested"] == winner and shown["status"] == "queued"
            assert all(shown[f"prop_{k}"] == str(k) for k in range(writers))
    with cluster.client(1) as http:
        assert http.delete(f"/v2/images/{image_id}").status_code == 204


def test_concurrent_uploads_of_one_image(cluster: Cluster) -> None:
    with cluster.client(0) as http:
        image_id = _create(http, "contested-upload")
    writers = 6
    payloads = [bytes([n + 1]) * (9 << 20) + os.urandom(4096) for n in range(writers)]  # > one S3 part
    answers: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(writers)

    def upload(n: int) -> None:
        with cluster.client(n) as http:
            start.wait()
            response = http.put(f"/v2/images/{image_id}/file", content=payloads[n], headers=OCTETS)
            with lock:
                answers[n] = response.status_code

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers.values()) == [204] + [409] * (writers - 1), answers
    winner = next(n for n, status in answers.items() if status == 204)
    for n in range(SERVERS):
        with cluster.client(n) as http:
            shown = http.get(f"/v2/images/{image_id}").json()
            assert shown["status"] == "active" and shown["size"] == len(payloads[winner])
            assert shown["os_hash_value"] == hashlib.sha512(payloads[winner]).hexdigest()
            assert http.get(f"/v2/images/{image_id}/file").content == payloads[winner]
    assert cluster.object_of(image_id) == payloads[winner]
    assert len(cluster.objects()) == 1 and cluster.multipart_uploads() == []
    with cluster.client(2) as http:
        assert http.delete(f"/v2/images/{image_id}").status_code == 204
    assert cluster.objects() == []


def test_kill9_of_one_server_mid_upload(cluster: Cluster, tmp_path: Path) -> None:
    victim = cluster.servers[1]
    with cluster.client(0) as http:
        image_id = _create(http, "interrupted")
    client = _start_slow_upload(victim, cluster.token, image_id, tmp_path)
    try:
        _wait_for_bytes(client, 24 << 20)  # past the first 8 MiB part: a multipart upload is open
        deadline = time.monotonic() + 60
        while not cluster.multipart_uploads() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cluster.multipart_uploads(), "the upload should be writing into the bucket"
        with cluster.client(2) as http:
            assert http.get(f"/v2/images/{image_id}").json()["status"] == "saving"
        victim.kill9()
        client.wait(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    try:
        # The surviving servers' periodic sweep (every second) takes the upload back: the row
        # goes back to queued (committed first), then the open multipart upload is aborted and
        # the sweeper logs it.
        survivors = (cluster.servers[0], cluster.servers[2])
        said = f"upload of image {image_id} was interrupted"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(said in server.log() for server in survivors):
            time.sleep(0.2)
        assert any(said in server.log() for server in survivors)
        with cluster.client(0) as http:
            assert http.get(f"/v2/images/{image_id}").json()["status"] == "queued"
        assert cluster.multipart_uploads() == [] and cluster.objects() == []
        # And it can be uploaded again, whole, through another server.
        data = bytes(4096) + os.urandom(3 << 20)
        with cluster.client(2) as http:
            assert http.put(f"/v2/images/{image_id}/file", content=data, headers=OCTETS).status_code == 204
        with cluster.client(0) as http:
            shown = http.get(f"/v2/images/{image_id}").json()
            assert shown["status"] == "active" and shown["checksum"] == hashlib.md5(data).hexdigest()
            assert http.get(f"/v2/images/{image_id}/file").content == data
            assert http.delete(f"/v2/images/{image_id}").status_code == 204
        assert cluster.objects() == []
    finally:
        victim.start()  # the module's cluster stays whole for whatever runs after
