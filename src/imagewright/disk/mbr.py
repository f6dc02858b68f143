"""The MBR sector (sector 0, and every EBR of an extended partition) as structure (spec section 1.7).

Layout: boot code 0-439, disk signature u32 at 440, two reserved bytes, four 16-byte
entries at 446 (status, CHS start, type, CHS end, u32 LBA start, u32 sector count), and
55 AA at 510. Each EBR of an extended partition has the same layout: its first data entry
is a logical partition whose start is relative to that EBR, and its first extended entry
links to the next EBR, relative to the start of the extended partition.

This module is the bottom floor of ``disk``: bytes to ``MbrSector`` and back, nothing
about tables (``mbr_table`` reads the table and its EBR chain) and nothing about what a
sector that is not an MBR might be (``partitions`` decides that). Writers are pure: they
return sector images, callers write them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from imagewright.binary import Layout
from imagewright.disk.guids import MBR_EXTENDED_TYPES, MBR_GPT_PROTECTIVE

BOOT_CODE_SIZE = 440
ENTRIES_OFFSET = 446
BOOT_SIGNATURE = b"\x55\xaa"
MAX_SECTORS_32 = 0xFFFFFFFF

MBR_ENTRY = Layout(
    "MBR partition entry",
    "<",
    [
        ("status", "B"),
        ("chs_start", "3s"),
        ("type", "B"),
        ("chs_end", "3s"),
        ("start_lba", "I"),
        ("sectors", "I"),
    ],
)


@dataclass
class MbrEntry:
    """One 16-byte partition entry. ``sectors == 0`` means the slot is unused."""

    status: int = 0
    type: int = 0
    start_lba: int = 0
    sectors: int = 0
    chs_start: bytes = b"\0\0\0"
    chs_end: bytes = b"\0\0\0"

    @property
    def used(self) -> bool:
        return self.sectors != 0

    @property
    def is_extended(self) -> bool:
        return self.type in MBR_EXTENDED_TYPES

    @property
    def bootable(self) -> bool:
        return self.status == 0x80

    def pack(self) -> bytes:
        return MBR_ENTRY.pack(
            {
                "status": self.status,
                "chs_start": self.chs_start,
                "type": self.type,
                "chs_end": self.chs_end,
                "start_lba": self.start_lba,
                "sectors": self.sectors,
            }
        )


@dataclass
class MbrSector:
    """Sector 0 (or an EBR) as structure: everything needed to write it back unchanged."""

    boot_code: bytes = b"\0" * BOOT_CODE_SIZE
    disk_signature: int = 0
    reserved: bytes = b"\0\0"
    entries: list[MbrEntry] = field(default_factory=lambda: [MbrEntry() for _ in range(4)])
    has_boot_signature: bool = True

    @property
    def disk_id(self) -> str:
        return f"0x{self.disk_signature:08x}"


def parse_mbr_sector(sector: bytes) -> MbrSector:
    """Split a 512-byte (or larger) sector into boot code, signature and four entries."""
    if len(sector) < 512:
        raise ValueError("an MBR sector is 512 bytes")
    entries = []
    for index in range(4):
        fields = MBR_ENTRY.unpack(sector, ENTRIES_OFFSET + 16 * index)
        entries.append(MbrEntry(**fields))
    return MbrSector(
        boot_code=bytes(sector[:BOOT_CODE_SIZE]),
        disk_signature=int.from_bytes(sector[440:444], "little"),
        reserved=bytes(sector[444:446]),
        entries=entries,
        has_boot_signature=sector[510:512] == BOOT_SIGNATURE,
    )


def pack_mbr_sector(mbr: MbrSector) -> bytes:
    """The 512 bytes of ``mbr``: its boot code kept, entries packed, 55 AA at the end."""
    if len(mbr.entries) != 4:
        raise ValueError("an MBR has exactly four entries")
    code = mbr.boot_code[:BOOT_CODE_SIZE].ljust(BOOT_CODE_SIZE, b"\0")
    body = code + mbr.disk_signature.to_bytes(4, "little") + mbr.reserved[:2].ljust(2, b"\0")
    return body + b"".join(entry.pack() for entry in mbr.entries) + BOOT_SIGNATURE


def lba_to_chs(lba: int, heads: int = 255, sectors_per_track: int = 63) -> bytes:
    """CHS bytes for ``lba`` in the usual 255/63 geometry; past cylinder 1023 the 1023/254/63 marker."""
    cylinder, rest = divmod(lba, heads * sectors_per_track)
    head, sector = divmod(rest, sectors_per_track)
    if cylinder > 1023:
        cylinder, head, sector = 1023, heads - 1, sectors_per_track - 1
    return bytes((head, ((cylinder >> 2) & 0xC0) | ((sector + 1) & 0x3F), cylinder & 0xFF))


def new_entry(type_byte: int, start_lba: int, sectors: int, bootable: bool = False) -> MbrEntry:
    """An entry with CHS fields computed as sfdisk writes them."""
    if not 0 < sectors <= MAX_SECTORS_32 or not 0 <= start_lba <= MAX_SECTORS_32:
        raise ValueError("an MBR entry holds 32-bit sector numbers")
    return MbrEntry(
        status=0x80 if bootable else 0x00,
        type=type_byte,
        start_lba=start_lba,
        sectors=sectors,
        chs_start=lba_to_chs(start_lba),
        chs_end=lba_to_chs(start_lba + sectors - 1),
    )


def protective_mbr(disk_sectors: int, existing: MbrSector | None = None) -> bytes:
    """A protective MBR for a GPT disk: one 0xEE entry from LBA 1 over the whole disk.

    Boot code and disk signature of ``existing`` are kept (GRUB's boot.img lives there). If
    ``existing`` is a hybrid MBR (0xEE next to other entries), it is kept as it is: its
    entries were laid out by hand and resizing one could make it overlap the others.
    """
    base = existing or MbrSector()
    count = min(max(disk_sectors - 1, 1), MAX_SECTORS_32)
    protective = MbrEntry(
        status=0,
        type=MBR_GPT_PROTECTIVE,
        start_lba=1,
        sectors=count,
        chs_start=b"\x00\x02\x00",
        chs_end=b"\xff\xff\xff",  # as sfdisk writes it, whatever the size
    )
    slots = [index for index, entry in enumerate(base.entries) if entry.type == MBR_GPT_PROTECTIVE]
    others = [entry for entry in base.entries if entry.used and entry.type != MBR_GPT_PROTECTIVE]
    if slots and others:
        return pack_mbr_sector(base)
    return pack_mbr_sector(replace(base, entries=[protective, MbrEntry(), MbrEntry(), MbrEntry()]))


def has_protective_entry(mbr: MbrSector) -> bool:
    return any(entry.type == MBR_GPT_PROTECTIVE for entry in mbr.entries)
