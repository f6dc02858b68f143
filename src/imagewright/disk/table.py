"""The parsed partition table: what ``read_partition_table`` returns and writers consume."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Annotations only: the table keeps the structures it was read from, and survey puts
    # a probe's result on each partition; nothing here looks inside them.
    from imagewright.disk.filesystems.info import FilesystemInfo
    from imagewright.disk.gpt import GptEntry, GptHeader
    from imagewright.disk.mbr import MbrSector


@dataclass
class Partition:
    """One partition, numbered and spelled the way Linux and sfdisk do.

    ``number``: MBR primaries 1-4 (by slot), logicals from 5; GPT entry index + 1.
    ``start``/``end`` are sectors (``end`` inclusive), ``size`` is bytes. ``type_id`` is
    sfdisk's spelling: ``"83"``, ``"5"``, ``"ef"`` for MBR, an uppercase GUID for GPT.
    """

    number: int
    start: int
    end: int
    sectors: int
    size: int
    type_id: str
    type_name: str
    bootable: bool
    #: "primary", "extended", "logical" or "gpt".
    kind: str
    name: str | None = None
    uuid: str | None = None
    attributes: int = 0
    #: sfdisk's spelling of the GPT attributes ("LegacyBIOSBootable GUID:60"), else "".
    attributes_text: str = ""
    #: The sector holding this partition's entry: 0 for primaries, the EBR for logicals,
    #: the entry array's first sector for GPT.
    table_lba: int = 0
    #: Index of the entry inside that table (0-3 for MBR/EBR, entry index for GPT).
    slot: int = 0
    #: Filled in by callers that probe the partition's contents (disk/survey.py).
    filesystem: FilesystemInfo | None = None


@dataclass
class PartitionTable:
    """An MBR or GPT partition table read from a guest disk.

    ``problems`` are structural faults a caller should refuse the image for (partitions
    beyond the disk or overlapping, an extended chain that loops, GPT headers claiming
    absurd sizes); ``warnings`` are faults that tools survive (a damaged backup GPT, a disk
    larger than its GPT says).
    """

    kind: str
    sector_size: int
    disk_id: str
    partitions: list[Partition] = field(default_factory=list)
    first_usable_lba: int | None = None
    last_usable_lba: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The disk's size in sectors when it was read.
    disk_sectors: int = 0
    #: Sector 0 as parsed (boot code, signature, entries): kept so writers preserve it.
    mbr: MbrSector | None = field(default=None, repr=False)
    #: Every EBR of the extended chain, by its LBA (MBR only).
    ebrs: dict[int, MbrSector] = field(default_factory=dict, repr=False)
    #: The GPT header that was used (primary, or the backup when the primary is damaged).
    gpt_header: GptHeader | None = field(default=None, repr=False)
    #: Which header that was: "primary" or "backup".
    gpt_header_source: str | None = None
    #: All entries of the GPT entry array, empty ones included, in array order.
    gpt_entries: list[GptEntry] = field(default_factory=list, repr=False)

    def partition(self, number: int) -> Partition | None:
        for part in self.partitions:
            if part.number == number:
                return part
        return None

    def byte_offset(self, part: Partition) -> int:
        return part.start * self.sector_size


def resized(partitions: list[Partition], number: int, new_end: int, sector_size: int) -> list[Partition]:
    """``partitions`` with partition ``number`` ending at ``new_end`` (a new list, new objects)."""
    result = []
    for part in partitions:
        if part.number == number:
            sectors = new_end - part.start + 1
            result.append(replace(part, end=new_end, sectors=sectors, size=sectors * sector_size))
        else:
            result.append(part)
    return result


@dataclass(frozen=True)
class DiskWrite:
    """Bytes a caller must write to the disk: ``data`` at sector ``lba`` (byte ``offset``)."""

    lba: int
    offset: int
    data: bytes
    #: What this is, for logs and dry runs ("primary GPT header", "EBR of partition 6" ...).
    what: str
