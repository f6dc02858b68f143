"""The MBR partition table: primaries from sector 0 and logicals from the EBR chain (spec section 1.7).

Reading follows libblkid ``partitions/dos.c`` and the Linux kernel, with a bound on the
chain and loop detection that neither needs to spell out. Whether sector 0 is an MBR at
all is decided before this module is asked (``partitions.not_an_mbr_reason``). Writers are
pure: they return the sectors to write (``DiskWrite``), callers write them.
"""

from __future__ import annotations

from dataclasses import replace

from imagewright.binary import ByteSource, read_exact
from imagewright.disk.guids import mbr_type_id, mbr_type_name
from imagewright.disk.mbr import (
    MAX_SECTORS_32,
    MbrEntry,
    MbrSector,
    lba_to_chs,
    pack_mbr_sector,
    parse_mbr_sector,
)
from imagewright.disk.table import DiskWrite, Partition, PartitionTable, resized

#: Linux numbers logical partitions from 5; we stop following a chain after this many.
MAX_LOGICAL_PARTITIONS = 128
#: EBRs visited at most (a chain may hold EBRs without a data partition; blkid allows 100 in a row).
MAX_EBRS = 256


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
