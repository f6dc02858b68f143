"""Where each partition of a built disk goes: the arithmetic, the sfdisk script, the cross-check.

Every partition starts on a 1 MiB boundary (2048 sectors of 512 bytes), as fdisk, parted and
every cloud image do: aligned for any physical or virtual block size up to 1 MiB.

What boots the disk (``--firmware``) decides which boot partitions there are:

- ``bios``: GRUB for BIOS only (boot.img in the MBR, core.img in the MBR gap or a BIOS boot
  partition). The only choice on an MBR disk.
- ``uefi``: an EFI System Partition (ESP) only; the protective MBR carries no boot code.
- ``hybrid``: both, on one GPT disk — what the cloud images people download are: it boots
  whichever firmware the cloud starts it with (``bootloader.py``, ``esp.py``).

MBR (``--table mbr``, BIOS only)::

    sector 0         MBR: GRUB's boot.img in the first 440 bytes, the partition table
    sectors 1-2047   the "MBR gap": GRUB's core.img, from sector 1
    partition 1      swap, type 82 (only with --swap)               from sector 2048
    partition 1 / 2  root filesystem, type 83, bootable flag        .. end of the disk

GPT (``--table gpt``)::

    sector 0         protective MBR (with GRUB's boot.img in the first 440 bytes, unless uefi)
    sectors 1-33     primary GPT header and entry array (128 entries)
    BIOS boot        1 MiB (21686148-6449-6E6F-744E-656564454649): GRUB's core.img
                     (GPT keeps no gap after the MBR); bios and hybrid only
    ESP              EFI System (C12A7328-F81F-11D2-BA4B-00A0C93EC93B), 100 MiB by default,
                     FAT32, name "EFI System"; uefi and hybrid only
    swap             Linux swap type, name "swap" (only with --swap)
    root             Linux filesystem type, name "root"
    last 33 sectors  backup entry array and header

Partitions are numbered in disk order: the boot partitions first (on GPT the BIOS boot
partition, as grub-install's documentation lays it out, then the ESP), then swap, exactly the
size asked for (rounded up to whole MiB), and the root partition last, taking the rest of the
disk. Root is last so that it can grow: cloud-utils' ``growpart`` (what cloud-init's growpart
module and our agent run at first boot) grows a partition only up to the start of the next
partition on the disk (``max_end``, /usr/bin/growpart), and ``resize`` grows only the partition
that ends last — with swap after root, neither could give root a byte of a bigger disk. So the
root filesystem is partition 1 (MBR) or 2 (GPT, bios or uefi) or 3 (hybrid) without swap, and
one more with it; nothing finds it by number but GRUB's built-in prefix (``bootloader.py``),
which is computed from this layout; fstab and the kernel command line use UUIDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imagewright.disk.guids import BIOS_BOOT_GUID, EFI_SYSTEM_GUID, LINUX_FILESYSTEM_GUID, LINUX_SWAP_GUID
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
#: The EFI System Partition's default size: room for the signed boot chain twice (removable
#: path and distribution path) many times over, and FAT32 (which needs at least 65525 clusters).
DEFAULT_ESP_BYTES = 100 * MiB
#: Smallest root partition we lay out at all (the content check decides what is enough).
MIN_ROOT_BYTES = 8 * MiB
#: Largest disk an MBR can describe: 2^32 sectors of 512 bytes.
MBR_MAX_BYTES = (1 << 32) * SECTOR

TableKind = Literal["mbr", "gpt"]
#: Which firmware the disk boots under (see the module docstring).
Firmware = Literal["bios", "uefi", "hybrid"]
FIRMWARES: tuple[Firmware, ...] = ("hybrid", "bios", "uefi")
Role = Literal["bios-boot", "esp", "root", "swap"]

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
class LayoutShape:
    """What the disk is made of, whatever its size: the table, the firmware, swap, ESP size."""

    table: TableKind
    firmware: Firmware = "bios"
    #: Bytes of swap (rounded up to whole MiB; 0: no swap partition).
    swap_size: int = 0
    #: Bytes of the EFI System Partition (whole MiB; only with uefi or hybrid firmware).
    esp_size: int = DEFAULT_ESP_BYTES

    @property
    def bios(self) -> bool:
        return self.firmware in ("bios", "hybrid")

    @property
    def uefi(self) -> bool:
        return self.firmware in ("uefi", "hybrid")

    def check(self) -> None:
        """InvalidArgumentError for a shape no disk can have."""
        if self.table not in ("mbr", "gpt"):
            raise InvalidArgumentError(f"'{self.table}' is not a partition table type; choose mbr or gpt.")
        if self.firmware not in FIRMWARES:
            raise InvalidArgumentError(f"'{self.firmware}' is not a firmware; choose hybrid, bios or uefi.")
        if self.table == "mbr" and self.uefi:
            raise InvalidArgumentError(
                f"--firmware {self.firmware} needs a GPT disk: imagewright puts the EFI System Partition "
                "only on GPT, and an MBR disk it builds boots under BIOS only; use --table gpt."
            )
        if self.swap_size < 0:
            raise InvalidArgumentError("A swap size cannot be negative.")
        if self.uefi and (self.esp_size <= 0 or self.esp_size % MiB):
            raise InvalidArgumentError(
                "The EFI System Partition's size must be a positive whole number of MiB."
            )

    @property
    def leading_sectors(self) -> int:
        """Sectors before the root partition: the first MiB and the boot partitions."""
        sectors = ALIGNMENT_SECTORS
        if self.table == "gpt" and self.bios:
            sectors += BIOS_BOOT_SECTORS
        if self.uefi:
            sectors += self.esp_size // SECTOR
        return sectors


@dataclass(frozen=True)
class DiskLayout:
    """The partitions of a disk of ``disk_size`` bytes with a ``table`` partition table."""

    table: TableKind
    disk_size: int
    partitions: tuple[PlannedPartition, ...]
    shape: LayoutShape

    @property
    def firmware(self) -> Firmware:
        return self.shape.firmware

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
    def esp(self) -> PlannedPartition | None:
        return self._role("esp")

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


def resolve_shape(
    table: TableKind | None,
    firmware: Firmware | None,
    *,
    swap_size: int = 0,
    esp_size: int = DEFAULT_ESP_BYTES,
) -> tuple[LayoutShape, list[str]]:
    """The shape for ``--table``/``--firmware`` as given (None: not given), and notes for the report.

    Neither given: a hybrid GPT disk. ``--firmware bios`` alone: MBR, as builds always were.
    ``--table mbr`` alone: BIOS only, said in a note. An MBR disk asked to boot under UEFI:
    InvalidArgumentError (``LayoutShape.check``).
    """
    notes: list[str] = []
    if firmware is None:
        firmware = "bios" if table == "mbr" else "hybrid"
        if table == "mbr":
            notes.append("an MBR disk boots under BIOS only (no EFI System Partition); --table gpt adds UEFI")
    if table is None:
        table = "mbr" if firmware == "bios" else "gpt"
    shape = LayoutShape(table, firmware, swap_size, esp_size)
    shape.check()
    return shape, notes


def _align_down(sectors: int) -> int:
    return sectors // ALIGNMENT_SECTORS * ALIGNMENT_SECTORS


def round_up_mib(size: int) -> int:
    return -(-size // MiB) * MiB


def _last_usable(table: TableKind, disk_sectors: int) -> int:
    return disk_sectors - 1 - (GPT_RESERVED_SECTORS if table == "gpt" else 0)


def plan_layout(disk_size: int, shape: LayoutShape) -> DiskLayout:
    """Lay out a disk of ``disk_size`` bytes (a whole number of MiB) as the module docstring says.

    ``shape.swap_size`` is rounded up to whole MiB (0: no swap partition). Raises
    InvalidArgumentError for impossible sizes and shapes and BuildError when the root
    partition would be smaller than 8 MiB.
    """
    shape.check()
    table = shape.table
    if disk_size <= 0 or disk_size % MiB:
        raise InvalidArgumentError("A disk size must be a positive whole number of MiB.")
    if table == "mbr" and disk_size > MBR_MAX_BYTES:
        raise InvalidArgumentError(
            f"An MBR partition table describes at most {format_size(MBR_MAX_BYTES)}; "
            f"use --table gpt for a {format_size(disk_size)} disk."
        )
    swap_sectors = round_up_mib(shape.swap_size) // SECTOR
    disk_sectors = disk_size // SECTOR
    end = _last_usable(table, disk_sectors) + 1  # first sector past the usable area
    partitions: list[PlannedPartition] = []
    gpt = table == "gpt"
    position = ALIGNMENT_SECTORS
    if gpt and shape.bios:
        partitions.append(
            PlannedPartition(
                len(partitions) + 1, "bios-boot", position, BIOS_BOOT_SECTORS, BIOS_BOOT_GUID, "BIOS boot"
            )
        )
        position += BIOS_BOOT_SECTORS
    if shape.uefi:
        esp_sectors = shape.esp_size // SECTOR
        partitions.append(
            PlannedPartition(len(partitions) + 1, "esp", position, esp_sectors, EFI_SYSTEM_GUID, "EFI System")
        )
        position += esp_sectors
    if swap_sectors:
        partitions.append(
            PlannedPartition(
                len(partitions) + 1,
                "swap",
                position,
                swap_sectors,
                LINUX_SWAP_GUID if gpt else MBR_SWAP,
                "swap" if gpt else None,
            )
        )
        position += swap_sectors
    root_start = position
    root_sectors = _align_down(end) - root_start
    if root_sectors * SECTOR < MIN_ROOT_BYTES:
        beside = [f"{format_size(swap_sectors * SECTOR)} of swap"] if swap_sectors else []
        if shape.uefi:
            beside.insert(0, f"a {format_size(shape.esp_size)} EFI System Partition")
        raise BuildError(
            f"A {format_size(disk_size)} disk leaves no room for a root partition"
            + (f" next to {' and '.join(beside)}" if beside else "")
            + "; give a larger --size."
        )
    partitions.append(
        PlannedPartition(
            len(partitions) + 1,
            "root",
            root_start,
            root_sectors,
            LINUX_FILESYSTEM_GUID if gpt else MBR_LINUX,
            "root" if gpt else None,
            bootable=not gpt,
        )
    )
    return DiskLayout(table, disk_size, tuple(partitions), shape)


def root_partition_size(disk_size: int, shape: LayoutShape) -> int:
    """Bytes of the root partition ``plan_layout`` gives a disk of ``disk_size`` bytes."""
    return plan_layout(disk_size, shape).root.size


def minimum_disk_size(root_size: int, shape: LayoutShape) -> int:
    """The smallest disk (whole MiB) whose root partition holds at least ``root_size`` bytes."""
    swap = round_up_mib(shape.swap_size)
    # Everything around the root partition: leading MiB and boot partitions, swap, and on
    # GPT the backup table, which costs a whole aligned MiB at the end.
    around = shape.leading_sectors * SECTOR + swap + (MiB if shape.table == "gpt" else 0)
    size = round_up_mib(max(root_size, MIN_ROOT_BYTES)) + around
    while root_partition_size(size, shape) < root_size:
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
