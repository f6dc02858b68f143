"""``build`` of a source with its own signed UEFI chain: the ESP gets the guest's shim and GRUB.

The test guest's tree is given what Ubuntu's ``shim-signed`` and ``grub-efi-amd64-signed``
install: ``/usr/lib/shim/shimx64.efi.signed`` as an alternatives link to
``shimx64.efi.signed.latest`` (the bytes of a real Microsoft-signed shim, Debian's, from
build's own cache), and ``/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed``: a GRUB linked
by grub-mkimage with the prefix ``/EFI/testos`` and signed by ``sbsign`` with a key made here,
as a distribution signs its GRUB. The ESP must hold exactly those bytes in ``EFI/testos`` and
``EFI/BOOT`` (read back with mtools, the signature checked with ``sbverify --cert``), and
inspect must find the guest's shim at the removable-media path. A guest whose GRUB is unsigned
gets build's chain and a note saying why. (A real Ubuntu guest booted with Secure Boot on is in
tests/ops/test_build_distro_ubuntu.py.)
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from tests.fixtures.tools import mtools, run
from tests.ops.test_build import build_json, by_role, extract

from imagewright.compute.testguest import TestGuest
from imagewright.inspection import inspect_image
from imagewright.ops.build.efiloader import UNSIGNED_MODULES, grub_efi_directory, signed_loader
from imagewright.programs import grub

pytestmark = pytest.mark.integration

SHIM = "usr/lib/shim/shimx64.efi.signed"
GRUB = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("sb-key")
    key, cert = directory / "db.key", directory / "db.crt"
    run(
        "openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        "-subj", "/CN=imagewright test OS Secure Boot Signing", "-keyout", key, "-out", cert,
    )  # fmt: skip
    return key, cert


def grub_image(directory: Path, prefix: str) -> Path:
    output = directory / "grubx64.efi"
    grub.mkimage(output, prefix=prefix, modules=UNSIGNED_MODULES, target="x86_64-efi")
    return output


def tree_with_chain(
    testguest: TestGuest, directory: Path, grub_file: Path, *, signing: tuple[Path, Path] | None
) -> Path:
    """A copy of the test guest with a shim (behind Ubuntu's alternatives link) and ``grub_file``."""
    root = directory / "root"
    shutil.copytree(testguest.root, root, symlinks=True)
    shim_dir = root / "usr/lib/shim"
    shim_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(signed_loader().binary("shimx64.efi").path, shim_dir / "shimx64.efi.signed.latest")
    (root / "etc/alternatives").mkdir(parents=True, exist_ok=True)
    (root / "etc/alternatives/shimx64.efi.signed").symlink_to("/usr/lib/shim/shimx64.efi.signed.latest")
    (root / SHIM).symlink_to("/etc/alternatives/shimx64.efi.signed")
    (root / GRUB).parent.mkdir(parents=True)
    if signing is None:
        shutil.copyfile(grub_file, root / GRUB)
    else:
        key, cert = signing
        run("sbsign", "--key", key, "--cert", cert, "--output", root / GRUB, grub_file)
    return root


def esp_contents(image: Path, report: dict[str, Any], scratch: Path) -> dict[str, bytes]:
    part = extract(image, by_role(report, "esp"), scratch / "esp.raw")
    assert run("fsck.vfat", "-n", part, check=False).returncode == 0
    listed = {
        line.strip()[3:] for line in mtools("mdir", "-/", "-b", "-i", part, "::/").decode().splitlines()
    }
    return {path: mtools("mtype", "-i", part, f"::/{path}") for path in listed if not path.endswith("/")}


def test_grub_efi_directory_is_read_from_the_image(tmp_path: Path) -> None:
    assert grub_efi_directory(grub_image(tmp_path, "/EFI/ubuntu")) == "ubuntu"
    other = tmp_path / "other"
    other.mkdir()
    assert grub_efi_directory(grub_image(other, "/boot/grub")) is None
    # shim is no GRUB: no prefix module in it.
    assert grub_efi_directory(signed_loader().binary("shimx64.efi").path) is None


def test_the_esp_gets_the_guests_own_signed_chain(
    run_cli: Callable[..., Result],
    testguest_rootfs: TestGuest,
    signing_key: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    root = tree_with_chain(
        testguest_rootfs, tmp_path, grub_image(tmp_path, "/EFI/testos"), signing=signing_key
    )
    image = tmp_path / "disk.raw"
    report = build_json(run_cli, "--from", root, "-o", image)
    loader = report["uefi"]["loader"]
    assert (loader["owner"], loader["kind"], loader["vendor_directory"]) == ("guest", "signed", "testos")
    assert report["uefi"]["secure_boot"] is True
    by_name = {b["name"]: b for b in loader["binaries"]}
    assert set(by_name) == {"shimx64.efi", "grubx64.efi"}  # no signed MokManager in this guest
    assert by_name["shimx64.efi"]["origin"] == "the guest's /usr/lib/shim/shimx64.efi.signed.latest"
    assert "imagewright test OS Secure Boot Signing" in by_name["grubx64.efi"]["signers"]
    (note,) = [n for n in report["notes"] if "the guest's own signed shim and GRUB" in n]
    assert "EFI/testos" in note and "imagewright test OS Secure Boot Signing" in note

    contents = esp_contents(image, report, tmp_path)
    assert set(contents) == {
        "EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi", "EFI/testos/shimx64.efi",
        "EFI/testos/grubx64.efi", "EFI/testos/BOOTX64.CSV", "EFI/testos/grub.cfg",
    }  # fmt: skip
    shim = (root / "usr/lib/shim/shimx64.efi.signed.latest").read_bytes()
    signed_grub = (root / GRUB).read_bytes()
    assert contents["EFI/BOOT/BOOTX64.EFI"] == shim == contents["EFI/testos/shimx64.efi"]
    assert contents["EFI/BOOT/grubx64.efi"] == signed_grub == contents["EFI/testos/grubx64.efi"]
    files = {f["path"]: f for f in report["uefi"]["files"]}
    for path, data in contents.items():
        assert hashlib.sha256(data).hexdigest() == files[path]["sha256"], path
    assert contents["EFI/testos/BOOTX64.CSV"].decode("utf-16").startswith("shimx64.efi,testos,")
    assert f"--set=root {report['root_filesystem']['uuid']}" in contents["EFI/testos/grub.cfg"].decode()
    # The guest's key signed the GRUB on the ESP (sbverify, not our PE reader, says so).
    (tmp_path / "esp-grub.efi").write_bytes(contents["EFI/BOOT/grubx64.efi"])
    verified = run("sbverify", "--cert", signing_key[1], tmp_path / "esp-grub.efi", check=False)
    assert verified.returncode == 0, verified.stderr.decode()
    # inspect sees shim at the removable-media path and a disk for both firmwares.
    disk = inspect_image(image).disk
    assert disk is not None and disk.boot is not None
    found = {f.path: f for f in disk.boot.efi_files}
    assert found["EFI/BOOT/BOOTX64.EFI"].loader == "shim" and found["EFI/testos/grubx64.efi"].loader == "grub"
    assert disk.boot.boots_under == ["bios", "uefi"]


def test_an_unsigned_guest_grub_is_not_used(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    root = tree_with_chain(testguest_rootfs, tmp_path, grub_image(tmp_path, "/EFI/testos"), signing=None)
    tarball = tmp_path / "rootfs.tar"
    run("tar", "-C", root, "--numeric-owner", "--owner", "0", "--group", "0", "-cf", tarball, ".")
    report = build_json(run_cli, "--from", tarball, "-o", tmp_path / "disk.raw", "--firmware", "uefi")
    loader = report["uefi"]["loader"]
    assert loader["owner"] == "build" and loader["vendor_directory"] == "debian"
    (note,) = [n for n in report["notes"] if "own signed UEFI chain was not used" in n]
    assert f"/{GRUB} is not a signed x86-64 EFI application" in note
    # --efi-loader unsigned is obeyed even when the guest has a signed chain.
    report = build_json(
        run_cli, "--from", root, "-o", tmp_path / "unsigned.raw", "--firmware", "uefi",
        "--efi-loader", "unsigned",
    )  # fmt: skip
    assert report["uefi"]["loader"]["kind"] == "unsigned" and report["uefi"]["loader"]["owner"] == "build"
