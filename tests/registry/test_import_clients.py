"""Real clients drive imports: python-openstackclient (``image create --import``, ``image stage``,
``image import`` with web-download and glance-download), and ``imagewright image import --wait``.

glance-download copies an image from a second ``imagewright serve`` (its own catalog, identity
and store), configured as ``--glance-region RegionTwo=imagewright@<its clouds.yaml>``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.image_http import ImageHTTPServer, image_http_server
from tests.fixtures.registry import BIN, RegistryServer, _clean_env
from tests.registry.imports_common import Images, build_images, download, image_of, wait_for_task


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return build_images(tmp_path_factory.mktemp("client-images"), size_mib=8)


@pytest.fixture(scope="module")
def http(images: Images) -> Iterator[ImageHTTPServer]:
    with image_http_server(images.root) as server:
        yield server


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("remote-registry") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, http: ImageHTTPServer, remote: RegistryServer
) -> Iterator[RegistryServer]:
    with RegistryServer(
        tmp_path_factory.mktemp("client-registry") / "data",
        extra_args=[
            "--web-download-allow",
            f"{http.url}/",
            "--glance-region",
            f"RegionTwo=imagewright@{remote.data_dir / 'clouds.yaml'}",
        ],
    ) as server:
        yield server


def _openstack_json(registry: RegistryServer, *args: str) -> Any:
    return json.loads(registry.openstack(*args, "-f", "json").stdout)


def _create_queued(registry: RegistryServer, name: str) -> dict[str, Any]:
    """(OSC's ``image create`` uploads its standard input when that is not a terminal: raw API.)"""
    with registry.api(registry.token()) as api:
        return api.create_image(name=name, disk_format="qcow2", container_format="bare")


def _wait_active(registry: RegistryServer, image_id: str) -> dict[str, Any]:
    with registry.api(registry.token()) as api:
        task = wait_for_task(api, image_id)
        assert task["status"] == "success", task
        return image_of(api, image_id)


def test_openstack_image_create_import_uses_glance_direct(registry: RegistryServer, images: Images) -> None:
    created = _openstack_json(
        registry,
        "image",
        "create",
        "--import",
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "--file",
        str(images.qcow2),
        "osc-direct",
    )
    image = _wait_active(registry, created["id"])
    assert image["checksum"] == images.md5(images.qcow2)
    with registry.api(registry.token()) as api:
        task = api.get(f"/image/v2/images/{created['id']}/tasks").json()["tasks"][-1]
        assert task["input"]["import_req"]["method"]["name"] == "glance-direct"
    shown = _openstack_json(registry, "image", "show", created["id"])
    assert shown["status"] == "active" and shown["checksum"] == images.md5(images.qcow2)


def test_openstack_stage_then_import(registry: RegistryServer, images: Images) -> None:
    created = _create_queued(registry, "osc-stage")
    registry.openstack("image", "stage", "--file", str(images.qcow2), created["id"])
    assert _openstack_json(registry, "image", "show", created["id"])["status"] == "uploading"
    registry.openstack("image", "import", created["id"], "--method", "glance-direct")
    assert _wait_active(registry, created["id"])["checksum"] == images.md5(images.qcow2)


def test_openstack_image_import_web_download(
    registry: RegistryServer, http: ImageHTTPServer, images: Images
) -> None:
    created = _create_queued(registry, "osc-web")
    registry.openstack(
        "image", "import", created["id"], "--method", "web-download", "--uri", f"{http.url}/files/disk.qcow2"
    )
    assert _wait_active(registry, created["id"])["os_hash_value"] == images.sha512(images.qcow2)
    info = _openstack_json(registry, "image", "import", "info")
    assert "web-download" in json.dumps(info)


def test_openstack_glance_download_from_another_registry(
    registry: RegistryServer, remote: RegistryServer, images: Images
) -> None:
    with remote.api(remote.token()) as api:
        source = api.create_image(name="remote", disk_format="qcow2", container_format="bare")
        assert api.upload(source["id"], images.qcow2.read_bytes()).status_code == 204
        remote_image = image_of(api, source["id"])
    info = json.dumps(_openstack_json(registry, "image", "import", "info"))
    assert "glance-download" in info
    created = _create_queued(registry, "copied")
    registry.openstack(
        "image",
        "import",
        created["id"],
        "--method",
        "glance-download",
        "--remote-image",
        source["id"],
        "--remote-region",
        "RegionTwo",
        # openstacksdk sends the region and image only together with the interface (its bug).
        "--remote-service-interface",
        "public",
    )
    image = _wait_active(registry, created["id"])
    assert image["checksum"] == remote_image["checksum"] == images.md5(images.qcow2)
    assert image["os_hash_value"] == remote_image["os_hash_value"]
    with registry.api(registry.token()) as api:
        assert download(api, created["id"]) == images.qcow2.read_bytes()
        task = api.get(f"/image/v2/images/{created['id']}/tasks").json()["tasks"][-1]
        # The remote token the worker used is nowhere in what the API shows.
        assert "token" not in json.dumps(task).lower()


def test_glance_download_of_an_unknown_remote_image_is_refused(registry: RegistryServer) -> None:
    with registry.api(registry.token()) as api:
        image = api.create_image(name="nothing", disk_format="qcow2", container_format="bare")
        response = api.post(
            f"/image/v2/images/{image['id']}/import",
            json={
                "method": {
                    "name": "glance-download",
                    "glance_image_id": "00000000-0000-4000-8000-000000000000",
                    "glance_region": "RegionTwo",
                }
            },
        )
        assert response.status_code == 400, response.text
        assert "RegionTwo" in response.json()["message"]
        wrong_region = api.post(
            f"/image/v2/images/{image['id']}/import",
            json={
                "method": {
                    "name": "glance-download",
                    "glance_image_id": "00000000-0000-4000-8000-000000000000",
                    "glance_region": "Atlantis",
                }
            },
        )
        assert wrong_region.status_code == 400 and "Atlantis" in wrong_region.json()["message"]


def _imagewright(registry: RegistryServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = _clean_env()
    return subprocess.run(
        [
            str(BIN / "imagewright"),
            *args,
            "--cloud",
            "imagewright",
            "--clouds-file",
            str(registry.data_dir / "clouds.yaml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_imagewright_image_import_waits_until_active(
    registry: RegistryServer, http: ImageHTTPServer, images: Images
) -> None:
    started = time.monotonic()
    result = _imagewright(
        registry, "image", "import", f"{http.url}/files/disk.qcow2", "--name", "cli", "--wait", "--json"
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["image"]["status"] == "active" and out["task"]["status"] == "success"
    assert out["image"]["checksum"] == images.md5(images.qcow2)
    assert out["image"]["disk_format"] == "qcow2"  # found by the registry: the CLI declared none
    assert time.monotonic() - started < 300


def test_imagewright_image_import_prints_the_task_message_on_failure(
    registry: RegistryServer, http: ImageHTTPServer
) -> None:
    result = _imagewright(
        registry, "image", "import", f"{http.url}/files/hostile.qcow2", "--name", "bad", "--wait"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("imagewright: error: The import of ")
    assert "backing file" in result.stderr
    assert "Traceback" not in result.stderr


def test_imagewright_image_import_refused_url_is_one_sentence(registry: RegistryServer) -> None:
    result = _imagewright(registry, "image", "import", "http://169.254.169.254/latest/", "--name", "ssrf")
    assert result.returncode == 1
    assert "does not pass filtering" in result.stderr and "link-local" in result.stderr
    # The image it created for the import is gone again.
    with registry.api(registry.token()) as api:
        names = [image["name"] for image in api.get("/image/v2/images").json()["images"]]
        assert "ssrf" not in names


def test_imagewright_image_import_without_wait_returns_at_once(
    registry: RegistryServer, http: ImageHTTPServer, images: Images, tmp_path: Path
) -> None:
    result = _imagewright(
        registry, "image", "import", f"{http.url}/slow/disk.qcow2", "--name", "nowait", "--json"
    )
    assert result.returncode == 0, result.stderr
    image = json.loads(result.stdout)["image"]
    assert image["status"] in ("importing", "active")
    assert _wait_active(registry, image["id"])["checksum"] == images.md5(images.qcow2)
