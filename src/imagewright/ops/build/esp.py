"""The EFI System Partition of a built disk: FAT written in place, the UEFI boot loaders copied in.

Never mounted: ``mkfs.fat --offset`` makes the filesystem in the partition's byte range of the
image file (``programs/dosfstools.py``) and mtools copies the files in through ``IMAGE@@OFFSET``
(``programs/mtools.py``). FAT32 from 36 MiB up (the UEFI specification's choice for fixed
disks; FAT32 needs 65525 clusters, 32.5 MiB at 512 bytes each, plus its tables); a smaller ESP
is FAT16 (from 16 MiB) or FAT12, which OVMF and every firmware read too, and the report says
which. The type is always given: mkfs.fat would choose it from the size of the whole image
file, not of the partition (dosfstools 4.2: FAT32 for a 20 MiB partition of a 1 GiB file,
which then fails).

What goes on it (the layout Debian's ``grub-install --uefi-secure-boot --force-extra-removable``
makes, ``efiloader.py`` says where the files come from)::

    EFI/BOOT/BOOTX64.EFI     the first stage firmware starts on a fresh instance (UEFI 2.10,
                             3.5.1.1): shim (signed chain) or GRUB (unsigned)
    EFI/BOOT/grubx64.efi     GRUB beside shim: shim starts grubx64.efi from its own directory
    EFI/BOOT/mmx64.efi       MokManager beside shim (signed chain)
    EFI/debian/shimx64.efi   the distribution path a boot entry in NVRAM names (signed chain)
    EFI/debian/grubx64.efi
    EFI/debian/mmx64.efi
    EFI/debian/BOOTX64.CSV   shim's fallback reads it to recreate the boot entry (signed chain)
    EFI/debian/grub.cfg      read by either GRUB ($prefix is /EFI/debian): finds the root
                             filesystem by UUID, then ``configfile /boot/grub/grub.cfg`` —
                             the same menu BIOS GRUB shows (``grubcfg.esp_config``)

``debian`` is the loader's ``vendor_directory``: with the guest's own chain it is the directory
that guest's signed GRUB was built to look in (``EFI/ubuntu`` for Ubuntu's), as Ubuntu's
``grub-install`` lays it out. MokManager is left out when the chain has none.

shim's fallback (``fbx64.efi``) is left out on purpose: in ``EFI/BOOT`` it would make shim
write a boot entry and reset the machine on the first boot of every instance.

Reproducible builds: the FAT serial comes from the root filesystem's UUID, and with
``SOURCE_DATE_EPOCH`` set every file and directory carries that time (``mcopy -m`` from a
staging tree stamped with it) and mkfs.fat runs with ``--invariant``, so the same root
filesystem gives the same ESP byte for byte (measured with dosfstools 4.2 and mtools 4.0.32).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagewright.binary import FileSource, SliceSource
from imagewright.disk.filesystems import fat
from imagewright.errors import BuildError, ProgramError
from imagewright.files import copy_range
from imagewright.ops.build.efiloader import EfiLoader
from imagewright.ops.build.grubcfg import esp_config
from imagewright.ops.build.layout import MiB, PlannedPartition
from imagewright.programs import dosfstools, mtools
from imagewright.units import format_size

#: FAT32 from this size up, FAT16 from the next (see the module docstring).
FAT32_MINIMUM = 36 * MiB
FAT16_MINIMUM = 16 * MiB
#: FAT32 cluster sizes, as Microsoft's format table has them: 512 bytes up to 260 MiB, 4 KiB
#: up to 8 GiB — always at least the 65525 clusters that make a volume FAT32.
FAT32_SMALL_CLUSTER_LIMIT = 260 * MiB
ESP_LABEL = "EFI"
REMOVABLE_PATH = "EFI/BOOT/BOOTX64.EFI"


def boot_csv(vendor_directory: str) -> bytes:
    """What shim's fallback reads from the vendor directory: the loader, the entry's label and
    description (UTF-16 with a byte order mark, as Debian's grub-install and Ubuntu's
    shim-signed write it)."""
    text = f"shimx64.efi,{vendor_directory},,This is the boot entry for {vendor_directory}\n"
    return b"\xff\xfe" + text.encode("utf-16-le")


#: Space a file may take beyond its size: its last cluster (at most 4 KiB here) and a directory entry.
_PER_FILE_SLACK = 4096
#: The boot sector, FSInfo, backup boot sector and directories.
_FIXED_OVERHEAD = 256 * 1024


@dataclass(frozen=True)
class EspFile:
    """One file on the ESP."""

    path: str
    size: int
    sha256: str
    #: "shim", "GRUB", "MokManager", "boot entry for shim's fallback", "GRUB configuration".
    what: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "what": self.what}


@dataclass(frozen=True)
class EspPlacement:
    """What build put on the ESP (for the build report)."""

    partition: int
    size: int
    fat_type: str
    volume_id: str
    loader: EfiLoader
    files: tuple[EspFile, ...]

    @property
    def secure_boot(self) -> bool:
        """The removable-media path starts a signed chain (the guest's own, or Debian's)."""
        return self.loader.kind == "signed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "size": self.size,
            "fat_type": self.fat_type,
            "volume_id": self.volume_id,
            "removable_media_path": REMOVABLE_PATH,
            "loader": self.loader.to_dict(),
            "secure_boot": self.secure_boot,
            "files": [item.to_dict() for item in self.files],
        }


@dataclass(frozen=True)
class _Planned:
    path: str
    data: bytes | None
    source: Path | None
    what: str

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.source is not None
        return self.source.stat().st_size


_NAMES = {"shimx64.efi": "shim", "grubx64.efi": "GRUB", "mmx64.efi": "MokManager"}


def planned_files(loader: EfiLoader, root_uuid: str) -> list[_Planned]:
    """Every file of the ESP, in the module docstring's order."""
    first = loader.first_stage
    files = [_Planned(REMOVABLE_PATH, None, first.path, _NAMES[first.name])]
    vendor = f"EFI/{loader.vendor_directory}"
    if loader.kind == "signed":
        for name in ("grubx64.efi", "mmx64.efi"):
            if loader.has(name):
                files.append(_Planned(f"EFI/BOOT/{name}", None, loader.binary(name).path, _NAMES[name]))
    for binary in loader.binaries:
        files.append(_Planned(f"{vendor}/{binary.name}", None, binary.path, _NAMES[binary.name]))
    if loader.kind == "signed":
        csv = boot_csv(loader.vendor_directory)
        files.append(_Planned(f"{vendor}/BOOTX64.CSV", csv, None, "boot entry for shim's fallback"))
    files.append(_Planned(f"{vendor}/grub.cfg", esp_config(root_uuid).encode(), None, "GRUB configuration"))
    return files


def esp_bytes_needed(loader: EfiLoader, root_uuid: str) -> int:
    """Bytes the files take on the ESP, generously (each file rounded up to whole 4 KiB)."""
    return sum(item.size + _PER_FILE_SLACK for item in planned_files(loader, root_uuid))


def _usable_bytes(esp_size: int) -> int:
    # Two copies of the FAT at 4 bytes per 512-byte cluster (FAT32's worst case), and the rest.
    return esp_size - 2 * 4 * (esp_size // 512) - _FIXED_OVERHEAD


def check_esp_room(esp_size: int, loader: EfiLoader, root_uuid: str = str(uuid.UUID(int=0))) -> None:
    """BuildError with the numbers when the ESP cannot hold its files (any root UUID will do
    before it is known: only its length counts)."""
    needed = esp_bytes_needed(loader, root_uuid)
    if needed <= _usable_bytes(esp_size):
        return
    smallest = MiB
    while _usable_bytes(smallest) < needed:
        smallest += MiB
    raise BuildError(
        f"An EFI System Partition of {format_size(esp_size)} cannot hold the UEFI boot files "
        f"({format_size(needed)}: {loader.description} on the removable-media and the distribution path); "
        f"give --esp-size {smallest // MiB}M or more."
    )


def source_date_epoch() -> int | None:
    """``SOURCE_DATE_EPOCH`` (reproducible-builds.org) when it is set to a time FAT can hold."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text.isdigit():
        return None
    epoch = int(text)
    # FAT timestamps run from 1980 to 2107.
    return epoch if 315532800 <= epoch < 4354819200 else None


def _volume_id(root_uuid: str) -> int:
    """A FAT serial derived from the root filesystem's UUID: equal inputs give equal disks."""
    return int.from_bytes(hashlib.sha256(f"esp:{root_uuid}".encode()).digest()[:4], "big")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_esp(
    image: Path, part: PlannedPartition, loader: EfiLoader, root_uuid: str, scratch: Path
) -> EspPlacement:
    """Make the ESP's filesystem in ``part`` of ``image`` and copy the boot files in."""
    check_esp_room(part.size, loader, root_uuid)
    fat_bits: dosfstools.FatBits = (
        32 if part.size >= FAT32_MINIMUM else 16 if part.size >= FAT16_MINIMUM else 12
    )
    volume_id = _volume_id(root_uuid)
    epoch = source_date_epoch()
    dosfstools.make_fat(
        image, offset=part.offset, size=part.size, label=ESP_LABEL, volume_id=volume_id,
        fat_bits=fat_bits,
        sectors_per_cluster=(1 if part.size <= FAT32_SMALL_CLUSTER_LIMIT else 8) if fat_bits == 32 else None,
        invariant=epoch is not None,
    )  # fmt: skip
    staging = scratch / "esp"
    staging.mkdir(mode=0o700)
    files: list[EspFile] = []
    try:
        for item in planned_files(loader, root_uuid):
            target = staging.joinpath(*item.path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if item.data is not None:
                target.write_bytes(item.data)
            else:
                assert item.source is not None
                shutil.copyfile(item.source, target)
            files.append(EspFile(item.path, target.stat().st_size, _sha256(target), item.what))
        if epoch is not None:
            for path in [*staging.rglob("*"), staging]:
                os.utime(path, (epoch, epoch), follow_symlinks=False)
        try:
            mtools.copy_in(image, [staging / "EFI"], offset=part.offset, keep_times=True)
        except ProgramError as err:
            if "full" in str(err).lower():
                raise BuildError(
                    f"The EFI System Partition of {format_size(part.size)} filled up while the boot files "
                    "were copied in; give a larger --esp-size."
                ) from None
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fat_type = _fat_type(image, part)
    return EspPlacement(
        partition=part.number,
        size=part.size,
        fat_type=fat_type,
        volume_id=f"{volume_id >> 16:04X}-{volume_id & 0xFFFF:04X}",
        loader=loader,
        files=tuple(files),
    )


def _fat_type(image: Path, part: PlannedPartition) -> str:
    with FileSource(image) as disk:
        info = fat.probe(SliceSource(disk, part.offset, part.size))
    if info is None:
        raise BuildError("mkfs.fat left no FAT filesystem in the EFI System Partition.")
    return str(info.details.get("fat_type", info.version or "FAT"))


def check_esp(image: Path, part: PlannedPartition, placement: EspPlacement, scratch: Path) -> None:
    """The ESP is clean (``fsck.fat -n`` on a copy of it) and mtools lists every file written."""
    listed = set(mtools.list_tree(image, offset=part.offset))
    missing = [item.path for item in placement.files if item.path not in listed]
    if missing:
        raise BuildError(f"mtools does not find {missing[0]} on the EFI System Partition just written.")
    copy = scratch / "esp-check.raw"
    fd = os.open(copy, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, part.size)  # copy_range leaves the holes of the image as they are
    finally:
        os.close(fd)
    try:
        copy_range(image, part.offset, part.size, copy, 0)
        result = dosfstools.check_fat(copy)
    finally:
        copy.unlink(missing_ok=True)
    if result.returncode != 0:
        lines = [line.strip() for line in result.stdout_text.splitlines() if line.strip()]
        detail = lines[-1] if lines else "no detail"
        raise BuildError(f"fsck.fat finds the new EFI System Partition damaged: {detail}.")
