"""A disk's GPT: the primary header or else the backup, checked; the writers that lay one out.

Reading follows libblkid ``partitions/gpt.c``: the primary header at LBA 1 if usable, else
the backup at the header's alternate LBA or the disk's last LBA, each with its entry array
read bounded (``gpt.MAX_ENTRY_ARRAY_BYTES``) and checked against its CRC. Writers are pure:
they return the sectors to write (``DiskWrite``), callers write them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from imagewright.binary import ByteSource, read_exact
from imagewright.disk.gpt import (
    ATTRIBUTE_LEGACY_BIOS_BOOTABLE,
    GptEntry,
    GptHeader,
    crc32,
    header_problem,
    pack_entry_array,
    pack_header,
    parse_entries,
    parse_header,
)
from imagewright.disk.guids import gpt_attributes_text, gpt_type_name
from imagewright.disk.mbr import MbrSector, protective_mbr
from imagewright.disk.table import DiskWrite, Partition, PartitionTable, resized


class _HeaderRead(NamedTuple):
    header: GptHeader | None
    array: bytes
    problem: str | None
    lba: int


def _read_header(disk: ByteSource, lba: int, sector_size: int, disk_sectors: int) -> _HeaderRead:
    if lba < 1 or lba >= disk_sectors:
        return _HeaderRead(None, b"", f"sector {lba} is outside the disk", lba)
    sector = read_exact(disk, lba * sector_size, sector_size, "GPT header")
    problem = header_problem(sector, lba, disk_sectors, sector_size)
    if problem is not None:
        return _HeaderRead(None, b"", problem, lba)
    header = parse_header(sector)
    array = read_exact(
        disk, header.entries_lba * sector_size, header.entry_array_bytes, "GPT partition entry array"
    )
    if crc32(array) != header.entries_crc:
        return _HeaderRead(
            None, b"", f"the GPT partition entry array of the header at sector {lba} fails its CRC check", lba
        )
    return _HeaderRead(header, array, None, lba)


def read_gpt_table(disk: ByteSource, sector_size: int, mbr: MbrSector | None) -> PartitionTable:
    """The GPT of ``disk``: primary header if usable, else the backup, with warnings/problems."""
    disk_sectors = disk.size // sector_size
    last_lba = disk_sectors - 1
    primary = _read_header(disk, 1, sector_size, disk_sectors)
    backup_candidates = []
    if primary.header is not None and primary.header.alternate_lba != 1:
        backup_candidates.append(primary.header.alternate_lba)
    if last_lba not in backup_candidates:
        backup_candidates.append(last_lba)
    backup = _HeaderRead(None, b"", "there is no backup GPT header", last_lba)
    for candidate in backup_candidates:
        backup = _read_header(disk, candidate, sector_size, disk_sectors)
        if backup.header is not None:
            break

    table = PartitionTable(
        kind="gpt", sector_size=sector_size, disk_id="", disk_sectors=disk_sectors, mbr=mbr
    )
    if primary.header is not None:
        used = primary
        table.gpt_header_source = "primary"
        if backup.header is None:
            table.warnings.append(f"The backup GPT header is missing or damaged ({backup.problem}).")
        elif backup.header.entries_crc != primary.header.entries_crc:
            table.warnings.append("The backup GPT partition entries differ from the primary ones.")
    elif backup.header is not None:
        used = backup
        table.gpt_header_source = "backup"
        table.warnings.append(
            f"The primary GPT header is unusable ({primary.problem}); the backup header at sector "
            f"{backup.lba} was used."
        )
    else:
        table.problems.append(
            f"The disk has a protective MBR but no usable GPT: primary: {primary.problem}; "
            f"backup: {backup.problem}."
        )
        return table

    header = used.header
    assert header is not None
    table.gpt_header = header
    table.disk_id = header.disk_guid
    table.first_usable_lba = header.first_usable_lba
    table.last_usable_lba = header.last_usable_lba
    table.gpt_entries = parse_entries(used.array, header)
    _check_disk_size(table, header, used.lba, last_lba)
    if mbr is not None:
        _check_protective_mbr(table, mbr, disk_sectors)
    _add_partitions(table, header)
    return table


def _check_disk_size(table: PartitionTable, header: GptHeader, header_lba: int, last_lba: int) -> None:
    backup_lba = header.alternate_lba if header_lba == 1 else header_lba
    if backup_lba < last_lba:
        table.warnings.append(
            f"The disk is larger than the GPT says (image was grown): the backup GPT header belongs at "
            f"sector {last_lba}, not {backup_lba}."
        )
    elif backup_lba > last_lba:
        table.warnings.append(
            f"The disk is smaller than the GPT says (image was truncated?): the GPT expects "
            f"{backup_lba + 1} sectors, the image has {last_lba + 1}."
        )


def _check_protective_mbr(table: PartitionTable, mbr: MbrSector, disk_sectors: int) -> None:
    others = [entry for entry in mbr.entries if entry.used and entry.type != 0xEE]
    if others:
        table.warnings.append(
            "The MBR is a hybrid MBR: besides the GPT protective entry it lists "
            f"{len(others)} partition(s) of its own, which BIOS tools may use instead of the GPT."
        )
    protective = next((entry for entry in mbr.entries if entry.type == 0xEE), None)
    expected = min(disk_sectors - 1, 0xFFFFFFFF)
    if protective is not None and not others and protective.sectors != expected:
        table.warnings.append(
            f"The protective MBR covers {protective.sectors} sectors, not the whole disk ({expected}); "
            "sfdisk and sgdisk correct this when they write."
        )


def _add_partitions(table: PartitionTable, header: GptHeader) -> None:
    sector_size = table.sector_size
    for index, entry in enumerate(table.gpt_entries):
        if not entry.used:
            continue
        number = index + 1
        if entry.last_lba < entry.first_lba:
            table.problems.append(
                f"GPT partition {number} ends (sector {entry.last_lba}) before it starts "
                f"(sector {entry.first_lba})."
            )
            continue
        if entry.first_lba < header.first_usable_lba or entry.last_lba > header.last_usable_lba:
            table.problems.append(
                f"GPT partition {number} (sectors {entry.first_lba}-{entry.last_lba}) lies outside the "
                f"usable area {header.first_usable_lba}-{header.last_usable_lba}."
            )
        sectors = entry.last_lba - entry.first_lba + 1
        table.partitions.append(
            Partition(
                number=number,
                start=entry.first_lba,
                end=entry.last_lba,
                sectors=sectors,
                size=sectors * sector_size,
                type_id=entry.type_guid,
                type_name=gpt_type_name(entry.type_guid),
                bootable=bool(entry.attributes & ATTRIBUTE_LEGACY_BIOS_BOOTABLE),
                kind="gpt",
                name=entry.name,
                uuid=entry.unique_guid,
                attributes=entry.attributes,
                attributes_text=gpt_attributes_text(entry.attributes),
                table_lba=header.entries_lba + (index * header.entry_size) // sector_size,
                slot=index,
            )
        )


# --- writers -------------------------------------------------------------------------


def gpt_writes(
    primary: GptHeader,
    entries: list[GptEntry],
    disk_sectors: int,
    sector_size: int,
    *,
    mbr: MbrSector | None = None,
    write_protective_mbr: bool = True,
) -> list[DiskWrite]:
    """Every sector of a GPT for a disk of ``disk_sectors``: protective MBR, both headers, both arrays.

    ``primary`` gives the layout (usable range, disk GUID, entry count and size); its
    alternate LBA, CRCs and the backup's position are computed here.
    """
    last_lba = disk_sectors - 1
    array = pack_entry_array(entries, primary.entry_count, primary.entry_size)
    array_sectors = primary.entry_array_sectors(sector_size)
    backup_array_lba = last_lba - array_sectors
    if backup_array_lba <= primary.last_usable_lba:
        raise ValueError("the backup GPT entry array would overlap the usable area")
    entries_crc = crc32(array)
    main = replace(primary, my_lba=1, alternate_lba=last_lba, entries_crc=entries_crc)
    backup = replace(main, my_lba=last_lba, alternate_lba=1, entries_lba=backup_array_lba)
    padded = array.ljust(array_sectors * sector_size, b"\0")
    writes = []
    if write_protective_mbr:
        writes.append(DiskWrite(0, 0, protective_mbr(disk_sectors, mbr), "protective MBR"))
    writes += [
        DiskWrite(1, sector_size, pack_header(main, sector_size), "primary GPT header"),
        DiskWrite(main.entries_lba, main.entries_lba * sector_size, padded, "primary GPT entry array"),
        DiskWrite(backup_array_lba, backup_array_lba * sector_size, padded, "backup GPT entry array"),
        DiskWrite(last_lba, last_lba * sector_size, pack_header(backup, sector_size), "backup GPT header"),
    ]
    return writes


def _primary_layout(table: PartitionTable) -> GptHeader:
    """The primary header to write back: the one read, or one rebuilt from the backup."""
    header = table.gpt_header
    if table.kind != "gpt" or header is None:
        raise ValueError("the table is not a readable GPT")
    if table.gpt_header_source == "primary":
        return replace(header, my_lba=1)
    return replace(header, my_lba=1, entries_lba=2)


def relocate_backup(table: PartitionTable, new_disk_sectors: int) -> tuple[PartitionTable, list[DiskWrite]]:
    """After the disk grew or shrank: the backup header and array at the new end, usable area to match.

    Returns the updated table and the sectors to write: protective MBR (resized, boot code
    kept), both headers, both arrays, and zeros over the old backup header so that no tool
    later finds a stale copy in the middle of the disk. Also repairs a damaged backup when
    ``new_disk_sectors`` is the current size. A smaller disk is fine as long as every
    partition still ends before the new backup entry array (the space cut off is free).
    """
    primary = _primary_layout(table)
    sector_size = table.sector_size
    array_sectors = primary.entry_array_sectors(sector_size)
    new_last = new_disk_sectors - 1
    new_last_usable = new_last - array_sectors - 1
    if new_last_usable < primary.first_usable_lba:
        raise ValueError(f"a disk of {new_disk_sectors} sectors is too small for this GPT")
    for number, entry in enumerate(table.gpt_entries, start=1):
        if entry.used and entry.last_lba > new_last_usable:
            raise ValueError(
                f"partition {number} ends at sector {entry.last_lba}, beyond the last usable sector "
                f"{new_last_usable} of a {new_disk_sectors}-sector disk"
            )
    primary = replace(primary, last_usable_lba=new_last_usable)
    writes = gpt_writes(primary, table.gpt_entries, new_disk_sectors, sector_size, mbr=table.mbr)
    header = table.gpt_header
    assert header is not None
    old_backup = header.alternate_lba if table.gpt_header_source == "primary" else header.my_lba
    if header.last_usable_lba < old_backup < new_last - array_sectors:
        writes.append(
            DiskWrite(
                old_backup, old_backup * sector_size, bytes(sector_size), "old backup GPT header (wiped)"
            )
        )
    array = pack_entry_array(table.gpt_entries, primary.entry_count, primary.entry_size)
    new_table = replace(
        table,
        disk_sectors=new_disk_sectors,
        last_usable_lba=new_last_usable,
        gpt_header=replace(primary, alternate_lba=new_last, entries_crc=crc32(array)),
        gpt_header_source="primary",
        warnings=[w for w in table.warnings if "GPT" not in w and "protective MBR" not in w],
    )
    return new_table, writes


def grow_gpt_partition(
    table: PartitionTable, part: Partition, new_end: int
) -> tuple[PartitionTable, list[DiskWrite]]:
    """Both entry arrays and headers rewritten with partition ``part`` ending at ``new_end``."""
    primary = _primary_layout(table)
    entries = list(table.gpt_entries)
    entries[part.slot] = replace(entries[part.slot], last_lba=new_end)
    writes = gpt_writes(
        primary, entries, table.disk_sectors, table.sector_size, mbr=table.mbr, write_protective_mbr=False
    )
    partitions = resized(table.partitions, part.number, new_end, table.sector_size)
    array = pack_entry_array(entries, primary.entry_count, primary.entry_size)
    new_header = replace(primary, alternate_lba=table.disk_sectors - 1, entries_crc=crc32(array))
    new_table = replace(
        table, gpt_entries=entries, partitions=partitions, gpt_header=new_header, gpt_header_source="primary"
    )
    return new_table, writes
