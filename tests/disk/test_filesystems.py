"""Filesystem signatures made by the real mkfs tools, probed by us and by ``blkid -p``: they must agree."""

from __future__ import annotations

import struct
import uuid as uuid_module
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.disk.helpers import MiB, blkid_probe, copy_into, new_disk, write_bytes
from tests.fixtures.tools import run, sparse_file

from imagewright.binary import FileSource
from imagewright.disk.filesystems import FilesystemInfo, probe_filesystem
from imagewright.disk.partitions import read_partition_table

pytestmark = pytest.mark.integration

FIXED_UUID = "0b3a1c2d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

# blkid keys that map onto FilesystemInfo.details.
DETAIL_KEYS = {
    "SEC_TYPE": "sec_type",
    "LABEL_FATBOOT": "label_fatboot",
    "UUID_SUB": "uuid_sub",
    "LOGUUID": "log_uuid",
    "SYSTEM_ID": "system_id",
    "VOLUME_SET_ID": "volume_set_id",
    "PUBLISHER_ID": "publisher_id",
    "DATA_PREPARER_ID": "data_preparer_id",
    "APPLICATION_ID": "application_id",
    "BOOT_SYSTEM_ID": "boot_system_id",
    "SUBSYSTEM": "subsystem",
}


def assert_like_blkid(info: FilesystemInfo | None, expected: dict[str, str]) -> None:
    assert "TYPE" in expected, f"blkid found nothing: {expected}"
    assert info is not None, f"we found nothing where blkid found {expected['TYPE']}"
    assert info.type == expected["TYPE"]
    assert info.label == expected.get("LABEL")
    assert info.uuid == expected.get("UUID")
    assert info.version == expected.get("VERSION")
    assert info.usage == expected["USAGE"]
    assert info.block_size == (int(expected["BLOCK_SIZE"]) if "BLOCK_SIZE" in expected else None)
    for key, detail in DETAIL_KEYS.items():
        assert info.details.get(detail) == expected.get(key), key
    assert info.problems == []


def probe_file(path: Path, offset: int = 0, size: int | None = None) -> FilesystemInfo | None:
    with FileSource(path) as src:
        return probe_filesystem(src, offset, size)


def mkfs(tmp: Path, name: str, size: int, *argv: str) -> Path:
    path = sparse_file(tmp / name, size)
    run(*argv, path)
    return path


def iso(tmp: Path, name: str, *argv: str) -> Path:
    content = tmp / "iso-content"
    content.mkdir(exist_ok=True)
    (content / "meta-data").write_text("instance-id: i-1\n")
    (content / "boot.bin").write_bytes(b"\xeb\xfe" * 1024)
    (content / "a-long-directory-name").mkdir(exist_ok=True)
    path = tmp / name
    run(*argv, "-o", path, content)
    return path


def luks(tmp: Path, name: str, *argv: str) -> Path:
    path = sparse_file(tmp / name, 32 * MiB)
    run(
        "cryptsetup",
        "luksFormat",
        "-q",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        "-",
        *argv,
        path,
        input=b"not-a-secret",
    )
    return path


def lvm2_pv_label(tmp: Path, name: str, sector: int) -> Path:
    """An LVM2 PV label as pvcreate writes it (pvcreate itself needs a block device)."""
    path = sparse_file(tmp / name, 16 * MiB)
    pv_uuid = b"mme77N7PFNtjnzc5SBl7hoQdskaqEw77"
    label = bytearray(512)
    label[0:8] = b"LABELONE"
    struct.pack_into("<Q", label, 8, sector)
    struct.pack_into("<I", label, 20, 32)
    label[24:32] = b"LVM2 001"
    label[32:64] = pv_uuid
    struct.pack_into("<QQQQQQQ", label, 64, 16 * MiB, 1 * MiB, 0, 0, 0, 4096, 1 * MiB - 4096)
    crc = zlib.crc32(bytes(label[20:]), 0xF597A6CF ^ 0xFFFFFFFF) ^ 0xFFFFFFFF
    struct.pack_into("<I", label, 16, crc)
    write_bytes(path, sector * 512, bytes(label))
    return path


def squashfs(tmp: Path, name: str) -> Path:
    content = tmp / "sq-content"
    content.mkdir(exist_ok=True)
    (content / "hello").write_text("hello\n")
    path = tmp / name
    run("mksquashfs", content, path, "-quiet", "-noappend")
    return path


def swap_with(tmp: Path, name: str, magic: bytes) -> Path:
    path = mkfs(tmp, name, 16 * MiB, "mkswap", "-q", "-L", "hibernated", "-U", FIXED_UUID)
    write_bytes(path, 4096 - 10, magic)
    return path


def reiserfs_old_layout(tmp: Path) -> Path:
    """ReiserFS 3.5 as kernels before 2.4 wrote it: the superblock at 8 KiB, not 64 KiB.

    mkreiserfs no longer writes this layout; its 3.5 superblock is moved to where they did.
    """
    path = mkfs(tmp, "r5old.img", 64 * MiB, "mkreiserfs", "-q", "--format", "3.5")
    with path.open("r+b") as f:
        f.seek(64 * 1024)
        superblock = f.read(204)
        f.seek(64 * 1024)
        f.write(bytes(204))
        f.seek(8 * 1024)
        f.write(superblock)
    return path


def made_by(name: str, size: int, *argv: str) -> Callable[[Path], Path]:
    return lambda tmp: mkfs(tmp, name, size, *argv)


U = FIXED_UUID
MAKERS: dict[str, Callable[[Path], Path]] = {
    "ext2": made_by("e2.img", 16 * MiB, "mke2fs", "-q", "-t", "ext2", "-L", "two", "-U", U),
    "ext3": made_by("e3.img", 16 * MiB, "mke2fs", "-q", "-t", "ext3", "-L", "three", "-U", U),
    "ext4": made_by("e4.img", 64 * MiB, "mke2fs", "-q", "-t", "ext4", "-L", "cloudimg-rootfs"),
    "ext4-no-label-4k": made_by("e4k.img", 64 * MiB, "mke2fs", "-q", "-t", "ext4", "-b", "4096"),
    "ext4-old-features": made_by(
        "e4o.img", 32 * MiB, "mke2fs", "-q", "-t", "ext4", "-O", "^64bit,^metadata_csum", "-L", "old"
    ),
    "ext2-with-journal-dev": made_by("jbd.img", 16 * MiB, "mke2fs", "-q", "-O", "journal_dev", "-L", "log"),
    "swap": made_by("sw.img", 16 * MiB, "mkswap", "-q", "-L", "swaplabel", "-U", U),
    "swap-no-label": made_by("swn.img", 16 * MiB, "mkswap", "-q"),
    "swap-8k-pages": made_by("sw8.img", 16 * MiB, "mkswap", "-q", "-p", "8192", "-L", "eight"),
    "swap-64k-pages": made_by("sw64.img", 16 * MiB, "mkswap", "-q", "-p", "65536", "-L", "big"),
    "swsuspend-s1": lambda t: swap_with(t, "s1.img", b"S1SUSPEND\0"),
    "swsuspend-linhib": lambda t: swap_with(t, "lh.img", b"LINHIB0001"),
    "vfat12": made_by("f12.img", 8 * MiB, "mkfs.vfat", "-F", "12", "-n", "FAT12LAB", "-i", "1234ABCD"),
    "vfat16": made_by("f16.img", 64 * MiB, "mkfs.vfat", "-F", "16", "-n", "CIDATA", "-i", "0BADCAFE"),
    "vfat32": made_by("f32.img", 64 * MiB, "mkfs.vfat", "-F", "32", "-n", "EFI SYSTEM", "-i", "DEADBEEF"),
    "vfat32-no-label": made_by("f32n.img", 64 * MiB, "mkfs.vfat", "-F", "32"),
    "vfat16-4k-sectors": made_by("f16s.img", 64 * MiB, "mkfs.vfat", "-F", "16", "-S", "4096", "-n", "SECT"),
    "xfs": made_by("x.img", 320 * MiB, "mkfs.xfs", "-q", "-L", "xfslabel"),
    "xfs-v4": made_by("x4.img", 320 * MiB, "mkfs.xfs", "-q", "-m", "crc=0", "-L", "old"),
    "btrfs": made_by("b.img", 128 * MiB, "mkfs.btrfs", "-q", "-L", "btrlabel", "-U", U),
    "reiserfs-3.6": made_by("r6.img", 64 * MiB, "mkreiserfs", "-q", "-l", "reiser", "-u", U),
    "reiserfs-3.5": made_by("r5.img", 64 * MiB, "mkreiserfs", "-q", "--format", "3.5"),
    "reiserfs-3.5-old-layout": reiserfs_old_layout,
    "ntfs": made_by("n.img", 32 * MiB, "mkntfs", "-q", "-F", "-f", "-L", "Windows"),
    "ntfs-no-label": made_by("nn.img", 32 * MiB, "mkntfs", "-q", "-F", "-f"),
    "iso9660": lambda t: iso(t, "i1.iso", "genisoimage", "-quiet", "-V", "cidata"),
    "iso9660-joliet-rr": lambda t: iso(t, "i2.iso", "genisoimage", "-quiet", "-V", "config-2", "-J", "-r"),
    "iso9660-joliet-long-label": lambda t: iso(
        t,
        "i3.iso",
        "genisoimage",
        "-quiet",
        "-V",
        "A Long Volume Label Of 32 Chars",
        "-J",
        "-r",
        "-sysid",
        "IMAGEWRIGHT",
        "-publisher",
        "Some Publisher",
        "-volset",
        "set-1",
    ),
    "iso9660-xorriso": lambda t: iso(
        t, "i4.iso", "xorriso", "-as", "mkisofs", "-quiet", "-V", "CONTEXT", "-J"
    ),
    "iso9660-el-torito": lambda t: iso(
        t, "i5.iso", "genisoimage", "-quiet", "-V", "boot", "-b", "boot.bin", "-no-emul-boot"
    ),
    "luks1": lambda t: luks(t, "l1.img", "--type", "luks1"),
    "luks2": lambda t: luks(t, "l2.img", "--type", "luks2", "--label", "cryptroot", "--subsystem", "iw"),
    "lvm2-sector1": lambda t: lvm2_pv_label(t, "pv1.img", 1),
    "lvm2-sector0": lambda t: lvm2_pv_label(t, "pv0.img", 0),
    "squashfs": lambda t: squashfs(t, "sq.img"),
}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_signature_matches_blkid(tmp_path: Path, kind: str) -> None:
    path = MAKERS[kind](tmp_path)
    assert_like_blkid(probe_file(path), blkid_probe(path))


def test_ext_details_name_the_features(tmp_path: Path) -> None:
    info = probe_file(MAKERS["ext4"](tmp_path))
    assert info is not None
    features = info.details["features"]
    assert isinstance(features, list)
    assert {"has_journal", "extent", "64bit", "metadata_csum", "flex_bg"} <= set(features)
    assert info.size_bytes == 64 * MiB
    dumpe2fs = run("dumpe2fs", "-h", tmp_path / "e4.img").stdout.decode()
    listed = next(line for line in dumpe2fs.splitlines() if line.startswith("Filesystem features:"))
    assert set(listed.split(":", 1)[1].split()) == set(features)


def test_sizes_from_superblocks(tmp_path: Path) -> None:
    assert probe_file(MAKERS["xfs"](tmp_path)).size_bytes == 320 * MiB  # type: ignore[union-attr]
    assert probe_file(MAKERS["btrfs"](tmp_path)).size_bytes == 128 * MiB  # type: ignore[union-attr]
    assert probe_file(MAKERS["vfat32"](tmp_path)).size_bytes == 64 * MiB  # type: ignore[union-attr]
    assert probe_file(MAKERS["swap"](tmp_path)).size_bytes == 16 * MiB  # type: ignore[union-attr]
    ntfs = probe_file(MAKERS["ntfs"](tmp_path))
    assert ntfs is not None and 31 * MiB < (ntfs.size_bytes or 0) <= 32 * MiB


def test_iso_extensions_are_detected(tmp_path: Path) -> None:
    plain = probe_file(MAKERS["iso9660"](tmp_path))
    assert plain is not None and plain.details["joliet"] is False and plain.details["rock_ridge"] is False
    both = probe_file(MAKERS["iso9660-joliet-rr"](tmp_path))
    assert both is not None and both.details["joliet"] is True and both.details["rock_ridge"] is True
    # xorriso's mkisofs emulation turns Rock Ridge on by itself.
    xorriso = probe_file(MAKERS["iso9660-xorriso"](tmp_path))
    assert xorriso is not None and xorriso.details["rock_ridge"] is True
    boot = probe_file(MAKERS["iso9660-el-torito"](tmp_path))
    assert boot is not None and boot.details["el_torito"] is True


def test_fat_label_comes_from_the_root_directory_like_blkid(tmp_path: Path) -> None:
    path = MAKERS["vfat16"](tmp_path)
    run("fatlabel", path, "NEWLABEL")  # fatlabel rewrites both copies
    assert probe_file(path).label == "NEWLABEL"  # type: ignore[union-attr]
    # Remove the root-directory entry: blkid then reports no LABEL, only LABEL_FATBOOT.
    with FileSource(path) as src:
        boot = src.pread(0, 512)
    reserved, fats, fat_length = (
        struct.unpack_from("<H", boot, 14)[0],
        boot[16],
        struct.unpack_from("<H", boot, 22)[0],
    )
    write_bytes(path, (reserved + fats * fat_length) * 512, b"\xe5")
    expected = blkid_probe(path)
    assert "LABEL" not in expected and expected["LABEL_FATBOOT"] == "NEWLABEL"
    assert_like_blkid(probe_file(path), expected)


LAYOUT = """label: gpt
size=16M, type=L, name="root"
size=8M, type=S
size=64M, type=U
size=16M, type=L
"""


def test_filesystems_inside_partitions_match_blkid_at_offsets(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "disk.img", 128 * MiB, LAYOUT)
    with FileSource(disk) as src:
        table = read_partition_table(src)
    assert table is not None
    root, swap, esp, data = table.partitions
    run(
        "mke2fs",
        "-q",
        "-t",
        "ext4",
        "-L",
        "root",
        "-E",
        f"offset={root.start * 512}",
        disk,
        f"{root.size // 1024}k",
    )
    copy_into(MAKERS["swap"](tmp_path), disk, swap.start * 512)
    copy_into(MAKERS["vfat32"](tmp_path), disk, esp.start * 512)
    copy_into(MAKERS["luks2"](tmp_path), disk, data.start * 512)
    seen = []
    for part in table.partitions:
        offset, size = part.start * 512, part.size
        info = probe_file(disk, offset, size)
        assert_like_blkid(info, blkid_probe(disk, offset, size))
        assert info is not None and info.offset == offset
        seen.append(info.type)
    assert seen == ["ext4", "swap", "vfat", "crypto_LUKS"]


def test_no_signature_on_zeros_and_random_bytes(tmp_path: Path) -> None:
    zeros = sparse_file(tmp_path / "zeros.img", 4 * MiB)
    assert probe_file(zeros) is None
    noise = tmp_path / "noise.img"
    noise.write_bytes(uuid_module.uuid4().bytes * (256 * 1024 // 16))
    assert probe_file(noise) is None
    assert "TYPE" not in blkid_probe(noise)


def test_two_signatures_are_reported_as_ambivalent(tmp_path: Path) -> None:
    path = MAKERS["ext4"](tmp_path)
    xfs = MAKERS["xfs"](tmp_path)
    with FileSource(xfs) as src:
        write_bytes(path, 0, src.pread(0, 512))
    info = probe_file(path)
    assert info is not None and info.type == "xfs"
    assert any("ambivalent" in problem for problem in info.problems)
    assert info.details["also_found"] == ["ext4"]
    assert "TYPE" not in blkid_probe(path)  # blkid refuses to choose
