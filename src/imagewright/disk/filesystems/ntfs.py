"""NTFS, following libblkid ``superblocks/ntfs.c`` (util-linux 2.38).

OEM id ``NTFS    `` at byte 3 (spec section 1.9). The BPB is checked, the first MFT record
and the $Volume record (MFT entry 3) must start with ``FILE``; the label is the resident
$VOLUME_NAME attribute (0x60) of $Volume, read inside one bounded MFT record exactly as
blkid does (without applying the update-sequence fixups, so the results agree). The UUID
is the volume serial number from the boot sector, 16 uppercase hex digits.
"""

from __future__ import annotations

import struct

from imagewright.binary import ByteSource
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import (
    is_power_of_two,
    read_or_none,
    u16le,
    u32le,
    u64le,
    utf16_label,
)

OEM_ID = b"NTFS    "
_MAX_CLUSTER_SIZE = 2 * 1024 * 1024
_MFT_RECORD_VOLUME = 3
_ATTR_VOLUME_NAME = 0x60
_ATTR_END = 0xFFFFFFFF
_FILE_ATTRIBUTE_HEADER = 22
#: An MFT record is 1-4 KiB in practice; refuse to read more than this for one.
_MAX_MFT_RECORD = 64 * 1024


class _Geometry:
    def __init__(
        self, sector_size: int, sectors_per_cluster: int, mft_record_size: int, mft_offset: int
    ) -> None:
        self.sector_size = sector_size
        self.sectors_per_cluster = sectors_per_cluster
        self.mft_record_size = mft_record_size
        self.mft_offset = mft_offset


def _geometry(boot: bytes) -> _Geometry | None:
    """The BPB checks of blkid's __probe_ntfs(); None when this is not an NTFS boot sector."""
    if boot[3:11] != OEM_ID:
        return None
    sector_size = u16le(boot, 0x0B)
    if not 256 <= sector_size <= 4096 or not is_power_of_two(sector_size):
        return None
    raw_spc = boot[0x0D]
    if raw_spc in (1, 2, 4, 8, 16, 32, 64, 128):
        sectors_per_cluster = raw_spc
    elif 240 <= raw_spc <= 249:
        sectors_per_cluster = 1 << (256 - raw_spc)
    else:
        return None
    if sector_size * sectors_per_cluster > _MAX_CLUSTER_SIZE:
        return None
    # Fields FAT uses and NTFS leaves zero.
    if u16le(boot, 0x0E) or u16le(boot, 0x11) or u16le(boot, 0x13) or u16le(boot, 0x16) or u32le(boot, 0x20):
        return None
    if boot[0x10]:
        return None
    clusters_per_mft = struct.unpack_from("<b", boot, 0x40)[0]
    raw_cpm = boot[0x40]
    if not 0xE1 <= raw_cpm <= 0xF7 and clusters_per_mft not in (1, 2, 4, 8, 16, 32, 64):
        return None
    if clusters_per_mft > 0:
        mft_record_size = clusters_per_mft * sectors_per_cluster * sector_size
    else:
        shift = -clusters_per_mft
        if not 0 <= shift < 31:
            return None
        mft_record_size = 1 << shift
    number_of_sectors = u64le(boot, 0x28)
    clusters = number_of_sectors // sectors_per_cluster
    mft_cluster = u64le(boot, 0x30)
    if mft_cluster > clusters or u64le(boot, 0x38) > clusters:
        return None
    if mft_record_size < 4:
        return None
    return _Geometry(
        sector_size, sectors_per_cluster, mft_record_size, mft_cluster * sector_size * sectors_per_cluster
    )


def is_ntfs_boot_sector(sector: bytes) -> bool:
    """True when ``sector`` carries a valid NTFS BPB (an NTFS volume, not an MBR)."""
    return len(sector) >= 512 and _geometry(sector) is not None


def probe(src: ByteSource) -> FilesystemInfo | None:
    boot = read_or_none(src, 0, 512)
    if boot is None:
        return None
    geometry = _geometry(boot)
    if geometry is None:
        return None
    record_size = geometry.mft_record_size
    if record_size > _MAX_MFT_RECORD:
        return None
    first = read_or_none(src, geometry.mft_offset, record_size, "NTFS MFT record")
    if first is None or first[:4] != b"FILE":
        return None
    volume = read_or_none(
        src, geometry.mft_offset + _MFT_RECORD_VOLUME * record_size, record_size, "NTFS MFT record"
    )
    if volume is None or volume[:4] != b"FILE":
        return None

    info = FilesystemInfo(type="ntfs", block_size=geometry.sector_size)
    info.label = _volume_label(volume, record_size)
    serial = u64le(boot, 0x48)
    if serial:
        info.uuid = f"{serial:016X}"
    info.size_bytes = u64le(boot, 0x28) * geometry.sector_size
    info.details.update(
        {
            "cluster_size": geometry.sector_size * geometry.sectors_per_cluster,
            "mft_record_size": record_size,
        }
    )
    return info


def _volume_label(record: bytes, record_size: int) -> str | None:
    attr_offset = u16le(record, 0x14)
    bytes_allocated = u32le(record, 0x1C)
    # Each attribute advances by its own non-zero length inside one record: at most
    # record_size / 1 steps, so the loop is bounded by the record we already hold.
    while attr_offset + _FILE_ATTRIBUTE_HEADER <= record_size and attr_offset <= bytes_allocated:
        attr_type = u32le(record, attr_offset)
        attr_len = u32le(record, attr_offset + 4)
        if not attr_len or attr_type == _ATTR_END:
            return None
        if attr_type == _ATTR_VOLUME_NAME:
            value_len = u32le(record, attr_offset + 16)
            value_offset = u16le(record, attr_offset + 20)
            start = attr_offset + value_offset
            if start + value_len <= record_size:
                return utf16_label(record[start : start + value_len], "le")
            return None
        attr_offset += attr_len
    return None
