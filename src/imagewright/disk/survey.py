"""One look at a whole guest disk: partition table, a filesystem per partition, boot code.

This is ``fdisk -l`` + ``blkid`` + "does it boot under BIOS, under UEFI?" over any
``ByteSource`` — the guest view of a qcow2 or VMDK reads exactly like a raw file here.

BIOS: the MBR's boot code (``bootcode.py``). UEFI: the boot loaders on each EFI System
Partition (``efiboot.py``); a disk boots under UEFI on a fresh instance when an ESP holds
the removable-media loader (``EFI/BOOT/BOOTX64.EFI`` and its siblings for other machines).
``required_firmware`` turns that into the firmware a cloud must start the image with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from imagewright.binary import ByteSource, PrefixExhaustedError, SliceSource
from imagewright.disk.bootcode import (
    BootCode,
    BootPartitions,
    detect_boot_code,
    find_boot_partitions,
    is_bios_boot,
    is_efi_system,
)
from imagewright.disk.filesystems import FilesystemInfo, probe_filesystem
from imagewright.disk.partitions import read_partition_table
from imagewright.disk.table import PartitionTable
from imagewright.errors import ImageFormatError

if TYPE_CHECKING:
    from imagewright.disk.efiboot import EfiBootFile

Firmware = Literal["bios", "uefi"]


@dataclass
class BootSummary:
    """How (and whether) the disk boots under BIOS or UEFI."""

    code: BootCode
    partitions: BootPartitions = field(default_factory=BootPartitions)
    #: The EFI executables found on the EFI System Partitions.
    efi_files: list[EfiBootFile] = field(default_factory=list)
    #: "bios" and/or "uefi": the firmware this disk boots under on a fresh instance.
    boots_under: list[str] = field(default_factory=list)
    #: The machines the removable-media UEFI loaders are built for ("x86_64" ...).
    uefi_architectures: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        text = self.code.description
        if self.partitions.bios_boot:
            text += f"; BIOS boot partition {', '.join(map(str, self.partitions.bios_boot))}"
        if self.partitions.efi_system:
            text += f"; EFI system partition {', '.join(map(str, self.partitions.efi_system))}"
        return text

    @property
    def firmware_description(self) -> str:
        """ "BIOS and UEFI", "BIOS only", "UEFI only (x86_64)" or "neither BIOS nor UEFI"."""
        bios, uefi = "bios" in self.boots_under, "uefi" in self.boots_under
        arch = f" ({', '.join(self.uefi_architectures)})" if self.uefi_architectures else ""
        if bios and uefi:
            return f"BIOS and UEFI{arch}"
        if bios:
            return "BIOS only"
        if uefi:
            return f"UEFI only{arch}"
        return "neither BIOS nor UEFI (no boot code, no UEFI loader on an ESP)"


def required_firmware(boot: BootSummary | None) -> Firmware | None:
    """The firmware a cloud must start this disk with: "uefi" when it boots only under UEFI,
    "bios" when it boots under BIOS (a hybrid disk too: BIOS is every hypervisor's default),
    None when it boots under neither (a flat filesystem booted with an external kernel).

    What the registry's ``hw_firmware_type`` property and ``run``'s firmware choice come from.
    """
    if boot is None:
        return None
    if "bios" in boot.boots_under:
        return "bios"
    if "uefi" in boot.boots_under:
        return "uefi"
    return None


@dataclass
class DiskSurvey:
    partition_table: PartitionTable | None = None
    #: The filesystem of an unpartitioned disk ("flat" EC2-style image), if any.
    filesystem: FilesystemInfo | None = None
    boot: BootSummary | None = None
    #: Structural problems that refuse the image (loops, tables beyond the disk).
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: True when part of the disk lay beyond what could be read (a compressed prefix).
    partial: bool = False


def survey_disk(disk: ByteSource, sector_size: int = 512) -> DiskSurvey:
    """Read the partition table, probe every partition's filesystem, identify boot code.

    Raises ImageFormatError only when the partition table itself cannot be read; a damaged
    filesystem is a warning, and bytes beyond a compressed prefix make the survey partial.
    """
    survey = DiskSurvey()
    table = read_partition_table(disk, sector_size)
    if table is None:
        survey.filesystem = _probe(disk, 0, disk.size, survey)
    else:
        survey.partition_table = table
        survey.problems.extend(table.problems)
        survey.warnings.extend(table.warnings)
        for index, part in enumerate(table.partitions):
            if part.kind == "extended" or is_bios_boot(part):
                continue
            fs = _probe(disk, table.byte_offset(part), part.size, survey)
            if fs is not None:
                table.partitions[index] = dataclasses.replace(part, filesystem=fs)
    first_sector = disk.pread(0, 512)
    if len(first_sector) == 512:
        survey.boot = BootSummary(
            code=detect_boot_code(first_sector),
            partitions=find_boot_partitions(table) if table is not None else BootPartitions(),
        )
        if table is not None:
            _scan_esps(disk, table, survey)
        _firmware(survey.boot)
    return survey


def _scan_esps(disk: ByteSource, table: PartitionTable, survey: DiskSurvey) -> None:
    assert survey.boot is not None
    for part in table.partitions:
        if not is_efi_system(part) or part.filesystem is None or part.filesystem.type != "vfat":
            continue
        # Imported here: a disk without an ESP (most BIOS images) does not pay for the loader scan.
        from imagewright.disk.efiboot import scan_esp

        try:
            files, warnings = scan_esp(SliceSource(disk, table.byte_offset(part), part.size), part.number)
        except PrefixExhaustedError:
            survey.partial = True
            continue
        except ImageFormatError as err:
            files, warnings = [], [f"the EFI System Partition {part.number} could not be read: {err}"]
        survey.boot.efi_files.extend(files)
        survey.warnings.extend(warnings)


def _firmware(boot: BootSummary) -> None:
    # BIOS: any boot code in the MBR is taken at its word (bootcode.py names what it knows).
    bios = boot.code.bios_bootable
    loaders = [f for f in boot.efi_files if f.removable_media_path and f.loader != "not-efi"]
    boot.uefi_architectures = sorted({f.architecture for f in loaders if f.architecture})
    boot.boots_under = [name for name, ok in (("bios", bios), ("uefi", bool(loaders))) if ok]


def _probe(disk: ByteSource, offset: int, size: int, survey: DiskSurvey) -> FilesystemInfo | None:
    try:
        fs = probe_filesystem(SliceSource(disk, offset, size), 0, size)
    except PrefixExhaustedError:
        survey.partial = True
        return None
    except ImageFormatError as err:
        survey.warnings.append(f"the filesystem at byte {offset} could not be read: {err}")
        return None
    if fs is not None:
        survey.warnings.extend(fs.problems)
    return fs
