"""Faults around staging and exports: nothing is left behind once the sweep has run.

- ``kill -9`` of the server in the middle of ``PUT /stage``, then a restart: the image is
  ``queued`` again and the staged blob is gone (the start-up sweep).
- the client going away mid-stage while the server runs: the same, at once.
- an export past its expiry: the periodic sweep removes its file (and the URL answers 403).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.fixtures.registry import RegistryServer
from tests.registry.imports_common import build_images, image_of
from tests.registry.test_uploads import SLOW_UPLOAD, _wait_for_bytes


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(
        tmp_path / "data", extra_args=["--sweep-interval", "1", "--export-ttl", "2"]
    ) as registry:
        yield registry


def test_kill9_server_mid_stage_then_restart(server: RegistryServer, tmp_path: Path) -> None:
    token = server.token()
    with server.api(token) as api:
        image = api.create_image(name="staging", disk_format="raw", container_format="bare")
    # The slow client of the upload tests, pointed at /stage.
    url = f"{server.url}/image/v2/images/{image['id']}/stage"
    client = subprocess.Popen(
        [*_client_argv(tmp_path), url, token, str(512 << 20)], stdout=subprocess.PIPE, text=True
    )
    _wait_for_bytes(client, 8 << 20)
    with server.api(token) as api:
        assert image_of(api, image["id"])["status"] == "uploading"
    server.kill9()
    client.wait(timeout=60)
    server.start()
    with server.api(server.token()) as api:
        shown = image_of(api, image["id"])
        assert shown["status"] == "queued" and shown["size"] is None
    assert server.blobs() == []


def test_client_gone_mid_stage(server: RegistryServer, tmp_path: Path) -> None:
    token = server.token()
    with server.api(token) as api:
        image = api.create_image(name="staging", disk_format="raw", container_format="bare")
    client = subprocess.Popen(
        [*_client_argv(tmp_path), f"{server.url}/image/v2/images/{image['id']}/stage", token, str(512 << 20)],
        stdout=subprocess.PIPE,
        text=True,
    )
    _wait_for_bytes(client, 8 << 20)
    client.kill()
    client.wait()
    deadline = time.monotonic() + 60
    with server.api(token) as api:
        while image_of(api, image["id"])["status"] != "queued" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert image_of(api, image["id"])["status"] == "queued"
    assert server.blobs() == []


def test_expired_export_is_swept(server: RegistryServer, tmp_path: Path) -> None:
    images = build_images(tmp_path / "images", size_mib=4)
    with server.api(server.token()) as api:
        image = api.create_image(name="e", disk_format="qcow2", container_format="bare")
        assert api.upload(image["id"], images.qcow2.read_bytes()).status_code == 204
        response = api.post(f"/image/v2/images/{image['id']}/actions/export", json={"format": "raw"})
        assert response.status_code == 202
        task_id = response.json()["id"]
        deadline = time.monotonic() + 120
        task = response.json()
        while task["status"] not in ("success", "failure") and time.monotonic() < deadline:
            time.sleep(0.1)
            task = api.get(f"/image/v2/tasks/{task_id}").json()
        assert task["status"] == "success", task
        assert len(server.blobs()) == 2  # the image and its export
        deadline = time.monotonic() + 30
        while len(server.blobs()) > 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(server.blobs()) == 1
        assert httpx.get(task["result"]["download_url"], timeout=30).status_code == 403


def _client_argv(tmp_path: Path) -> list[str]:
    """The slow-upload client of the upload tests (it PUTs to whatever URL it is given)."""
    script = tmp_path / "slow_client.py"
    script.write_text(SLOW_UPLOAD)
    return [sys.executable, str(script)]
