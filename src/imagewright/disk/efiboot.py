"""What UEFI firmware finds on an EFI System Partition: the boot loaders, and what they are.

Sources:

- UEFI 2.10 section 3.5.1.1 ("Removable media boot behavior"): firmware without a boot
  entry for the disk — every fresh cloud instance, whose variable store is empty — starts
  ``\\EFI\\BOOT\\BOOT{machine}.EFI`` from the ESP: ``BOOTX64.EFI`` (x64), ``BOOTIA32.EFI``,
  ``BOOTAA64.EFI``, ``BOOTRISCV64.EFI``. A distribution's own directory (``EFI/debian``,
  ``EFI/ubuntu``, ``EFI/Microsoft/Boot``) is reached only through a boot entry in NVRAM.
  Section 13.3: the ESP is FAT (``filesystems/fat.py`` reads it).
- Microsoft "PE Format" (the PE/COFF specification): the DOS stub's ``e_lfanew`` (u32 at
  0x3C) points at ``PE\\0\\0``; the COFF file header (20 bytes: machine u16, section count
  u16, ..., optional header size u16 at 16); the optional header (magic 0x20B PE32+ or
  0x10B PE32; subsystem u16 at 68 — 10 is an EFI application; the data directory count
  at 108/92 and the directories after it, 8 bytes each, number 4 the *Certificate Table*:
  a file offset and size holding the Authenticode signature); then 40-byte section headers
  (name[8], virtual size, virtual address, raw size, raw offset).
- shim's ``SBAT.md``: a ``.sbat`` section of CSV lines ``component,generation,vendor,
  package,version,url`` — shim, GRUB (since 2.06) and systemd-boot (since 250) carry one;
  shim refuses a component whose generation its revocation list has passed.

A loader is named by, in order: shim's SBAT component ``shim`` or its ``.vendor_cert``
section (``mmx64.efi``/``fbx64.efi`` by name are shim's MokManager and fallback); GRUB's
SBAT ``grub`` or the ``mods`` section grub-mkimage writes; a unified kernel image's ``.linux``
section; systemd's ``.sdmagic`` section (``#### LoaderInfo: systemd-boot 252 ####``; its SBAT
component is plain ``systemd``); Windows Boot Manager by its fixed path
``EFI/Microsoft/Boot/bootmgfw.efi``; a bzImage's ``HdrS`` at 0x202 (a Linux kernel's EFI stub).

"signed" means the file carries an Authenticode signature; it is the firmware's job (and
its keys') to decide whether to trust it. ``certificate_names`` are the X.509 common names
in the signature's certificates, in the order they appear (the signer's chain first, e.g.
"Microsoft Corporation UEFI CA 2011"; then any time-stamping authority's), read without
verifying anything.

NOTE on hostile partitions: every read is bounded (PE headers 64 KiB, SBAT 4 KiB, the
signature 64 KiB, at most ``MAX_EFI_FILES`` files in a walk of at most ``MAX_DEPTH``
directory levels); what cannot be read is a warning, never an exception of another kind.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from imagewright.binary import ByteSource, read_exact
from imagewright.disk.filesystems.fat import FatEntry, FatFileSource, FatVolume
from imagewright.errors import ImageFormatError

PE_SIGNATURE = b"PE\0\0"
PE32_MAGIC = 0x10B
PE32_PLUS_MAGIC = 0x20B
EFI_APPLICATION = 10
#: Data directory 4: the Certificate Table (Authenticode).
CERTIFICATE_TABLE = 4

#: COFF machine types (PE Format, "Machine Types") and the removable-media file name of each.
MACHINES: dict[int, tuple[str, str]] = {
    0x8664: ("x86_64", "BOOTX64.EFI"),
    0x014C: ("ia32", "BOOTIA32.EFI"),
    0xAA64: ("aarch64", "BOOTAA64.EFI"),
    0x01C2: ("arm", "BOOTARM.EFI"),
    0x5064: ("riscv64", "BOOTRISCV64.EFI"),
}

_MAX_HEADER_OFFSET = 64 * 1024
_MAX_SECTIONS = 96
_MAX_SBAT_BYTES = 4096
_MAX_SBAT_LINES = 32
_MAX_SDMAGIC_BYTES = 128
_MAX_SIGNATURE_BYTES = 64 * 1024
_MAX_SIGNERS = 16
#: The X.509 attribute type commonName (2.5.4.3), DER-encoded.
_COMMON_NAME_OID = b"\x06\x03\x55\x04\x03"
_DER_STRING_TAGS = (0x0C, 0x13, 0x14, 0x16, 0x1E)

MAX_EFI_FILES = 256
MAX_DEPTH = 4


@dataclass(frozen=True)
class PeImage:
    """The facts of a PE/COFF executable a boot loader is known by."""

    machine: int
    subsystem: int
    pe32_plus: bool
    sections: tuple[str, ...]
    #: (file offset, size) of the Authenticode signature; (0, 0) when unsigned.
    certificate_table: tuple[int, int]
    #: "component,generation" of each SBAT line (after the "sbat" header line).
    sbat: tuple[str, ...] = ()
    certificate_names: tuple[str, ...] = ()
    #: The Linux boot protocol's "HdrS" at 0x202: a kernel with an EFI stub.
    linux_header: bool = False
    #: systemd's ``.sdmagic`` text: "systemd-boot 252" or "systemd-stub 252".
    loader_info: str | None = None

    @property
    def signed(self) -> bool:
        return self.certificate_table[1] > 0

    @property
    def architecture(self) -> str | None:
        known = MACHINES.get(self.machine)
        return known[0] if known else None

    @property
    def is_efi_application(self) -> bool:
        return self.subsystem == EFI_APPLICATION

    @property
    def is_x86_64_efi_application(self) -> bool:
        return self.is_efi_application and self.machine == 0x8664 and self.pe32_plus

    def sbat_components(self) -> tuple[str, ...]:
        return tuple(line.split(",", 1)[0] for line in self.sbat)


def read_pe_image(src: ByteSource) -> PeImage | None:
    """The PE facts of ``src``, or None when it is not a PE/COFF executable."""
    if src.size < 0x40:
        return None
    dos = read_exact(src, 0, 0x40, "DOS header")
    if dos[:2] != b"MZ":
        return None
    pe_offset = struct.unpack_from("<I", dos, 0x3C)[0]
    if pe_offset < 0x40 or pe_offset > _MAX_HEADER_OFFSET or pe_offset + 24 > src.size:
        return None
    coff = read_exact(src, pe_offset, 24, "PE header")
    if coff[:4] != PE_SIGNATURE:
        return None
    machine, section_count = struct.unpack_from("<HH", coff, 4)
    optional_size = struct.unpack_from("<H", coff, 20)[0]
    if section_count > _MAX_SECTIONS or optional_size < 72:
        return None
    optional_at = pe_offset + 24
    headers_end = optional_at + optional_size + section_count * 40
    if headers_end > src.size or headers_end > _MAX_HEADER_OFFSET + 64 * 1024:
        return None
    headers = read_exact(src, optional_at, optional_size + section_count * 40, "PE optional header")
    magic = struct.unpack_from("<H", headers, 0)[0]
    if magic not in (PE32_MAGIC, PE32_PLUS_MAGIC):
        return None
    plus = magic == PE32_PLUS_MAGIC
    subsystem = struct.unpack_from("<H", headers, 68)[0]
    count_at, directories_at = (108, 112) if plus else (92, 96)
    certificate = (0, 0)
    if optional_size >= count_at + 4:
        directory_count = struct.unpack_from("<I", headers, count_at)[0]
        entry_at = directories_at + CERTIFICATE_TABLE * 8
        if directory_count > CERTIFICATE_TABLE and entry_at + 8 <= optional_size:
            offset, size = struct.unpack_from("<II", headers, entry_at)
            if size and offset + size <= src.size:
                certificate = (offset, size)
    sections: list[str] = []
    sbat_range: tuple[int, int] | None = None
    sdmagic_range: tuple[int, int] | None = None
    for index in range(section_count):
        at = optional_size + index * 40
        name = headers[at : at + 8].split(b"\0", 1)[0].decode("latin-1")
        sections.append(name)
        virtual_size, _address, raw_size, raw_offset = struct.unpack_from("<IIII", headers, at + 8)
        if name == ".sbat" and raw_size:
            sbat_range = (raw_offset, min(raw_size, virtual_size or raw_size, _MAX_SBAT_BYTES))
        elif name == ".sdmagic" and raw_size:
            sdmagic_range = (raw_offset, min(raw_size, virtual_size or raw_size, _MAX_SDMAGIC_BYTES))
    linux_header = src.size >= 0x206 and read_exact(src, 0x202, 4, "kernel header") == b"HdrS"
    return PeImage(
        machine=machine,
        subsystem=subsystem,
        pe32_plus=plus,
        sections=tuple(sections),
        certificate_table=certificate,
        sbat=_read_sbat(src, sbat_range),
        certificate_names=_read_certificate_names(src, certificate),
        linux_header=linux_header,
        loader_info=_read_loader_info(src, sdmagic_range),
    )


def _read_loader_info(src: ByteSource, where: tuple[int, int] | None) -> str | None:
    """ "systemd-boot 252" from ``#### LoaderInfo: systemd-boot 252 ####``."""
    if where is None or where[0] + where[1] > src.size:
        return None
    text = (
        read_exact(src, where[0], where[1], "systemd section").split(b"\0", 1)[0].decode("ascii", "replace")
    )
    marker = "LoaderInfo:"
    if marker not in text:
        return None
    return text.split(marker, 1)[1].strip().strip("#").strip() or None


def _read_sbat(src: ByteSource, where: tuple[int, int] | None) -> tuple[str, ...]:
    if where is None or where[0] + where[1] > src.size:
        return ()
    text = read_exact(src, where[0], where[1], "SBAT section").split(b"\0", 1)[0].decode("ascii", "replace")
    lines: list[str] = []
    for line in text.splitlines()[:_MAX_SBAT_LINES]:
        fields = line.split(",")
        if len(fields) >= 2 and fields[0] and fields[0] != "sbat":
            lines.append(f"{fields[0].strip()},{fields[1].strip()}")
    return tuple(lines)


def _read_certificate_names(src: ByteSource, certificate: tuple[int, int]) -> tuple[str, ...]:
    offset, size = certificate
    if not size:
        return ()
    data = read_exact(src, offset, min(size, _MAX_SIGNATURE_BYTES), "Authenticode signature")
    names: list[str] = []
    position = data.find(_COMMON_NAME_OID)
    while position >= 0 and len(names) < _MAX_SIGNERS:
        at = position + len(_COMMON_NAME_OID)
        if at + 2 <= len(data) and data[at] in _DER_STRING_TAGS and data[at + 1] < 0x80:
            raw = data[at + 2 : at + 2 + data[at + 1]]
            name = raw.decode("utf-16-be" if data[at] == 0x1E else "utf-8", "replace")
            if name and name not in names:
                names.append(name)
        position = data.find(_COMMON_NAME_OID, at)
    return tuple(names)


# --- the files on an ESP ----------------------------------------------------------------------


@dataclass
class EfiBootFile:
    """One EFI executable on an ESP."""

    partition: int
    #: Its path on the ESP as the directory entries spell it ("EFI/BOOT/BOOTX64.EFI").
    path: str
    size: int
    #: "shim", "grub", "systemd-boot", "windows-boot-manager", "mokmanager", "shim-fallback",
    #: "linux-kernel", "unified-kernel-image", "efi-application" (unknown) or "not-efi".
    loader: str
    architecture: str | None = None
    signed: bool = False
    certificate_names: list[str] = field(default_factory=list)
    sbat: list[str] = field(default_factory=list)
    #: The removable-media path firmware starts with no boot entry (``EFI/BOOT/BOOTX64.EFI``).
    removable_media_path: bool = False

    @property
    def description(self) -> str:
        names = {
            "shim": "shim",
            "grub": "GRUB",
            "systemd-boot": "systemd-boot",
            "windows-boot-manager": "Windows Boot Manager",
            "mokmanager": "shim's MokManager",
            "shim-fallback": "shim's fallback",
            "linux-kernel": "a Linux kernel (EFI stub)",
            "unified-kernel-image": "a unified kernel image",
            "efi-application": "an EFI application",
            "not-efi": "not an EFI application",
        }
        text = f"{self.path}: {names.get(self.loader, self.loader)}"
        if self.architecture:
            text += f" ({self.architecture})"
        if self.signed:
            text += ", signed" + (f" ({self.certificate_names[0]})" if self.certificate_names else "")
        elif self.loader != "not-efi":
            text += ", unsigned"
        return text


def identify_loader(path: str, pe: PeImage | None) -> str:
    """What kind of boot loader the file at ``path`` (on an ESP) is; see the module docstring."""
    if pe is None or not pe.is_efi_application:
        return "not-efi"
    name = path.rsplit("/", 1)[-1].casefold()
    components = pe.sbat_components()
    # PE section names are 8 bytes: shim's ".vendor_cert" is ".vendor_" in the section table.
    if "shim" in components or ".vendor_" in pe.sections:
        if name.startswith("mm"):
            return "mokmanager"
        if name.startswith("fb"):
            return "shim-fallback"
        return "shim"
    if "grub" in components or "mods" in pe.sections:
        return "grub"
    if ".linux" in pe.sections:
        return "unified-kernel-image"
    if (pe.loader_info or "").startswith("systemd-boot") or "systemd-boot" in components:
        return "systemd-boot"
    if path.casefold() == "efi/microsoft/boot/bootmgfw.efi":
        return "windows-boot-manager"
    if pe.linux_header:
        return "linux-kernel"
    return "efi-application"


def scan_esp(src: ByteSource, partition: int) -> tuple[list[EfiBootFile], list[str]]:
    """The EFI executables under ``EFI/`` of the FAT volume ``src`` (an ESP), and warnings."""
    volume = FatVolume.open(src)
    if volume is None:
        return [], [f"the EFI System Partition {partition} holds no FAT filesystem"]
    found: list[EfiBootFile] = []
    warnings: list[str] = []
    try:
        efi = volume.lookup("EFI")
        if efi is None or not efi.is_directory:
            return [], []
        _walk(volume, efi, efi.name, 1, partition, found)
    except ImageFormatError as err:
        warnings.append(f"the EFI System Partition {partition} could not be read completely: {err}")
    return found, warnings


def _walk(
    volume: FatVolume, directory: FatEntry, path: str, depth: int, partition: int, found: list[EfiBootFile]
) -> None:
    for entry in volume.list_directory(directory.first_cluster, what=f"directory {path}"):
        if len(found) >= MAX_EFI_FILES:
            return
        child = f"{path}/{entry.name}"
        if entry.is_directory:
            if depth < MAX_DEPTH and entry.first_cluster not in (0, directory.first_cluster):
                _walk(volume, entry, child, depth + 1, partition, found)
            continue
        if not entry.name.casefold().endswith(".efi"):
            continue
        pe = read_pe_image(FatFileSource(volume, entry))
        # The removable-media name must also match the machine the file is built for.
        removable = (
            depth == 2
            and path.casefold() == "efi/boot"
            and pe is not None
            and MACHINES.get(pe.machine, ("", ""))[1].casefold() == entry.name.casefold()
        )
        found.append(
            EfiBootFile(
                partition=partition,
                path=child,
                size=entry.size,
                loader=identify_loader(child, pe),
                architecture=pe.architecture if pe is not None else None,
                signed=pe.signed if pe is not None else False,
                certificate_names=list(pe.certificate_names) if pe is not None else [],
                sbat=list(pe.sbat) if pe is not None else [],
                removable_media_path=removable,
            )
        )
