"""What the import tests share: real images built with qemu-img, and waiting for a task to end."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixtures.registry import Api, RegistryServer
from tests.fixtures.tools import qemu_img

TASK_TIMEOUT = 180.0
MiB = 1 << 20


@dataclass(frozen=True)
class Images:
    """Files the tests serve or stage: a raw disk with data, the same as qcow2, a hostile qcow2."""

    root: Path
    raw: Path
    qcow2: Path
    hostile: Path

    def md5(self, path: Path) -> str:
        return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()

    def sha512(self, path: Path) -> str:
        return hashlib.sha512(path.read_bytes()).hexdigest()


def build_images(root: Path, size_mib: int = 24) -> Images:
    root.mkdir(parents=True, exist_ok=True)
    raw = root / "disk.raw"
    with open(raw, "wb") as out:
        out.truncate(size_mib * MiB)
        # Data at a few places (the rest stays holes/zeros): what conversion must carry over.
        for index, offset in enumerate((0, 3 * MiB + 4096, 11 * MiB, size_mib * MiB - 64 * 1024)):
            out.seek(offset)
            out.write(hashlib.sha256(str(index).encode()).digest() * 2048)
    qcow2 = root / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
    hostile = root / "hostile.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", hostile, "16M")
    return Images(root, raw, qcow2, hostile)


def wait_for_task(api: Api, image_id: str, timeout: float = TASK_TIMEOUT) -> dict[str, Any]:
    """The image's newest task once it succeeded or failed (never stuck: the test fails if it is)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = api.get(f"/image/v2/images/{image_id}/tasks")
        assert response.status_code == 200, response.text
        tasks = response.json()["tasks"]
        if tasks:
            last = tasks[-1]
            if last["status"] in ("success", "failure"):
                return last
        time.sleep(0.2)
    raise AssertionError(f"the task of image {image_id} did not end within {timeout} s: {last}")


def image_of(api: Api, image_id: str) -> dict[str, Any]:
    response = api.get(f"/image/v2/images/{image_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def start_import(api: Api, image_id: str, method: dict[str, Any], **body: Any) -> None:
    response = api.post(f"/image/v2/images/{image_id}/import", json={"method": method, **body})
    assert response.status_code == 202, response.text


def web_import(
    api: Api, uri: str, *, disk_format: str | None = "qcow2", **body: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    attributes: dict[str, Any] = {"name": "web"}
    if disk_format is not None:
        attributes.update(disk_format=disk_format, container_format="bare")
    image = api.create_image(**attributes)
    start_import(api, image["id"], {"name": "web-download", "uri": uri}, **body)
    task = wait_for_task(api, image["id"])
    return image_of(api, image["id"]), task


def download(api: Api, image_id: str) -> bytes:
    response = api.get(f"/image/v2/images/{image_id}/file")
    assert response.status_code == 200, response.text
    return response.content


def blob_files(server: RegistryServer) -> list[str]:
    return server.blobs()


def scratch_leftovers(server: RegistryServer) -> list[str]:
    tasks = server.data_dir / "tasks"
    if not tasks.exists():
        return []
    return sorted(os.listdir(tasks))
