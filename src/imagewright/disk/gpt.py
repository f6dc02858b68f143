"""GPT headers and partition entries as structure, with their CRCs (spec section 1.8).

The primary header sits at LBA 1 and points at its entry array (usually LBA 2); the backup
header sits at the disk's last LBA with its own array just before it. Both carry a
CRC-32 (zlib's) of the header (over ``header_size`` bytes, CRC field zeroed) and of the
entry array. ``header_problem`` checks every field of a header before anything uses it
to read further; a header claiming 2^32 entries or entries of 0 or 4 GiB bytes is
unusable, with the reason said in one sentence.

Checks follow libblkid ``partitions/gpt.c`` (header size 92..sector, CRCs, MyLBA, usable
range, header outside the usable range); unlike libblkid we accept entry sizes other than
128 that the UEFI specification allows (multiples of 8, at least 128).

This module is the bottom floor of ``disk``: bytes to ``GptHeader``/``GptEntry`` and
back. Reading a disk's GPT (primary or backup) and writing one lives in ``gpt_table``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from imagewright.binary import Layout, MiB
from imagewright.disk.guids import ZERO_GUID, guid_from_bytes, guid_to_bytes, new_guid

SIGNATURE = b"EFI PART"
REVISION_1_0 = 0x00010000
HEADER_SIZE = 92
ENTRY_SIZE = 128
DEFAULT_ENTRY_COUNT = 128
#: The largest entry array we read: 32768 standard entries. Real tables use 16 KiB.
MAX_ENTRY_ARRAY_BYTES = 4 * MiB
ATTRIBUTE_LEGACY_BIOS_BOOTABLE = 1 << 2

GPT_HEADER = Layout(
    "GPT header",
    "<",
    [
        ("signature", "8s"),
        ("revision", "I"),
        ("header_size", "I"),
        ("header_crc", "I"),
        ("reserved", "I"),
        ("my_lba", "Q"),
        ("alternate_lba", "Q"),
        ("first_usable_lba", "Q"),
        ("last_usable_lba", "Q"),
        ("disk_guid", "16s"),
        ("entries_lba", "Q"),
        ("entry_count", "I"),
        ("entry_size", "I"),
        ("entries_crc", "I"),
    ],
)

GPT_ENTRY = Layout(
    "GPT partition entry",
    "<",
    [
        ("type_guid", "16s"),
        ("unique_guid", "16s"),
        ("first_lba", "Q"),
        ("last_lba", "Q"),
        ("attributes", "Q"),
        ("name", "72s"),
    ],
)


@dataclass
class GptHeader:
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: str
    entries_lba: int
    entry_count: int = DEFAULT_ENTRY_COUNT
    entry_size: int = ENTRY_SIZE
    entries_crc: int = 0
    header_crc: int = 0
    revision: int = REVISION_1_0
    header_size: int = HEADER_SIZE
    reserved: int = 0
    #: Bytes 92..header_size, kept so that a header larger than 92 bytes round-trips.
    extra: bytes = b""

    @property
    def entry_array_bytes(self) -> int:
        return self.entry_count * self.entry_size

    def entry_array_sectors(self, sector_size: int) -> int:
        return -(-self.entry_array_bytes // sector_size)


@dataclass
class GptEntry:
    type_guid: str = ZERO_GUID
    unique_guid: str = ZERO_GUID
    first_lba: int = 0
    last_lba: int = 0
    attributes: int = 0
    name: str = ""
    #: The 72 name bytes as stored (kept verbatim unless ``name`` is changed by a writer).
    raw_name: bytes = b"\0" * 72
    #: Bytes past the standard 128 of a larger entry.
    extra: bytes = b""

    @property
    def used(self) -> bool:
        return self.type_guid != ZERO_GUID

    @staticmethod
    def new(
        type_guid: str,
        first_lba: int,
        last_lba: int,
        *,
        name: str = "",
        attributes: int = 0,
        unique_guid: str | None = None,
    ) -> GptEntry:
        raw_name = encode_name(name)
        return GptEntry(
            type_guid=type_guid.upper(),
            unique_guid=(unique_guid or new_guid()).upper(),
            first_lba=first_lba,
            last_lba=last_lba,
            attributes=attributes,
            name=name,
            raw_name=raw_name,
        )


def encode_name(name: str) -> bytes:
    raw = name.encode("utf-16-le")
    if len(raw) > 72:
        raise ValueError("a GPT partition name holds at most 36 UTF-16 code units")
    return raw.ljust(72, b"\0")


def decode_name(raw: bytes) -> str:
    """UTF-16LE up to the first NUL character; undecodable units become U+FFFD."""
    units = []
    for index in range(0, len(raw) - 1, 2):
        pair = raw[index : index + 2]
        if pair == b"\0\0":
            break
        units.append(pair)
    return b"".join(units).decode("utf-16-le", errors="replace")


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def parse_header(sector: bytes) -> GptHeader:
    fields = GPT_HEADER.unpack(sector)
    header_size = fields["header_size"]
    extra = sector[HEADER_SIZE:header_size] if HEADER_SIZE < header_size <= len(sector) else b""
    return GptHeader(
        my_lba=fields["my_lba"],
        alternate_lba=fields["alternate_lba"],
        first_usable_lba=fields["first_usable_lba"],
        last_usable_lba=fields["last_usable_lba"],
        disk_guid=guid_from_bytes(fields["disk_guid"]),
        entries_lba=fields["entries_lba"],
        entry_count=fields["entry_count"],
        entry_size=fields["entry_size"],
        entries_crc=fields["entries_crc"],
        header_crc=fields["header_crc"],
        revision=fields["revision"],
        header_size=header_size,
        reserved=fields["reserved"],
        extra=bytes(extra),
    )


def header_problem(sector: bytes, lba: int, disk_sectors: int, sector_size: int) -> str | None:
    """Why the header in ``sector`` (read at ``lba``) cannot be used, or None if it can."""
    if sector[:8] != SIGNATURE:
        return f"there is no GPT header at sector {lba}"
    header = parse_header(sector)
    if not HEADER_SIZE <= header.header_size <= sector_size:
        return f"the GPT header claims a size of {header.header_size} bytes (it must be 92 to {sector_size})"
    body = sector[: header.header_size]
    computed = crc32(body[:16] + b"\0\0\0\0" + body[20:])
    if computed != header.header_crc:
        return f"the GPT header at sector {lba} fails its CRC check"
    if header.my_lba != lba:
        return f"the GPT header at sector {lba} says it is at sector {header.my_lba}"
    if header.first_usable_lba > header.last_usable_lba:
        return "the GPT header's first usable sector comes after its last usable sector"
    if header.first_usable_lba < lba < header.last_usable_lba:
        return f"the GPT header at sector {lba} lies inside the area it gives to partitions"
    if header.entry_size < ENTRY_SIZE or header.entry_size % 8:
        return (
            f"the GPT header claims partition entries of {header.entry_size} bytes "
            "(entry size must be a multiple of 8, at least 128)"
        )
    if header.entry_count == 0:
        return "the GPT header claims no partition entries"
    if header.entry_array_bytes > MAX_ENTRY_ARRAY_BYTES:
        return (
            f"the GPT header claims {header.entry_count} partition entries of {header.entry_size} bytes "
            f"({header.entry_array_bytes} bytes), more than the {MAX_ENTRY_ARRAY_BYTES // MiB} MiB "
            "imagewright reads"
        )
    array_end = header.entries_lba + header.entry_array_sectors(sector_size) - 1
    if header.entries_lba < 1 or array_end >= disk_sectors:
        return (
            f"the GPT partition entry array (sectors {header.entries_lba}-{array_end}) lies beyond the "
            f"end of the {disk_sectors}-sector disk"
        )
    if header.entries_lba <= lba <= array_end:
        return "the GPT partition entry array overlaps its own header"
    if header.entries_lba <= header.last_usable_lba and array_end >= header.first_usable_lba:
        return "the GPT partition entry array overlaps the area given to partitions"
    return None


def parse_entries(array: bytes, header: GptHeader) -> list[GptEntry]:
    entries = []
    for index in range(header.entry_count):
        base = index * header.entry_size
        raw = array[base : base + header.entry_size]
        if not any(raw[:16]):
            entries.append(GptEntry(extra=bytes(raw[ENTRY_SIZE:])))
            continue
        fields = GPT_ENTRY.unpack(raw)
        entries.append(
            GptEntry(
                type_guid=guid_from_bytes(fields["type_guid"]),
                unique_guid=guid_from_bytes(fields["unique_guid"]),
                first_lba=fields["first_lba"],
                last_lba=fields["last_lba"],
                attributes=fields["attributes"],
                name=decode_name(fields["name"]),
                raw_name=fields["name"],
                extra=bytes(raw[ENTRY_SIZE:]),
            )
        )
    return entries


def pack_entry(entry: GptEntry, entry_size: int = ENTRY_SIZE) -> bytes:
    if not entry.used:
        return bytes(entry_size)
    raw_name = entry.raw_name if decode_name(entry.raw_name) == entry.name else encode_name(entry.name)
    packed = GPT_ENTRY.pack(
        {
            "type_guid": guid_to_bytes(entry.type_guid),
            "unique_guid": guid_to_bytes(entry.unique_guid),
            "first_lba": entry.first_lba,
            "last_lba": entry.last_lba,
            "attributes": entry.attributes,
            "name": raw_name,
        }
    )
    return (packed + entry.extra).ljust(entry_size, b"\0")[:entry_size]


def pack_entry_array(entries: list[GptEntry], entry_count: int, entry_size: int = ENTRY_SIZE) -> bytes:
    """The entry array: ``entries`` in order, padded with empty entries to ``entry_count``."""
    if len(entries) > entry_count:
        raise ValueError("more GPT entries than the array holds")
    packed = b"".join(pack_entry(entry, entry_size) for entry in entries)
    return packed + bytes(entry_size * (entry_count - len(entries)))


def pack_header(header: GptHeader, sector_size: int) -> bytes:
    """One sector holding ``header`` with its CRC computed (``header.header_crc`` is ignored)."""
    fields = {
        "signature": SIGNATURE,
        "revision": header.revision,
        "header_size": header.header_size,
        "header_crc": 0,
        "reserved": header.reserved,
        "my_lba": header.my_lba,
        "alternate_lba": header.alternate_lba,
        "first_usable_lba": header.first_usable_lba,
        "last_usable_lba": header.last_usable_lba,
        "disk_guid": guid_to_bytes(header.disk_guid),
        "entries_lba": header.entries_lba,
        "entry_count": header.entry_count,
        "entry_size": header.entry_size,
        "entries_crc": header.entries_crc,
    }
    body = GPT_HEADER.pack(fields) + header.extra
    body = body[: header.header_size].ljust(header.header_size, b"\0")
    crc = crc32(body)
    body = body[:16] + crc.to_bytes(4, "little") + body[20:]
    return body.ljust(sector_size, b"\0")


def new_gpt_header(
    disk_sectors: int,
    sector_size: int,
    disk_guid: str | None = None,
    entry_count: int = DEFAULT_ENTRY_COUNT,
    first_usable_lba: int | None = None,
) -> GptHeader:
    """A primary header laid out as sfdisk does: array at LBA 2, partitions from 1 MiB by default."""
    array_sectors = -(-entry_count * ENTRY_SIZE // sector_size)
    last_lba = disk_sectors - 1
    first = first_usable_lba if first_usable_lba is not None else max(2 + array_sectors, MiB // sector_size)
    last = last_lba - array_sectors - 1
    if first > last:
        raise ValueError("the disk is too small for a GPT")
    return GptHeader(
        my_lba=1,
        alternate_lba=last_lba,
        first_usable_lba=first,
        last_usable_lba=last,
        disk_guid=(disk_guid or new_guid()).upper(),
        entries_lba=2,
        entry_count=entry_count,
    )
