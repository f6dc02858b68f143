"""What the first 440 bytes of a disk would do under BIOS (spec section 1.7, boot-code fingerprints).

- GRUB 2 ``boot.img``: jumps with ``EB 63 90``; the u64 at 0x5C is the LBA of ``core.img``
  (1 when embedded after the MBR, the BIOS boot partition's start on GPT).
- GRUB legacy stage1: ``EB 48 90``; the u32 at 0x44 is the LBA of stage2 (or stage1.5).
  Both carry the strings ``GRUB``, ``Geom``, ``Hard Disk``, ``Read``, `` Error``.
- SYSLINUX ``mbr.bin``/``altmbr.bin`` ("Missing operating system.", "Operating system load
  error."), ``gptmbr.bin`` ("Missing OS", "Multiple active partitions"), ISOLINUX's hybrid
  MBR ("isolinux.bin missing or corrupt"), and a SYSLINUX volume boot record (OEM id).
- Microsoft MBRs: "Invalid partition table" and "Error loading operating system".
- All-zero code: nothing boots from here under BIOS (a UEFI disk may still boot).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from imagewright.disk.guids import BIOS_BOOT_GUID, EFI_SYSTEM_GUID, MBR_EFI_SYSTEM
from imagewright.disk.table import Partition, PartitionTable

BOOT_CODE_SIZE = 440
GRUB2_KERNEL_SECTOR_OFFSET = 0x5C
GRUB_LEGACY_STAGE2_SECTOR_OFFSET = 0x44
_GRUB_STRINGS = (b"GRUB", b"Geom", b"Hard Disk", b"Read", b" Error")


@dataclass(frozen=True)
class BootCode:
    #: "grub2", "grub-legacy", "syslinux", "windows", "other" or "none".
    kind: str
    description: str
    #: GRUB's pointer to the rest of itself (core.img / stage2), as an LBA.
    core_image_lba: int | None = None

    @property
    def bios_bootable(self) -> bool:
        return self.kind != "none"


def detect_boot_code(first_sector: bytes) -> BootCode:
    """Identify the boot code in a disk's (or a partition's) first sector."""
    code = bytes(first_sector[:BOOT_CODE_SIZE])
    if not any(code):
        return BootCode("none", "no boot code (the first 440 bytes are zero): not bootable under BIOS")
    has_grub_strings = all(marker in code for marker in _GRUB_STRINGS)
    if code[:3] == b"\xeb\x63\x90" and has_grub_strings and len(code) >= GRUB2_KERNEL_SECTOR_OFFSET + 8:
        lba = struct.unpack_from("<Q", code, GRUB2_KERNEL_SECTOR_OFFSET)[0]
        return BootCode("grub2", f"GRUB 2 boot.img (core.img at sector {lba})", lba)
    if code[:3] == b"\xeb\x48\x90" and has_grub_strings and len(code) >= GRUB_LEGACY_STAGE2_SECTOR_OFFSET + 4:
        lba = struct.unpack_from("<I", code, GRUB_LEGACY_STAGE2_SECTOR_OFFSET)[0]
        return BootCode("grub-legacy", f"GRUB legacy stage1 (stage2 at sector {lba})", lba)
    if b"isolinux.bin missing or corrupt" in code:
        return BootCode("syslinux", "ISOLINUX hybrid MBR (isohdpfx)")
    if b"Missing OS" in code and b"Multiple active partitions" in code:
        return BootCode("syslinux", "SYSLINUX gptmbr.bin (GPT boot code)")
    if b"Missing operating system." in code and b"Operating system load error." in code:
        if b"Multiple active partitions." in code:
            return BootCode("syslinux", "SYSLINUX mbr.bin")
        return BootCode("syslinux", "SYSLINUX altmbr.bin")
    if first_sector[3:11] == b"SYSLINUX":
        return BootCode("syslinux", "SYSLINUX volume boot record")
    if b"Invalid partition table" in code and b"Error loading operating system" in code:
        return BootCode("windows", "Microsoft MBR boot code")
    if b"GRUB" in code and b"Geom" in code:
        return BootCode("other", "GRUB-like boot code of an unknown version")
    return BootCode("other", "unrecognised boot code")


@dataclass
class BootPartitions:
    """Which partitions matter for booting: where GRUB's core.img lives, where UEFI looks."""

    bios_boot: list[int] = field(default_factory=list)
    efi_system: list[int] = field(default_factory=list)
    #: Partitions marked bootable (MBR active flag / GPT legacy-BIOS-bootable attribute).
    active: list[int] = field(default_factory=list)


def is_bios_boot(part: Partition) -> bool:
    return part.kind == "gpt" and part.type_id.upper() == BIOS_BOOT_GUID


def is_efi_system(part: Partition) -> bool:
    if part.kind == "gpt":
        return part.type_id.upper() == EFI_SYSTEM_GUID
    return part.type_id == f"{MBR_EFI_SYSTEM:x}"


def find_boot_partitions(table: PartitionTable) -> BootPartitions:
    found = BootPartitions()
    for part in table.partitions:
        if is_bios_boot(part):
            found.bios_boot.append(part.number)
        if is_efi_system(part):
            found.efi_system.append(part.number)
        if part.bootable:
            found.active.append(part.number)
    return found


def partition_holding(table: PartitionTable, lba: int) -> Partition | None:
    """The partition containing sector ``lba`` (e.g. GRUB's core.img), if any."""
    for part in table.partitions:
        if part.kind != "extended" and part.start <= lba <= part.end:
            return part
    return None
