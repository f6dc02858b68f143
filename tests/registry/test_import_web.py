"""web-download against a local HTTP server: every import ends ``active`` or says why it did not.

The server (``tests/fixtures/image_http.py``) serves real images made by qemu-img — as a good
static server, slowly, stalling, breaking off once (resumed with Range), lying about
``Content-Length``, chunked, redirecting to denied hosts, and a hostile qcow2. The registry
runs with ``--web-download-allow`` for that server only and a short idle timeout. After each
case: a failed import leaves the image ``queued`` with its task's one-sentence reason, and
nothing of it in the store or in the scratch directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.image_http import ImageHTTPServer, image_http_server
from tests.fixtures.registry import Api, RegistryServer
from tests.registry.imports_common import (
    Images,
    build_images,
    download,
    image_of,
    scratch_leftovers,
    web_import,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return build_images(tmp_path_factory.mktemp("web-images"))


@pytest.fixture(scope="module")
def http(images: Images) -> Iterator[ImageHTTPServer]:
    with image_http_server(images.root, slow_pause=0.01) as server:
        yield server


@pytest.fixture(scope="module")
def other_http(images: Images) -> Iterator[ImageHTTPServer]:
    """A second server on loopback that is NOT allowed: it must never be reached."""
    with image_http_server(images.root) as server:
        yield server


@pytest.fixture(scope="module")
def registry_web(tmp_path_factory: pytest.TempPathFactory, http: ImageHTTPServer) -> Iterator[RegistryServer]:
    with RegistryServer(
        tmp_path_factory.mktemp("registry-web") / "data",
        extra_args=["--web-download-allow", f"{http.url}/", "--web-download-timeout", "3"],
    ) as server:
        yield server


@pytest.fixture(scope="module")
def api(registry_web: RegistryServer) -> Iterator[Api]:
    with registry_web.api(registry_web.token()) as client:
        yield client


def _active_blobs(api: Api) -> int:
    listed = api.get("/image/v2/images", params={"limit": 1000}).json()["images"]
    return sum(1 for image in listed if image["status"] == "active")


def _assert_clean(registry_web: RegistryServer, api: Api) -> None:
    """Only active images have blobs; no scratch file is left."""
    assert len(registry_web.blobs()) == _active_blobs(api), registry_web.blobs()
    assert scratch_leftovers(registry_web) == []


def _assert_failed(api: Api, image: dict[str, object], task: dict[str, object], *words: str) -> None:
    assert task["status"] == "failure", task
    message = str(task["message"])
    assert message.endswith("."), message
    for word in words:
        assert word in message, message
    assert image["status"] == "queued", image
    assert "os_glance_import_task" not in image
    assert image["size"] is None and image["checksum"] is None


def test_info_import_lists_methods_without_copy_image_on_one_store(api: Api) -> None:
    body = api.get("/image/v2/info/import").json()
    assert body["import-methods"]["value"] == ["glance-direct", "web-download"]


def test_qcow2_from_a_good_server_becomes_active_with_hashes(
    api: Api, http: ImageHTTPServer, images: Images, registry_web: RegistryServer
) -> None:
    image, task = web_import(api, f"{http.url}/files/disk.qcow2")
    assert task["status"] == "success", task
    assert task["result"] == {"image_id": image["id"]}
    assert task["message"] == ""
    assert task["type"] == "api_image_import"
    assert task["input"]["import_req"]["method"] == {
        "name": "web-download",
        "uri": f"{http.url}/files/disk.qcow2",
    }
    assert image["status"] == "active"
    assert image["disk_format"] == "qcow2" and image["container_format"] == "bare"
    assert image["size"] == images.qcow2.stat().st_size
    assert image["virtual_size"] == images.raw.stat().st_size
    assert image["checksum"] == images.md5(images.qcow2)
    assert image["os_hash_algo"] == "sha512" and image["os_hash_value"] == images.sha512(images.qcow2)
    assert image["stores"] == "default"
    assert "os_glance_import_task" not in image
    assert image["os_glance_importing_to_stores"] == "" and image["os_glance_failed_import"] == ""
    assert download(api, image["id"]) == images.qcow2.read_bytes()
    # The task's progress ends at the size it stored, with timestamps.
    assert task["progress"]["done"] == image["size"] and task["created_at"] <= task["updated_at"]
    _assert_clean(registry_web, api)


def test_unset_formats_are_taken_from_the_content(api: Api, http: ImageHTTPServer, images: Images) -> None:
    image, task = web_import(api, f"{http.url}/files/disk.qcow2", disk_format=None)
    assert task["status"] == "success", task
    assert (image["disk_format"], image["container_format"]) == ("qcow2", "bare")


def test_slow_server_still_ends_active(api: Api, http: ImageHTTPServer, images: Images) -> None:
    image, task = web_import(api, f"{http.url}/slow/disk.qcow2")
    assert task["status"] == "success", task
    assert image["checksum"] == images.md5(images.qcow2)


def test_chunked_transfer_ends_active(api: Api, http: ImageHTTPServer, images: Images) -> None:
    image, task = web_import(api, f"{http.url}/chunked/disk.qcow2")
    assert task["status"] == "success", task
    assert image["checksum"] == images.md5(images.qcow2)


def test_broken_download_is_resumed_with_range(api: Api, http: ImageHTTPServer, images: Images) -> None:
    image, task = web_import(api, f"{http.url}/flaky/disk.qcow2")
    assert task["status"] == "success", task
    assert image["checksum"] == images.md5(images.qcow2)
    resumes = [
        headers for path, headers in http.requests if path == "/flaky/disk.qcow2" and "Range" in headers
    ]
    assert resumes and resumes[-1]["Range"] == f"bytes={images.qcow2.stat().st_size // 2}-"
    assert resumes[-1]["If-Range"].startswith('"')


def test_stalling_server_times_out(
    api: Api, http: ImageHTTPServer, images: Images, registry_web: RegistryServer
) -> None:
    image, task = web_import(api, f"{http.url}/stall/disk.qcow2")
    _assert_failed(api, image, task, "sent nothing for 3 s", "timed out")
    _assert_clean(registry_web, api)


def test_lying_content_length_fails_naming_it(
    api: Api, http: ImageHTTPServer, images: Images, registry_web: RegistryServer
) -> None:
    image, task = web_import(api, f"{http.url}/lying/disk.qcow2")
    size = images.qcow2.stat().st_size
    _assert_failed(api, image, task, f"broke after {size} of {size + (1 << 20)} bytes", "did not resume")
    _assert_clean(registry_web, api)


def test_hostile_image_is_refused_with_its_reason(
    api: Api, http: ImageHTTPServer, registry_web: RegistryServer
) -> None:
    image, task = web_import(api, f"{http.url}/files/hostile.qcow2")
    _assert_failed(api, image, task, "refused", "backing file")
    _assert_clean(registry_web, api)


def test_content_that_is_not_the_declared_format_is_refused(
    api: Api, http: ImageHTTPServer, registry_web: RegistryServer
) -> None:
    image, task = web_import(api, f"{http.url}/files/disk.qcow2", disk_format="raw")
    _assert_failed(api, image, task, "qcow2", "disk_format says raw")
    _assert_clean(registry_web, api)


def test_http_error_status_is_named(api: Api, http: ImageHTTPServer) -> None:
    image, task = web_import(api, f"{http.url}/status/404")
    _assert_failed(api, image, task, "answered 404")


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("http://169.254.169.254/latest/meta-data/", ("169.254.169.254", "link-local")),
        ("http://10.1.2.3/disk.qcow2", ("10.1.2.3", "private")),
        ("http://[fe80::1]/disk.qcow2", ("fe80::1", "link-local")),
        ("ftp://example.org/disk.qcow2", ("only http and https",)),
    ],
)
def test_redirect_to_a_denied_target_is_refused(
    api: Api, http: ImageHTTPServer, registry_web: RegistryServer, target: str, words: tuple[str, ...]
) -> None:
    image, task = web_import(api, f"{http.url}/redirect?to={target}")
    _assert_failed(api, image, task, "is refused", *words)
    _assert_clean(registry_web, api)


def test_redirect_to_another_loopback_port_never_reaches_it(
    api: Api, http: ImageHTTPServer, other_http: ImageHTTPServer
) -> None:
    image, task = web_import(api, f"{http.url}/redirect?to={other_http.url}/files/disk.qcow2")
    _assert_failed(api, image, task, "127.0.0.1", "loopback")
    assert other_http.requests == []


def test_redirect_within_the_allowed_prefix_is_followed(
    api: Api, http: ImageHTTPServer, images: Images
) -> None:
    image, task = web_import(api, f"{http.url}/redirect?to={http.url}/files/disk.qcow2")
    assert task["status"] == "success", task
    assert image["checksum"] == images.md5(images.qcow2)


def test_denied_uri_is_refused_before_any_task(api: Api, other_http: ImageHTTPServer) -> None:
    image = api.create_image(name="denied", disk_format="qcow2", container_format="bare")
    response = api.post(
        f"/image/v2/images/{image['id']}/import",
        json={"method": {"name": "web-download", "uri": f"{other_http.url}/files/disk.qcow2"}},
    )
    assert response.status_code == 400, response.text
    assert "does not pass filtering" in response.json()["message"]
    assert "loopback" in response.json()["message"]
    assert api.get(f"/image/v2/images/{image['id']}/tasks").json()["tasks"] == []
    assert image_of(api, image["id"])["status"] == "queued"
    assert other_http.requests == []


def test_import_of_an_active_image_is_a_conflict(api: Api, http: ImageHTTPServer) -> None:
    image, task = web_import(api, f"{http.url}/files/disk.qcow2")
    assert task["status"] == "success"
    response = api.post(
        f"/image/v2/images/{image['id']}/import",
        json={"method": {"name": "web-download", "uri": f"{http.url}/files/disk.qcow2"}},
    )
    assert response.status_code == 409
    assert response.json()["message"] == "Image with status active cannot be target for import."


def test_scratch_dir_is_a_directory_of_the_data_dir(registry_web: RegistryServer) -> None:
    assert Path(registry_web.data_dir / "tasks").is_dir()
