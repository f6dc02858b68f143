"""``read_partition_table``: the MBR or GPT of a guest disk, checked, as one structure.

Decision order (spec sections 1.7, 1.8 and 6): sector 0 must end in 55 AA and not be a FAT
or NTFS boot sector, and its four status bytes must be 0x00/0x80 - else there is no
partition table (a flat filesystem, or nothing). A 0xEE entry means GPT; a GPT header
found at 4096 bytes instead of 512 means a 4 KiB-sector disk. Otherwise it is an MBR.

Structural faults that make a table dangerous to act on (partitions beyond the disk or
overlapping, a looping extended chain, absurd GPT sizes) land in ``problems``: the caller
decides whether to refuse. None of them lets a read escape the disk: every read here is
bounded by ``read_exact``.

The writers re-exported here (``grow_partition``, ``relocate_gpt_backup``) are pure: they
return a new table and the sectors to write.

Floors (``tests/test_import_graph.py`` keeps them): ``guids``, ``mbr`` and ``gpt`` (on-disk
structures) at the bottom; ``table`` (the parsed table) above them; ``mbr_table`` and
``gpt_table`` (reading and writing each kind) above that; this module on top, the only one
that also asks a filesystem probe (is sector 0 a FAT or NTFS boot sector rather than an MBR?).
"""

from __future__ import annotations

from imagewright.binary import ByteSource, read_exact
from imagewright.disk.filesystems.fat import is_fat_boot_sector
from imagewright.disk.filesystems.ntfs import is_ntfs_boot_sector
from imagewright.disk.gpt import SIGNATURE as GPT_SIGNATURE
from imagewright.disk.gpt_table import grow_gpt_partition, read_gpt_table, relocate_backup
from imagewright.disk.mbr import (
    BOOT_SIGNATURE,
    ENTRIES_OFFSET,
    MAX_SECTORS_32,
    has_protective_entry,
    parse_mbr_sector,
)
from imagewright.disk.mbr_table import grow_mbr_partition, read_mbr_table
from imagewright.disk.table import DiskWrite, Partition, PartitionTable
from imagewright.errors import ImageFormatError, InvalidArgumentError

__all__ = [
    "DiskWrite",
    "Partition",
    "PartitionTable",
    "grow_partition",
    "max_partition_end",
    "read_partition_table",
    "relocate_gpt_backup",
]

SECTOR_SIZES = (512, 4096)


def read_partition_table(disk: ByteSource, sector_size: int = 512) -> PartitionTable | None:
    """The disk's MBR or GPT, or None when sector 0 holds no partition table.

    ``sector_size`` is the logical sector size; with the default 512, a GPT whose header is
    found at byte 4096 rather than 512 is read as a 4096-byte-sector disk (with a warning).
    Raises only ImagewrightError (ImageFormatError for an unreadable disk).
    """
    if sector_size not in SECTOR_SIZES:
        raise InvalidArgumentError(
            f"A sector size of {sector_size} bytes is not supported (use 512 or 4096)."
        )
    if disk.size < 2 * 512:
        return None
    sector0 = read_exact(disk, 0, 512, "master boot record")
    if not_an_mbr_reason(sector0) is not None:
        return _gpt_without_mbr(disk, sector_size)
    mbr = parse_mbr_sector(sector0)
    if has_protective_entry(mbr):
        size = _gpt_sector_size(disk, sector_size)
        table = read_gpt_table(disk, size, mbr)
        if size != sector_size:
            table.warnings.append(f"The GPT uses {size}-byte sectors.")
    else:
        if disk.size < sector_size:
            return None
        table = read_mbr_table(disk, sector_size, mbr)
    check_layout(table)
    return table


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


def _gpt_sector_size(disk: ByteSource, requested: int) -> int:
    """The sector size under which a GPT header is found at LBA 1 (the requested one first)."""
    for size in (requested, *[s for s in SECTOR_SIZES if s != requested]):
        if disk.size >= 2 * size and read_exact(disk, size, 8, "GPT signature") == GPT_SIGNATURE:
            return size
    return requested


def _gpt_without_mbr(disk: ByteSource, sector_size: int) -> PartitionTable | None:
    """A GPT header without a protective MBR: not a table libblkid or the kernel would use.

    We do not read it as a table either (sector 0 may be a filesystem that happens to hold
    "EFI PART" at 512), but a disk whose sector 0 is blank and whose LBA 1 is a GPT header
    is worth a table with a warning: the protective MBR was probably wiped.
    """
    sector0 = read_exact(disk, 0, 512, "master boot record")
    if any(sector0):
        return None
    size = _gpt_sector_size(disk, sector_size)
    if disk.size < 2 * size or read_exact(disk, size, 8, "GPT signature") != GPT_SIGNATURE:
        return None
    table = read_gpt_table(disk, size, None)
    table.warnings.append(
        "The disk has a GPT but no protective MBR (sector 0 is blank); BIOS tools will not see it."
    )
    check_layout(table)
    return table


def check_layout(table: PartitionTable) -> None:
    """Problems every kind of table shares: partitions beyond the disk, overlapping, over the table."""
    for part in table.partitions:
        if part.end >= table.disk_sectors:
            table.problems.append(
                f"Partition {part.number} (sectors {part.start}-{part.end}) extends beyond the end of "
                f"the disk ({table.disk_sectors} sectors)."
            )
        if part.start == 0 and part.kind != "logical":
            table.problems.append(
                f"Partition {part.number} starts at sector 0, over the partition table itself."
            )
    # Logicals are checked against their extended partition when the chain is read; here the
    # containers (primaries incl. extended, GPT entries) and the logicals among themselves.
    for group in (
        [p for p in table.partitions if p.kind != "logical"],
        [p for p in table.partitions if p.kind == "logical"],
    ):
        _check_overlaps(table, group)


def _check_overlaps(table: PartitionTable, parts: list[Partition]) -> None:
    ordered = sorted(parts, key=lambda p: (p.start, p.end))
    reported: set[tuple[int, int]] = set()
    reach: Partition | None = None
    for part in ordered:
        if reach is not None and part.start <= reach.end:
            pair = (reach.number, part.number)
            if pair not in reported:
                reported.add(pair)
                table.problems.append(
                    f"Partitions {reach.number} (sectors {reach.start}-{reach.end}) and {part.number} "
                    f"(sectors {part.start}-{part.end}) overlap."
                )
        if reach is None or part.end > reach.end:
            reach = part
        if len(reported) >= 16:
            table.problems.append("More overlapping partitions were not listed.")
            return


def max_partition_end(table: PartitionTable, number: int) -> int:
    """The last sector partition ``number`` may grow to without touching anything else."""
    part = _find(table, number)
    if table.kind == "gpt":
        limit = table.last_usable_lba if table.last_usable_lba is not None else table.disk_sectors - 1
        others = [p for p in table.partitions if p.number != number]
    else:
        limit = min(table.disk_sectors - 1, part.start + MAX_SECTORS_32 - 1)
        if part.kind == "logical":
            # A logical may push its extended partition outwards, but not past the next logical.
            others = [p for p in table.partitions if p.number != number and p.kind != "extended"]
        else:
            others = [p for p in table.partitions if p.number != number and p.kind != "logical"]
    for other in others:
        if other.start > part.end:
            limit = min(limit, other.start - 1)
        if part.kind == "logical" and other.kind == "logical":
            # The next logical's EBR sits before the logical itself.
            ebr = other.table_lba
            if ebr > part.end:
                limit = min(limit, ebr - 1)
    return limit


def grow_partition(
    table: PartitionTable, number: int, new_end: int
) -> tuple[PartitionTable, list[DiskWrite]]:
    """Partition ``number`` ending at sector ``new_end``: the new table and the sectors to write.

    Raises InvalidArgumentError when the partition would shrink, overlap another one or
    leave the usable area. Refuses tables with problems (fix or refuse those first).
    """
    part = _find(table, number)
    if table.problems:
        raise ImageFormatError(
            f"The partition table has problems; refusing to change it: {table.problems[0]}"
        )
    if new_end < part.end:
        raise InvalidArgumentError(f"Partition {number} would shrink (ends at {part.end}, asked {new_end}).")
    limit = max_partition_end(table, number)
    if new_end > limit:
        raise InvalidArgumentError(f"Partition {number} can grow to sector {limit} at most, not {new_end}.")
    if part.kind == "extended":
        raise InvalidArgumentError("Grow a logical partition, not the extended partition that holds it.")
    try:
        if table.kind == "gpt":
            return grow_gpt_partition(table, part, new_end)
        return grow_mbr_partition(table, part, new_end)
    except ValueError as err:
        raise InvalidArgumentError(f"Partition {number} cannot grow to sector {new_end}: {err}.") from None


def relocate_gpt_backup(table: PartitionTable, new_disk_size: int) -> tuple[PartitionTable, list[DiskWrite]]:
    """For a disk grown (or shrunk) to ``new_disk_size`` bytes: the GPT's backup at the new end.

    The usable area follows the new end; shrinking is refused (InvalidArgumentError) when a
    partition would end past the new last usable sector.
    """
    if table.kind != "gpt" or table.gpt_header is None:
        raise InvalidArgumentError("Only a readable GPT has a backup header to move.")
    if new_disk_size % table.sector_size:
        raise InvalidArgumentError(f"The new disk size is not a multiple of {table.sector_size} bytes.")
    try:
        return relocate_backup(table, new_disk_size // table.sector_size)
    except ValueError as err:
        raise InvalidArgumentError(f"The GPT cannot be moved: {err}.") from None


def _find(table: PartitionTable, number: int) -> Partition:
    part = table.partition(number)
    if part is None:
        raise InvalidArgumentError(f"The disk has no partition {number}.")
    return part
