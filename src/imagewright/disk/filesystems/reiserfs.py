"""ReiserFS 3.5/3.6 (and the old 8 KiB layout) and Reiser4, as libblkid ``superblocks/reiserfs.c``.

Magic at +0x34 of a superblock at 64 KiB (``ReIsErFs`` 3.5, ``ReIsEr2Fs`` 3.6,
``ReIsEr3Fs`` 3.6 with a relocated journal), or at 8 KiB for the pre-2.4 layout; Reiser4
has ``ReIsEr4`` at 64 KiB. Label and UUID exist from 3.6 on.
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

MIN_SIZE = 128 * 1024

# (magic, superblock offset in KiB, magic offset inside the superblock), in libblkid's order.
_MAGICS = (
    (b"ReIsErFs", 8, 0x34),
    (b"ReIsEr2Fs", 64, 0x34),
    (b"ReIsEr3Fs", 64, 0x34),
    (b"ReIsErFs", 64, 0x34),
    (b"ReIsErFs", 8, 20),
)


def probe(src: ByteSource) -> FilesystemInfo | None:
    if src.size < MIN_SIZE:
        return None
    for magic, kib, magic_offset in _MAGICS:
        base = kib * 1024
        found = read_or_none(src, base + magic_offset, len(magic))
        if found != magic:
            continue
        sb = read_or_none(src, base, 116)
        if sb is None:
            return None
        return _describe(sb, magic, kib)
    return probe_reiser4(src)


def _describe(sb: bytes, magic: bytes, kib: int) -> FilesystemInfo | None:
    blocksize = u16le(sb, 0x2C)
    if blocksize >> 9 == 0:
        return None
    # A superblock that lies inside the journal is a stale copy (libblkid's check).
    if kib // (blocksize >> 9) > u32le(sb, 12) // 2:
        return None
    info = FilesystemInfo(type="reiserfs", block_size=blocksize)
    variant = magic[6:7]
    if variant in (b"2", b"3"):
        if sb[0x64] != 0:
            info.label = blkid_label(sb[0x64:0x74])
        info.uuid = uuid_or_none(sb[0x54:0x64])
    info.version = {b"3": "JR", b"2": "3.6"}.get(variant, "3.5")
    info.size_bytes = u32le(sb, 0) * blocksize
    info.details["superblock_offset"] = kib * 1024
    info.details["relocated_journal"] = variant == b"3"
    return info


def probe_reiser4(src: ByteSource) -> FilesystemInfo | None:
    sb = read_or_none(src, 64 * 1024, 60)
    if sb is None or sb[:7] != b"ReIsEr4":
        return None
    info = FilesystemInfo(type="reiser4", version="4")
    if sb[36] != 0:
        info.label = blkid_label(sb[36:52])
    info.uuid = uuid_or_none(sb[20:36])
    return info
