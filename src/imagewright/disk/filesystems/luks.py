"""LUKS1 and LUKS2 headers, following libblkid ``superblocks/luks.c``.

Magic ``LUKS\\xBA\\xBE`` at byte 0 with a big-endian version at 6 (spec section 1.9). The
UUID is stored as text (40 bytes at 168); LUKS2 adds a label (48 bytes at 24) and a
subsystem (48 bytes at 208), and records its own offset (u64 BE at 256), which must match
where it was found. When the primary header is gone, blkid looks for the LUKS2 secondary
header (magic ``SKUL\\xBA\\xBE``) at a fixed list of offsets; so do we.
"""

from __future__ import annotations

from imagewright.binary import ByteSource
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import (
    blkid_id_label,
    blkid_label,
    c_string,
    read_or_none,
    u16be,
    u32be,
    u64be,
)

MAGIC = b"LUKS\xba\xbe"
SECONDARY_MAGIC = b"SKUL\xba\xbe"
SECONDARY_OFFSETS = (0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000)
_HEADER_SIZE = 512


def _valid(header: bytes, magic: bytes, offset: int) -> bool:
    if header[:6] != magic:
        return False
    return not (u16be(header, 6) == 2 and u64be(header, 256) != offset)


def probe(src: ByteSource) -> FilesystemInfo | None:
    header = read_or_none(src, 0, _HEADER_SIZE)
    if header is None:
        return None
    if _valid(header, MAGIC, 0):
        return _describe(header, 0)
    for offset in SECONDARY_OFFSETS:
        header = read_or_none(src, offset, _HEADER_SIZE)
        if header is None:
            return None
        if _valid(header, SECONDARY_MAGIC, offset):
            info = _describe(header, offset)
            info.problems.append(
                "The primary LUKS header is missing; only the secondary LUKS2 header was found."
            )
            return info
    return None


def _text(raw: bytes) -> str:
    return c_string(raw).decode("utf-8", errors="replace")


def _describe(header: bytes, offset: int) -> FilesystemInfo:
    version = u16be(header, 6)
    info = FilesystemInfo(type="crypto_LUKS", version=str(version), usage="crypto")
    uuid = _text(header[168:208])
    info.uuid = uuid or None
    details = info.details
    details["header_offset"] = offset
    if version == 1:
        details["cipher"] = f"{_text(header[8:40])}-{_text(header[40:72])}"
        details["hash"] = _text(header[72:104])
        details["payload_offset_sectors"] = u32be(header, 104)
        details["key_bytes"] = u32be(header, 108)
    elif version == 2:
        info.label = blkid_label(header[24:72])
        subsystem = blkid_id_label(header[208:256])
        if subsystem is not None:
            details["subsystem"] = subsystem
        details["header_size"] = u64be(header, 8)
        details["sequence_id"] = u64be(header, 16)
        details["checksum_algorithm"] = _text(header[72:104])
    return info
