"""What happens to the partition table when the disk changes size: which partition grows, to where.

Growing follows cloud-utils' ``growpart`` (the tool cloud images grow with at first boot):

- only the partition that ends last can grow (one followed by another partition cannot,
  even when there is free space between them);
- its new end is the last sector before the next partition or the end of the disk, less
  33 sectors: on GPT that is exactly the new *last usable sector* (the backup entry array
  and header take the last 33), and on MBR growpart keeps the same 33 sectors free so that
  the disk can later be converted to GPT without shrinking anything. There is no 1 MiB
  alignment of the end (growpart does none either);
- an MBR partition is capped at 2^32 - 1 sectors from its start (the entry's 32-bit fields),
  and a logical partition also by its extended container's 32-bit size.

On GPT the backup header and entry array always move to the new end first (a GPT whose
backup is not on the last sector is reported by sfdisk, sgdisk and the kernel), even with
``--no-partition``. Shrinking is allowed only when everything cut off is unused: no
partition (nor, on GPT, the 33 backup sectors) beyond the new end.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.mbr import MAX_SECTORS_32
from imagewright.disk.partitions import grow_partition, max_partition_end, relocate_gpt_backup
from imagewright.disk.table import DiskWrite, Partition, PartitionTable
from imagewright.errors import InvalidArgumentError, UnsafeImageError
from imagewright.units import format_size

#: Sectors growpart leaves free at the end of the disk (the GPT backup array + header).
GPT_BACKUP_SECTORS = 33


@dataclass(frozen=True)
class PartitionGrowth:
    """One partition's old and new end (sectors, inclusive)."""

    number: int
    kind: str
    start: int
    old_end: int
    new_end: int
    sector_size: int
    #: The filesystem found in it by inspect (``ext4``, ``xfs`` ...), if any.
    filesystem: str | None = None

    @property
    def grew(self) -> bool:
        return self.new_end > self.old_end

    @property
    def old_size(self) -> int:
        return (self.old_end - self.start + 1) * self.sector_size

    @property
    def new_size(self) -> int:
        return (self.new_end - self.start + 1) * self.sector_size

    @property
    def byte_offset(self) -> int:
        return self.start * self.sector_size


@dataclass
class TablePlan:
    """The sectors to write and the table they make."""

    kind: str
    expected: PartitionTable
    writes: list[DiskWrite] = field(default_factory=list)
    growth: PartitionGrowth | None = None
    gpt_backup_moved: bool = False
    notes: list[str] = field(default_factory=list)


def last_partition(table: PartitionTable) -> Partition | None:
    """The partition that ends last: a logical rather than the extended partition holding it."""
    candidates = [p for p in table.partitions if p.kind != "extended"]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.end, p.kind == "logical"))


def choose_partition(table: PartitionTable, number: int | None) -> Partition | None:
    """The partition to grow (``number``, or the last one); InvalidArgumentError when it cannot."""
    if number is None:
        part = last_partition(table)
        if part is None and any(p.kind == "extended" for p in table.partitions):
            raise InvalidArgumentError(
                "The last partition is an extended partition without logical partitions; "
                "there is nothing to grow (use --no-partition to grow only the disk)."
            )
        return part
    part = table.partition(number)
    if part is None:
        numbers = ", ".join(str(p.number) for p in table.partitions) or "none"
        raise InvalidArgumentError(f"The disk has no partition {number} (its partitions: {numbers}).")
    if part.kind == "extended":
        logicals = [p.number for p in table.partitions if p.kind == "logical"]
        hint = f" ({', '.join(map(str, logicals))})" if logicals else ""
        raise InvalidArgumentError(
            f"Partition {number} is an extended partition; name the logical partition inside it{hint}."
        )
    for other in table.partitions:
        if other.number == number or (part.kind == "logical" and other.kind == "extended"):
            continue
        if other.start > part.end:
            raise InvalidArgumentError(
                f"Partition {number} is followed by partition {other.number} (from sector {other.start}); "
                "only the partition that ends last can grow."
            )
    return part


def smallest_disk(table: PartitionTable) -> int:
    """Bytes the disk needs to keep every partition (and, on GPT, the backup header and array)."""
    last_end = max((p.end for p in table.partitions), default=0)
    if table.kind == "gpt":
        header = table.gpt_header
        array = header.entry_array_sectors(table.sector_size) if header else GPT_BACKUP_SECTORS - 1
        minimum = max(last_end, table.first_usable_lba or 0) + array + 2
    else:
        minimum = max(last_end + 1, 1)
    return minimum * table.sector_size


def check_shrink(table: PartitionTable, new_size: int) -> None:
    """InvalidArgumentError unless everything beyond ``new_size`` is outside every partition."""
    needed = smallest_disk(table)
    if new_size >= needed:
        return
    last = max(table.partitions, key=lambda p: p.end, default=None)
    backup = " and the 33 sectors of the GPT backup" if table.kind == "gpt" else ""
    if last is None:
        raise InvalidArgumentError(
            f"Shrinking to {new_size} bytes would cut into the partition table itself; "
            f"the disk needs at least {needed} bytes."
        )
    raise InvalidArgumentError(
        f"Shrinking to {format_size(new_size)} would cut into partition {last.number}, which ends at "
        f"sector {last.end}; the smallest size that keeps every partition{backup} is {needed} bytes "
        f"({format_size(needed)})."
    )


def check_flat_shrink(filesystem: FilesystemInfo | None, new_size: int) -> None:
    """Shrinking an unpartitioned disk: only when its filesystem (of known size) still fits."""
    if filesystem is None:
        raise InvalidArgumentError(
            "The disk holds no partition table and no filesystem imagewright recognises, so it cannot "
            "tell whether the end of the disk is in use; it was not shrunk."
        )
    if filesystem.size_bytes is None:
        raise InvalidArgumentError(
            f"imagewright cannot tell how much of the disk the {filesystem.type} filesystem uses; "
            "it was not shrunk."
        )
    if filesystem.size_bytes > new_size:
        raise InvalidArgumentError(
            f"Shrinking to {format_size(new_size)} would cut the {filesystem.type} filesystem, which is "
            f"{filesystem.size_bytes} bytes; shrink the filesystem first (imagewright does not)."
        )


def plan_table(
    table: PartitionTable,
    new_size: int,
    *,
    partition: int | None = None,
    grow: bool = True,
) -> TablePlan:
    """The writes that fit ``table`` to a disk of ``new_size`` bytes (and grow a partition if asked).

    Pure: reads nothing, writes nothing. ``grow`` is False for ``--no-partition`` and when
    the disk shrinks.
    """
    sector_size = table.sector_size
    if new_size % sector_size:
        raise InvalidArgumentError(f"The new size is not a whole number of {sector_size}-byte sectors.")
    new_sectors = new_size // sector_size
    if new_size < table.disk_sectors * sector_size:
        check_shrink(table, new_size)
    part = choose_partition(table, partition) if grow else None

    plan = TablePlan(kind=table.kind, expected=table)
    if table.kind == "gpt":
        header = table.gpt_header
        backup_misplaced = header is None or header.alternate_lba != new_sectors - 1
        if backup_misplaced or table.disk_sectors != new_sectors or table.gpt_header_source != "primary":
            plan.expected, plan.writes = relocate_gpt_backup(table, new_size)
            plan.gpt_backup_moved = True
    else:
        plan.expected = replace(table, disk_sectors=new_sectors)

    if part is None:
        return plan
    new_end = _growpart_end(plan.expected, part, new_sectors)
    growth = PartitionGrowth(
        number=part.number,
        kind=part.kind,
        start=part.start,
        old_end=part.end,
        new_end=max(new_end, part.end),
        sector_size=sector_size,
        filesystem=part.filesystem.type if part.filesystem else None,
    )
    plan.growth = growth
    if not growth.grew:
        plan.notes.append(f"Partition {part.number} already reaches as far as it can (sector {part.end}).")
        return plan
    if table.kind == "mbr" and new_end < new_sectors - 1 - GPT_BACKUP_SECTORS:
        plan.notes.append(
            f"An MBR partition cannot reach beyond 2 TiB from its start; partition {part.number} stops at "
            f"sector {new_end} (convert the disk to GPT to use the rest)."
        )
    if part.kind == "logical":
        _refuse_stray_ebr_entries(table)
    plan.expected, writes = grow_partition(plan.expected, part.number, new_end)
    plan.writes += writes
    return plan


def _refuse_stray_ebr_entries(table: PartitionTable) -> None:
    """Growing the extended partition must not bring hidden entries into view.

    Linux and libblkid read an EBR's third and fourth entries only when they fit inside the
    extended partition; garbage there is ignored today but may fit once the extended partition
    is larger, and would then appear as a new logical partition over the others.
    """
    for lba, ebr in sorted(table.ebrs.items()):
        for slot, entry in enumerate(ebr.entries[2:], start=3):
            if entry.used and not entry.is_extended:
                raise UnsafeImageError(
                    f"The extended boot record at sector {lba} holds a stray entry in slot {slot}, which a "
                    "larger extended partition could turn into a new partition; imagewright does not grow it."
                )


def _growpart_end(table: PartitionTable, part: Partition, new_sectors: int) -> int:
    """growpart's new end: before the next partition, 33 sectors short of the end, 32-bit for MBR."""
    end = min(max_partition_end(table, part.number), new_sectors - 1 - GPT_BACKUP_SECTORS)
    if table.kind == "mbr" and part.kind == "logical":
        extended = next(p for p in table.partitions if p.kind == "extended")
        end = min(end, extended.start + MAX_SECTORS_32 - 1)
    if table.kind == "mbr":
        end = min(end, part.start + MAX_SECTORS_32 - 1)
    return end
