"""Conversion on import of compressed images (``--convert-to raw``): convert's own path.

A ``disk.raw.gz``/``.xz`` (how cloud images travel) imported by web-download into a store that
converts is judged and converted by ``imagewright convert``'s streamed path: every decompressed
byte judged as it goes by, no scratch copy, and the content checked against the declared formats
(``container_format`` ``compressed``). The image holds more data than the upload gate examines in
memory (32 MiB): without conversion it is refused (stored as it came, it could not be examined in
full); with conversion it turns ``active`` as raw, equal to the source (``qemu-img compare``),
hashed as stored. A hostile compressed image is refused before anything is stored.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.image_http import ImageHTTPServer, image_http_server
from tests.fixtures.registry import Api, RegistryServer
from tests.fixtures.tools import qemu_img
from tests.registry.imports_common import download, image_of, scratch_leftovers, start_import, wait_for_task

MiB = 1 << 20
SIZE = 96 * MiB


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """disk.raw (8 MiB random + 40 MiB of a non-zero pattern, the rest zeros), its .gz and .xz;
    a qcow2 backed by /etc/passwd, gzipped; a gzip with data after its end."""
    root = tmp_path_factory.mktemp("compressed-sources")
    raw = root / "disk.raw"
    with raw.open("wb") as out:
        out.truncate(SIZE)
        out.seek(MiB)
        out.write(os.urandom(8 * MiB))
        out.seek(32 * MiB)
        out.write(hashlib.sha256(b"pattern").digest() * (40 * MiB // 32))
    for tool, suffix in (("gzip", "gz"), ("xz", "xz")):
        with raw.open("rb") as src, (root / f"disk.raw.{suffix}").open("wb") as dst:
            subprocess.run([tool, "-1", "-c"], stdin=src, stdout=dst, check=True)
    hostile = root / "hostile.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", hostile, "16M")
    with hostile.open("rb") as src, (root / "hostile.qcow2.gz").open("wb") as dst:
        subprocess.run(["gzip", "-c"], stdin=src, stdout=dst, check=True)
    (root / "trailing.raw.gz").write_bytes((root / "disk.raw.gz").read_bytes() + b"hidden second meaning")
    return root


@pytest.fixture(scope="module")
def http(sources: Path) -> Iterator[ImageHTTPServer]:
    with image_http_server(sources) as server:
        yield server


def _import(api: Api, uri: str, **formats: str) -> tuple[dict[str, Any], dict[str, Any]]:
    image = api.create_image(name="compressed", **formats)
    start_import(api, image["id"], {"name": "web-download", "uri": uri})
    task = wait_for_task(api, image["id"])
    return image_of(api, image["id"]), task


def _registry(root: Path, http: ImageHTTPServer, *extra: str) -> RegistryServer:
    return RegistryServer(root / "data", extra_args=["--web-download-allow", f"{http.url}/", *extra])


@pytest.fixture(scope="module")
def converting(tmp_path_factory: pytest.TempPathFactory, http: ImageHTTPServer) -> Iterator[RegistryServer]:
    server = _registry(tmp_path_factory.mktemp("registry-convert"), http, "--convert-to", "raw")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(converting: RegistryServer) -> Iterator[Api]:
    with converting.api(converting.token()) as client:
        yield client


@pytest.mark.parametrize("suffix", ["gz", "xz"])
def test_a_compressed_raw_disk_is_converted_as_it_streams(
    suffix: str, api: Api, http: ImageHTTPServer, sources: Path, converting: RegistryServer, tmp_path: Path
) -> None:
    image, task = _import(
        api, f"{http.url}/files/disk.raw.{suffix}", disk_format="raw", container_format="compressed"
    )
    assert task["status"] == "success", task
    assert image["status"] == "active"
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    data = download(api, image["id"])
    assert image["size"] == image["virtual_size"] == len(data) == SIZE
    assert image["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    copy = tmp_path / "imported.raw"
    copy.write_bytes(data)
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "raw", copy, sources / "disk.raw")
    assert scratch_leftovers(converting) == []


def test_the_declared_container_format_must_match(
    api: Api, http: ImageHTTPServer, converting: RegistryServer
) -> None:
    image, task = _import(api, f"{http.url}/files/disk.raw.gz", disk_format="raw", container_format="bare")
    assert task["status"] == "failure", task
    assert "declare container_format compressed" in task["message"], task["message"]
    assert image["status"] == "queued" and image["size"] is None


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("hostile.qcow2.gz", ("The image is refused", "backing file")),
        ("trailing.raw.gz", ("The image is refused", "after")),
    ],
)
def test_a_hostile_compressed_image_is_refused_and_nothing_is_stored(
    name: str, words: tuple[str, ...], api: Api, http: ImageHTTPServer, converting: RegistryServer
) -> None:
    before = converting.blobs()
    image, task = _import(
        api,
        f"{http.url}/files/{name}",
    )
    assert task["status"] == "failure", task
    for word in words:
        assert word in task["message"], task["message"]
    assert task["message"].endswith("."), task["message"]
    assert image["status"] == "queued" and image["size"] is None
    assert converting.blobs() == before
    assert scratch_leftovers(converting) == []


def test_without_conversion_the_same_image_is_refused_as_too_large_to_examine(
    tmp_path: Path, http: ImageHTTPServer
) -> None:
    server = _registry(tmp_path, http)
    server.start()
    try:
        with server.api(server.token()) as client:
            image, task = _import(
                client, f"{http.url}/files/disk.raw.gz", disk_format="raw", container_format="compressed"
            )
        assert task["status"] == "failure", task
        assert "does not decompress uploads to a scratch disk" in task["message"], task["message"]
        assert image["status"] == "queued" and server.blobs() == []
    finally:
        server.stop()
