"""FAT12/16/32 (blkid TYPE ``vfat``), following libblkid ``superblocks/vfat.c``.

The boot sector's BPB is checked before anything is believed (spec section 1.9): FAT count,
reserved sectors, media byte, power-of-two cluster and sector sizes, and a cluster count
that fits the FAT type. ``is_fat_boot_sector`` is the same test, used to tell a FAT boot
sector (a "superfloppy" or a partition's first sector) from an MBR that also ends in 55 AA.

Labels, as blkid 2.38 reports them: LABEL is the volume-label entry of the root directory
(searched with a bound: the FAT12/16 root directory's fixed entries, or at most 99 clusters
of the FAT32 root chain); the boot sector's own label is LABEL_FATBOOT (``details``).
"""

from __future__ import annotations

from imagewright.binary import ByteSource
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import (
    blkid_id_label,
    blkid_label,
    is_power_of_two,
    read_or_none,
    u16le,
    u32le,
)

FAT12_MAX = 0xFF4
FAT16_MAX = 0xFFF4
FAT32_MAX = 0x0FFFFFF6
_NO_NAME = b"NO NAME    "
_DIR_ENTRY = 32
_ROOT_READ_CHUNK = 16 * 1024
_FAT32_MAX_CLUSTERS_SEARCHED = 99
#: A hostile FAT32 can chain 99 clusters of 512 KiB; stop after this many directory entries.
_FAT32_MAX_ENTRIES_SEARCHED = 65536

# (magic, offset) in libblkid's order; the one that matches decides how strict the check is.
_MAGICS = (
    (b"MSWIN", 0x52),
    (b"FAT32   ", 0x52),
    (b"MSDOS", 0x36),
    (b"FAT16   ", 0x36),
    (b"FAT12   ", 0x36),
    (b"FAT     ", 0x36),
    (b"\xeb", 0),
    (b"\xe9", 0),
    (b"\x55\xaa", 0x1FE),
)


class _Bpb:
    """The fields of a FAT boot sector that libblkid's validity check reads."""

    def __init__(self, sector: bytes) -> None:
        self.sector_size = u16le(sector, 0x0B)
        self.cluster_size = sector[0x0D]
        self.reserved = u16le(sector, 0x0E)
        self.fats = sector[0x10]
        self.dir_entries = u16le(sector, 0x11)
        sectors16 = u16le(sector, 0x13)
        self.media = sector[0x15]
        self.fat_length16 = u16le(sector, 0x16)
        self.fat32_length = u32le(sector, 0x24)
        self.total_sectors = sectors16 or u32le(sector, 0x20)
        self.fat_length = self.fat_length16 or self.fat32_length
        self.fat_size = self.fat_length * self.fats
        self.root_dir_sectors = (
            (self.dir_entries * _DIR_ENTRY + self.sector_size - 1) // self.sector_size
            if self.sector_size
            else 0
        )
        self.cluster_count = 0


def _matching_magic(sector: bytes) -> bytes | None:
    for magic, offset in _MAGICS:
        if sector[offset : offset + len(magic)] == magic:
            return magic
    return None


def _valid_bpb(sector: bytes) -> _Bpb | None:
    """libblkid's fat_valid_superblock(); None when this is not a FAT boot sector."""
    if len(sector) < 512:
        return None
    magic = _matching_magic(sector)
    if magic is None:
        return None
    if len(magic) <= 2:
        # No FAT type string: demand the 55 AA signature and rule out the FAT-like
        # pseudo-headers OS/2 tools put in front of JFS and HPFS.
        if sector[0x1FE:0x200] != b"\x55\xaa":
            return None
        if sector[0x36:0x3E] in (b"JFS     ", b"HPFS    "):
            return None
    bpb = _Bpb(sector)
    if not bpb.fats or not bpb.reserved:
        return None
    if not (bpb.media >= 0xF8 or bpb.media == 0xF0):
        return None
    if not is_power_of_two(bpb.cluster_size):
        return None
    if not is_power_of_two(bpb.sector_size) or not 512 <= bpb.sector_size <= 4096:
        return None
    # C computes this in uint32: a BPB whose metadata outgrows the volume wraps to a huge
    # count and is then rejected by the maximum below; Python's negative number must be too.
    data_sectors = bpb.total_sectors - (bpb.reserved + bpb.fat_size + bpb.root_dir_sectors)
    cluster_count = (data_sectors % (1 << 32)) // bpb.cluster_size
    if not bpb.fat_length16 and bpb.fat32_length:
        max_count = FAT32_MAX
    else:
        max_count = FAT16_MAX if cluster_count > FAT12_MAX else FAT12_MAX
    if cluster_count > max_count:
        return None
    if sector[3:11] == b"-FVE-FS-":
        return None  # BitLocker keeps a FAT-looking BPB.
    bpb.cluster_count = cluster_count
    return bpb


def is_fat_boot_sector(sector: bytes) -> bool:
    """True when ``sector`` is a valid FAT boot sector (so not an MBR), like blkid_probe_is_vfat()."""
    return _valid_bpb(sector) is not None


def _search_label(src: ByteSource, offset: int, entries: int) -> bytes | None:
    """The first volume-label entry of a directory region, read in bounded chunks."""
    remaining = entries
    position = offset
    while remaining > 0:
        count = min(remaining, _ROOT_READ_CHUNK // _DIR_ENTRY)
        chunk = read_or_none(src, position, count * _DIR_ENTRY, "FAT root directory")
        if chunk is None:
            return None
        for index in range(count):
            entry = chunk[index * _DIR_ENTRY : (index + 1) * _DIR_ENTRY]
            if entry[0] == 0x00:
                return None
            attr = entry[11]
            cluster_high = u16le(entry, 20)
            cluster_low = u16le(entry, 26)
            if entry[0] == 0xE5 or cluster_high or cluster_low or (attr & 0x3F) == 0x0F:
                continue
            if attr & (0x08 | 0x10) == 0x08:
                name = entry[:11]
                # 0x05 stands for a leading 0xE5 (which would mark the entry deleted).
                return b"\xe5" + name[1:] if name[0] == 0x05 else name
        remaining -= count
        position += count * _DIR_ENTRY
    return None


def probe(src: ByteSource) -> FilesystemInfo | None:
    sector = read_or_none(src, 0, 512)
    if sector is None:
        return None
    bpb = _valid_bpb(sector)
    if bpb is None:
        return None
    vol_label: bytes | None = None
    boot_label: bytes | None = None
    serial: bytes | None = None
    version: str | None = None
    details: dict[str, object] = {}

    if bpb.fat_length16:
        root_start = (bpb.reserved + bpb.fat_size) * bpb.sector_size
        vol_label = _search_label(src, root_start, bpb.dir_entries)
        if sector[0x26] == 0x29:
            boot_label = sector[0x2B:0x36]
        if sector[0x26] in (0x28, 0x29):
            serial = sector[0x27:0x2B]
        details["sec_type"] = "msdos"
        if bpb.cluster_count < FAT12_MAX:
            version = "FAT12"
        elif bpb.cluster_count < FAT16_MAX:
            version = "FAT16"
    elif bpb.fat32_length:
        vol_label = _search_fat32_root(src, bpb, sector)
        version = "FAT32"
        if sector[0x42] == 0x29:
            boot_label = sector[0x47:0x52]
        serial = sector[0x43:0x47]
        fsinfo_sector = u16le(sector, 0x30)
        if fsinfo_sector:
            fsinfo = read_or_none(src, fsinfo_sector * bpb.sector_size, 512, "FAT32 FSInfo sector")
            if fsinfo is None:
                return None
            if fsinfo[0:4] not in (b"RRaA", b"RRdA", b"\0\0\0\0"):
                return None
            if fsinfo[484:488] not in (b"rrAa", b"\0\0\0\0"):
                return None

    info = FilesystemInfo(type="vfat", version=version, block_size=bpb.sector_size)
    if vol_label is not None:
        info.label = blkid_label(vol_label)
    if boot_label is not None and boot_label != _NO_NAME:
        details["label_fatboot"] = blkid_id_label(boot_label)
    if serial is not None and any(serial):
        info.uuid = f"{serial[3]:02X}{serial[2]:02X}-{serial[1]:02X}{serial[0]:02X}"
    info.size_bytes = bpb.total_sectors * bpb.sector_size
    details.update(
        {
            "fat_type": "FAT32"
            if version == "FAT32"
            else ("FAT12" if bpb.cluster_count < FAT12_MAX else "FAT16"),
            "oem_id": sector[3:11].decode("latin-1").rstrip(),
            "cluster_count": bpb.cluster_count,
            "cluster_size": bpb.cluster_size * bpb.sector_size,
            "fats": bpb.fats,
        }
    )
    info.details = details
    return info


def _search_fat32_root(src: ByteSource, bpb: _Bpb, sector: bytes) -> bytes | None:
    """Walk at most 99 clusters of the FAT32 root directory chain looking for the label."""
    cluster_bytes = bpb.cluster_size * bpb.sector_size
    data_start = bpb.reserved + bpb.fat_size
    fat_entries = bpb.fat32_length * bpb.sector_size // 4
    cluster = u32le(sector, 0x2C)
    seen: set[int] = set()
    entries_per_cluster = max(1, cluster_bytes // _DIR_ENTRY)
    budget = min(_FAT32_MAX_CLUSTERS_SEARCHED, max(1, _FAT32_MAX_ENTRIES_SEARCHED // entries_per_cluster))
    for _ in range(budget):
        if not cluster or cluster >= fat_entries or cluster < 2 or cluster in seen:
            return None
        seen.add(cluster)
        offset = (data_start + (cluster - 2) * bpb.cluster_size) * bpb.sector_size
        label = _search_label(src, offset, cluster_bytes // _DIR_ENTRY)
        if label is not None:
            return label
        entry = read_or_none(src, bpb.reserved * bpb.sector_size + cluster * 4, 4, "FAT32 allocation table")
        if entry is None:
            return None
        cluster = u32le(entry, 0) & 0x0FFFFFFF
    return None
