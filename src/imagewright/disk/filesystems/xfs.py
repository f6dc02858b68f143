"""XFS: superblock at byte 0, magic ``XFSB``, all fields big-endian (spec section 1.9).

Sanity checks are libblkid's ``xfs_verify_sb`` (``superblocks/xfs.c``): a magic alone is
not trusted. A version-5 superblock also carries a CRC-32C (little-endian, at 224) over
its sector; a mismatch is reported as a problem, not hidden.
"""

from __future__ import annotations

import struct

from imagewright.binary import ByteSource
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import (
    blkid_label,
    crc32c,
    read_or_none,
    u16be,
    u32be,
    u32le,
    u64be,
    uuid_or_none,
)

MAGIC = b"XFSB"
_CRC_OFFSET = 224


def _valid(sb: bytes) -> bool:
    blocksize = u32be(sb, 4)
    dblocks = u64be(sb, 8)
    rextsize = u32be(sb, 80)
    agblocks = u32be(sb, 84)
    agcount = u32be(sb, 88)
    sectsize = u16be(sb, 102)
    inodesize = u16be(sb, 104)
    blocklog, sectlog, inodelog, inopblog = sb[120], sb[121], sb[122], sb[123]
    imax_pct = sb[127]
    checks = (
        agcount > 0,
        512 <= sectsize <= 32768,
        9 <= sectlog <= 15,
        sectsize == 1 << sectlog,
        512 <= blocksize <= 65536,
        9 <= blocklog <= 16,
        blocksize == 1 << blocklog,
        256 <= inodesize <= 2048,
        8 <= inodelog <= 11,
        inodesize == 1 << inodelog,
        blocklog - inodelog == inopblog,
        4096 <= rextsize * blocksize <= 1024 * 1024 * 1024,
        imax_pct <= 100,
        dblocks != 0,
        dblocks <= agcount * agblocks,
        dblocks >= (agcount - 1) * agblocks + 64,
    )
    return all(checks)


def probe(src: ByteSource) -> FilesystemInfo | None:
    sb = read_or_none(src, 0, 512)
    if sb is None or sb[:4] != MAGIC or not _valid(sb):
        return None
    sectsize = u16be(sb, 102)
    info = FilesystemInfo(type="xfs")
    info.label = blkid_label(sb[108:120])
    info.uuid = uuid_or_none(sb[32:48])
    info.block_size = sectsize
    blocksize = u32be(sb, 4)
    info.size_bytes = u64be(sb, 8) * blocksize
    version = u16be(sb, 100) & 0x000F
    info.details.update(
        {
            "sb_version": version,
            "fs_block_size": blocksize,
            "ag_count": u32be(sb, 88),
            "inode_size": u16be(sb, 104),
            "log_internal": u64be(sb, 48) != 0,
        }
    )
    if version == 5:
        sector = read_or_none(src, 0, sectsize)
        if sector is not None:
            stored = u32le(sector, _CRC_OFFSET)
            zeroed = sector[:_CRC_OFFSET] + b"\0\0\0\0" + sector[_CRC_OFFSET + 4 :]
            info.details["crc_ok"] = crc32c(zeroed) == stored
            if not info.details["crc_ok"]:
                info.problems.append("The XFS superblock checksum does not match its contents.")
            info.details["features_incompat"] = struct.unpack_from(">I", sector, 216)[0]
    return info
