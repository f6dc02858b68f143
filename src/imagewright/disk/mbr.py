"""The MBR (sector 0) and the EBR chain of an extended partition (spec section 1.7).

Layout: boot code 0-439, disk signature u32 at 440, two reserved bytes, four 16-byte
entries at 446 (status, CHS start, type, CHS end, u32 LBA start, u32 sector count), and
55 AA at 510. Each EBR of an extended partition has the same layout: its first data entry
is a logical partition whose start is relative to that EBR, and its first extended entry
links to the next EBR, relative to the start of the extended partition.

Reading follows libblkid ``partitions/dos.c`` and the Linux kernel (a status byte other
than 0x00/0x80 means "not an MBR"; a FAT or NTFS boot sector is not an MBR either), with
a bound on the chain and loop detection that neither needs to spell out. Writers are pure:
they return sector images, callers write them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from imagewright.binary import ByteSource, Layout, read_exact
from imagewright.disk.filesystems.fat import is_fat_boot_sector
from imagewright.disk.filesystems.ntfs import is_ntfs_boot_sector
from imagewright.disk.guids import (
    MBR_EXTENDED_TYPES,
    MBR_GPT_PROTECTIVE,
    mbr_type_id,
    mbr_type_name,
)
from imagewright.disk.table import DiskWrite, Partition, PartitionTable, resized

BOOT_CODE_SIZE = 440
ENTRIES_OFFSET = 446
BOOT_SIGNATURE = b"\x55\xaa"
#: Linux numbers logical partitions from 5; we stop following a chain after this many.
MAX_LOGICAL_PARTITIONS = 128
#: EBRs visited at most (a chain may hold EBRs without a data partition; blkid allows 100 in a row).
MAX_EBRS = 256
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


def not_an_mbr_reason(sector: bytes) -> str | None:
    """Why sector 0 is not an MBR partition table, or None when it is one (libblkid's rules)."""
    if len(sector) < 512 or sector[510:512] != BOOT_SIGNATURE:
        return "no 55 AA boot signature"
    if is_fat_boot_sector(sector[:512]):
        return "it is a FAT boot sector"
    if is_ntfs_boot_sector(sector[:512]):
        return "it is an NTFS boot sector"
    for index in range(4):
        status = sector[ENTRIES_OFFSET + 16 * index]
        if status not in (0x00, 0x80):
            return f"entry {index + 1} has the invalid status byte 0x{status:02x}"
    return None


def has_protective_entry(mbr: MbrSector) -> bool:
    return any(entry.type == MBR_GPT_PROTECTIVE for entry in mbr.entries)


def read_mbr_table(disk: ByteSource, sector_size: int, mbr: MbrSector) -> PartitionTable:
    """Primaries from ``mbr`` and logicals from the first extended partition's EBR chain."""
    disk_sectors = disk.size // sector_size
    table = PartitionTable(
        kind="mbr",
        sector_size=sector_size,
        disk_id=mbr.disk_id,
        disk_sectors=disk_sectors,
        mbr=mbr,
    )
    extended: Partition | None = None
    active = 0
    for slot, entry in enumerate(mbr.entries):
        if not entry.used:
            continue
        part = _partition(
            slot + 1, entry, entry.start_lba, "extended" if entry.is_extended else "primary", sector_size
        )
        part.table_lba, part.slot = 0, slot
        table.partitions.append(part)
        active += entry.bootable
        if entry.is_extended:
            if extended is None:
                extended = part
            else:
                table.warnings.append(
                    f"Partition {part.number} is a second extended partition; only the first "
                    f"(partition {extended.number}) is followed."
                )
    if active > 1:
        table.warnings.append(f"{active} partitions are marked active (bootable); BIOS code expects one.")
    if extended is not None:
        _read_extended(disk, table, extended)
    return table


def _partition(number: int, entry: MbrEntry, start: int, kind: str, sector_size: int) -> Partition:
    return Partition(
        number=number,
        start=start,
        end=start + entry.sectors - 1,
        sectors=entry.sectors,
        size=entry.sectors * sector_size,
        type_id=mbr_type_id(entry.type),
        type_name=mbr_type_name(entry.type),
        bootable=entry.bootable,
        kind=kind,
    )


def _read_extended(disk: ByteSource, table: PartitionTable, extended: Partition) -> None:
    """Follow the EBR chain of ``extended``, bounded, with loop detection."""
    sector_size = table.sector_size
    ex_start, ex_end = extended.start, extended.end
    current = ex_start
    visited: set[int] = set()
    number = 5
    while True:
        if current in visited:
            table.problems.append(
                f"The extended partition's chain of logical partitions loops back to sector {current}."
            )
            return
        if len(visited) >= MAX_EBRS:
            table.problems.append(
                f"The extended partition's chain has more than {MAX_EBRS} links; imagewright stops there."
            )
            return
        visited.add(current)
        if not ex_start <= current <= ex_end:
            table.problems.append(
                f"An extended boot record at sector {current} lies outside the extended partition "
                f"(sectors {ex_start}-{ex_end})."
            )
            return
        if (current + 1) * sector_size > disk.size:
            table.problems.append(
                f"An extended boot record at sector {current} lies beyond the end of the "
                f"{table.disk_sectors}-sector disk."
            )
            return
        sector = read_exact(disk, current * sector_size, sector_size, "extended boot record")
        ebr = parse_mbr_sector(sector)
        if not ebr.has_boot_signature:
            if current != ex_start:
                table.warnings.append(
                    f"The extended boot record at sector {current} has no 55 AA signature; "
                    "the chain ends there."
                )
            return
        table.ebrs[current] = ebr
        for slot, entry in enumerate(ebr.entries):
            if not entry.used or entry.is_extended:
                continue
            absolute = current + entry.start_lba
            if slot >= 2 and (
                entry.start_lba + entry.sectors > extended.sectors
                or absolute < ex_start
                or absolute + entry.sectors - 1 > ex_end
            ):
                continue  # libblkid's extra checks for data in the 3rd and 4th entries
            if number - 4 > MAX_LOGICAL_PARTITIONS:
                table.problems.append(
                    f"The extended partition holds more than {MAX_LOGICAL_PARTITIONS} logical partitions; "
                    "imagewright stops there."
                )
                return
            part = _partition(number, entry, absolute, "logical", sector_size)
            part.table_lba, part.slot = current, slot
            table.partitions.append(part)
            _check_logical(table, part, extended, entry)
            number += 1
        link = next((entry for entry in ebr.entries if entry.used and entry.is_extended), None)
        if link is None:
            return
        current = ex_start + link.start_lba


def _check_logical(table: PartitionTable, part: Partition, extended: Partition, entry: MbrEntry) -> None:
    if entry.start_lba == 0:
        table.problems.append(
            f"Logical partition {part.number} starts on its own extended boot record (sector {part.start})."
        )
    if part.start < extended.start or part.end > extended.end:
        table.problems.append(
            f"Logical partition {part.number} (sectors {part.start}-{part.end}) lies outside the extended "
            f"partition {extended.number} (sectors {extended.start}-{extended.end})."
        )


def grow_mbr_partition(
    table: PartitionTable, part: Partition, new_end: int
) -> tuple[PartitionTable, list[DiskWrite]]:
    """New sector images for ``part`` ending at ``new_end``; the extended partition grows with a logical."""
    if table.mbr is None:
        raise ValueError("the table was not read from an MBR")
    if part.kind in ("primary", "extended"):
        mbr = _with_entry_end(table.mbr, part.slot, part.start, new_end)
        writes = [DiskWrite(0, 0, pack_mbr_sector(mbr), f"MBR (partition {part.number} grown)")]
        new_table = replace(
            table, mbr=mbr, partitions=resized(table.partitions, part.number, new_end, table.sector_size)
        )
        return new_table, writes
    # A logical partition: its own EBR entry is relative to the EBR.
    ebr = table.ebrs[part.table_lba]
    new_ebr = _with_entry_end(ebr, part.slot, part.start - part.table_lba, new_end - part.table_lba)
    ebrs = dict(table.ebrs)
    ebrs[part.table_lba] = new_ebr
    writes = [
        DiskWrite(
            part.table_lba,
            part.table_lba * table.sector_size,
            pack_mbr_sector(new_ebr),
            f"extended boot record of partition {part.number}",
        )
    ]
    partitions = resized(table.partitions, part.number, new_end, table.sector_size)
    extended = next(p for p in table.partitions if p.kind == "extended")
    # The previous EBR's link records how far this logical's container reaches.
    for lba, other in table.ebrs.items():
        for slot, entry in enumerate(other.entries):
            if entry.used and entry.is_extended and extended.start + entry.start_lba == part.table_lba:
                linked = _with_link_size(other, slot, new_end - part.table_lba + 1)
                ebrs[lba] = linked
                writes.append(
                    DiskWrite(
                        lba,
                        lba * table.sector_size,
                        pack_mbr_sector(linked),
                        f"link to partition {part.number}",
                    )
                )
    mbr = table.mbr
    if new_end > extended.end:
        mbr = _with_entry_end(table.mbr, extended.slot, extended.start, new_end)
        writes.insert(0, DiskWrite(0, 0, pack_mbr_sector(mbr), "MBR (extended partition grown)"))
        partitions = resized(partitions, extended.number, new_end, table.sector_size)
    return replace(table, mbr=mbr, ebrs=ebrs, partitions=partitions), writes


def _with_entry_end(sector: MbrSector, slot: int, relative_start: int, relative_end: int) -> MbrSector:
    entries = list(sector.entries)
    old = entries[slot]
    sectors = relative_end - relative_start + 1
    if not 0 < sectors <= MAX_SECTORS_32:
        raise ValueError("an MBR partition holds at most 2^32 - 1 sectors")
    entries[slot] = replace(old, sectors=sectors, chs_end=lba_to_chs(relative_end))
    return replace(sector, entries=entries)


def _with_link_size(sector: MbrSector, slot: int, sectors: int) -> MbrSector:
    entries = list(sector.entries)
    entries[slot] = replace(entries[slot], sectors=sectors)
    return replace(sector, entries=entries)
