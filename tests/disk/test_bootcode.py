"""Boot code fingerprints on real boot loaders' MBR code (GRUB 2 boot.img, SYSLINUX mbr/gptmbr)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from tests.disk.helpers import MiB, new_disk, read_bytes, read_table, write_bytes

from imagewright.disk.bootcode import detect_boot_code, find_boot_partitions, partition_holding

pytestmark = pytest.mark.integration

GRUB_BOOT_IMG = Path("/usr/lib/grub/i386-pc/boot.img")
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr")


def installed(path: Path) -> bytes:
    if not path.exists():
        package = "grub-pc-bin" if "grub" in str(path) else "syslinux-common"
        pytest.fail(f"{path} is missing: install {package} (`make test` installs it)")
    return path.read_bytes()


def test_grub2_boot_img_in_an_mbr_and_its_core_image_pointer(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "grub.img", 16 * MiB, "label: dos\n,,83,*\n")
    write_bytes(disk, 0, installed(GRUB_BOOT_IMG)[:440])
    code = detect_boot_code(read_bytes(disk, 0, 512))
    assert code.kind == "grub2"
    # boot.img as shipped points at sector 1: core.img embedded right after the MBR.
    assert code.core_image_lba == 1
    assert code.bios_bootable and "core.img at sector 1" in code.description
    table = read_table(disk)
    assert table is not None and table.partitions[0].bootable
    assert find_boot_partitions(table).active == [1]


def test_grub2_on_gpt_points_into_the_bios_boot_partition(tmp_path: Path) -> None:
    script = "label: gpt\nsize=1M, type=21686148-6449-6E6F-744E-656564454649\nsize=4M, type=U\ntype=L\n"
    disk = new_disk(tmp_path, "grubgpt.img", 32 * MiB, script)
    table = read_table(disk)
    assert table is not None
    bios_boot = table.partitions[0]
    sector = bytearray(read_bytes(disk, 0, 512))
    sector[:440] = installed(GRUB_BOOT_IMG)[:440]
    # What grub-install writes into boot.img's kernel-sector field on such a disk.
    struct.pack_into("<Q", sector, 0x5C, bios_boot.start)
    write_bytes(disk, 0, bytes(sector))
    code = detect_boot_code(read_bytes(disk, 0, 512))
    assert (code.kind, code.core_image_lba) == ("grub2", bios_boot.start)
    assert partition_holding(table, bios_boot.start) == bios_boot
    found = find_boot_partitions(table)
    assert (found.bios_boot, found.efi_system) == ([1], [2])
    # The protective MBR is still read as a GPT disk with boot code in it.
    assert read_table(disk).kind == "gpt"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("mbr.bin", "SYSLINUX mbr.bin"),
        ("altmbr.bin", "SYSLINUX altmbr.bin"),
        ("gptmbr.bin", "SYSLINUX gptmbr.bin (GPT boot code)"),
    ],
)
def test_syslinux_mbr_code(tmp_path: Path, name: str, description: str) -> None:
    disk = new_disk(tmp_path, f"{name}.img", 16 * MiB, "label: dos\n,,83,*\n")
    write_bytes(disk, 0, installed(SYSLINUX_MBR / name)[:440])
    code = detect_boot_code(read_bytes(disk, 0, 512))
    assert (code.kind, code.description, code.core_image_lba) == ("syslinux", description, None)


def test_zero_boot_code_is_none(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "zero.img", 16 * MiB, "label: dos\n,,83,*\n")
    code = detect_boot_code(read_bytes(disk, 0, 512))
    assert code.kind == "none" and not code.bios_bootable


def test_grub_legacy_stage1_layout() -> None:
    # GRUB 0.97's stage1: EB 48 90 jump, stage2 sector (u32) at 0x44, the usual strings.
    # No package on Debian 12 ships it, so its documented layout is built here.
    sector = bytearray(512)
    sector[:3] = b"\xeb\x48\x90"
    struct.pack_into("<I", sector, 0x44, 1)
    strings = b"GRUB \0Geom\0Hard Disk\0Read\0 Error\0"
    sector[0x17A : 0x17A + len(strings)] = strings
    code = detect_boot_code(bytes(sector))
    assert (code.kind, code.core_image_lba) == ("grub-legacy", 1)


def test_microsoft_mbr_strings() -> None:
    sector = bytearray(os.urandom(440))
    messages = b"Invalid partition table\0Error loading operating system\0Missing operating system\0"
    sector[0x163 : 0x163 + len(messages)] = messages
    assert detect_boot_code(bytes(sector)).kind == "windows"


def test_other_code_and_short_input() -> None:
    assert detect_boot_code(b"\xfa\x31\xc0" + bytes(437)).kind == "other"
    assert detect_boot_code(b"").kind == "none"
    assert detect_boot_code(b"\xeb\x63\x90").kind == "other"


def test_syslinux_volume_boot_record_oem_id() -> None:
    sector = bytearray(512)
    sector[:3] = b"\xeb\x58\x90"
    sector[3:11] = b"SYSLINUX"
    sector[90:100] = b"\x0e\x1f\xbe\x77\x7c\xac\x22\xc0\x74\x0b"
    assert detect_boot_code(bytes(sector)).description == "SYSLINUX volume boot record"
