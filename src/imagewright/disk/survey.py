"""One look at a whole guest disk: partition table, a filesystem per partition, boot code.

This is ``fdisk -l`` + ``blkid`` + "is it BIOS-bootable?" over any ``ByteSource`` — the
guest view of a qcow2 or VMDK reads exactly like a raw file here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from imagewright.binary import ByteSource, PrefixExhaustedError, SliceSource
from imagewright.disk.bootcode import (
    BootCode,
    BootPartitions,
    detect_boot_code,
    find_boot_partitions,
    is_bios_boot,
)
from imagewright.disk.filesystems import FilesystemInfo, probe_filesystem
from imagewright.disk.partitions import read_partition_table
from imagewright.disk.table import PartitionTable
from imagewright.errors import ImageFormatError


@dataclass
class BootSummary:
    """How (and whether) the disk boots under BIOS or UEFI."""

    code: BootCode
    partitions: BootPartitions = field(default_factory=BootPartitions)

    @property
    def description(self) -> str:
        text = self.code.description
        if self.partitions.bios_boot:
            text += f"; BIOS boot partition {', '.join(map(str, self.partitions.bios_boot))}"
        if self.partitions.efi_system:
            text += f"; EFI system partition {', '.join(map(str, self.partitions.efi_system))}"
        return text


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
    return survey


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
