"""The real OpenStack clients against a started ``imagewright serve``, on SQLite and on PostgreSQL.

python-openstackclient (``openstack image …``), python-glanceclient (``glance …``) and an
openstacksdk script run as subprocesses with the ``clouds.yaml`` / ``openrc`` the server wrote.
Checksums and sizes are cross-checked with hashlib and ``qemu-img info``, downloads with ``cmp``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.conftest import require_program
from tests.fixtures.registry import RegistryServer

#: Every key Glance's ResponseSerializer._format_image writes for an image (multi-store, no locations).
GLANCE_IMAGE_KEYS = {
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "os_hidden",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
    "size",
    "virtual_size",
    "container_format",
    "disk_format",
    "created_at",
    "updated_at",
    "tags",
    "min_ram",
    "min_disk",
    "self",
    "file",
    "schema",
}


def make_qcow2(path: Path, size: str = "64M", pattern: bytes = b"imagewright") -> Path:
    qemu_img = require_program("qemu-img")
    raw = path.with_suffix(".raw")
    with raw.open("wb") as out:
        out.truncate(1 << 20)
        out.seek(4096)
        out.write(pattern * 100)
    subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    subprocess.run([qemu_img, "resize", "-q", str(path), size], check=True)
    raw.unlink()
    return path


def qemu_virtual_size(path: Path) -> int:
    info = subprocess.run(
        [require_program("qemu-img"), "info", "--output=json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(json.loads(info.stdout)["virtual-size"])


def show(server: RegistryServer, ref: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return dict(json.loads(server.openstack("image", "show", ref, "-f", "json", env=env).stdout))


def names(server: RegistryServer, *args: str, env: dict[str, str] | None = None) -> list[str]:
    rows = json.loads(server.openstack("image", "list", *args, "-f", "json", env=env).stdout)
    return sorted(row["Name"] for row in rows)


def test_openstack_cli_session(any_registry: RegistryServer, tmp_path: Path) -> None:
    server = any_registry
    # The console script as a process of its own once; the other commands run in this worker's
    # OpenStackShellHost (the same openstackclient.shell.main, imported once).
    assert json.loads(server.openstack_process("image", "list", "-f", "json").stdout) == []
    disk = make_qcow2(tmp_path / "debian.qcow2")
    data = disk.read_bytes()

    server.openstack(
        "image", "create", "debian", "--file", str(disk), "--disk-format", "qcow2",
        "--container-format", "bare", "--property", "os_distro=debian",
        "--property", "architecture=x86_64", "--tag", "golden", "--min-ram", "512",
    )  # fmt: skip
    image = show(server, "debian")
    assert image["status"] == "active"
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["size"] == len(data)
    assert image["virtual_size"] == qemu_virtual_size(disk)
    assert image["properties"]["os_hash_algo"] == "sha512"
    assert image["properties"]["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert image["properties"]["os_distro"] == "debian"
    assert image["tags"] == ["golden"]
    assert image["min_ram"] == 512
    assert image["visibility"] == "shared"

    raw = tmp_path / "blank.raw"
    raw.write_bytes(b"\0" * (2 << 20))
    server.openstack(
        "image", "create", "blank", "--file", str(raw), "--disk-format", "raw", "--container-format", "bare"
    )
    with server.api(server.token()) as api:
        # (OSC would upload its standard input when that is not a terminal, so the raw API.)
        api.create_image(name="empty", disk_format="raw", container_format="bare")

    # Filters and sorting, as the CLI sends them.
    assert names(server) == ["blank", "debian", "empty"]
    assert names(server, "--property", "os_distro=debian") == ["debian"]
    assert names(server, "--tag", "golden") == ["debian"]
    assert names(server, "--name", "blank") == ["blank"]
    assert names(server, "--status", "queued") == ["empty"]
    rows = json.loads(server.openstack("image", "list", "--sort", "name:desc", "-f", "json").stdout)
    assert [r["Name"] for r in rows] == ["empty", "debian", "blank"]
    # OSC sends only limit=1 (no sort: it sorts what it got) and stops at the first page: the newest.
    rows = json.loads(server.openstack("image", "list", "--limit", "1", "-f", "json").stdout)
    assert [r["Name"] for r in rows] == ["empty"]

    # Update properties and tags.
    server.openstack(
        "image", "set", "--property", "os_version=12", "--tag", "extra", "--min-disk", "2", "debian"
    )
    server.openstack("image", "unset", "--property", "architecture", "--tag", "golden", "debian")
    image = show(server, "debian")
    assert image["properties"]["os_version"] == "12"
    assert "architecture" not in image["properties"]
    assert image["tags"] == ["extra"]
    assert image["min_disk"] == 2

    # Download: byte-identical.
    saved = tmp_path / "saved.qcow2"
    server.openstack("image", "save", "--file", str(saved), "debian")
    assert saved.read_bytes() == data

    # Share with another project; its member accepts; then it sees and downloads the image.
    server.add_project("demo")
    server.add_user("alice", "demo", "member", "alice-Pw-1")
    alice = server.openrc_env("alice", "alice-Pw-1", "demo")
    alice["OS_CLIENT_CONFIG_FILE"] = "/nonexistent"  # openrc variables only
    server.openstack("image", "add", "project", "debian", "demo")
    image_id = show(server, "debian")["id"]
    assert names(server, env=alice) == []  # pending: not listed
    members = json.loads(server.openstack("image", "member", "list", "debian", "-f", "json").stdout)
    assert [m["Status"] for m in members] == ["pending"]
    server.openstack("image", "set", "--accept", image_id, env=alice)
    assert names(server, env=alice) == ["debian"]
    alice_copy = tmp_path / "alice.qcow2"
    server.openstack("image", "save", "--file", str(alice_copy), image_id, env=alice)
    assert alice_copy.read_bytes() == data
    # The member may not change the image.
    refused = server.openstack("image", "set", "--name", "mine", image_id, env=alice, check=False)
    assert refused.returncode != 0 and "403" in refused.stderr + refused.stdout

    # Deactivate (owner's admin): the member's download is refused, the owner's admin still sees it.
    server.openstack("image", "set", "--deactivate", "debian")
    assert show(server, "debian")["status"] == "deactivated"
    refused = server.openstack(
        "image", "save", "--file", str(tmp_path / "x"), image_id, env=alice, check=False
    )
    assert refused.returncode != 0
    server.openstack("image", "set", "--activate", "debian")
    assert show(server, "debian")["status"] == "active"

    # Protected images cannot be deleted until unprotected.
    server.openstack("image", "set", "--protected", "debian")
    refused = server.openstack("image", "delete", "debian", check=False)
    assert refused.returncode != 0
    server.openstack("image", "set", "--unprotected", "debian")

    # Delete: the image and its data go.
    assert len(server.blobs()) == 2
    server.openstack("image", "delete", "debian", "blank", "empty")
    assert names(server) == []
    assert server.blobs() == []


def test_glanceclient_session(any_registry: RegistryServer, tmp_path: Path) -> None:
    server = any_registry
    disk = make_qcow2(tmp_path / "g.qcow2", size="32M", pattern=b"glance!")
    data = disk.read_bytes()
    # The console script as a process of its own once (the others: see test_openstack_cli_session).
    created = server.glance_process(
        "--os-image-api-version", "2", "image-create", "--name", "gl", "--disk-format", "qcow2",
        "--container-format", "bare", "--file", str(disk), "--property", "hw_disk_bus=virtio",
    )  # fmt: skip
    assert "active" in created.stdout
    listing = server.glance("image-list")
    assert "gl" in listing.stdout
    image_id = next(line.split("|")[1].strip() for line in listing.stdout.splitlines() if "| gl " in line)
    out = tmp_path / "g-out.qcow2"
    server.glance("image-download", "--file", str(out), image_id)  # glanceclient checks Content-MD5
    assert out.read_bytes() == data
    shown = server.glance("image-show", image_id).stdout
    assert hashlib.md5(data).hexdigest() in shown
    assert "hw_disk_bus" in shown and "virtio" in shown
    server.glance("image-tag-update", image_id, "blue")
    assert "blue" in server.glance("image-show", image_id).stdout
    server.glance("image-update", "--property", "os_type=linux", image_id)
    assert "linux" in server.glance("image-show", image_id).stdout
    server.glance("image-delete", image_id)
    assert "gl" not in server.glance("image-list").stdout.replace("image", "")
    assert server.blobs() == []


SDK_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import openstack
    conn = openstack.connect(cloud="imagewright")
    path = sys.argv[1]
    image = conn.image.create_image(name="sdk", filename=path, disk_format="raw", container_format="bare",
                                    wait=True, validate_checksum=True, tags=["sdk"])
    got = conn.image.get_image(image.id)
    out = {"status": got.status, "checksum": got.checksum, "size": got.size, "hash": got.hash_value,
           "names": sorted(i.name for i in conn.image.images()),
           "tagged": sorted(i.name for i in conn.image.images(tag="sdk"))}
    data = b"".join(conn.image.download_image(got, stream=True).iter_content(1 << 20))
    out["download_md5"] = hashlib.md5(data).hexdigest()
    conn.image.update_image(got, name="sdk2", os_distro="alpine")
    again = conn.image.get_image(image.id)
    out["renamed"] = again.name
    out["os_distro"] = again.os_distro
    stores = [s.id for s in conn.image.stores()]
    out["stores"] = stores
    conn.image.delete_image(got)
    out["after_delete"] = sorted(i.name for i in conn.image.images())
    print(json.dumps(out))
    """
)


def test_openstacksdk_script(any_registry: RegistryServer, tmp_path: Path) -> None:
    server = any_registry
    raw = tmp_path / "sdk.raw"
    raw.write_bytes(bytes(range(256)) * 8192)
    script = tmp_path / "sdk_script.py"
    script.write_text(SDK_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(raw)],
        env=server.client_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    data = raw.read_bytes()
    assert out["status"] == "active"
    assert out["checksum"] == hashlib.md5(data).hexdigest() == out["download_md5"]
    assert out["hash"] == hashlib.sha512(data).hexdigest()
    assert out["size"] == len(data)
    assert out["names"] == ["sdk"] and out["tagged"] == ["sdk"]
    assert out["renamed"] == "sdk2" and out["os_distro"] == "alpine"
    # The S3 variant runs with two named stores (tests/registry/conftest.py), the others with one.
    assert sorted(out["stores"]) == (["bulk", "fast"] if server.s3_places else ["default"])
    assert out["after_delete"] == []


def test_image_view_has_every_glance_key(registry: RegistryServer) -> None:
    with registry.api(registry.token()) as api:
        image = api.create_image(name="keys", disk_format="raw", container_format="bare")
        assert set(image) >= GLANCE_IMAGE_KEYS
        assert image["self"] == f"/v2/images/{image['id']}"
        assert image["file"] == f"/v2/images/{image['id']}/file"
        assert image["schema"] == "/v2/schemas/image"
        assert image["status"] == "queued" and image["size"] is None and image["checksum"] is None
