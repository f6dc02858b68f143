"""ext2, ext3, ext4 and ext journal devices (jbd), told apart the way libblkid does.

Superblock at byte 1024, magic 0xEF53 at +0x38 (spec section 1.9). libblkid
(``superblocks/ext.c``) decides by feature bits:

- ``jbd``: incompat JOURNAL_DEV (an external journal, not a filesystem);
- ``ext4``: any incompat/ro_compat feature outside the ext3 set;
- ``ext3``: has_journal and nothing outside the ext3 set;
- ``ext2``: no journal and nothing outside the ext2 set.

libblkid also asks the running kernel whether it has ext2/ext4dev drivers; we answer as a
current kernel does (ext2 and ext4 supported, ext4dev not), so the result does not depend
on the machine imagewright runs on.
"""

from __future__ import annotations

from imagewright.binary import ByteSource
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import (
    blkid_label,
    read_or_none,
    u16le,
    u32le,
    uuid_or_none,
)

SUPERBLOCK_OFFSET = 1024
MAGIC = b"\x53\xef"

COMPAT_HAS_JOURNAL = 0x0004
INCOMPAT_FILETYPE = 0x0002
INCOMPAT_RECOVER = 0x0004
INCOMPAT_JOURNAL_DEV = 0x0008
INCOMPAT_META_BG = 0x0010
INCOMPAT_64BIT = 0x0080
RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_LARGE_FILE = 0x0002
RO_COMPAT_BTREE_DIR = 0x0004
FLAGS_TEST_FILESYS = 0x0004

_EXT2_INCOMPAT = INCOMPAT_FILETYPE | INCOMPAT_META_BG
_EXT3_INCOMPAT = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG
_EXT23_RO_COMPAT = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR

# Feature names as e2fsprogs (tune2fs -l, mke2fs -O) spells them.
COMPAT_NAMES = {
    0x0001: "dir_prealloc",
    0x0002: "imagic_inodes",
    0x0004: "has_journal",
    0x0008: "ext_attr",
    0x0010: "resize_inode",
    0x0020: "dir_index",
    0x0040: "lazy_bg",
    0x0100: "snapshot_bitmap",
    0x0200: "sparse_super2",
    0x0400: "fast_commit",
    0x0800: "stable_inodes",
    0x1000: "orphan_file",
}
INCOMPAT_NAMES = {
    0x0001: "compression",
    0x0002: "filetype",
    0x0004: "needs_recovery",
    0x0008: "journal_dev",
    0x0010: "meta_bg",
    0x0040: "extent",
    0x0080: "64bit",
    0x0100: "mmp",
    0x0200: "flex_bg",
    0x0400: "ea_inode",
    0x1000: "dirdata",
    0x2000: "metadata_csum_seed",
    0x4000: "large_dir",
    0x8000: "inline_data",
    0x10000: "encrypt",
    0x20000: "casefold",
}
RO_COMPAT_NAMES = {
    0x0001: "sparse_super",
    0x0002: "large_file",
    0x0004: "btree_dir",
    0x0008: "huge_file",
    0x0010: "uninit_bg",
    0x0020: "dir_nlink",
    0x0040: "extra_isize",
    0x0080: "snapshot",
    0x0100: "quota",
    0x0200: "bigalloc",
    0x0400: "metadata_csum",
    0x0800: "replica",
    0x1000: "read-only",
    0x2000: "project",
    0x4000: "shared_blocks",
    0x8000: "verity",
    0x10000: "orphan_present",
}


def feature_names(compat: int, incompat: int, ro_compat: int) -> list[str]:
    """Every feature bit set, by name (unknown bits as ``FEATURE_C12``-style, like e2fsprogs)."""
    names: list[str] = []
    for value, table, letter in (
        (compat, COMPAT_NAMES, "C"),
        (incompat, INCOMPAT_NAMES, "I"),
        (ro_compat, RO_COMPAT_NAMES, "R"),
    ):
        for bit in range(32):
            mask = 1 << bit
            if value & mask:
                names.append(table.get(mask, f"FEATURE_{letter}{bit}"))
    return names


def ext_type(compat: int, incompat: int, ro_compat: int) -> str | None:
    """blkid's TYPE for these feature bits, or None when no ext prober claims them."""
    if incompat & INCOMPAT_JOURNAL_DEV:
        return "jbd"
    has_journal = bool(compat & COMPAT_HAS_JOURNAL)
    beyond_ext3 = bool(ro_compat & ~_EXT23_RO_COMPAT) or bool(incompat & ~_EXT3_INCOMPAT)
    if beyond_ext3:
        return "ext4"
    if has_journal:
        return "ext3"
    if incompat & ~_EXT2_INCOMPAT:
        # e.g. needs_recovery without a journal: no ext prober accepts it.
        return None
    return "ext2"


def probe(src: ByteSource) -> FilesystemInfo | None:
    sb = read_or_none(src, SUPERBLOCK_OFFSET, 0x200)
    if sb is None or sb[0x38:0x3A] != MAGIC:
        return None
    compat = u32le(sb, 0x5C)
    incompat = u32le(sb, 0x60)
    ro_compat = u32le(sb, 0x64)
    fs_type = ext_type(compat, incompat, ro_compat)
    if fs_type is None:
        return None

    info = FilesystemInfo(type=fs_type, usage="other" if fs_type == "jbd" else "filesystem")
    info.label = blkid_label(sb[0x78:0x88])
    info.uuid = uuid_or_none(sb[0x68:0x78])
    info.version = f"{u32le(sb, 0x4C)}.{u16le(sb, 0x3E)}"
    log_block_size = u32le(sb, 0x18)
    if log_block_size < 32:
        info.block_size = 1024 << log_block_size
    if log_block_size <= 6:
        blocks = u32le(sb, 0x04)
        if incompat & INCOMPAT_64BIT:
            blocks |= u32le(sb, 0x150) << 32
        info.size_bytes = blocks * (1024 << log_block_size)
    else:
        info.problems.append(
            f"The ext superblock claims an impossible block size (2^{10 + log_block_size} bytes)."
        )

    details = info.details
    details["features"] = feature_names(compat, incompat, ro_compat)
    details["has_journal"] = bool(compat & COMPAT_HAS_JOURNAL)
    details["feature_compat"] = compat
    details["feature_incompat"] = incompat
    details["feature_ro_compat"] = ro_compat
    details["inode_size"] = u16le(sb, 0x58) if u32le(sb, 0x4C) >= 1 else 128
    details["state_clean"] = bool(u16le(sb, 0x3A) & 0x0001)
    details["needs_recovery"] = bool(incompat & INCOMPAT_RECOVER)
    details["last_mounted"] = blkid_label(sb[0x88:0xC8])
    details["test_filesystem"] = bool(u32le(sb, 0x160) & FLAGS_TEST_FILESYS)
    if fs_type == "ext3" and not incompat & ~_EXT2_INCOMPAT:
        details["sec_type"] = "ext2"
    if fs_type == "jbd":
        details["log_uuid"] = info.uuid
    elif compat & COMPAT_HAS_JOURNAL:
        external = uuid_or_none(sb[0xD0:0xE0])
        if external is not None:
            details["external_journal_uuid"] = external
    return info
