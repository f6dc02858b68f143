"""The import, tasks and export endpoints over raw HTTP: who may call them (401/403/404), Glance's
status rules (409/400), glance-direct with conversion, copy-image between stores, and exports.

- Every new endpoint answers 401 without a token, 404 for an image (or task) the caller cannot
  see, 403 where it can see but may not act (reader role, another project's public image).
- glance-direct: stage (``uploading``), import with ``--convert-to raw``: the stored image is raw
  and ``qemu-img compare`` finds it equal to the staged qcow2; hashes are of the stored bytes.
- copy-image with two stores: advertised, copies checked against the image's hashes, ``stores``
  lists both; refused for a store already holding it.
- export: a qcow2 image exported as vmdk (streamOptimized), raw.gz and qcow2; the signed URL
  serves the file with its checksums and Range; a forged or expired signature is 403.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fixtures.registry import Api, RegistryServer
from tests.fixtures.tools import qemu_img, qemu_img_info
from tests.registry.imports_common import (
    Images,
    build_images,
    download,
    image_of,
    start_import,
    wait_for_task,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return build_images(tmp_path_factory.mktemp("api-images"), size_mib=12)


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    root = tmp_path_factory.mktemp("registry-two-stores")
    with RegistryServer(
        root / "data",
        extra_args=[
            "--store",
            f"fast=file://{root}/fast",
            "--store",
            f"bulk=file://{root}/bulk",
            "--convert-to",
            "fast=raw",
            "--convert-to",
            "bulk=raw",
            "--export-ttl",
            "4",
        ],
    ) as server:
        yield server


@pytest.fixture(scope="module")
def admin(two_stores: RegistryServer) -> Iterator[Api]:
    with two_stores.api(two_stores.token()) as api:
        yield api


@pytest.fixture(scope="module")
def people(two_stores: RegistryServer) -> dict[str, Api]:
    """A member and a reader of project 'alpha', and a member of project 'beta'."""
    two_stores.add_project("alpha")
    two_stores.add_project("beta")
    two_stores.add_user("alice", "alpha", "member", "alice-pw-1234")
    two_stores.add_user("rita", "alpha", "reader", "rita-pw-1234")
    two_stores.add_user("bob", "beta", "member", "bob-pw-1234")
    return {
        name: two_stores.api(two_stores.token(name, password, project))
        for name, password, project in (
            ("alice", "alice-pw-1234", "alpha"),
            ("rita", "rita-pw-1234", "alpha"),
            ("bob", "bob-pw-1234", "beta"),
        )
    }


def _blob_files(server: RegistryServer) -> list[Path]:
    root = server.data_dir.parent
    return sorted(p for store in ("fast", "bulk") for p in (root / store).rglob("*") if p.is_file())


def _stage(api: Api, image_id: str, data: bytes) -> httpx.Response:
    return api.put(
        f"/image/v2/images/{image_id}/stage",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def _staged_import(api: Api, images: Images, **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    image = api.create_image(name="direct", disk_format="qcow2", container_format="bare")
    assert _stage(api, image["id"], images.qcow2.read_bytes()).status_code == 204
    assert image_of(api, image["id"])["status"] == "uploading"
    start_import(api, image["id"], {"name": "glance-direct"}, **body)
    return image_of(api, image["id"]), wait_for_task(api, image["id"])


# --- glance-direct + conversion -----------------------------------------------------------------


def test_glance_direct_is_converted_to_raw_and_compares_equal(
    admin: Api, images: Images, two_stores: RegistryServer, tmp_path: Path
) -> None:
    image, task = _staged_import(admin, images)
    assert task["status"] == "success", task
    shown = image_of(admin, image["id"])
    assert shown["status"] == "active"
    assert (shown["disk_format"], shown["container_format"]) == ("raw", "bare")
    data = download(admin, image["id"])
    assert shown["size"] == len(data) == shown["virtual_size"] == images.raw.stat().st_size
    assert shown["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    copy = tmp_path / "imported.raw"
    copy.write_bytes(data)
    qemu_img("compare", "-f", "raw", "-F", "qcow2", copy, images.qcow2)
    assert shown["stores"] == "fast"
    # The staged data is gone: only the converted blob remains.
    assert len([p for p in _blob_files(two_stores) if image["id"] in p.name]) == 1


def test_stage_needs_a_queued_image_and_octet_stream(admin: Api, images: Images) -> None:
    image = admin.create_image(name="stage-rules", disk_format="qcow2", container_format="bare")
    response = admin.put(
        f"/image/v2/images/{image['id']}/stage", content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert _stage(admin, image["id"], images.qcow2.read_bytes()).status_code == 204
    again = _stage(admin, image["id"], images.qcow2.read_bytes())
    assert again.status_code == 409
    assert "uploading" in again.json()["message"]


def test_glance_direct_needs_staged_data(admin: Api) -> None:
    image = admin.create_image(name="not-staged", disk_format="qcow2", container_format="bare")
    response = admin.post(
        f"/image/v2/images/{image['id']}/import", json={"method": {"name": "glance-direct"}}
    )
    assert response.status_code == 409
    assert response.json()["message"] == "Image needs to be staged before 'glance-direct' method can be used."


def test_bad_import_requests(admin: Api, images: Images) -> None:
    image = admin.create_image(name="bad", disk_format="qcow2", container_format="bare")
    path = f"/image/v2/images/{image['id']}/import"
    assert admin.post(path, json={"method": {"name": "teleport"}}).status_code == 400
    assert admin.post(path, json={"nothing": 1}).status_code == 400
    assert admin.post(path, json={"method": {"name": "web-download"}}).status_code == 400
    unknown = admin.post(
        path, json={"method": {"name": "web-download", "uri": "https://x.test/"}, "stores": ["nope"]}
    )
    assert unknown.status_code == 409 and "nope" in unknown.json()["message"]
    both = admin.post(
        path,
        json={
            "method": {"name": "web-download", "uri": "https://x.test/"},
            "stores": ["fast"],
            "all_stores": True,
        },
    )
    assert both.status_code == 400


def test_a_second_import_while_one_runs_is_a_conflict(admin: Api, images: Images) -> None:
    image = admin.create_image(name="twice", disk_format="qcow2", container_format="bare")
    assert _stage(admin, image["id"], images.qcow2.read_bytes()).status_code == 204
    start_import(admin, image["id"], {"name": "glance-direct"})
    second = admin.post(f"/image/v2/images/{image['id']}/import", json={"method": {"name": "glance-direct"}})
    # Either the first is still running (409, the lock) or it is done (409, active).
    assert second.status_code == 409, second.text
    assert wait_for_task(admin, image["id"])["status"] == "success"


# --- copy-image ---------------------------------------------------------------------------------


def test_copy_image_is_advertised_with_two_stores(admin: Api) -> None:
    methods = admin.get("/image/v2/info/import").json()["import-methods"]["value"]
    assert methods == ["glance-direct", "web-download", "copy-image"]


def test_copy_image_copies_into_the_other_store(
    admin: Api, images: Images, two_stores: RegistryServer
) -> None:
    image, task = _staged_import(admin, images, stores=["fast"])
    assert task["status"] == "success"
    start_import(admin, image["id"], {"name": "copy-image"}, stores=["bulk"])
    tasks = admin.get(f"/image/v2/images/{image['id']}/tasks").json()["tasks"]
    copy_task = wait_for_task(admin, image["id"])
    assert copy_task["id"] != tasks[0]["id"] or len(tasks) == 2
    assert copy_task["status"] == "success", copy_task
    shown = image_of(admin, image["id"])
    assert shown["stores"] == "fast,bulk"
    assert shown["status"] == "active"
    files = [p for p in _blob_files(two_stores) if image["id"] in p.name]
    assert sorted(p.parent.parent.name for p in files) == ["bulk", "fast"]
    assert files[0].read_bytes() == files[1].read_bytes()
    again = admin.post(
        f"/image/v2/images/{image['id']}/import", json={"method": {"name": "copy-image"}, "stores": ["bulk"]}
    )
    assert again.status_code == 400 and "already present" in again.json()["message"]
    # all_stores with every store holding it: nothing to do, no task.
    count = len(admin.get(f"/image/v2/images/{image['id']}/tasks").json()["tasks"])
    nothing = admin.post(
        f"/image/v2/images/{image['id']}/import", json={"method": {"name": "copy-image"}, "all_stores": True}
    )
    assert nothing.status_code == 202
    assert len(admin.get(f"/image/v2/images/{image['id']}/tasks").json()["tasks"]) == count
    # Deleting the image removes every copy.
    assert admin.delete(f"/image/v2/images/{image['id']}").status_code == 204
    assert [p for p in _blob_files(two_stores) if image["id"] in p.name] == []


def test_copy_image_needs_an_active_image(admin: Api) -> None:
    image = admin.create_image(name="queued", disk_format="qcow2", container_format="bare")
    response = admin.post(
        f"/image/v2/images/{image['id']}/import", json={"method": {"name": "copy-image"}, "stores": ["bulk"]}
    )
    assert response.status_code == 409
    assert response.json()["message"] == "Only images with status active can be targeted for copying."


# --- who may call what --------------------------------------------------------------------------


def _endpoints(image_id: str, task_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    octet = {"content": b"data", "headers": {"Content-Type": "application/octet-stream"}}
    return [
        ("GET", "/image/v2/info/import", {}),
        ("PUT", f"/image/v2/images/{image_id}/stage", octet),
        ("POST", f"/image/v2/images/{image_id}/import", {"json": {"method": {"name": "glance-direct"}}}),
        ("GET", f"/image/v2/images/{image_id}/tasks", {}),
        ("GET", "/image/v2/tasks", {}),
        ("GET", f"/image/v2/tasks/{task_id}", {}),
        ("POST", f"/image/v2/images/{image_id}/actions/export", {"json": {"format": "qcow2"}}),
    ]


def test_every_new_endpoint_needs_a_token(two_stores: RegistryServer, admin: Api, images: Images) -> None:
    image, task = _staged_import(admin, images)
    with two_stores.api(None) as anonymous:
        for method, path, kwargs in _endpoints(image["id"], task["id"]):
            response = anonymous.request(method, path, **kwargs)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Keystone uri=")


def test_invisible_images_and_tasks_are_404(people: dict[str, Api], images: Images) -> None:
    alice, bob = people["alice"], people["bob"]
    image, task = _staged_import(alice, images)
    assert task["status"] == "success"
    private = alice.create_image(
        name="private", disk_format="qcow2", container_format="bare", visibility="private"
    )
    for method, path, kwargs in _endpoints(private["id"], task["id"]):
        if path in ("/image/v2/info/import", "/image/v2/tasks"):
            continue
        response = bob.request(method, path, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
    unknown = "00000000-0000-4000-8000-000000000000"
    for method, path, kwargs in _endpoints(unknown, unknown):
        if path in ("/image/v2/info/import", "/image/v2/tasks"):
            continue
        assert alice.request(method, path, **kwargs).status_code == 404, path
    # Bob's task list does not show Alice's task; Alice's does.
    assert task["id"] not in {t["id"] for t in bob.get("/image/v2/tasks").json()["tasks"]}
    listed = alice.get("/image/v2/tasks").json()
    assert task["id"] in {t["id"] for t in listed["tasks"]}
    assert "input" not in listed["tasks"][0] and listed["schema"] == "/v2/schemas/tasks"
    assert alice.get(f"/image/v2/tasks/{task['id']}").json()["result"] == {"image_id": image["id"]}


def test_forbidden_where_visible_but_not_allowed(
    people: dict[str, Api], admin: Api, images: Images, two_stores: RegistryServer
) -> None:
    alice, rita, bob = people["alice"], people["rita"], people["bob"]
    own = alice.create_image(name="alphas", disk_format="qcow2", container_format="bare")
    staged = rita.put(
        f"/image/v2/images/{own['id']}/stage",
        content=b"x",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert staged.status_code == 403 and "member role" in staged.json()["message"]
    imported = rita.post(
        f"/image/v2/images/{own['id']}/import",
        json={"method": {"name": "web-download", "uri": "https://x.test/"}},
    )
    assert imported.status_code == 403
    public, _task = _staged_import(admin, images)
    admin.patch(
        f"/image/v2/images/{public['id']}", [{"op": "replace", "path": "/visibility", "value": "public"}]
    )
    for response in (
        bob.put(
            f"/image/v2/images/{public['id']}/stage",
            content=b"x",
            headers={"Content-Type": "application/octet-stream"},
        ),
        bob.post(
            f"/image/v2/images/{public['id']}/import",
            json={"method": {"name": "copy-image"}, "stores": ["bulk"]},
        ),
    ):
        assert response.status_code == 403, response.text
        assert "another project" in response.json()["message"]
    # A reader may see the public image but not export (download) it.
    exported = rita.post(f"/image/v2/images/{public['id']}/actions/export", json={"format": "qcow2"})
    assert exported.status_code == 403 and "member role" in exported.json()["message"]


# --- exports ------------------------------------------------------------------------------------


def _export(api: Api, image_id: str, fmt: str) -> dict[str, Any]:
    response = api.post(f"/image/v2/images/{image_id}/actions/export", json={"format": fmt})
    assert response.status_code == 202, response.text
    assert response.headers["Location"].endswith(f"/image/v2/tasks/{response.json()['id']}")
    task_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        task = api.get(f"/image/v2/tasks/{task_id}").json()
        if task["status"] in ("success", "failure"):
            return dict(task)
        time.sleep(0.2)
    raise AssertionError("the export did not end")


def test_exports_are_served_by_signed_urls(admin: Api, images: Images, tmp_path: Path) -> None:
    image, task = _staged_import(admin, images)
    assert task["status"] == "success"
    for fmt, check in (("vmdk", "vmdk"), ("qcow2", "qcow2"), ("raw.gz", None)):
        export = _export(admin, image["id"], fmt)
        assert export["status"] == "success", export
        assert export["type"] == "image_export"
        result = export["result"]
        url = result["download_url"]
        assert "signature=" in url and "expires=" in url
        with httpx.Client(timeout=60) as anonymous:
            response = anonymous.get(url)
            assert response.status_code == 200, response.text
            data = response.content
            assert len(data) == result["size"]
            assert response.headers["Content-MD5"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
            assert (
                response.headers["X-Checksum-SHA256"]
                == hashlib.sha256(data).hexdigest()
                == result["checksums"]["sha256"]
            )
            part = anonymous.get(url, headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == data[100:200]
            assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
            forged = url.replace("signature=", "signature=0")
            assert anonymous.get(forged).status_code == 403
        path = tmp_path / f"export.{fmt}"
        if fmt == "raw.gz":
            path.write_bytes(gzip.decompress(data))
            qemu_img("compare", "-f", "raw", "-F", "qcow2", path, images.qcow2)
        else:
            path.write_bytes(data)
            info = qemu_img_info(path)
            assert info["format"] == check
            if fmt == "vmdk":
                assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
            qemu_img("compare", "-F", "qcow2", path, images.qcow2)


def test_export_urls_expire(admin: Api, images: Images, two_stores: RegistryServer) -> None:
    image, _task = _staged_import(admin, images)
    export = _export(admin, image["id"], "qcow2")
    url = export["result"]["download_url"]
    time.sleep(5)  # --export-ttl 4
    response = httpx.get(url, timeout=30)
    assert response.status_code == 403 and "expired" in response.json()["message"]


def test_export_rules(admin: Api, two_stores: RegistryServer) -> None:
    queued = admin.create_image(name="nothing", disk_format="qcow2", container_format="bare")
    response = admin.post(f"/image/v2/images/{queued['id']}/actions/export", json={"format": "qcow2"})
    assert response.status_code == 409
    bad = admin.post(f"/image/v2/images/{queued['id']}/actions/export", json={"format": "iso"})
    assert bad.status_code == 400 and "qcow2" in bad.json()["message"]
    unsigned = httpx.get(f"{two_stores.url}/image/v2/exports/{queued['id']}/x.qcow2", timeout=30)
    assert unsigned.status_code == 403 and "not signed" in unsigned.json()["message"]


def test_export_is_documented_in_the_schemas(admin: Api) -> None:
    schema = admin.get("/image/v2/schemas/export").json()
    assert set(schema["properties"]["format"]["enum"]) >= {"qcow2", "vmdk", "raw.gz"}
    task_schema = admin.get("/image/v2/schemas/task").json()
    assert task_schema["properties"]["status"]["enum"] == ["pending", "processing", "success", "failure"]
    assert "progress" in task_schema["properties"]
