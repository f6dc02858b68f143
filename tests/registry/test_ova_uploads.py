"""OVA uploads (``container_format=ova``) are verified as ``package verify`` verifies them.

A signed OVA uploaded by the openstack CLI turns ``active`` with its signer in properties the
registry sets (subject, certificate fingerprint as openssl computes it, self-signed) and no
client may write; an unsigned one with a manifest turns active as unsigned; every tampered
package (a flipped byte in the disk, an edited manifest, a signature by another key, a member
the manifest does not list or a listed one that is absent, the wrong order) is refused with
one sentence naming the problem, and nothing is kept — on the file store and on S3 (the
verification reads the blob by ranges). ``imagewright image upload`` refuses the same packages
before it sends a byte; a glance-direct import of one fails its task.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.registry import BIN, Api, RegistryServer
from tests.fixtures.tools import run
from tests.package.helpers import MiB, make_disk, make_key, read_members, repack
from tests.package.test_ova_hostile import CASES, Members
from tests.registry.imports_common import wait_for_task

from imagewright.package.ova import OvaOptions, package_ova
from imagewright.package.ovf_descriptor import MachineSpec
from imagewright.package.signing import load_signer

pytestmark = pytest.mark.integration

#: Tampering that only the package verification finds (the inspection passes every one).
TAMPERED = ("flipped-byte", "edited-manifest", "signature-other-key", "unlisted-member", "disk-first")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    work = tmp_path_factory.mktemp("keys")
    return {"signer": make_key(work, "signer"), "intruder": make_key(work, "intruder")}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, tuple[Path, Path]]) -> dict[str, Path]:
    """A signed OVA (vm.ovf, vm.mf, vm.cert, vm-disk1.vmdk) and an unsigned one."""
    work = tmp_path_factory.mktemp("ovas")
    disk = make_disk(work / "disk.raw", 8 * MiB, [(0, 4096, 0x31), (3 * MiB, 65536, 0x32)])
    signed, unsigned = work / "signed.ova", work / "unsigned.ova"
    package_ova(disk, signed, OvaOptions(MachineSpec(name="vm"), signer=load_signer(*keys["signer"])))
    package_ova(disk, unsigned, OvaOptions(MachineSpec(name="vm")))
    return {"signed": signed, "unsigned": unsigned}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("ova-registry") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def admin(registry: RegistryServer) -> Iterator[Api]:
    with registry.api(registry.token()) as api:
        yield api


def tampered(case: str, packages: dict[str, Path], keys: dict[str, tuple[Path, Path]], work: Path) -> Path:
    change, _ = CASES[case]
    members: Members = read_members(packages["signed"])
    scratch = work / f"{case}-work"
    scratch.mkdir()
    return repack(work / f"{case}.ova", change(list(members), keys, scratch))


def fingerprint(cert: Path) -> str:
    out = run("openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256").stdout.decode()
    return out.strip().split("=", 1)[1].replace(":", "").lower()


def assert_nothing_kept(server: RegistryServer, api: Api, image_id: str) -> None:
    image = api.get(f"/image/v2/images/{image_id}").json()
    assert image["status"] == "queued"
    assert image["size"] is None and image["checksum"] is None
    assert not any(name.startswith("imagewright_ova") for name in image)
    assert server.blobs() == []


def test_a_signed_ova_uploaded_by_the_openstack_cli_records_its_signer(
    registry: RegistryServer, packages: dict[str, Path], keys: dict[str, tuple[Path, Path]]
) -> None:
    shown = json.loads(
        registry.openstack(
            "image", "create", "signed-vm", "--disk-format", "vmdk", "--container-format", "ova",
            "--file", str(packages["signed"]), "-f", "json",
        ).stdout
    )  # fmt: skip
    image = json.loads(registry.openstack("image", "show", shown["id"], "-f", "json").stdout)
    assert image["status"] == "active"
    assert image["checksum"] == run("md5sum", packages["signed"]).stdout.decode().split()[0]
    properties = image["properties"]
    assert properties["imagewright_ova_signed"] == "true"
    assert properties["imagewright_ova_signer"] == "CN=signer"
    assert properties["imagewright_ova_certificate_sha256"] == fingerprint(keys["signer"][1])
    assert properties["imagewright_ova_signer_chain"] == "self-signed"
    registry.openstack("image", "delete", shown["id"])


def test_an_unsigned_ova_with_a_manifest_is_active_and_said_unsigned(
    admin: Api, packages: dict[str, Path]
) -> None:
    image = admin.create_image(name="unsigned-vm", disk_format="vmdk", container_format="ova")
    response = admin.upload(image["id"], packages["unsigned"].read_bytes())
    assert response.status_code == 204, response.text
    shown = admin.get(f"/image/v2/images/{image['id']}").json()
    assert shown["status"] == "active" and shown["imagewright_ova_signed"] == "false"
    assert "imagewright_ova_signer" not in shown
    admin.delete(f"/image/v2/images/{image['id']}")


def test_no_client_writes_the_signer_properties(admin: Api, packages: dict[str, Path]) -> None:
    response = admin.post(
        "/image/v2/images",
        json={
            "name": "forged",
            "disk_format": "vmdk",
            "container_format": "ova",
            "imagewright_ova_signer": "CN=ca",
        },
    )
    assert response.status_code == 403 and "reserved" in response.text
    image = admin.create_image(name="signed", disk_format="vmdk", container_format="ova")
    assert admin.upload(image["id"], packages["signed"].read_bytes()).status_code == 204
    for ops in (
        [{"op": "replace", "path": "/imagewright_ova_signer", "value": "CN=ca"}],
        [{"op": "remove", "path": "/imagewright_ova_signed"}],
    ):
        assert admin.patch(f"/image/v2/images/{image['id']}", ops).status_code == 403
    assert admin.get(f"/image/v2/images/{image['id']}").json()["imagewright_ova_signer"] == "CN=signer"
    admin.delete(f"/image/v2/images/{image['id']}")


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_ova_is_refused_with_its_reason_and_nothing_is_kept(
    case: str,
    registry: RegistryServer,
    admin: Api,
    packages: dict[str, Path],
    keys: dict[str, tuple[Path, Path]],
    tmp_path: Path,
) -> None:
    ova = tampered(case, packages, keys, tmp_path)
    image = admin.create_image(name=case, disk_format="vmdk", container_format="ova")
    response = admin.upload(image["id"], ova.read_bytes())
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert message.startswith("The OVA package is refused: ") and CASES[case][1] in message, message
    assert message.count(". ") == 0 and message.endswith(".")
    assert_nothing_kept(registry, admin, image["id"])
    admin.delete(f"/image/v2/images/{image['id']}")

    # The client judges with the same code and sends nothing (creates no image).
    before = len(admin.get("/image/v2/images").json()["images"])
    cli = subprocess.run(
        [str(BIN / "imagewright"), "image", "upload", str(ova), "--name", "client-side"],
        env=registry.client_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert cli.returncode == 1
    (line,) = cli.stderr.strip().splitlines()
    assert line.startswith("imagewright: error: ") and CASES[case][1] in line, line
    assert len(admin.get("/image/v2/images").json()["images"]) == before


def test_a_glance_direct_import_of_a_tampered_ova_fails_its_task(
    registry: RegistryServer,
    admin: Api,
    packages: dict[str, Path],
    keys: dict[str, tuple[Path, Path]],
    tmp_path: Path,
) -> None:
    ova = tampered("flipped-byte", packages, keys, tmp_path)
    image = admin.create_image(name="staged", disk_format="vmdk", container_format="ova")
    staged = admin.put(
        f"/image/v2/images/{image['id']}/stage",
        content=ova.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert staged.status_code == 204, staged.text
    started = admin.post(f"/image/v2/images/{image['id']}/import", json={"method": {"name": "glance-direct"}})
    assert started.status_code == 202, started.text
    task = wait_for_task(admin, image["id"])
    assert task["status"] == "failure"
    assert "does not match the manifest" in task["message"], task["message"]
    assert admin.get(f"/image/v2/images/{image['id']}").json()["status"] == "queued"
    admin.delete(f"/image/v2/images/{image['id']}")


def test_on_s3_the_ova_is_verified_by_ranged_reads(
    s3_registry: RegistryServer, packages: dict[str, Path], keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    with s3_registry.api(s3_registry.token()) as api:
        image = api.create_image(name="s3-signed", disk_format="vmdk", container_format="ova")
        assert api.upload(image["id"], packages["signed"].read_bytes()).status_code == 204
        shown = api.get(f"/image/v2/images/{image['id']}").json()
        assert shown["status"] == "active" and shown["imagewright_ova_signer"] == "CN=signer"
        assert shown["stores"] == "bulk"
        api.delete(f"/image/v2/images/{image['id']}")

        ova = tampered("edited-manifest", packages, keys, tmp_path)
        image = api.create_image(name="s3-tampered", disk_format="vmdk", container_format="ova")
        response = api.upload(image["id"], ova.read_bytes())
        assert response.status_code == 400 and "signature does not verify" in response.json()["message"]
        assert_nothing_kept(s3_registry, api, image["id"])
