"""Where each partition of a built disk goes: the arithmetic, the sfdisk script, the cross-check.

Every partition starts on a 1 MiB boundary (2048 sectors of 512 bytes), as fdisk, parted and
every cloud image do: aligned for any physical or virtual block size up to 1 MiB.

MBR (``--table mbr``)::

    sector 0         MBR: GRUB's boot.img in the first 440 bytes, the partition table
    sectors 1-2047   the "MBR gap": GRUB's core.img, from sector 1
    partition 1      root filesystem, type 83, bootable flag        2048 .. swap start - 1
    partition 2      swap, type 82 (only with --swap)                 .. end of the disk

GPT (``--table gpt``)::

    sector 0         protective MBR with GRUB's boot.img in the first 440 bytes
    sectors 1-33     primary GPT header and entry array (128 entries)
    partition 1      BIOS boot partition, 1 MiB (21686148-6449-6E6F-744E-656564454649):
                     GRUB's core.img (GPT keeps no gap after the MBR)   2048 .. 4095
    partition 2      root filesystem, Linux filesystem type, name "root"   4096 ..
    partition 3      swap, Linux swap type, name "swap" (only with --swap)
    last 33 sectors  backup entry array and header

So the root filesystem is partition 1 on MBR and partition 2 on GPT (the BIOS boot partition
comes first on the disk and takes number 1, as grub-install's documentation lays it out).
The swap partition is at the end of the disk, exactly the size asked for (rounded up to whole
MiB); the root partition takes everything between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imagewright.disk.guids import BIOS_BOOT_GUID, LINUX_FILESYSTEM_GUID, LINUX_SWAP_GUID
from imagewright.disk.table import PartitionTable
from imagewright.errors import BuildError, InvalidArgumentError
from imagewright.units import format_size

SECTOR = 512
MiB = 1 << 20
#: Partitions start on 1 MiB boundaries.
ALIGNMENT_SECTORS = MiB // SECTOR
#: GPT: the header (1 sector) and a 128-entry array (32 sectors) at each end of the disk.
GPT_RESERVED_SECTORS = 33
#: The BIOS boot partition holding GRUB's core.img on GPT disks.
BIOS_BOOT_SECTORS = ALIGNMENT_SECTORS
#: Smallest root partition we lay out at all (the content check decides what is enough).
MIN_ROOT_BYTES = 8 * MiB
#: Largest disk an MBR can describe: 2^32 sectors of 512 bytes.
MBR_MAX_BYTES = (1 << 32) * SECTOR

TableKind = Literal["mbr", "gpt"]
Role = Literal["bios-boot", "root", "swap"]

MBR_LINUX = "83"
MBR_SWAP = "82"


@dataclass(frozen=True)
class PlannedPartition:
    """One partition of the layout; ``start`` and ``sectors`` in 512-byte sectors."""

    number: int
    role: Role
    start: int
    sectors: int
    #: sfdisk's spelling: "83"/"82" on MBR, an uppercase GUID on GPT.
    type_id: str
    name: str | None = None
    bootable: bool = False

    @property
    def end(self) -> int:
        """The last sector (inclusive), as fdisk prints it."""
        return self.start + self.sectors - 1

    @property
    def offset(self) -> int:
        return self.start * SECTOR

    @property
    def size(self) -> int:
        return self.sectors * SECTOR

    def sfdisk_line(self) -> str:
        words = [f"start={self.start}", f"size={self.sectors}", f"type={self.type_id}"]
        if self.name is not None:
            words.append(f'name="{self.name}"')
        if self.bootable:
            words.append("bootable")
        return ", ".join(words)


@dataclass(frozen=True)
class DiskLayout:
    """The partitions of a disk of ``disk_size`` bytes with a ``table`` partition table."""

    table: TableKind
    disk_size: int
    partitions: tuple[PlannedPartition, ...]

    @property
    def disk_sectors(self) -> int:
        return self.disk_size // SECTOR

    def _role(self, role: Role) -> PlannedPartition | None:
        for part in self.partitions:
            if part.role == role:
                return part
        return None

    @property
    def root(self) -> PlannedPartition:
        part = self._role("root")
        assert part is not None
        return part

    @property
    def swap(self) -> PlannedPartition | None:
        return self._role("swap")

    @property
    def bios_boot(self) -> PlannedPartition | None:
        return self._role("bios-boot")

    @property
    def core_image_lba(self) -> int:
        """Where GRUB's core.img starts: sector 1 (MBR gap) or the BIOS boot partition."""
        bios = self.bios_boot
        return bios.start if bios is not None else 1

    @property
    def core_image_capacity(self) -> int:
        """Sectors available to core.img from ``core_image_lba`` on."""
        bios = self.bios_boot
        if bios is not None:
            return bios.sectors
        return min(p.start for p in self.partitions) - 1

    def sfdisk_script(self) -> str:
        label = "dos" if self.table == "mbr" else "gpt"
        lines = [f"label: {label}", "unit: sectors", ""]
        lines += [part.sfdisk_line() for part in self.partitions]
        return "\n".join(lines) + "\n"


def _align_down(sectors: int) -> int:
    return sectors // ALIGNMENT_SECTORS * ALIGNMENT_SECTORS


def round_up_mib(size: int) -> int:
    return -(-size // MiB) * MiB


def _last_usable(table: TableKind, disk_sectors: int) -> int:
    return disk_sectors - 1 - (GPT_RESERVED_SECTORS if table == "gpt" else 0)


def _root_start(table: TableKind) -> int:
    return ALIGNMENT_SECTORS + (BIOS_BOOT_SECTORS if table == "gpt" else 0)


def plan_layout(disk_size: int, *, table: TableKind, swap_size: int = 0) -> DiskLayout:
    """Lay out a disk of ``disk_size`` bytes (a whole number of MiB) as the module docstring says.

    ``swap_size`` is rounded up to whole MiB (0: no swap partition). Raises InvalidArgumentError
    for impossible sizes and BuildError when the root partition would be smaller than 8 MiB.
    """
    if table not in ("mbr", "gpt"):
        raise InvalidArgumentError(f"'{table}' is not a partition table type; choose mbr or gpt.")
    if disk_size <= 0 or disk_size % MiB:
        raise InvalidArgumentError("A disk size must be a positive whole number of MiB.")
    if swap_size < 0:
        raise InvalidArgumentError("A swap size cannot be negative.")
    if table == "mbr" and disk_size > MBR_MAX_BYTES:
        raise InvalidArgumentError(
            f"An MBR partition table describes at most {format_size(MBR_MAX_BYTES)}; "
            f"use --table gpt for a {format_size(disk_size)} disk."
        )
    swap_sectors = round_up_mib(swap_size) // SECTOR
    disk_sectors = disk_size // SECTOR
    end = _last_usable(table, disk_sectors) + 1  # first sector past the usable area
    partitions: list[PlannedPartition] = []
    gpt = table == "gpt"
    if gpt:
        partitions.append(
            PlannedPartition(
                1, "bios-boot", ALIGNMENT_SECTORS, BIOS_BOOT_SECTORS, BIOS_BOOT_GUID, "BIOS boot"
            )
        )
    root_start = _root_start(table)
    if swap_sectors:
        swap_start = _align_down(end - swap_sectors)
        root_end = swap_start  # exclusive
    else:
        swap_start = 0
        root_end = _align_down(end)
    root_sectors = root_end - root_start
    if root_sectors * SECTOR < MIN_ROOT_BYTES:
        raise BuildError(
            f"A {format_size(disk_size)} disk leaves no room for a root partition"
            + (f" next to {format_size(swap_sectors * SECTOR)} of swap" if swap_sectors else "")
            + "; give a larger --size."
        )
    root_number = 2 if gpt else 1
    partitions.append(
        PlannedPartition(
            root_number,
            "root",
            root_start,
            root_sectors,
            LINUX_FILESYSTEM_GUID if gpt else MBR_LINUX,
            "root" if gpt else None,
            bootable=not gpt,
        )
    )
    if swap_sectors:
        partitions.append(
            PlannedPartition(
                root_number + 1,
                "swap",
                swap_start,
                swap_sectors,
                LINUX_SWAP_GUID if gpt else MBR_SWAP,
                "swap" if gpt else None,
            )
        )
    return DiskLayout(table, disk_size, tuple(partitions))


def root_partition_size(disk_size: int, *, table: TableKind, swap_size: int = 0) -> int:
    """Bytes of the root partition ``plan_layout`` gives a disk of ``disk_size`` bytes."""
    return plan_layout(disk_size, table=table, swap_size=swap_size).root.size


def minimum_disk_size(root_size: int, *, table: TableKind, swap_size: int = 0) -> int:
    """The smallest disk (whole MiB) whose root partition holds at least ``root_size`` bytes."""
    swap = round_up_mib(swap_size)
    # Everything around the root partition: leading MiB (+ BIOS boot), swap, and on GPT the
    # backup table, which costs a whole aligned MiB at the end.
    around = _root_start(table) * SECTOR + swap + (MiB if table == "gpt" else 0)
    size = round_up_mib(max(root_size, MIN_ROOT_BYTES)) + around
    while root_partition_size(size, table=table, swap_size=swap_size) < root_size:
        size += MiB  # pragma: no cover - the formula above is exact; this only guards it
    return size


def check_table(layout: DiskLayout, table: PartitionTable | None) -> None:
    """Compare the table read back from the built disk with the layout; BuildError on any difference."""
    if table is None:
        raise BuildError("The partition table written by sfdisk could not be read back.")
    expected_kind = "dos" if layout.table == "mbr" else "gpt"
    if table.kind not in (expected_kind, layout.table):
        raise BuildError(f"sfdisk wrote a {table.kind} table where {layout.table} was asked for.")
    if table.problems:
        raise BuildError(f"The partition table written by sfdisk has a problem: {table.problems[0]}.")
    found = {p.number: p for p in table.partitions}
    if sorted(found) != sorted(p.number for p in layout.partitions):
        raise BuildError(
            f"sfdisk wrote partitions {sorted(found)} where {[p.number for p in layout.partitions]} "
            "were planned."
        )
    for planned in layout.partitions:
        part = found[planned.number]
        if (part.start, part.sectors) != (planned.start, planned.sectors):
            raise BuildError(
                f"Partition {planned.number} was written at sectors {part.start}+{part.sectors} "
                f"instead of {planned.start}+{planned.sectors}."
            )
        if part.type_id.lower() != planned.type_id.lower():
            raise BuildError(
                f"Partition {planned.number} has type {part.type_id} instead of {planned.type_id}."
            )
        if planned.bootable != part.bootable and layout.table == "mbr":
            raise BuildError(f"Partition {planned.number} has the wrong bootable flag.")
