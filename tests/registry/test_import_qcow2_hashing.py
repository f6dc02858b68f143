"""A qcow2 imported by web-download into a store that converts to raw: hashed as it arrives,
judged and converted only once complete (``service.tasks.importing._acquire_converting``,
``ops.convert.guest_reader``).

The md5 and sha512 the image gets (``checksum``, ``os_hash_value``) are computed from the
download as it grows, and the raw output written in the same pass (a candidate in the task's
scratch, taken after the gate): checked here against the bytes the registry serves (hashlib)
and the source (``qemu-img compare``), for a plain, a broken-off-and-resumed, a chunked (no
size until the end) and a held download — held half-way, no conversion output exists (the
gate has not judged the whole image yet: the candidate is only in the task's scratch, and
nothing is stored). A download that ends short fails with its own reason; a hostile qcow2 is
refused by the gate with its reason and nothing is stored.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.image_http import ImageHTTPServer, image_http_server
from tests.fixtures.registry import Api, RegistryServer
from tests.fixtures.tools import qemu_img
from tests.registry.imports_common import download, image_of, scratch_leftovers, start_import, wait_for_task

MiB = 1 << 20
SIZE = 48 * MiB


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """disk.qcow2 (random data, a pattern, holes) and a qcow2 backed by /etc/passwd."""
    root = tmp_path_factory.mktemp("qcow2-sources")
    raw = root / "disk.raw"
    with raw.open("wb") as out:
        out.truncate(SIZE)
        out.write(os.urandom(6 * MiB))
        out.seek(20 * MiB)
        out.write(hashlib.sha256(b"pattern").digest() * (12 * MiB // 32))
        out.seek(SIZE - MiB)
        out.write(os.urandom(MiB))
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, root / "disk.qcow2")
    qemu_img("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", root / "hostile.qcow2", "16M")
    return root


@pytest.fixture(scope="module")
def http(sources: Path) -> Iterator[ImageHTTPServer]:
    with image_http_server(sources) as server:
        yield server


@pytest.fixture(scope="module")
def converting(tmp_path_factory: pytest.TempPathFactory, http: ImageHTTPServer) -> Iterator[RegistryServer]:
    root = tmp_path_factory.mktemp("registry-qcow2")
    extra = ["--web-download-allow", f"{http.url}/", "--convert-to", "raw"]
    with RegistryServer(root / "data", extra_args=extra) as server:
        yield server


@pytest.fixture(scope="module")
def api(converting: RegistryServer) -> Iterator[Api]:
    with converting.api(converting.token()) as client:
        yield client


def _import(api: Api, uri: str) -> tuple[dict[str, Any], dict[str, Any]]:
    image = api.create_image(name="qcow2", disk_format="qcow2", container_format="bare")
    start_import(api, image["id"], {"name": "web-download", "uri": uri})
    task = wait_for_task(api, image["id"])
    return image_of(api, image["id"]), task


def _check_imported(api: Api, image: dict[str, Any], sources: Path, tmp_path: Path) -> None:
    assert image["status"] == "active"
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    data = download(api, image["id"])
    assert image["size"] == image["virtual_size"] == len(data) == SIZE
    assert image["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert image["os_hash_algo"] == "sha512"
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    copy = tmp_path / "imported.raw"
    copy.write_bytes(data)
    assert "Images are identical" in qemu_img(
        "compare", "-f", "raw", "-F", "qcow2", copy, sources / "disk.qcow2"
    )


@pytest.mark.parametrize("way", ["files", "flaky", "chunked"])
def test_a_qcow2_is_hashed_as_it_arrives_and_stored_with_those_digests(
    way: str, api: Api, http: ImageHTTPServer, sources: Path, converting: RegistryServer, tmp_path: Path
) -> None:
    image, task = _import(api, f"{http.url}/{way}/disk.qcow2")
    assert task["status"] == "success", task
    _check_imported(api, image, sources, tmp_path)
    line = next(line for line in converting.log().splitlines() if f"task {task['id']} converted" in line)
    assert "hashed as it arrived" in line, line
    assert scratch_leftovers(converting) == []


def test_held_half_way_nothing_is_converted_until_the_whole_image_is_judged(
    api: Api, http: ImageHTTPServer, sources: Path, converting: RegistryServer, tmp_path: Path
) -> None:
    before = converting.blobs()
    image = api.create_image(name="held", disk_format="qcow2", container_format="bare")
    start_import(api, image["id"], {"name": "web-download", "uri": f"{http.url}/gated/disk.qcow2"})
    assert http.gated.wait(120)
    tasks = converting.data_dir / "tasks"
    downloads = [*tasks.rglob("download")]
    deadline = time.monotonic() + 120
    while not downloads or downloads[0].stat().st_size < (sources / "disk.qcow2").stat().st_size // 2:
        assert time.monotonic() < deadline, "the first half of the download did not arrive"
        time.sleep(0.05)
        downloads = [*tasks.rglob("download")]
    time.sleep(1)  # (time for a conversion to start, if one wrongly would)
    assert not list(tasks.rglob("*converted*"))
    candidates = list(tasks.rglob("prewritten.raw"))  # written as it arrives, in the scratch only
    assert all(path.parent == downloads[0].parent for path in candidates)
    assert image_of(api, image["id"])["status"] == "importing"
    assert converting.blobs() == before
    http.gate.set()
    task = wait_for_task(api, image["id"])
    assert task["status"] == "success", task
    _check_imported(api, image_of(api, image["id"]), sources, tmp_path)


def test_a_download_that_ends_short_fails_with_its_reason(
    api: Api, http: ImageHTTPServer, converting: RegistryServer
) -> None:
    before = converting.blobs()
    image, task = _import(api, f"{http.url}/lying/disk.qcow2")
    assert task["status"] == "failure", task
    assert "did not resume it" in task["message"], task["message"]
    assert image["status"] == "queued"
    assert converting.blobs() == before
    assert scratch_leftovers(converting) == []


def test_a_hostile_qcow2_is_refused_by_the_gate_and_nothing_is_stored(
    api: Api, http: ImageHTTPServer, converting: RegistryServer
) -> None:
    before = converting.blobs()
    image, task = _import(api, f"{http.url}/files/hostile.qcow2")
    assert task["status"] == "failure", task
    assert "backing file" in task["message"], task["message"]
    assert image["status"] == "queued"
    assert converting.blobs() == before
    assert scratch_leftovers(converting) == []
