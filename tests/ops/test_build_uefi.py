"""``build --firmware``: hybrid, UEFI-only and BIOS disks, cross-checked with sfdisk, sgdisk -v,
fsck.vfat -n, blkid, mtools and sbverify, and with ``inspect``: they must agree on the layout,
the ESP's files and what the disk boots under. Bad input is one sentence with nothing left.
(The boots under SeaBIOS and OVMF are in tests/compute/test_uefi_boot.py.)"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from tests.fixtures.tools import mtools, run, sfdisk_json
from tests.ops.test_build import assert_refused, build_json, by_role, extract

from imagewright.binary import FileSource
from imagewright.compute.testguest import FlatFilesystem, TestGuest
from imagewright.disk.filesystems.fat import FatVolume
from imagewright.disk.survey import required_firmware
from imagewright.inspection import inspect_image
from imagewright.ops.build import build

pytestmark = pytest.mark.integration

SECTOR = 512
MiB = 1 << 20


@pytest.fixture(scope="module")
def hybrid(
    testguest_rootfs: TestGuest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    image = tmp_path_factory.mktemp("hybrid") / "disk.raw"
    return image, build(testguest_rootfs.root, image).to_dict()


@pytest.fixture(scope="module")
def uefi_unsigned(
    testguest_rootfs: TestGuest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    image = tmp_path_factory.mktemp("uefi") / "disk.raw"
    return image, build(testguest_rootfs.root, image, firmware="uefi", efi_loader="unsigned").to_dict()


def test_hybrid_layout(hybrid: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    image, report = hybrid
    assert report["table"] == "gpt" and report["firmware"] == "hybrid"
    assert report["boots_under"] == ["bios", "uefi"] and report["image_properties"] == {}
    assert [(p["number"], p["role"]) for p in report["partitions"]] == [
        (1, "bios-boot"),
        (2, "esp"),
        (3, "root"),
    ]
    esp = by_role(report, "esp")
    assert esp["start"] == 4096 and esp["size"] == 100 * MiB
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" and esp["filesystem"] == "vfat"
    assert report["bootloader"]["location"] == "BIOS boot partition 1"
    assert report["bootloader"]["prefix"] == "(hd0,gpt3)/boot/grub"
    assert report["uefi"]["loader"]["kind"] == "signed" and report["uefi"]["secure_boot"] is True
    assert report["uefi"]["fat_type"] == "FAT32"
    # sfdisk and sgdisk read the same table.
    table = sfdisk_json(image)
    assert [(p["start"], p["size"], p["type"].upper()) for p in table["partitions"]] == [
        (p["start"], p["sectors"], p["type"].upper()) for p in report["partitions"]
    ]
    verify = run("sgdisk", "-v", image).stdout.decode()
    assert "No problems found" in verify, verify


def test_hybrid_esp_holds_the_signed_chain(hybrid: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    image, report = hybrid
    esp = by_role(report, "esp")
    part = extract(image, esp, tmp_path / "esp.raw")
    fsck = run("fsck.vfat", "-n", part, check=False)
    assert fsck.returncode == 0, fsck.stdout.decode() + fsck.stderr.decode()
    blkid = run("blkid", "-p", "-o", "export", part).stdout.decode()
    assert "TYPE=vfat" in blkid and "VERSION=FAT32" in blkid and f"UUID={esp['filesystem_uuid']}" in blkid
    listed = {
        line.strip()[3:] for line in mtools("mdir", "-/", "-b", "-i", part, "::/").decode().splitlines()
    }
    files = {f["path"]: f for f in report["uefi"]["files"]}
    assert {p for p in listed if not p.endswith("/")} == set(files)
    assert set(files) == {
        "EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi", "EFI/BOOT/mmx64.efi",
        "EFI/debian/shimx64.efi", "EFI/debian/grubx64.efi", "EFI/debian/mmx64.efi",
        "EFI/debian/BOOTX64.CSV", "EFI/debian/grub.cfg",
    }  # fmt: skip
    contents = {path: mtools("mtype", "-i", part, f"::/{path}") for path in files}
    for path, data in contents.items():
        assert hashlib.sha256(data).hexdigest() == files[path]["sha256"], path
    assert contents["EFI/BOOT/BOOTX64.EFI"] == contents["EFI/debian/shimx64.efi"]
    assert contents["EFI/BOOT/grubx64.efi"] == contents["EFI/debian/grubx64.efi"]
    root_uuid = report["root_filesystem"]["uuid"]
    config = contents["EFI/debian/grub.cfg"].decode()
    assert f"search --no-floppy --fs-uuid --set=root {root_uuid}" in config
    assert "configfile $prefix/grub.cfg" in config
    assert contents["EFI/debian/BOOTX64.CSV"].decode("utf-16").startswith("shimx64.efi,debian,")
    # The firmware's key (Microsoft) signed shim; Debian's key signed GRUB.
    (tmp_path / "shim.efi").write_bytes(contents["EFI/BOOT/BOOTX64.EFI"])
    (tmp_path / "grub.efi").write_bytes(contents["EFI/BOOT/grubx64.efi"])
    assert (
        "Microsoft Corporation UEFI CA 2011"
        in run("sbverify", "--list", tmp_path / "shim.efi").stdout.decode()
    )
    assert "Debian Secure Boot CA" in run("sbverify", "--list", tmp_path / "grub.efi").stdout.decode()
    # The BPB records the partition's start as its hidden sectors, as on a real partition.
    assert int.from_bytes(part.read_bytes()[0x1C:0x20], "little") == esp["start"]


def test_inspect_agrees_on_hybrid(hybrid: tuple[Path, dict[str, Any]]) -> None:
    image, report = hybrid
    disk = inspect_image(image).disk
    assert disk is not None and disk.boot is not None and disk.partition_table is not None
    boot = disk.boot
    assert boot.code.kind == "grub2" and boot.code.core_image_lba == 2048
    assert boot.partitions.bios_boot == [1] and boot.partitions.efi_system == [2]
    assert boot.boots_under == ["bios", "uefi"] and boot.uefi_architectures == ["x86_64"]
    assert required_firmware(boot) == "bios"
    found = {f.path: f for f in boot.efi_files}
    assert set(found) == {f["path"] for f in report["uefi"]["files"] if f["path"].endswith((".EFI", ".efi"))}
    first = found["EFI/BOOT/BOOTX64.EFI"]
    assert first.loader == "shim" and first.signed and first.removable_media_path
    assert (
        found["EFI/BOOT/grubx64.efi"].loader == "grub"
        and found["EFI/debian/mmx64.efi"].loader == "mokmanager"
    )
    parts = {p.number: p for p in disk.partition_table.partitions}
    esp_fs = parts[2].filesystem
    assert (
        esp_fs is not None
        and esp_fs.type == "vfat"
        and esp_fs.uuid == by_role(report, "esp")["filesystem_uuid"]
    )
    # The FAT reader walks the same volume mtools wrote.
    with FileSource(image) as src:
        from imagewright.binary import SliceSource

        esp = by_role(report, "esp")
        volume = FatVolume.open(SliceSource(src, esp["start"] * SECTOR, esp["size"]))
        assert volume is not None and volume.fat_bits == 32
        entry = volume.lookup("EFI/debian/grub.cfg")
        assert entry is not None
        assert report["root_filesystem"]["uuid"] in volume.read_file(entry, 0, entry.size).decode()


def test_uefi_only_unsigned(uefi_unsigned: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    image, report = uefi_unsigned
    assert report["firmware"] == "uefi" and report["boots_under"] == ["uefi"]
    assert report["image_properties"] == {"hw_firmware_type": "uefi"}
    assert report["bootloader"] is None
    assert [p["role"] for p in report["partitions"]] == ["esp", "root"]
    assert report["uefi"]["loader"]["kind"] == "unsigned" and report["uefi"]["secure_boot"] is False
    assert {f["path"] for f in report["uefi"]["files"]} == {
        "EFI/BOOT/BOOTX64.EFI", "EFI/debian/grubx64.efi", "EFI/debian/grub.cfg"
    }  # fmt: skip
    assert any("unsigned GRUB" in note for note in report["notes"]), report["notes"]
    # No boot code in the protective MBR: nothing for a BIOS to run.
    assert image.read_bytes()[:440] == bytes(440)
    assert "No problems found" in run("sgdisk", "-v", image).stdout.decode()
    part = extract(image, by_role(report, "esp"), tmp_path / "esp.raw")
    assert run("fsck.vfat", "-n", part, check=False).returncode == 0
    (tmp_path / "boot.efi").write_bytes(mtools("mtype", "-i", part, "::/EFI/BOOT/BOOTX64.EFI"))
    assert (
        "No signature table present"
        in run("sbverify", "--list", tmp_path / "boot.efi", check=False).stderr.decode()
    )
    disk = inspect_image(image).disk
    assert disk is not None and disk.boot is not None
    assert disk.boot.code.kind == "none" and disk.boot.boots_under == ["uefi"]
    assert required_firmware(disk.boot) == "uefi"
    (first,) = [f for f in disk.boot.efi_files if f.removable_media_path]
    assert first.loader == "grub" and not first.signed


def test_bios_on_gpt_has_no_esp(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    image = tmp_path / "disk.raw"
    report = build_json(
        run_cli, "--from", testguest_rootfs.root, "-o", image, "--firmware", "bios", "--table", "gpt"
    )
    assert [p["role"] for p in report["partitions"]] == ["bios-boot", "root"]
    assert report["uefi"] is None and report["boots_under"] == ["bios"]
    disk = inspect_image(image).disk
    assert disk is not None and disk.boot is not None
    assert disk.boot.boots_under == ["bios"] and disk.boot.efi_files == []


def test_esp_size_and_fallback_without_apt(
    run_cli: Callable[..., Result],
    testguest_rootfs: TestGuest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """APT that knows no package: auto falls back to an unsigned GRUB and says why; a small ESP is FAT16."""
    monkeypatch.setenv("APT_CONFIG", str(empty_apt(tmp_path)))
    image = tmp_path / "disk.raw"
    report = build_json(
        run_cli, "--from", testguest_rootfs.root, "-o", image, "--firmware", "uefi", "--esp-size", "20M"
    )
    assert report["uefi"]["loader"]["kind"] == "unsigned"
    (note,) = [n for n in report["notes"] if "unsigned GRUB" in n]
    assert "APT knows no package shim-signed" in note
    assert by_role(report, "esp")["size"] == 20 * MiB and report["uefi"]["fat_type"] == "FAT16"
    part = extract(image, by_role(report, "esp"), tmp_path / "esp.raw")
    assert run("fsck.vfat", "-n", part, check=False).returncode == 0
    assert "VERSION=FAT16" in run("blkid", "-p", "-o", "export", part).stdout.decode()


def empty_apt(tmp_path: Path) -> Path:
    """An APT configuration with no sources and no package lists."""
    root = tmp_path / "apt"
    for sub in ("lists/partial", "parts", "cache/archives/partial"):
        (root / sub).mkdir(parents=True)
    config = root / "apt.conf"
    config.write_text(
        f'Dir::State::Lists "{root}/lists";\nDir::Etc::SourceList "/dev/null";\n'
        f'Dir::Etc::SourceParts "{root}/parts";\nDir::Cache "{root}/cache";\n'
    )
    return config


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--firmware", "uefi", "--table", "mbr"], ["--firmware uefi needs a GPT disk", "--table gpt"]),
        (["--firmware", "hybrid", "--table", "mbr"], ["--firmware hybrid needs a GPT disk"]),
        (["--esp-size", "8M"], ["EFI System Partition of 8 MiB cannot hold", "give --esp-size"]),
        (["--esp-size", "1500K"], ["whole number of MiB"]),
        (["--size", "64M"], ["64 MiB disk", "100 MiB EFI System Partition", "give --size"]),
        (["--firmware", "bios", "--esp-size", "64M"], ["--esp-size applies to a disk that boots under UEFI"]),
        (
            ["--table", "mbr", "--efi-loader", "signed"],
            ["--efi-loader applies to a disk that boots under UEFI"],
        ),
    ],
)
def test_bad_input(
    run_cli: Callable[..., Result],
    testguest_rootfs: TestGuest,
    tmp_path: Path,
    args: list[str],
    fragments: list[str],
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(["build", "--from", testguest_rootfs.root, "-o", out / "disk.raw", *args])
    assert_refused(result, *fragments)
    assert os.listdir(out) == []


def test_signed_loader_demanded_without_apt(
    run_cli: Callable[..., Result],
    testguest_rootfs: TestGuest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APT_CONFIG", str(empty_apt(tmp_path)))
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(
        ["build", "--from", testguest_rootfs.root, "-o", out / "disk.raw", "--efi-loader", "signed"]
    )
    assert_refused(result, "signed UEFI boot loader could not be had", "APT knows no package shim-signed")
    assert os.listdir(out) == []


def test_missing_grub_efi_files(
    run_cli: Callable[..., Result],
    testguest_rootfs: TestGuest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEWRIGHT_GRUB_X86_64_EFI", str(tmp_path / "nowhere"))
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(
        [
            "build",
            "--from",
            testguest_rootfs.root,
            "-o",
            out / "disk.raw",
            "--firmware",
            "uefi",
            "--efi-loader",
            "unsigned",
        ]
    )
    assert_refused(result, "grub-efi-amd64-bin")
    assert os.listdir(out) == []


# [] is --firmware auto: a UEFI-only disk asks for UEFI, so the missing OVMF is what stops it.
@pytest.mark.parametrize("extra", [["--firmware", "uefi"], ["--secure-boot"], []])
def test_boot_without_ovmf(
    run_cli: Callable[..., Result],
    uefi_unsigned: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
) -> None:
    monkeypatch.setenv("IMAGEWRIGHT_OVMF_DIR", str(tmp_path))
    image, _report = uefi_unsigned
    result = run_cli(["boot", "--snapshot", "--timeout", "30", *extra, image])
    line = assert_refused(result, "install the Debian package 'ovmf'")
    assert re.search(r"UEFI firmware .*for QEMU is not installed", line), line


def test_secure_boot_with_bios_is_a_usage_error(
    run_cli: Callable[..., Result], uefi_unsigned: tuple[Path, dict[str, Any]]
) -> None:
    image, _report = uefi_unsigned
    result = run_cli(["boot", "--firmware", "bios", "--secure-boot", image])
    assert result.exit_code == 2 and "--secure-boot needs UEFI firmware" in result.stderr


def test_prepare_leaves_the_boot_paths_alone(hybrid: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    image, report = hybrid
    copy = tmp_path / "disk.raw"
    run("cp", "--sparse=always", image, copy)
    from imagewright.ops.prepare import prepare
    from imagewright.ops.prepare.model import PrepareOptions

    prepared = prepare(copy, options=PrepareOptions(agent=True, dns=("192.0.2.53",)))
    assert prepared.change_count > 0  # the root filesystem did change
    root_start = by_role(report, "root")["start"] * SECTOR
    with image.open("rb") as before, copy.open("rb") as after:
        assert before.read(root_start) == after.read(root_start)  # MBR, GPT, BIOS boot, ESP
    assert "No problems found" in run("sgdisk", "-v", copy).stdout.decode()
    disk = inspect_image(copy).disk
    assert disk is not None and disk.boot is not None and disk.boot.boots_under == ["bios", "uefi"]


def test_esp_is_reproducible_with_source_date_epoch(
    testguest_flat_ext4: FlatFilesystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same root filesystem (a flat ext4 with a fixed UUID) and SOURCE_DATE_EPOCH: the same ESP."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    esps = []
    for name in ("one.raw", "two.raw"):
        report = build(testguest_flat_ext4.path, tmp_path / name, size=256 * MiB).to_dict()
        esp = by_role(report, "esp")
        esps.append(extract(tmp_path / name, esp, tmp_path / f"{name}.esp").read_bytes())
    assert esps[0] == esps[1]
    listing = mtools("mdir", "-i", tmp_path / "one.raw.esp", "::/EFI/BOOT").decode()
    assert "2023-11-14" in listing  # 1700000000 is 2023-11-14 22:13:20 UTC
