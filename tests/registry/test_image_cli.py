"""``imagewright image …``: the client side, as a user runs it against a started registry.

Every command runs as a subprocess with the ``clouds.yaml`` the server wrote (openstacksdk does
the authentication). What each test checks independently: checksums with hashlib, formats and
content with ``qemu-img info``/``compare``, the registry's view with python-openstackclient, and
the data dir on disk. A proxy that corrupts one marker in the uploaded bytes checks that the
client's own verification fails the upload and deletes the image. ``register-local`` runs
against a registry with an in-place store.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tests.fixtures.hostile_qcow2
import tests.fixtures.hostile_vmdk  # noqa: F401 - registers its cases in CASES
from tests.conftest import require_program
from tests.fixtures.hostile import CASES
from tests.fixtures.registry import BIN, RegistryServer, _clean_env, free_port
from tests.registry.test_openstack_clients import make_qcow2, qemu_virtual_size


def iw(
    server: RegistryServer, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "imagewright"), *args],
        env=env or server.client_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def iw_json(server: RegistryServer, *args: str, env: dict[str, str] | None = None) -> Any:
    result = iw(server, *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def osc_names(server: RegistryServer) -> list[str]:
    rows = json.loads(server.openstack("image", "list", "-f", "json").stdout)
    return sorted(row["Name"] for row in rows)


def test_upload_list_show_download_share_delete(registry: RegistryServer, tmp_path: Path) -> None:
    disk = make_qcow2(tmp_path / "debian.qcow2")
    data = disk.read_bytes()
    uploaded = iw_json(
        registry, "image", "upload", str(disk), "--name", "debian", "--property", "os_distro=debian",
        "--tag", "golden", "--visibility", "shared", "--min-ram", "256",
    )  # fmt: skip
    assert uploaded["disk_format"] == "qcow2" and uploaded["container_format"] == "bare"
    assert uploaded["checksum"] == hashlib.md5(data).hexdigest()
    assert uploaded["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert uploaded["virtual_size"] == qemu_virtual_size(disk) and uploaded["converted_from"] is None
    shown = json.loads(registry.openstack("image", "show", "debian", "-f", "json").stdout)
    assert shown["id"] == uploaded["id"] and shown["status"] == "active" and shown["visibility"] == "shared"
    assert shown["properties"]["os_distro"] == "debian" and shown["tags"] == ["golden"]
    assert shown["min_ram"] == 256

    listed = iw_json(registry, "image", "list", "--property", "os_distro=debian")
    assert [image["name"] for image in listed] == ["debian"]
    assert iw_json(registry, "image", "list", "--tag", "nothing") == []
    table = iw(registry, "image", "list")
    assert table.returncode == 0 and "debian" in table.stdout and "qcow2/bare" in table.stdout
    assert iw_json(registry, "image", "show", "debian")["id"] == uploaded["id"]
    assert iw_json(registry, "image", "show", uploaded["id"])["name"] == "debian"

    saved = tmp_path / "saved.qcow2"
    got = iw_json(registry, "image", "download", "debian", "-o", str(saved))
    assert saved.read_bytes() == data and got["checksum"] == hashlib.md5(data).hexdigest()
    again = iw(registry, "image", "download", "debian", "-o", str(saved))
    assert again.returncode == 1 and "already exists" in again.stderr

    registry.add_project("friends")
    registry.add_user("friend", "friends", "member", "friend-Pw-1")
    member = iw_json(registry, "image", "share", "debian", "friends")
    assert member["status"] == "pending" and member["image_id"] == uploaded["id"]
    members = json.loads(registry.openstack("image", "member", "list", "debian", "-f", "json").stdout)
    assert [m["Member ID"] for m in members] == [member["member_id"]]
    assert iw_json(registry, "image", "share", "debian", "friends", "--remove")["status"] == "removed"
    assert json.loads(registry.openstack("image", "member", "list", "debian", "-f", "json").stdout) == []
    unknown = iw(registry, "image", "share", "debian", "nobody-here")
    assert unknown.returncode == 1 and "cannot be found" in unknown.stderr

    assert iw_json(registry, "image", "delete", "debian")["deleted"] is True
    assert osc_names(registry) == [] and registry.blobs() == []
    missing = iw(registry, "image", "show", "debian")
    assert missing.returncode == 1 and missing.stderr.startswith(
        "imagewright: error: There is no image 'debian'"
    )


def test_upload_refuses_locally_what_the_registry_would(registry: RegistryServer, tmp_path: Path) -> None:
    case = next(case for case in CASES if case.name == "qcow2-backing-absolute-path")
    hostile = case.build(tmp_path)
    refused = iw(registry, "image", "upload", str(hostile), "--name", "hostile")
    assert refused.returncode == 1
    assert case.reason.lower() in refused.stderr.lower() and "Traceback" not in refused.stderr
    liar = make_qcow2(tmp_path / "liar.qcow2")
    lie = iw(registry, "image", "upload", str(liar), "--name", "liar", "--disk-format", "raw")
    assert lie.returncode == 1 and "disk_format says raw" in lie.stderr
    assert osc_names(registry) == []  # refused before anything was created
    assert registry.blobs() == []


def test_convert_on_the_way(registry: RegistryServer, tmp_path: Path) -> None:
    qemu_img = require_program("qemu-img")
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as out:
        out.truncate(16 << 20)
        out.seek(1 << 20)
        out.write(os.urandom(1 << 20))
    before = raw.read_bytes()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = registry.client_env()
    env["TMPDIR"] = str(scratch)
    uploaded = iw_json(
        registry, "image", "upload", str(raw), "--name", "converted", "--convert-to", "qcow2", env=env
    )
    assert uploaded["disk_format"] == "qcow2" and uploaded["converted_from"] == "raw"
    assert raw.read_bytes() == before and list(scratch.iterdir()) == []
    saved = tmp_path / "converted.qcow2"
    iw_json(registry, "image", "download", "converted", "-o", str(saved))
    info = json.loads(
        subprocess.run(
            [qemu_img, "info", "--output=json", str(saved)], capture_output=True, text=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2"
    subprocess.run([qemu_img, "compare", "-f", "raw", "-F", "qcow2", str(raw), str(saved)], check=True)

    # A small .raw.gz goes as it is (container_format compressed); --convert-to unpacks it.
    packed = tmp_path / "disk.raw.gz"
    packed.write_bytes(gzip.compress(before))
    as_is = iw_json(registry, "image", "upload", str(packed), "--name", "packed")
    assert (as_is["disk_format"], as_is["container_format"]) == ("raw", "compressed")
    assert as_is["checksum"] == hashlib.md5(packed.read_bytes()).hexdigest()
    unpacked = iw_json(registry, "image", "upload", str(packed), "--name", "unpacked", "--convert-to", "raw")
    assert (unpacked["disk_format"], unpacked["container_format"]) == ("raw", "bare")
    assert unpacked["checksum"] == hashlib.md5(before).hexdigest()
    assert list(scratch.iterdir()) == []


# --- a corrupting proxy: the client's own checksum check ------------------------------------------

MARKER = b"<<imagewright-corrupt-me-here>>"
# The same length: the request's Content-Length stays true, only the bytes differ.
CORRUPTED = MARKER.upper()


@contextlib.contextmanager
def corrupting_proxy(port: int, upstream_port: int) -> Iterator[None]:
    """A TCP proxy on ``port`` to the registry that rewrites MARKER to CORRUPTED (same length) in
    what clients send — bytes damaged on the way, which only an end-to-end check can see."""

    def pipe(source: socket.socket, target: socket.socket, rewrite: bool) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                if rewrite:
                    # Hold back only an end that could be the start of a marker split by a read
                    # (holding more would stall a keep-alive request waiting for its last bytes).
                    data = (tail + data).replace(MARKER, CORRUPTED)
                    keep = next((k for k in range(len(MARKER) - 1, 0, -1) if data.endswith(MARKER[:k])), 0)
                    data, tail = data[: len(data) - keep], data[len(data) - keep :]
                target.sendall(data)
            target.sendall(tail)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with socket.create_connection(("127.0.0.1", upstream_port)) as upstream:
                back = threading.Thread(target=pipe, args=(upstream, self.request, False))
                back.start()
                pipe(self.request, upstream, True)
                back.join()

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    with Server(("127.0.0.1", port), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            server.shutdown()
            thread.join(10)


def test_client_verifies_the_checksum_the_registry_reports(tmp_path: Path) -> None:
    proxy_port = free_port()
    # Clients reach the registry through the proxy: it is the URL the server announces.
    with RegistryServer(
        tmp_path / "data", extra_args=["--public-url", f"http://127.0.0.1:{proxy_port}"]
    ) as server:
        disk = tmp_path / "disk.raw"
        disk.write_bytes(b"\0" * (1 << 20) + MARKER + os.urandom(4096) + b"\0" * (1 << 20))
        with corrupting_proxy(proxy_port, server.port):
            result = iw(server, "image", "upload", str(disk), "--name", "corrupted")
            assert result.returncode == 1, result.stdout
            assert "the bytes sent have" in result.stderr and "the image was deleted" in result.stderr
            assert osc_names(server) == []
            clean = tmp_path / "clean.raw"
            clean.write_bytes(b"\0" * (1 << 20) + os.urandom(4096))
            assert iw_json(server, "image", "upload", str(clean), "--name", "clean")["status"] == "active"
        assert len(server.blobs()) == 1


# --- register-local -----------------------------------------------------------------------------


@pytest.fixture
def local_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    srv = tmp_path / "srv" / "images"
    srv.mkdir(parents=True)
    with RegistryServer(tmp_path / "data", extra_args=["--store", f"local=file-inplace://{srv}"]) as server:
        yield server


def register(server: RegistryServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "imagewright"), "image", "register-local", *args, "--data-dir", str(server.data_dir)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_register_local(local_registry: RegistryServer, tmp_path: Path) -> None:
    server = local_registry
    srv = tmp_path / "srv" / "images"
    disk = make_qcow2(srv / "debian-12.qcow2")
    data = disk.read_bytes()
    result = register(server, str(disk), "--visibility", "public", "--property", "os_distro=debian", "--json")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["status"] == "active" and view["stores"] == "local" and view["name"] == "debian-12.qcow2"
    assert (view["disk_format"], view["container_format"]) == ("qcow2", "bare")
    assert view["checksum"] == hashlib.md5(data).hexdigest() and view["size"] == len(data)
    assert view["os_distro"] == "debian" and view["visibility"] == "public"
    assert server.blobs() == []  # nothing was copied into the default store

    # Served from where it lies, to any client.
    saved = tmp_path / "saved.qcow2"
    server.openstack("image", "save", "--file", str(saved), view["id"])
    assert saved.read_bytes() == data
    stores = {s["id"]: s for s in server.api(server.token()).get("/image/v2/info/stores").json()["stores"]}
    assert set(stores) == {"default", "local"} and stores["default"].get("default") == "true"

    # Refusals: outside the allowed directory, a link leading out of it, a hostile file, an upload.
    outside = make_qcow2(tmp_path / "outside.qcow2")
    refused = register(server, str(outside))
    assert refused.returncode == 1 and "is not inside" in refused.stderr
    (srv / "sneaky.qcow2").symlink_to(outside)
    refused = register(server, str(srv / "sneaky.qcow2"))
    assert refused.returncode == 1 and "is not inside" in refused.stderr
    case = next(case for case in CASES if case.name == "vmdk-extent-absolute-path")
    hostile = case.build(srv)
    refused = register(server, str(hostile))
    assert refused.returncode == 1 and case.reason.lower() in refused.stderr.lower()
    with server.api(server.token()) as api:
        image = api.create_image(name="up", disk_format="raw", container_format="bare")
        up = api.client.put(
            f"/image/v2/images/{image['id']}/file",
            content=b"x" * 1024,
            headers={"Content-Type": "application/octet-stream", "X-Image-Meta-Store": "local"},
        )
        assert up.status_code == 400 and "takes no uploads" in up.json()["message"]
    assert sorted(
        row["Name"] for row in json.loads(server.openstack("image", "list", "-f", "json").stdout)
    ) == [
        "debian-12.qcow2",
        "up",
    ]

    # A restart's sweep leaves the admin's files alone; deleting the image forgets the file only.
    server.stop()
    server.start()
    assert disk.read_bytes() == data
    server.openstack("image", "delete", view["id"])
    assert disk.exists() and disk.read_bytes() == data


def test_in_place_store_specs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    overlap = subprocess.run(
        [
            str(BIN / "imagewright"), "serve", "--data-dir", str(data),
            "--listen", f"127.0.0.1:{free_port()}",
            "--store", f"main=file://{tmp_path}/srv",
            "--store", f"local=file-inplace://{tmp_path}/srv/in",
        ],
        env=_clean_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert overlap.returncode == 1 and "share a directory" in overlap.stderr
    unnamed = subprocess.run(
        [str(BIN / "imagewright"), "serve", "--data-dir", str(data), "--store", f"file-inplace://{tmp_path}/srv"],
        env=_clean_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert unnamed.returncode == 1 and "needs a name" in unnamed.stderr
    no_registry = register(RegistryServer(tmp_path / "none"), str(tmp_path / "x.qcow2"))
    assert no_registry.returncode == 1 and "is not the data dir of a registry" in no_registry.stderr
