"""btrfs: superblock at 64 KiB (mirrors at 64 MiB and 256 GiB), magic ``_BHRfS_M`` at +0x40.

Layout from libblkid ``superblocks/btrfs.c`` (spec section 1.9): fsid at +0x20, label
(256 bytes) at +0x12B, the device item's UUID (blkid's UUID_SUB) at +0x10B. With the
default checksum type (0, CRC-32C) the superblock's checksum covers bytes 0x20..4096.
"""

from __future__ import annotations

import struct

from imagewright.binary import ByteSource
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import (
    blkid_label,
    crc32c,
    read_or_none,
    u16le,
    u32le,
    u64le,
    uuid_or_none,
)

MAGIC = b"_BHRfS_M"
SUPERBLOCK_OFFSETS = (64 * 1024, 64 * 1024 * 1024, 256 * 1024 * 1024 * 1024)
_SUPERBLOCK_SIZE = 4096
MIN_SIZE = 1024 * 1024


def probe(src: ByteSource) -> FilesystemInfo | None:
    if src.size < MIN_SIZE:
        return None
    for index, offset in enumerate(SUPERBLOCK_OFFSETS):
        magic = read_or_none(src, offset + 0x40, 8)
        if magic != MAGIC:
            continue
        sb = read_or_none(src, offset, _SUPERBLOCK_SIZE)
        if sb is None:
            continue
        return _describe(sb, index)
    return None


def _describe(sb: bytes, mirror: int) -> FilesystemInfo:
    info = FilesystemInfo(type="btrfs")
    if sb[0x12B] != 0:
        info.label = blkid_label(sb[0x12B : 0x12B + 256])
    info.uuid = uuid_or_none(sb[0x20:0x30])
    info.block_size = u32le(sb, 0x90)
    info.size_bytes = u64le(sb, 0x70)
    info.details.update(
        {
            "uuid_sub": uuid_or_none(sb[0x10B:0x11B]),
            "generation": u64le(sb, 0x48),
            "num_devices": u64le(sb, 0x88),
            "node_size": u32le(sb, 0x94),
            "bytes_used": u64le(sb, 0x78),
            "incompat_flags": u64le(sb, 0xBC),
            "superblock_copy": mirror,
        }
    )
    if mirror:
        info.problems.append("The primary btrfs superblock is missing; a mirror copy was found instead.")
    if u16le(sb, 0xC4) == 0:
        stored = struct.unpack_from("<I", sb, 0)[0]
        info.details["checksum_ok"] = crc32c(sb[0x20:]) == stored
        if not info.details["checksum_ok"]:
            info.problems.append("The btrfs superblock checksum does not match its contents.")
    return info
