"""GRUB 2 for BIOS, installed into an image file without root, a loop device or grub-bios-setup.

What ``grub-bios-setup`` does to a disk (GRUB's util/setup.c, the "embedding" path), done here
on the image file:

1. ``grub-mkimage -O i386-pc`` builds core.img: diskboot.img (its first sector), the GRUB
   kernel and the modules for this disk (``biosdisk``, ``part_msdos``/``part_gpt``, ``ext2`` to
   read the root filesystem, ``normal`` for the menu, ``linux`` to boot, ``serial``/``terminal``
   for the serial console, ``search_fs_uuid`` to find the root by UUID), with an embedded early
   configuration that sets ``root`` by the filesystem's UUID and the prefix to its /boot/grub.
2. core.img goes into the embedding area: sectors 1..2047 before the first partition on MBR (the
   "MBR gap"; it must fit), or the BIOS boot partition on GPT.
3. The blocklist at the end of core.img's first sector tells diskboot.img where the rest of
   core.img is. Each 12-byte entry, counting backwards from byte 0x1F4 (500), is
   ``u64 start sector, u16 sector count, u16 load segment`` (little-endian); a zero count ends
   the list. setup.c clears the list and writes one entry for the contiguous area:
   ``start = core sector + 1, count = core sectors - 1, segment = 0x820`` (0x800 + one sector).
   grub-mkimage's default (start 2) is right only for core.img at sector 1; a BIOS boot
   partition at sector 2048 needs 2049.
4. boot.img becomes the first 440 bytes of sector 0 (the disk signature at 440 and the partition
   table from 446 stay as sfdisk wrote them), after these changes: bytes 3..0x59 (the space of a
   DOS BPB) keep the disk's own bytes; the u64 at 0x5C ``kernel_sector`` = core.img's first
   sector; the byte at 0x64 ``boot_drive`` = 0xFF (use the drive the BIOS booted from, in DL);
   the two bytes at 0x66 (a jump over the "force hard disk" check) become NOPs ``90 90``, as for
   every hard disk, because some BIOSes pass a wrong DL.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from imagewright.disk.bootcode import detect_boot_code
from imagewright.errors import BuildError
from imagewright.ops.build.grubcfg import early_config
from imagewright.ops.build.layout import SECTOR, DiskLayout
from imagewright.programs import grub

#: Bytes of boot.img that go into the MBR (the rest is the disk signature and the table).
BOOT_CODE_BYTES = 440
BPB_START, BPB_END = 0x03, 0x5A
KERNEL_SECTOR_OFFSET = 0x5C
BOOT_DRIVE_OFFSET = 0x64
DRIVE_CHECK_OFFSET = 0x66
#: The first blocklist entry of diskboot.img, and the size of one entry.
BLOCKLIST_FIRST = SECTOR - 12
BLOCKLIST_ENTRY = struct.Struct("<QHH")
#: Where diskboot.img loads the rest of core.img: segment 0x800 + one sector (setup.c).
CORE_LOAD_SEGMENT = 0x800 + (SECTOR >> 4)
#: core.img must fit below 0x78000 in memory, loaded at 0x8000 (setup.c's maxsec).
MAX_CORE_SECTORS = (0x78000 - 0x8000) // SECTOR

#: Modules linked into core.img; grub-mkimage adds what they depend on.
BASE_MODULES = (
    "biosdisk",
    "ext2",
    "normal",
    "linux",
    "serial",
    "terminal",
    "echo",
    "test",
    "search",
    "search_fs_uuid",
    "configfile",
    "reboot",
    "halt",
)


@dataclass(frozen=True)
class BootloaderPlacement:
    """Where GRUB went (for the build report)."""

    loader: str
    core_image_lba: int
    core_image_sectors: int
    #: "MBR gap" or "BIOS boot partition N".
    location: str
    prefix: str
    modules: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "loader": self.loader,
            "core_image_sector": self.core_image_lba,
            "core_image_sectors": self.core_image_sectors,
            "location": self.location,
            "prefix": self.prefix,
            "modules": list(self.modules),
        }


def core_modules(layout: DiskLayout) -> tuple[str, ...]:
    return (BASE_MODULES[0], "part_msdos" if layout.table == "mbr" else "part_gpt", *BASE_MODULES[1:])


def grub_prefix(layout: DiskLayout) -> str:
    scheme = "msdos" if layout.table == "mbr" else "gpt"
    return f"(hd0,{scheme}{layout.root.number})/boot/grub"


def patch_core_image(core: bytes, first_sector: int) -> bytes:
    """core.img padded to whole sectors, its blocklist pointing at the sectors after ``first_sector``."""
    sectors = -(-len(core) // SECTOR)
    if sectors < 2:
        raise BuildError("grub-mkimage produced a core image of less than two sectors.")
    image = bytearray(core) + bytes(sectors * SECTOR - len(core))
    _start, count, segment = BLOCKLIST_ENTRY.unpack_from(image, BLOCKLIST_FIRST)
    if segment != CORE_LOAD_SEGMENT or count == 0:
        raise BuildError(
            "The GRUB core image does not start with the diskboot.img imagewright knows "
            "(no blocklist at byte 500); the installed GRUB version is not supported."
        )
    # Clear the list as setup.c does (entries run backwards; stop at the first empty one).
    position = BLOCKLIST_FIRST
    while position > SECTOR // 2:
        if BLOCKLIST_ENTRY.unpack_from(image, position)[1] == 0:
            break
        BLOCKLIST_ENTRY.pack_into(image, position, 0, 0, 0)
        position -= BLOCKLIST_ENTRY.size
    BLOCKLIST_ENTRY.pack_into(image, BLOCKLIST_FIRST, first_sector + 1, sectors - 1, CORE_LOAD_SEGMENT)
    return bytes(image)


def patch_boot_code(boot_img: bytes, disk_sector0: bytes, core_sector: int) -> bytes:
    """The 440 bytes of boot code for sector 0 (see step 4 of the module docstring)."""
    if len(boot_img) != SECTOR or len(disk_sector0) != SECTOR:
        raise BuildError("A boot sector must be 512 bytes.")
    code = bytearray(boot_img[:BOOT_CODE_BYTES])
    code[BPB_START:BPB_END] = disk_sector0[BPB_START:BPB_END]
    struct.pack_into("<Q", code, KERNEL_SECTOR_OFFSET, core_sector)
    code[BOOT_DRIVE_OFFSET] = 0xFF
    code[DRIVE_CHECK_OFFSET : DRIVE_CHECK_OFFSET + 2] = b"\x90\x90"
    return bytes(code)


def install_grub_bios(image: Path, layout: DiskLayout, root_uuid: str, scratch: Path) -> BootloaderPlacement:
    """Build core.img for this disk and install it and boot.img into ``image`` (a raw file)."""
    prefix = grub_prefix(layout)
    modules = core_modules(layout)
    early = scratch / "grub-early.cfg"
    core_path = scratch / "core.img"
    early.write_text(early_config(root_uuid))
    try:
        grub.mkimage(core_path, prefix=prefix, modules=modules, early_config=early)
        core = core_path.read_bytes()
    finally:
        early.unlink(missing_ok=True)
        core_path.unlink(missing_ok=True)
    first = layout.core_image_lba
    patched = patch_core_image(core, first)
    sectors = len(patched) // SECTOR
    capacity = min(layout.core_image_capacity, MAX_CORE_SECTORS)
    if sectors > capacity:
        where = "before the first partition" if layout.bios_boot is None else "in the BIOS boot partition"
        raise BuildError(f"GRUB's core image takes {sectors} sectors, but only {capacity} are free {where}.")
    boot_img = grub.boot_image()
    fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        sector0 = os.pread(fd, SECTOR, 0)
        if len(sector0) != SECTOR or sector0[510:512] != b"\x55\xaa":
            raise BuildError("The image has no partition table in its first sector to install GRUB next to.")
        os.pwrite(fd, patched, first * SECTOR)
        os.pwrite(fd, patch_boot_code(boot_img, sector0, first), 0)
        written = os.pread(fd, SECTOR, 0)
    finally:
        os.close(fd)
    found = detect_boot_code(written)
    if found.kind != "grub2" or found.core_image_lba != first:
        raise BuildError("The boot code written to the MBR is not recognised as GRUB 2 pointing at core.img.")
    location = "MBR gap" if layout.bios_boot is None else f"BIOS boot partition {layout.bios_boot.number}"
    return BootloaderPlacement("GRUB 2 (i386-pc)", first, sectors, location, prefix, modules)
