"""Conversion on import of compressed images (``--convert-to raw``): convert's own path.

A ``disk.raw.gz``/``.xz`` (how cloud images travel) imported by web-download into a store that
converts is judged and converted by ``imagewright convert``'s streamed path: every decompressed
byte judged as it goes by, no scratch copy, and the content checked against the declared formats
(``container_format`` ``compressed``). The image holds more data than the upload gate examines in
memory (32 MiB): without conversion it is refused (stored as it came, it could not be examined in
full); with conversion it turns ``active`` as raw, equal to the source (``qemu-img compare``),
hashed as stored. A hostile compressed image is refused before anything is stored.

``--keep-original``: the data as it arrived stays too — the download moved into the store, or the
staged blob itself — as a second blob that is not a location of the image (every location serves
the image's bytes), described by read-only ``os_imagewright_original_*`` properties (formats,
size, md5, sha512, store), and deleted with the image. Without it (the default, as Glance) the
original is discarded.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
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
SIZE = 96 * MiB


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """disk.raw (8 MiB random + 40 MiB of a non-zero pattern, the rest zeros), its .gz, .xz and qcow2;
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
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, root / "disk.qcow2")
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
    with _registry(tmp_path_factory.mktemp("registry-convert"), http, "--convert-to", "raw") as server:
        yield server


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


@pytest.mark.parametrize("way", ["flaky", "chunked", "slow"])
def test_converted_while_downloading_from_servers_that_break_off_resume_or_trickle(
    way: str, api: Api, http: ImageHTTPServer, sources: Path, converting: RegistryServer, tmp_path: Path
) -> None:
    """The conversion reads the download as it arrives: a broken-off download resumed with
    Range, a chunked one (no size known until the end), a slow one — each ends equal."""
    image, task = _import(
        api, f"{http.url}/{way}/disk.raw.gz", disk_format="raw", container_format="compressed"
    )
    assert task["status"] == "success", task
    copy = tmp_path / "imported.raw"
    copy.write_bytes(download(api, image["id"]))
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "raw", copy, sources / "disk.raw")
    assert scratch_leftovers(converting) == []


def test_the_conversion_starts_before_the_download_ends(
    api: Api, http: ImageHTTPServer, sources: Path, converting: RegistryServer, tmp_path: Path
) -> None:
    """``/gated/`` sends half the file and holds the rest: convert's output is already being
    written in the task's scratch directory while the download waits (for gzip: the stream is
    being checked as it arrives). Then the rest comes and the import completes, equal."""
    image = api.create_image(name="gated", disk_format="raw", container_format="compressed")
    start_import(api, image["id"], {"name": "web-download", "uri": f"{http.url}/gated/disk.raw.gz"})
    assert http.gated.wait(120)
    tasks = converting.data_dir / "tasks"
    deadline = time.monotonic() + 120
    while not list(tasks.rglob(".converted.raw.*")):
        assert time.monotonic() < deadline, "convert did not start while the download was held"
        time.sleep(0.05)
    assert not http.gate.is_set()  # (the download is still held: half the file is all there is)
    http.gate.set()
    task = wait_for_task(api, image["id"])
    assert task["status"] == "success", task
    copy = tmp_path / "imported.raw"
    copy.write_bytes(download(api, image["id"]))
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "raw", copy, sources / "disk.raw")


def test_a_download_that_ends_short_fails_the_conversion_reading_it(
    api: Api, http: ImageHTTPServer, converting: RegistryServer
) -> None:
    """``/lying/`` announces 1 MiB more than it sends and refuses to resume: the conversion,
    which was reading the download as it arrived, fails with the download's reason."""
    before = converting.blobs()
    image, task = _import(
        api, f"{http.url}/lying/disk.raw.gz", disk_format="raw", container_format="compressed"
    )
    assert task["status"] == "failure", task
    assert "did not resume it" in task["message"], task["message"]
    assert image["status"] == "queued" and image["size"] is None
    assert converting.blobs() == before
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
    with _registry(tmp_path, http) as server:
        with server.api(server.token()) as client:
            image, task = _import(
                client, f"{http.url}/files/disk.raw.gz", disk_format="raw", container_format="compressed"
            )
        assert task["status"] == "failure", task
        assert "does not decompress uploads to a scratch disk" in task["message"], task["message"]
        assert image["status"] == "queued" and server.blobs() == []


# --- --keep-original ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keeping(
    tmp_path_factory: pytest.TempPathFactory, http: ImageHTTPServer, sources: Path
) -> Iterator[RegistryServer]:
    with _registry(
        tmp_path_factory.mktemp("registry-keep"), http, "--convert-to", "raw", "--keep-original"
    ) as server:
        yield server


def _blob_bytes(server: RegistryServer) -> list[bytes]:
    return sorted((server.images_dir / name).read_bytes() for name in server.blobs())


def _original(image: dict[str, Any]) -> dict[str, Any]:
    prefix = "os_imagewright_original_"
    return {key.removeprefix(prefix): value for key, value in image.items() if key.startswith(prefix)}


def test_by_default_the_original_is_discarded(
    api: Api, http: ImageHTTPServer, sources: Path, converting: RegistryServer
) -> None:
    before = len(converting.blobs())
    image, task = _import(
        api, f"{http.url}/files/disk.raw.xz", disk_format="raw", container_format="compressed"
    )
    assert task["status"] == "success", task
    assert _original(image) == {}
    assert len(converting.blobs()) == before + 1


@pytest.mark.parametrize(
    ("name", "formats"), [("disk.raw.gz", ("raw", "compressed")), ("disk.qcow2", ("qcow2", "bare"))]
)
def test_kept_original_is_a_second_blob_described_by_the_image(
    name: str,
    formats: tuple[str, str],
    keeping: RegistryServer,
    http: ImageHTTPServer,
    sources: Path,
    tmp_path: Path,
) -> None:
    with keeping.api(keeping.token()) as client:
        source = (sources / name).read_bytes()
        before = _blob_bytes(keeping)
        image, task = _import(
            client, f"{http.url}/files/{name}", disk_format=formats[0], container_format=formats[1]
        )
        assert task["status"] == "success", task
        assert (image["disk_format"], image["container_format"], image["size"]) == ("raw", "bare", SIZE)
        data = download(client, image["id"])
        assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
        assert _original(image) == {
            "disk_format": formats[0],
            "container_format": formats[1],
            "size": str(len(source)),
            "checksum": hashlib.md5(source, usedforsecurity=False).hexdigest(),
            "os_hash_algo": "sha512",
            "os_hash_value": hashlib.sha512(source).hexdigest(),
            "store": "default",
        }
        # Two blobs: the image's data (what every location serves), and the original as it came.
        assert _blob_bytes(keeping) == sorted([*before, data, source])
        assert image["stores"] == "default"
        # The facts are the server's: no client may write them.
        refused = client.patch(
            f"/image/v2/images/{image['id']}",
            [{"op": "replace", "path": "/os_imagewright_original_size", "value": "1"}],
        )
        assert refused.status_code == 403, refused.text
        # Deleting the image deletes both.
        assert client.delete(f"/image/v2/images/{image['id']}").status_code == 204
        assert _blob_bytes(keeping) == before
        assert scratch_leftovers(keeping) == []


def test_kept_original_of_glance_direct_is_the_staged_blob(keeping: RegistryServer, sources: Path) -> None:
    staged = (sources / "disk.raw.gz").read_bytes()
    with keeping.api(keeping.token()) as client:
        before = _blob_bytes(keeping)
        image = client.create_image(name="staged", disk_format="raw", container_format="compressed")
        response = client.put(
            f"/image/v2/images/{image['id']}/stage",
            content=staged,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 204, response.text
        start_import(client, image["id"], {"name": "glance-direct"})
        task = wait_for_task(client, image["id"])
        assert task["status"] == "success", task
        shown = image_of(client, image["id"])
        assert _original(shown)["os_hash_value"] == hashlib.sha512(staged).hexdigest()
        assert _original(shown)["container_format"] == "compressed"
        assert _blob_bytes(keeping) == sorted([*before, download(client, image["id"]), staged])
