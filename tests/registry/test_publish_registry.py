"""``imagewright publish --to …,registry --cloud NAME`` and ``image register-bundle``, as real
processes against a started registry, through the ``clouds.yaml`` it wrote (OS_CLIENT_CONFIG_FILE,
``--cloud imagewright``), every result read back by the openstack CLI and qemu-img.

- The files of the one read are published and uploaded: the qcow2 as the disk image (its md5
  as the registry reports it is md5sum's of the published file), the signed OVA as its own
  ``ova`` image with its signer recorded; the data downloaded is the source's guest.
- ``--to registry`` alone uploads a qcow2 made for the upload and keeps no file.
- EC2 triplets: a kernel (aki) and a ramdisk (ari) in the registry; ``publish --to
  bundle,registry --kernel aki-… --ramdisk ari-…`` writes the EC2 ids into the bundle manifest
  and ``kernel_id``/``ramdisk_id`` (the registry ids) on the uploaded image; ``image
  register-bundle`` of that bundle registers an ``ami`` image with the same links.
- A link to nothing, or to an image that is not a kernel, is one sentence and nothing is made;
  an upload the registry refuses (too large) fails the publish, and nothing is left in the
  directory or the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.registry import BIN, RegistryServer
from tests.fixtures.tools import qemu_img, run
from tests.guest.images import GuestImage
from tests.package.helpers import MiB, publish_keys, publish_sources
from tests.package.tuned_guests import TUNED, debian_shaped, output_as_raw, tuned_files

from imagewright.metadata.imds import ec2_image_id

pytestmark = pytest.mark.integration

SIZE = 24 * MiB


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path_factory.mktemp("publish-registry") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    return publish_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("src")
    return publish_sources(work, SIZE, [(0, 8192, 0x71), (17 * MiB, 1 * MiB, 0x72)], 3 * MiB, seed=5)


def iw(registry: RegistryServer, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "imagewright"), *map(str, args)],
        env=registry.client_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def iw_json(registry: RegistryServer, *args: object) -> Any:
    result = iw(registry, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def osc_show(registry: RegistryServer, ref: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(registry.openstack("image", "show", ref, "-f", "json").stdout)
    return shown


def osc_ids(registry: RegistryServer) -> set[str]:
    return {row["ID"] for row in json.loads(registry.openstack("image", "list", "-f", "json").stdout)}


def md5(path: Path) -> str:
    return run("md5sum", path).stdout.decode().split()[0]


def one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("imagewright: error: ") and "Traceback" not in result.stderr
    return line


def test_publish_uploads_the_qcow2_and_the_signed_ova(
    registry: RegistryServer, sources: tuple[Path, Path], keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    raw, qcow2 = sources
    out = tmp_path / "out"
    out.mkdir()
    report = iw_json(
        registry, "publish", qcow2, "--to", "qcow2,ova,registry", "-d", out, "--name", "web",
        "--sign", keys["user"][0], "--sign-cert", keys["user"][1], "--cloud", "imagewright",
        "--property", "os_distro=debian",
    )  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "web.ova", "web.qcow2"]
    assert "OK" in run("bash", "-c", f"cd {out} && sha256sum -c --strict SHA256SUMS").stdout.decode()
    disk, ova = report["registry"]
    assert disk["file"] == str(out / "web.qcow2") and ova["file"] == str(out / "web.ova")

    shown = osc_show(registry, disk["id"])
    assert (shown["name"], shown["disk_format"], shown["container_format"]) == ("web", "qcow2", "bare")
    assert shown["status"] == "active" and shown["checksum"] == md5(out / "web.qcow2") == disk["checksum"]
    assert (
        shown["properties"]["os_hash_value"] == hashlib.sha512((out / "web.qcow2").read_bytes()).hexdigest()
    )
    assert shown["properties"]["os_distro"] == "debian"
    downloaded = tmp_path / "downloaded.qcow2"
    registry.openstack("image", "save", "--file", str(downloaded), disk["id"])
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "qcow2", raw, downloaded)

    shown = osc_show(registry, ova["id"])
    assert (shown["name"], shown["disk_format"], shown["container_format"]) == ("web.ova", "vmdk", "ova")
    assert shown["checksum"] == md5(out / "web.ova")
    assert shown["properties"]["imagewright_ova_signer"] == "CN=user"
    for image_id in (disk["id"], ova["id"]):
        registry.openstack("image", "delete", image_id)


def test_registry_alone_uploads_a_qcow2_made_for_it_and_keeps_no_file(
    registry: RegistryServer, sources: tuple[Path, Path], tmp_path: Path
) -> None:
    raw, _ = sources
    out = tmp_path / "out"
    out.mkdir()
    report = iw_json(registry, "publish", raw, "--to", "registry", "-d", out, "--name", "only")
    assert [p.name for p in out.iterdir()] == ["SHA256SUMS"] and report["files"] == []
    assert (out / "SHA256SUMS").read_text() == ""
    (upload,) = report["registry"]
    assert upload["disk_format"] == "qcow2" and "made for the upload" in upload["file"]
    downloaded = tmp_path / "only.qcow2"
    registry.openstack("image", "save", "--file", str(downloaded), upload["id"])
    assert md5(downloaded) == upload["checksum"]
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "qcow2", raw, downloaded)
    registry.openstack("image", "delete", upload["id"])


def test_the_registry_gets_the_boot_tuned_guest_and_the_source_is_not_written(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """publish's default boot-tuning reaches the registry: the uploaded disk is the tuned one."""
    debian = debian_shaped(tmp_path / "src")
    before = hashlib.sha256(debian.qcow2.read_bytes()).hexdigest()
    out = tmp_path / "out"
    out.mkdir()
    report = iw_json(
        registry, "publish", debian.qcow2, "--to", "qcow2,registry", "-d", out, "--name", "tuned"
    )
    assert hashlib.sha256(debian.qcow2.read_bytes()).hexdigest() == before
    assert report["tuning"]["applied"] is True and report["tuning"]["changes"] == len(TUNED)
    (upload,) = report["registry"]
    downloaded = tmp_path / "downloaded.qcow2"
    registry.openstack("image", "save", "--file", str(downloaded), upload["id"])
    assert md5(downloaded) == upload["checksum"] == md5(out / "tuned.qcow2")
    raw = output_as_raw(downloaded, tmp_path)
    assert tuned_files(GuestImage(raw, debian.root_offset)) == tuned_files(debian.reference)
    registry.openstack("image", "delete", upload["id"])


@pytest.fixture(scope="module")
def triplet(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A kernel (aki) and a ramdisk (ari) in the registry: id → their registry ids."""
    work = tmp_path_factory.mktemp("triplet")
    kernel, ramdisk = work / "vmlinuz", work / "initrd.img"
    kernel.write_bytes(os.urandom(300_000))
    ramdisk.write_bytes(os.urandom(200_000))
    made = {}
    for path, kind in ((kernel, "aki"), (ramdisk, "ari")):
        shown = json.loads(
            registry.openstack(
                "image", "create", path.name, "--disk-format", kind, "--container-format", kind,
                "--file", str(path), "-f", "json",
            ).stdout
        )  # fmt: skip
        made[kind] = shown["id"]
    return made


def test_kernel_and_ramdisk_links_in_the_bundle_and_the_registry(
    registry: RegistryServer,
    sources: tuple[Path, Path],
    keys: dict[str, tuple[Path, Path]],
    triplet: dict[str, str],
    tmp_path: Path,
) -> None:
    raw, qcow2 = sources
    aki, ari = ec2_image_id(triplet["aki"], "aki"), ec2_image_id(triplet["ari"], "ari")
    out = tmp_path / "out"
    out.mkdir()
    report = iw_json(
        registry, "publish", qcow2, "--to", "bundle,qcow2,registry", "-d", out, "--name", "emi",
        "--user", "123456789012", "--cert", keys["user"][1], "--privatekey", keys["user"][0],
        "--ec2cert", keys["cloud"][1], "--kernel", aki, "--ramdisk", ari,
    )  # fmt: skip
    manifest = (out / "emi.img.manifest.xml").read_text()
    assert f"<kernel_id>{aki}</kernel_id><ramdisk_id>{ari}</ramdisk_id>" in manifest
    (upload,) = report["registry"]
    properties = osc_show(registry, upload["id"])["properties"]
    assert (properties["kernel_id"], properties["ramdisk_id"]) == (triplet["aki"], triplet["ari"])

    # euca-register's step: the bundle, verified and unbundled, registered as an ami with the links.
    registered = iw_json(
        registry, "image", "register-bundle", out / "emi.img.manifest.xml", "--privatekey", keys["user"][0],
        "--cert", keys["user"][1], "--name", "emi-bundle",
    )  # fmt: skip
    shown = osc_show(registry, registered["id"])
    assert (shown["disk_format"], shown["container_format"], shown["status"]) == ("ami", "ami", "active")
    assert shown["properties"]["kernel_id"] == triplet["aki"]
    assert shown["properties"]["ramdisk_id"] == triplet["ari"]
    assert shown["properties"]["architecture"] == "x86_64"
    assert shown["checksum"] == md5(raw)  # the bundle's image is the raw guest
    for image_id in (upload["id"], registered["id"]):
        registry.openstack("image", "delete", image_id)

    # A tampered bundle (its kernel link edited to another kernel of the registry) is refused by
    # the manifest's signature, which covers the link; nothing is made.
    other = tmp_path / "other-vmlinuz"
    other.write_bytes(os.urandom(100_000))
    other_id = iw_json(registry, "image", "upload", other, "--name", "other", "--disk-format", "aki",
                       "--container-format", "aki")["id"]  # fmt: skip
    before = osc_ids(registry)
    (out / "emi.img.manifest.xml").write_text(manifest.replace(aki, ec2_image_id(other_id, "aki")))
    line = one_sentence(
        iw(
            registry,
            "image",
            "register-bundle",
            out / "emi.img.manifest.xml",
            "--privatekey",
            keys["user"][0],
        )
    )
    assert "signature does not verify" in line, line
    assert osc_ids(registry) == before
    registry.openstack("image", "delete", other_id)


@pytest.mark.parametrize(
    ("kernel", "reason"),
    [("aki-00000000000000000", "is not an aki image in"), ("ARI", "not an aki image")],
)
def test_a_bad_link_is_one_sentence_and_nothing_is_made(
    registry: RegistryServer,
    sources: tuple[Path, Path],
    triplet: dict[str, str],
    tmp_path: Path,
    kernel: str,
    reason: str,
) -> None:
    _, qcow2 = sources
    out = tmp_path / "out"
    out.mkdir()
    before = osc_ids(registry)
    ref = triplet["ari"] if kernel == "ARI" else kernel  # a ramdisk given as the kernel
    line = one_sentence(iw(registry, "publish", qcow2, "--to", "qcow2,registry", "-d", out, "--kernel", ref))
    assert reason in line, line
    assert list(out.iterdir()) == []
    assert osc_ids(registry) == before


def test_a_refused_upload_fails_the_publish_and_leaves_nothing(
    sources: tuple[Path, Path], tmp_path: Path
) -> None:
    _, qcow2 = sources
    with RegistryServer(tmp_path / "data", extra_args=["--max-image-size", "1M"]) as small:
        out = tmp_path / "out"
        out.mkdir()
        line = one_sentence(iw(small, "publish", qcow2, "--to", "qcow2,raw.gz,registry", "-d", out))
        assert "limit" in line, line
        assert list(out.iterdir()) == []
        assert osc_ids(small) == set() and small.blobs() == []
