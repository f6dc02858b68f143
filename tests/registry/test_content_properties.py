"""The registry reads what is inside every image that becomes active and says so in properties
(issues 16 and 17): ``os_distro``, ``os_version``, ``architecture``, ``os_type``, the firmware a
UEFI-only disk needs, and the audit's summary ``imagewright_audit``; and it refuses to publish an
image whose audit found secrets unless its owner said ``imagewright_allow_secrets=true``.

Driven by the real ``openstack`` CLI (python-openstackclient) and openstacksdk against an
``imagewright serve`` process; the guests are the trees ``inspect --os`` and ``--audit`` are
tested with (``tests/ops/os_trees.py``, ``tests/ops/test_audit.py``), whose truth the test
wrote, and the ESP holds Debian's signed shim (the build's cache).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.registry import BIN, Api, RegistryServer, _clean_env
from tests.fixtures.tools import mtools, run, sfdisk, sparse_file
from tests.guest.images import MIB, PARTITION_START, converted, partitioned_ext4, write
from tests.ops.os_trees import debian_tree, debian_truth
from tests.ops.test_audit import seeded_tree
from tests.registry.conftest import S3, make_server
from tests.registry.imports_common import image_of, wait_for_task

from imagewright.ops.build.efiloader import signed_loader

pytestmark = pytest.mark.integration

OS_PROPERTIES = ("os_distro", "os_version", "architecture", "os_type")
FIRMWARE_PROPERTIES = ("hw_firmware_type", "hw_machine_type", "os_secure_boot")
#: The secret kinds the seeded guest holds (tests/ops/test_audit.py's EXPECTED, secret class).
SEEDED_SECRETS = {
    "authorized-keys",
    "other-histories",
    "passwd-backups",
    "root-password",
    "shell-histories",
    "ssh-host-keys",
    "user-passwords",
}
PASSWORD = "Member-pw-123"
#: The id of the project "others" (set when the registry starts).
OTHERS: list[str] = []
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


# --- guests -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("content")
    debian_root = debian_tree(base / "debian")
    debian = partitioned_ext4(debian_root, base / "debian.raw", table="gpt", size_mib=64)
    seeded = seeded_tree(base / "seeded")
    write(seeded, "etc/os-release", 'ID=debian\nVERSION_ID="12"\nNAME="Debian GNU/Linux"\n')
    used = partitioned_ext4(seeded, base / "seeded.raw", table="gpt", size_mib=48)
    shim = next(b.path for b in signed_loader().binaries if b.name == "shimx64.efi")
    return {
        "debian.qcow2": converted(debian, "qcow2", base / "debian.qcow2").path,
        "seeded.qcow2": converted(used, "qcow2", base / "seeded.qcow2").path,
        "uefi.raw": uefi_disk(debian_root, base / "uefi.raw", shim, bios=False),
        "hybrid.raw": uefi_disk(debian_root, base / "hybrid.raw", shim, bios=True),
    }


def uefi_disk(tree: Path, out: Path, loader: Path, *, bios: bool) -> Path:
    """GPT: an ESP (FAT16) with ``loader`` at the removable-media path, and the root from ``tree``;
    with ``bios``, GRUB's boot.img in the protective MBR as well (a hybrid disk)."""
    esp_size, size = 16 * MIB, 64 * MIB
    root_start = PARTITION_START + esp_size
    sparse_file(out, size)
    sfdisk(
        out,
        "label: gpt\n"
        f"start=2048, size={esp_size // 512}, type={ESP_TYPE}\n"
        f"start={root_start // 512}, size={(size - root_start) // 512 - 2048}, type={LINUX_TYPE}\n",
    )
    esp = sparse_file(out.parent / f"{out.name}.esp", esp_size)
    run("mkfs.fat", "-F", "16", esp)
    efi = out.parent / f"{out.name}.efi" / "EFI"
    (efi / "BOOT").mkdir(parents=True)
    (efi / "BOOT" / "BOOTX64.EFI").write_bytes(loader.read_bytes())
    mtools("mcopy", "-s", "-Q", "-i", esp, efi, "::/")
    with out.open("r+b") as disk:
        disk.seek(PARTITION_START)
        disk.write(esp.read_bytes())
        if bios:
            disk.seek(0)
            disk.write(Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()[:440])
    run("mke2fs", "-q", "-F", "-t", "ext4", "-E", f"offset={root_start}", "-d", tree, out, "40M")
    return out


# --- registry and clients -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("content-registry") / "data") as server:
        server.add_project("team")
        server.add_user("carol", "team", "member", PASSWORD)
        OTHERS.append(server.add_project("others"))
        server.add_user("olga", "others", "member", PASSWORD)
        yield server


def openstack_json(registry: RegistryServer, *args: str, user: str | None = None) -> Any:
    return json.loads(openstack(registry, *args, "-f", "json", user=user).stdout)


def openstack(
    registry: RegistryServer, *args: str, user: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = None
    if user is not None:
        env = registry.openrc_env(user, PASSWORD, "team" if user == "carol" else "others")
    if env is None:
        return registry.openstack(*args, check=check)
    return registry.openstack(*args, env=env, check=check)


def properties_of(registry: RegistryServer, image_id: str) -> dict[str, Any]:
    with registry.api(registry.token()) as api:
        return api.get(f"/image/v2/images/{image_id}").json()


def create_with_file(
    registry: RegistryServer, name: str, path: Path, *args: str, user: str | None = None
) -> str:
    fmt = "qcow2" if path.suffix == ".qcow2" else "raw"
    created = openstack_json(
        registry,
        "image",
        "create",
        name,
        "--disk-format",
        fmt,
        "--container-format",
        "bare",
        "--file",
        str(path),
        *args,
        user=user,
    )
    return str(created["id"])


def patch(api: Api, image_id: str, *operations: tuple[str, str, Any]) -> Any:
    body = [{"op": op, "path": path, "value": value} for op, path, value in operations]
    return api.patch(f"/image/v2/images/{image_id}", body)


# --- what is filled in --------------------------------------------------------------------------


def test_upload_fills_os_and_audit_from_the_guest(registry: RegistryServer, images: dict[str, Path]) -> None:
    image_id = create_with_file(registry, "debian", images["debian.qcow2"])
    shown = openstack_json(registry, "image", "show", image_id)
    properties = shown["properties"]
    truth = debian_truth()
    assert shown["status"] == "active"
    assert properties["os_distro"] == truth.os_id == "debian"
    assert properties["os_version"] == truth.version_id
    assert properties["architecture"] == truth.architecture
    assert properties["os_type"] == "linux"
    # What run/verify read to size the instance without opening the image again.
    assert properties["imagewright_init_system"] == truth.init_system == "systemd"
    # The tree holds no key, history, password hash, log, machine-id: nothing would leak.
    assert properties["imagewright_audit"] == "clean"
    # Neither BIOS boot code nor an ESP: no firmware to ask for.
    assert not set(FIRMWARE_PROPERTIES) & set(properties)


def test_what_the_owner_set_is_never_overridden(registry: RegistryServer, images: dict[str, Path]) -> None:
    image_id = create_with_file(
        registry,
        "debian-own",
        images["debian.qcow2"],
        "--property",
        "os_distro=my-debian",
        "--property",
        "architecture=aarch64",
        user="carol",
    )
    shown = properties_of(registry, image_id)
    assert shown["os_distro"] == "my-debian" and shown["architecture"] == "aarch64"
    assert shown["os_version"] == debian_truth().version_id and shown["os_type"] == "linux"


def test_a_seeded_guest_names_its_secrets(registry: RegistryServer, images: dict[str, Path]) -> None:
    image_id = create_with_file(registry, "used", images["seeded.qcow2"], user="carol")
    summary = properties_of(registry, image_id)["imagewright_audit"]
    secret_part = summary.split(";")[0]
    assert secret_part.startswith("secret: ")
    assert set(secret_part.removeprefix("secret: ").split(", ")) == SEEDED_SECRETS
    assert "identity: " in summary and "residue: " in summary
    # The summary never holds a secret itself.
    for secret in ("$6$salt", "AAAAC3Nza", "builder@laptop"):
        assert secret not in summary


def test_uefi_only_disk_gets_firmware_properties(registry: RegistryServer, images: dict[str, Path]) -> None:
    image_id = create_with_file(registry, "uefi", images["uefi.raw"])
    shown = properties_of(registry, image_id)
    assert shown["hw_firmware_type"] == "uefi"
    assert shown["hw_machine_type"] == "q35"
    # Debian's shim carries the Microsoft UEFI CA's signature: Secure Boot where the host has it.
    assert shown["os_secure_boot"] == "optional"
    assert shown["os_distro"] == "debian"


def test_hybrid_disk_gets_no_firmware_properties(registry: RegistryServer, images: dict[str, Path]) -> None:
    image_id = create_with_file(registry, "hybrid", images["hybrid.raw"])
    inspected = json.loads(run(BIN / "imagewright", "inspect", "--json", images["hybrid.raw"]).stdout)
    assert sorted(inspected["disk"]["boot"]["boots_under"]) == ["bios", "uefi"]
    shown = properties_of(registry, image_id)
    assert not set(FIRMWARE_PROPERTIES) & set(shown)
    assert shown["os_distro"] == "debian"


def test_clients_cannot_write_the_audit(registry: RegistryServer) -> None:
    with registry.api(registry.token()) as api:
        refused = api.post(
            "/image/v2/images",
            json={
                "name": "forged",
                "disk_format": "raw",
                "container_format": "bare",
                "imagewright_audit": "clean",
            },
        )
        assert refused.status_code == 403, refused.text
        assert "imagewright_audit" in refused.text
        image = api.create_image(name="later", disk_format="raw", container_format="bare")
        refused = patch(api, image["id"], ("add", "/imagewright_audit", "clean"))
        assert refused.status_code == 403, refused.text


# --- publishing ---------------------------------------------------------------------------------


def test_publishing_secrets_is_refused_until_the_owner_allows_it(
    registry: RegistryServer, images: dict[str, Path]
) -> None:
    image_id = create_with_file(registry, "used-pub", images["seeded.qcow2"], user="carol")
    # The real CLI: the admin's `image set --public` fails with the registry's sentence.
    failed = openstack(registry, "image", "set", "--public", image_id, check=False)
    assert failed.returncode != 0
    assert "cannot be made public" in failed.stderr and "ssh-host-keys" in failed.stderr
    assert properties_of(registry, image_id)["visibility"] == "shared"
    with registry.api(registry.token("carol", PASSWORD, "team")) as carol:
        # The owner's member: community is refused the same way (409) ...
        refused = patch(carol, image_id, ("replace", "/visibility", "community"))
        assert refused.status_code == 409, refused.text
        message = refused.text
        assert "imagewright_allow_secrets=true" in message and "authorized-keys" in message
        # ... and public stays an admin's right (403 before any audit is looked at).
        assert patch(carol, image_id, ("replace", "/visibility", "public")).status_code == 403
        # Explicit override by the owner: allowed, and recorded on the image.
        allowed = patch(
            carol,
            image_id,
            ("add", "/imagewright_allow_secrets", "true"),
            ("replace", "/visibility", "community"),
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["visibility"] == "community"
    openstack(registry, "image", "set", "--public", image_id)
    assert properties_of(registry, image_id)["visibility"] == "public"


def test_clean_images_publish_as_before(registry: RegistryServer, images: dict[str, Path]) -> None:
    image_id = create_with_file(registry, "clean-pub", images["debian.qcow2"])
    openstack(registry, "image", "set", "--public", image_id)
    assert properties_of(registry, image_id)["visibility"] == "public"


def test_data_with_secrets_for_a_public_image_is_refused(
    registry: RegistryServer, images: dict[str, Path]
) -> None:
    with registry.api(registry.token()) as api:
        image = api.create_image(
            name="born-public", disk_format="qcow2", container_format="bare", visibility="public"
        )
        before = set(registry.blobs())
        refused = api.upload(image["id"], images["seeded.qcow2"].read_bytes())
        assert refused.status_code == 409, refused.text
        assert "cannot be made public" in refused.text and "root-password" in refused.text
        after = api.get(f"/image/v2/images/{image['id']}").json()
        assert after["status"] == "queued" and "imagewright_audit" not in after
        assert set(registry.blobs()) == before
        # With the owner's override set first, the same data is accepted.
        assert patch(api, image["id"], ("add", "/imagewright_allow_secrets", "true")).status_code == 200
        accepted = api.upload(image["id"], images["seeded.qcow2"].read_bytes())
        assert accepted.status_code == 204, accepted.text
        assert api.get(f"/image/v2/images/{image['id']}").json()["status"] == "active"


def test_glance_direct_import_fills_properties_and_keeps_the_rule(
    registry: RegistryServer, images: dict[str, Path]
) -> None:
    with registry.api(registry.token()) as api:
        for name, path, visibility in (
            ("imported", "debian.qcow2", "shared"),
            ("imported-pub", "seeded.qcow2", "public"),
        ):
            image = api.create_image(
                name=name, disk_format="qcow2", container_format="bare", visibility=visibility
            )
            staged = api.put(
                f"/image/v2/images/{image['id']}/stage",
                content=images[path].read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert staged.status_code == 204, staged.text
            started = api.post(
                f"/image/v2/images/{image['id']}/import", json={"method": {"name": "glance-direct"}}
            )
            assert started.status_code == 202, started.text
            task = wait_for_task(api, image["id"])
            shown = image_of(api, image["id"])
            if visibility == "shared":
                assert task["status"] == "success", task
                assert shown["os_distro"] == "debian" and shown["imagewright_audit"] == "clean"
            else:
                assert task["status"] == "failure", task
                assert "cannot be made public" in task["message"] and "ssh-host-keys" in task["message"]
                assert shown["status"] == "queued" and "imagewright_audit" not in shown


# --- who may: 401 / 403 / 404 -------------------------------------------------------------------


def test_the_override_and_publishing_follow_the_image_rules(
    registry: RegistryServer, images: dict[str, Path]
) -> None:
    image_id = create_with_file(registry, "carols", images["seeded.qcow2"], user="carol")
    with registry.api(None) as anonymous:
        assert patch(anonymous, image_id, ("add", "/imagewright_allow_secrets", "true")).status_code == 401
    with registry.api(registry.token("olga", PASSWORD, "others")) as olga:
        # Not shared with olga's project: the image does not exist for her.
        assert patch(olga, image_id, ("add", "/imagewright_allow_secrets", "true")).status_code == 404
    with registry.api(registry.token("carol", PASSWORD, "team")) as carol:
        shared = carol.post(f"/image/v2/images/{image_id}/members", json={"member": OTHERS[-1]})
        assert shared.status_code == 200, shared.text
    with registry.api(registry.token("olga", PASSWORD, "others")) as olga:
        # A member project sees it, but may not change it: 403, and nothing changed.
        assert patch(olga, image_id, ("add", "/imagewright_allow_secrets", "true")).status_code == 403
        assert patch(olga, image_id, ("replace", "/visibility", "community")).status_code == 403
    assert "imagewright_allow_secrets" not in properties_of(registry, image_id)


# --- the other ways in: register-local, and a blob in S3 ----------------------------------------


def test_register_local_fills_properties_and_keeps_the_rule(images: dict[str, Path], tmp_path: Path) -> None:
    srv = tmp_path / "srv"
    srv.mkdir()
    with RegistryServer(tmp_path / "data", extra_args=["--store", f"local=file-inplace://{srv}"]) as server:
        used = srv / "used.qcow2"
        shutil.copyfile(images["seeded.qcow2"], used)
        refused = register_local(server, used, "--visibility", "public")
        assert refused.returncode == 1
        assert "cannot be made public" in refused.stderr and "ssh-host-keys" in refused.stderr
        assert json.loads(server.openstack("image", "list", "-f", "json").stdout) == []
        accepted = register_local(
            server, used, "--visibility", "public", "--property", "imagewright_allow_secrets=true", "--json"
        )
        assert accepted.returncode == 0, accepted.stderr
        view = json.loads(accepted.stdout)
        assert view["visibility"] == "public" and view["os_distro"] == "debian"
        assert view["imagewright_audit"].startswith("secret: authorized-keys")


def register_local(server: RegistryServer, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "imagewright"),
            "image",
            "register-local",
            str(path),
            *args,
            "--data-dir",
            str(server.data_dir),
        ],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_blob_in_s3_is_read_from_a_local_copy_that_goes_away(
    request: pytest.FixtureRequest, images: dict[str, Path], tmp_path: Path
) -> None:
    with make_server(request, tmp_path, S3) as server:
        image_id = create_with_file(server, "in-s3", images["debian.qcow2"])
        shown = properties_of(server, image_id)
        assert shown["stores"] == "bulk"
        assert {name: shown[name] for name in OS_PROPERTIES} == {
            "os_distro": "debian",
            "os_version": debian_truth().version_id,
            "architecture": debian_truth().architecture,
            "os_type": "linux",
        }
        assert shown["imagewright_audit"] == "clean"
        scratch = server.data_dir / "scratch"
        assert scratch.is_dir() and list(scratch.iterdir()) == []
