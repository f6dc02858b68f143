"""The web-download SSRF matrix: every non-public target is refused — named directly, spelled
another way, behind a DNS name, or behind a redirect — and nothing ever connects to it.

Three levels:
- ``check_url`` in-process (it resolves and decides; it never connects) for the whole matrix,
  the port rule, the allow prefixes and the URL forms refused outright;
- the API: ``POST /import`` answers 400 "does not pass filtering" with the reason, and no task;
- a redirect to each target from the allowed local server: the task fails with the reason.

DNS names resolving to denied addresses come from ``/etc/hosts`` lines this module adds (unique
names under ``.iw-ssrf.test``) and removes again. No test sends a packet anywhere but loopback:
every denied target is refused before a connection is made, and the public address checked
below is only checked (``check_url``), never fetched.
"""

from __future__ import annotations

import fcntl
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.image_http import ImageHTTPServer, image_http_server
from tests.fixtures.registry import Api, RegistryServer
from tests.registry.imports_common import build_images, image_of, wait_for_task

from imagewright.service.tasks.web_download import (
    DeniedURLError,
    UrlPolicy,
    WebDownloadError,
    check_url,
)

HOSTS = Path("/etc/hosts")
TAG = secrets.token_hex(4)

#: (URL, words the refusal names) — literal addresses and other spellings of them.
LITERALS = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.9.9.9/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://10.255.255.254/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd12:3456:789a::1]/", "unique-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[2002:a9fe:a9fe::1]/", "link-local"),
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://100.64.0.1/", "not a public address"),
    ("http://224.0.0.1/", "multicast"),
    # Other spellings of IPv4 addresses: decimal, octal, hex, short forms.
    ("http://2130706433/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://0x7f.0.0.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://2852039166/", "link-local"),
    ("http://0xa9fea9fe/", "link-local"),
    ("http://0251.0376.0251.0376/", "link-local"),
    ("http://167772161/", "private"),
    ("http://0xc0a80101/", "private"),
]

#: Names this module puts into /etc/hosts → the address each resolves to.
NAMED = {
    f"loopback-{TAG}.iw-ssrf.test": ("127.0.0.1", "loopback"),
    f"metadata-{TAG}.iw-ssrf.test": ("169.254.169.254", "link-local"),
    f"ten-{TAG}.iw-ssrf.test": ("10.1.2.3", "private"),
    f"sixteen-{TAG}.iw-ssrf.test": ("172.20.0.5", "private"),
    f"home-{TAG}.iw-ssrf.test": ("192.168.0.10", "private"),
    f"ula-{TAG}.iw-ssrf.test": ("fd00::5", "unique-local"),
    f"linklocal6-{TAG}.iw-ssrf.test": ("fe80::5", "link-local"),
    f"mapped-{TAG}.iw-ssrf.test": ("::ffff:127.0.0.1", "loopback"),
}


@pytest.fixture(scope="module")
def hosts_entries() -> Iterator[dict[str, tuple[str, str]]]:
    """Add NAMED to /etc/hosts for this module's life (and only those lines, removed after)."""
    lines = [f"{address} {name}  # imagewright test {TAG}\n" for name, (address, _) in NAMED.items()]
    _edit_hosts(lambda text: text + ("" if text.endswith("\n") or not text else "\n") + "".join(lines))
    try:
        yield NAMED
    finally:
        _edit_hosts(lambda text: "".join(line for line in text.splitlines(keepends=True) if TAG not in line))


def _edit_hosts(change: object) -> None:
    with open(HOSTS, "r+") as hosts:
        fcntl.flock(hosts, fcntl.LOCK_EX)
        text = hosts.read()
        updated = change(text)  # type: ignore[operator]
        hosts.seek(0)
        hosts.write(updated)
        hosts.truncate()


def _named_cases() -> list[tuple[str, str]]:
    return [(f"http://{name}/disk.qcow2", words) for name, (_address, words) in NAMED.items()]


# --- the policy, in-process ---------------------------------------------------------------------


@pytest.mark.parametrize(("url", "words"), LITERALS)
def test_check_url_refuses_every_non_public_address(url: str, words: str) -> None:
    with pytest.raises(DeniedURLError) as refused:
        check_url(url, UrlPolicy())
    message = str(refused.value)
    assert "is refused" in message and words in message, message
    assert message.endswith(".")


def test_check_url_refuses_names_that_resolve_to_them(hosts_entries: dict[str, tuple[str, str]]) -> None:
    for url, words in _named_cases():
        with pytest.raises(DeniedURLError) as refused:
            check_url(url, UrlPolicy())
        host = url.split("/")[2]
        assert words in str(refused.value) and host in str(refused.value), str(refused.value)


def test_check_url_accepts_a_public_address_on_80_and_443_only() -> None:
    # Only checked, never fetched.
    target = check_url("https://93.184.215.14/images/disk.qcow2?x=1", UrlPolicy())
    assert (target.address, target.port, target.path) == ("93.184.215.14", 443, "/images/disk.qcow2?x=1")
    assert check_url("http://93.184.215.14/", UrlPolicy()).port == 80
    with pytest.raises(DeniedURLError, match="port 8080 is not 80 or 443"):
        check_url("http://93.184.215.14:8080/disk", UrlPolicy())


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://93.184.215.14/disk", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://127.0.0.1/", "only http and https"),
        ("http://user:secret@93.184.215.14/disk", "user name or password"),
        ("http:///disk", "names no host"),
        ("http://93.184.215.14:99999/disk", "invalid port"),
    ],
)
def test_check_url_refuses_other_forms(url: str, words: str) -> None:
    with pytest.raises(DeniedURLError) as refused:
        check_url(url, UrlPolicy())
    assert words in str(refused.value)
    assert "secret" not in str(refused.value)


def test_allow_prefix_matches_scheme_host_port_and_path_exactly() -> None:
    policy = UrlPolicy.from_prefixes(["http://127.0.0.1:8000/images/"])
    assert check_url("http://127.0.0.1:8000/images/a.qcow2", policy).address == "127.0.0.1"
    for other in (
        "http://127.0.0.1:8001/images/a.qcow2",
        "http://127.0.0.1:8000/other/a.qcow2",
        "https://127.0.0.1:8000/images/a.qcow2",
        "http://2130706433:8000/images/a.qcow2",
        "http://127.0.0.2:8000/images/a.qcow2",
    ):
        with pytest.raises(DeniedURLError):
            check_url(other, policy)


def test_bad_allow_prefixes_are_refused() -> None:
    for prefix in ("127.0.0.1:8000", "ftp://host/", "http://user@host/", "http://host/?q=1"):
        with pytest.raises(WebDownloadError):
            UrlPolicy.from_prefixes([prefix])


# --- through the registry -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageHTTPServer]:
    images = build_images(tmp_path_factory.mktemp("ssrf-images"), size_mib=4)
    with image_http_server(images.root) as server:
        yield server


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, http: ImageHTTPServer) -> Iterator[Api]:
    with (
        RegistryServer(
            tmp_path_factory.mktemp("registry-ssrf") / "data",
            extra_args=["--web-download-allow", f"{http.url}/"],
        ) as server,
        server.api(server.token()) as client,
    ):
        yield client


def _matrix(hosts: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    return [*LITERALS, *_named_cases()]


def test_import_api_refuses_each_target_before_any_task(
    api: Api, http: ImageHTTPServer, hosts_entries: dict[str, tuple[str, str]]
) -> None:
    image = api.create_image(name="ssrf", disk_format="qcow2", container_format="bare")
    for url, words in _matrix(hosts_entries):
        response = api.post(
            f"/image/v2/images/{image['id']}/import", json={"method": {"name": "web-download", "uri": url}}
        )
        assert response.status_code == 400, (url, response.text)
        message = response.json()["message"]
        assert message.startswith("URI for web-download does not pass filtering:"), message
        assert words in message, (url, message)
    assert api.get(f"/image/v2/images/{image['id']}/tasks").json()["tasks"] == []
    assert image_of(api, image["id"])["status"] == "queued"


def test_redirects_to_each_target_fail_the_task_with_the_reason(
    api: Api, http: ImageHTTPServer, hosts_entries: dict[str, tuple[str, str]]
) -> None:
    for url, words in _matrix(hosts_entries):
        image = api.create_image(name="ssrf-redirect", disk_format="qcow2", container_format="bare")
        response = api.post(
            f"/image/v2/images/{image['id']}/import",
            json={"method": {"name": "web-download", "uri": f"{http.url}/redirect?to={url}"}},
        )
        assert response.status_code == 202, response.text
        task = wait_for_task(api, image["id"])
        assert task["status"] == "failure", (url, task)
        assert "is refused" in task["message"] and words in task["message"], (url, task["message"])
        assert image_of(api, image["id"])["status"] == "queued"
