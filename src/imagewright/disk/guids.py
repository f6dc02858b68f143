"""GUIDs as GPT stores them, and the names fdisk/sfdisk give partition type ids.

GPT stores a GUID "mixed-endian" (spec section 1.8): the first three fields (time_low,
time_mid, time_hi) little-endian, the last eight bytes as they are. Printed GUIDs are
uppercase, the way sfdisk and sgdisk print them. The type-name tables follow util-linux
``include/pt-mbr-partnames.h`` and ``include/pt-gpt-partnames.h`` so that our
``type_name`` reads exactly like ``fdisk -l``.
"""

from __future__ import annotations

import re
import struct

from imagewright.errors import InvalidArgumentError

#: Compiled by ``re`` on first use (writing a table), not at import (reading one).
_GUID_TEXT = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"

ZERO_GUID = "00000000-0000-0000-0000-000000000000"

EFI_SYSTEM_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
LINUX_FILESYSTEM_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
LINUX_SWAP_GUID = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
LINUX_LVM_GUID = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
LINUX_RAID_GUID = "A19D880F-05FC-4D3B-A006-743F0F84911E"
LINUX_ROOT_X86_64_GUID = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
MICROSOFT_BASIC_DATA_GUID = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"

#: MBR type bytes with a special meaning.
MBR_EMPTY = 0x00
MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
MBR_GPT_PROTECTIVE = 0xEE
MBR_EFI_SYSTEM = 0xEF
MBR_LINUX = 0x83
MBR_LINUX_SWAP = 0x82


def new_guid() -> str:
    """A fresh random GUID, uppercase as GPT tools print it (``uuid`` is imported here, when a
    table is written: reading one, as ``inspect`` does, never needs it)."""
    import uuid

    return str(uuid.uuid4()).upper()


def guid_from_bytes(raw: bytes) -> str:
    """16 on-disk bytes (mixed-endian) -> ``"C12A7328-F81F-11D2-BA4B-00A0C93EC93B"``."""
    if len(raw) != 16:
        raise ValueError("a GUID is 16 bytes")
    time_low, time_mid, time_hi = struct.unpack_from("<IHH", raw)
    tail = raw[8:].hex().upper()
    return f"{time_low:08X}-{time_mid:04X}-{time_hi:04X}-{tail[:4]}-{tail[4:]}"


def guid_to_bytes(text: str) -> bytes:
    """``"C12A7328-..."`` -> the 16 mixed-endian bytes GPT stores."""
    if not re.match(_GUID_TEXT, text):
        raise InvalidArgumentError(f"'{text}' is not a GUID (expected 8-4-4-4-12 hexadecimal digits).")
    parts = text.split("-")
    head = struct.pack("<IHH", int(parts[0], 16), int(parts[1], 16), int(parts[2], 16))
    return head + bytes.fromhex(parts[3] + parts[4])


def uuid_from_bytes(raw: bytes) -> str:
    """16 big-endian bytes (ext, XFS, btrfs, swap ...) -> lowercase ``8-4-4-4-12`` as blkid prints."""
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:32]}"


def mbr_type_id(type_byte: int) -> str:
    """The MBR type as sfdisk spells it: lowercase hex, no leading zero (``"83"``, ``"5"``, ``"ef"``)."""
    return f"{type_byte:x}"


def mbr_type_name(type_byte: int) -> str:
    return MBR_TYPE_NAMES.get(type_byte, "unknown")


def gpt_type_name(type_guid: str) -> str:
    return GPT_TYPE_NAMES.get(type_guid.upper(), "unknown")


def gpt_attributes_text(attributes: int) -> str:
    """GPT attribute bits as sfdisk writes them: ``"LegacyBIOSBootable GUID:60"``."""
    words = []
    for bit, name in ((0, "RequiredPartition"), (1, "NoBlockIOProtocol"), (2, "LegacyBIOSBootable")):
        if attributes & (1 << bit):
            words.append(name)
    guid_bits = [str(bit) for bit in range(48, 64) if attributes & (1 << bit)]
    if guid_bits:
        words.append("GUID:" + ",".join(guid_bits))
    return " ".join(words)


# util-linux include/pt-mbr-partnames.h (the names fdisk prints).
MBR_TYPE_NAMES: dict[int, str] = {
    0x00: "Empty",
    0x01: "FAT12",
    0x02: "XENIX root",
    0x03: "XENIX usr",
    0x04: "FAT16 <32M",
    0x05: "Extended",
    0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT",
    0x08: "AIX",
    0x09: "AIX bootable",
    0x0A: "OS/2 Boot Manager",
    0x0B: "W95 FAT32",
    0x0C: "W95 FAT32 (LBA)",
    0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 Ext'd (LBA)",
    0x10: "OPUS",
    0x11: "Hidden FAT12",
    0x12: "Compaq diagnostics",
    0x14: "Hidden FAT16 <32M",
    0x16: "Hidden FAT16",
    0x17: "Hidden HPFS/NTFS",
    0x18: "AST SmartSleep",
    0x1B: "Hidden W95 FAT32",
    0x1C: "Hidden W95 FAT32 (LBA)",
    0x1E: "Hidden W95 FAT16 (LBA)",
    0x24: "NEC DOS",
    0x27: "Hidden NTFS WinRE",
    0x39: "Plan 9",
    0x3C: "PartitionMagic recovery",
    0x40: "Venix 80286",
    0x41: "PPC PReP Boot",
    0x42: "SFS",
    0x4D: "QNX4.x",
    0x4E: "QNX4.x 2nd part",
    0x4F: "QNX4.x 3rd part",
    0x50: "OnTrack DM",
    0x51: "OnTrack DM6 Aux1",
    0x52: "CP/M",
    0x53: "OnTrack DM6 Aux3",
    0x54: "OnTrackDM6",
    0x55: "EZ-Drive",
    0x56: "Golden Bow",
    0x5C: "Priam Edisk",
    0x61: "SpeedStor",
    0x63: "GNU HURD or SysV",
    0x64: "Novell Netware 286",
    0x65: "Novell Netware 386",
    0x70: "DiskSecure Multi-Boot",
    0x75: "PC/IX",
    0x80: "Old Minix",
    0x81: "Minix / old Linux",
    0x82: "Linux swap / Solaris",
    0x83: "Linux",
    0x84: "OS/2 hidden C: drive",
    0x85: "Linux extended",
    0x86: "NTFS volume set",
    0x87: "NTFS volume set",
    0x88: "Linux plaintext",
    0x8E: "Linux LVM",
    0x93: "Amoeba",
    0x94: "Amoeba BBT",
    0x9F: "BSD/OS",
    0xA0: "IBM Thinkpad hibernation",
    0xA5: "FreeBSD",
    0xA6: "OpenBSD",
    0xA7: "NeXTSTEP",
    0xA8: "Darwin UFS",
    0xA9: "NetBSD",
    0xAB: "Darwin boot",
    0xAF: "HFS / HFS+",
    0xB7: "BSDI fs",
    0xB8: "BSDI swap",
    0xBB: "Boot Wizard hidden",
    0xBC: "Acronis FAT32 LBA",
    0xBE: "Solaris boot",
    0xBF: "Solaris",
    0xC1: "DRDOS/sec (FAT-12)",
    0xC4: "DRDOS/sec (FAT-16 < 32M)",
    0xC6: "DRDOS/sec (FAT-16)",
    0xC7: "Syrinx",
    0xDA: "Non-FS data",
    0xDB: "CP/M / CTOS / ...",
    0xDE: "Dell Utility",
    0xDF: "BootIt",
    0xE1: "DOS access",
    0xE3: "DOS R/O",
    0xE4: "SpeedStor",
    0xEB: "BeOS fs",
    0xEE: "GPT",
    0xEF: "EFI (FAT-12/16/32)",
    0xF0: "Linux/PA-RISC boot",
    0xF1: "SpeedStor",
    0xF4: "SpeedStor",
    0xF2: "DOS secondary",
    0xFB: "VMware VMFS",
    0xFC: "VMware VMKCORE",
    0xFD: "Linux raid autodetect",
    0xFE: "LANstep",
    0xFF: "BBT",
}

# util-linux include/pt-gpt-partnames.h (the names fdisk/sfdisk print), keys uppercase.
GPT_TYPE_NAMES: dict[str, str] = {
    EFI_SYSTEM_GUID: "EFI System",
    "024DEE41-33E7-11D3-9D69-0008C781F39F": "MBR partition scheme",
    "D3BFE2DE-3DAF-11DF-BA40-E3A556D89593": "Intel Fast Flash",
    BIOS_BOOT_GUID: "BIOS boot",
    "F4019732-066E-4E12-8273-346C5641494F": "Sony boot partition",
    "BFBFAFE7-A34F-448A-9A5B-6213EB736C22": "Lenovo boot partition",
    "9E1A2D38-C612-4316-AA26-8B49521E5A8B": "PowerPC PReP boot",
    "7412F7D5-A156-4B13-81DC-867174929325": "ONIE boot",
    "D4E6E2CD-4469-46F3-B5CB-1BFF57AFC149": "ONIE config",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
    MICROSOFT_BASIC_DATA_GUID: "Microsoft basic data",
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "Microsoft LDM metadata",
    "AF9B60A0-1431-4F62-BC68-3311714A69AD": "Microsoft LDM data",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery environment",
    "37AFFC90-EF7D-4E96-91C3-2D7AE055B174": "IBM General Parallel Fs",
    "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "Microsoft Storage Spaces",
    "75894C1E-3AEB-11D3-B7C1-7B03A0000000": "HP-UX data",
    "E2A1E728-32E3-11D6-A682-7B03A0000000": "HP-UX service",
    LINUX_SWAP_GUID: "Linux swap",
    LINUX_FILESYSTEM_GUID: "Linux filesystem",
    "3B8F8425-20E0-4F3B-907F-1A25A76F98E8": "Linux server data",
    "44479540-F297-41B2-9AF7-D131D5F0458A": "Linux root (x86)",
    LINUX_ROOT_X86_64_GUID: "Linux root (x86-64)",
    "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3": "Linux root (ARM)",
    "B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux root (ARM-64)",
    "993D8D3D-F80E-4225-855A-9DAF8ED7EA97": "Linux root (IA-64)",
    "77055800-792C-4F94-B39A-98C91B762BB6": "Linux root (LoongArch-64)",
    "60D5A7FE-8E7D-435C-B714-3DD8162144E1": "Linux root (RISC-V-32)",
    "72EC70A6-CF74-40E6-BD49-4BDA08E8F224": "Linux root (RISC-V-64)",
    "8DA63339-0007-60C0-C436-083AC8230908": "Linux reserved",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
    LINUX_RAID_GUID: "Linux RAID",
    LINUX_LVM_GUID: "Linux LVM",
    "4D21B016-B534-45C2-A9FB-5C16E091FD2D": "Linux variable data",
    "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1": "Linux temporary data",
    "75250D76-8CC6-458E-BD66-BD47CC81A812": "Linux /usr (x86)",
    "8484680C-9521-48C6-9C11-B0720656F69E": "Linux /usr (x86-64)",
    "7D0359A3-02B3-4F0A-865C-654403E70625": "Linux /usr (ARM)",
    "B0E01050-EE5F-4390-949A-9101B17104E9": "Linux /usr (ARM-64)",
    "4301D2A6-4E3B-4B2A-BB94-9E0B2C4225EA": "Linux /usr (IA-64)",
    "D13C5D3B-B5D1-422A-B29F-9454FDC89D76": "Linux root verity (x86)",
    "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5": "Linux root verity (x86-64)",
    "7386CDF2-203C-47A9-A498-F2ECCE45A2D6": "Linux root verity (ARM)",
    "DF3300CE-D69F-4C92-978C-9BFB0F38D820": "Linux root verity (ARM-64)",
    "86ED10D5-B607-45BB-8957-D350F23D0571": "Linux root verity (IA-64)",
    "8F461B0D-14EE-4E81-9AA9-049B6FB97ABD": "Linux /usr verity (x86)",
    "77FF5F63-E7B6-4633-ACF4-1565B864C0E6": "Linux /usr verity (x86-64)",
    "C215D751-7BCD-4649-BE90-6627490A4C05": "Linux /usr verity (ARM)",
    "6E11A4E7-FBCA-4DED-B9E9-E1A512BB664E": "Linux /usr verity (ARM-64)",
    "6A491E03-3BE7-4545-8E38-83320E0EA880": "Linux /usr verity (IA-64)",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
    "773F91EF-66D4-49B5-BD83-D683BF40AD16": "Linux user's home",
    "516E7CB4-6ECF-11D6-8FF8-00022D09712B": "FreeBSD data",
    "83BD6B9D-7F41-11DC-BE0B-001560B84F0F": "FreeBSD boot",
    "516E7CB5-6ECF-11D6-8FF8-00022D09712B": "FreeBSD swap",
    "516E7CB6-6ECF-11D6-8FF8-00022D09712B": "FreeBSD UFS",
    "516E7CBA-6ECF-11D6-8FF8-00022D09712B": "FreeBSD ZFS",
    "516E7CB8-6ECF-11D6-8FF8-00022D09712B": "FreeBSD Vinum",
    "48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS/HFS+",
    "7C3457EF-0000-11AA-AA11-00306543ECAC": "Apple APFS",
    "55465300-0000-11AA-AA11-00306543ECAC": "Apple UFS",
    "52414944-0000-11AA-AA11-00306543ECAC": "Apple RAID",
    "52414944-5F4F-11AA-AA11-00306543ECAC": "Apple RAID offline",
    "426F6F74-0000-11AA-AA11-00306543ECAC": "Apple boot",
    "4C616265-6C00-11AA-AA11-00306543ECAC": "Apple label",
    "5265636F-7665-11AA-AA11-00306543ECAC": "Apple TV recovery",
    "53746F72-6167-11AA-AA11-00306543ECAC": "Apple Core storage",
    "6A82CB45-1DD2-11B2-99A6-080020736631": "Solaris boot",
    "6A85CF4D-1DD2-11B2-99A6-080020736631": "Solaris root",
    "6A898CC3-1DD2-11B2-99A6-080020736631": "Solaris /usr & Apple ZFS",
    "6A87C46F-1DD2-11B2-99A6-080020736631": "Solaris swap",
    "6A8B642B-1DD2-11B2-99A6-080020736631": "Solaris backup",
    "6A8EF2E9-1DD2-11B2-99A6-080020736631": "Solaris /var",
    "6A90BA39-1DD2-11B2-99A6-080020736631": "Solaris /home",
    "6A9283A5-1DD2-11B2-99A6-080020736631": "Solaris alternate sector",
    "49F48D32-B10E-11DC-B99B-0019D1879648": "NetBSD swap",
    "49F48D5A-B10E-11DC-B99B-0019D1879648": "NetBSD FFS",
    "49F48D82-B10E-11DC-B99B-0019D1879648": "NetBSD LFS",
    "2DB519C4-B10F-11DC-B99B-0019D1879648": "NetBSD concatenated",
    "2DB519EC-B10F-11DC-B99B-0019D1879648": "NetBSD encrypted",
    "49F48DAA-B10E-11DC-B99B-0019D1879648": "NetBSD RAID",
    "FE3A2A5D-4F32-41A7-B725-ACCC3285A309": "ChromeOS kernel",
    "3CB8E202-3B7E-47DD-8A3C-7FF2A13CFCEC": "ChromeOS root fs",
    "2E0A753D-9E48-43B0-8337-B15192CB1B5E": "ChromeOS reserved",
    "45B0969E-9B03-4F30-B4C6-B4B80CEFF106": "Ceph Journal",
    "45B0969E-9B03-4F30-B4C6-5EC00CEFF106": "Ceph Encrypted Journal",
    "4FBD7E29-9D25-41B8-AFD0-062C0CEFF05D": "Ceph OSD",
    "4FBD7E29-9D25-41B8-AFD0-5EC00CEFF05D": "Ceph crypt OSD",
    "89C57F98-2FE5-4DC0-89C1-F3AD0CEFF2BE": "Ceph disk in creation",
    "89C57F98-2FE5-4DC0-89C1-5EC00CEFF2BE": "Ceph crypt disk in creation",
    "AA31E02A-400F-11DB-9590-000C2911D1B8": "VMware VMFS",
    "9D275380-40AD-11DB-BF97-000C2911D1B8": "VMware Diagnostic",
    "381CFCCC-7288-11E0-92EE-000C2911D0B2": "VMware Virtual SAN",
    "77719A0C-A4A0-11E3-A47E-000C29745A24": "VMware Virsto",
    "9198EFFC-31C0-11DB-8F78-000C2911D1B8": "VMware Reserved",
    "824CC7A0-36A8-11E3-890A-952519AD3F61": "OpenBSD data",
    "CEF5A9AD-73BC-4601-89F3-CDEEEEE321A1": "QNX6 file system",
    "C91818F9-8025-47AF-89D2-F030D7000C2C": "Plan 9 partition",
}
