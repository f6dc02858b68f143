"""LVM2 physical volume labels, following libblkid ``superblocks/lvm.c``.

The label lives in one of the first four 512-byte sectors: ``LABELONE`` at the sector's
start, ``LVM2 001`` at +0x18, its own sector number (u64) at +8, and a CRC (u32 at +0x10)
over the rest of the 512-byte label from +0x14 (spec section 1.9). LVM's CRC is the
standard reflected CRC-32 polynomial with a different start value (0xF597A6CF) and no
final inversion. The PV UUID is 32 characters at +0x20, printed dashed 6-4-4-4-4-4-6.
"""

from __future__ import annotations

import zlib

from imagewright.binary import ByteSource
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import read_or_none, u32le, u64le

LABEL_ID = b"LABELONE"
LABEL_TYPE = b"LVM2 001"
_LABEL_SIZE = 512
_CRC_START = 0xF597A6CF

# (sector where libblkid expects the magic), in its order.
_SECTORS = (1, 0, 2, 3)


def lvm_crc(data: bytes) -> int:
    """LVM2's label checksum (lib/misc/crc.c): CRC-32 from 0xF597A6CF, not inverted at the end."""
    return zlib.crc32(data, _CRC_START ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def format_pv_uuid(raw: bytes) -> str:
    text = raw.decode("latin-1")
    return "-".join((text[0:6], text[6:10], text[10:14], text[14:18], text[18:22], text[22:26], text[26:32]))


def probe(src: ByteSource) -> FilesystemInfo | None:
    for sector in _SECTORS:
        label = read_or_none(src, sector * 512, _LABEL_SIZE)
        if label is None:
            continue
        if label[0x18:0x20] != LABEL_TYPE or label[:8] != LABEL_ID:
            continue
        if u64le(label, 8) != sector:
            continue
        if lvm_crc(label[0x14:]) != u32le(label, 0x10):
            continue
        info = FilesystemInfo(type="LVM2_member", version="LVM2 001", usage="raid")
        info.uuid = format_pv_uuid(label[0x20:0x40])
        info.details["label_sector"] = sector
        pv_header = u32le(label, 0x14)
        if 0x20 <= pv_header <= _LABEL_SIZE - 40:
            info.details["device_size"] = u64le(label, pv_header + 32)
        return info
    return None
