"""GPT: headers, entry arrays, their CRCs, the backup copy (spec section 1.8).

The primary header sits at LBA 1 and points at its entry array (usually LBA 2); the backup
header sits at the disk's last LBA with its own array just before it. Both carry a
CRC-32 (zlib's) of the header (over ``header_size`` bytes, CRC field zeroed) and of the
entry array. Every field read from a header is checked before it is used to read anything
else, and the entry array is capped at ``MAX_ENTRY_ARRAY_BYTES``: a header claiming 2^32
entries or entries of 0 or 4 GiB bytes is unusable, with the reason said in one sentence.

Reading follows libblkid ``partitions/gpt.c`` (header size 92..sector, CRCs, MyLBA, usable
range, header outside the usable range); unlike libblkid we accept entry sizes other than
128 that the UEFI specification allows (multiples of 8, at least 128). Writers are pure.
"""

from __future__ import annotations

import uuid as uuid_module
import zlib
from dataclasses import dataclass, replace

from imagewright.binary import ByteSource, Layout, MiB, read_exact
from imagewright.disk.guids import (
    ZERO_GUID,
    gpt_attributes_text,
    gpt_type_name,
    guid_from_bytes,
    guid_to_bytes,
)
from imagewright.disk.mbr import MbrSector, protective_mbr
from imagewright.disk.table import DiskWrite, Partition, PartitionTable, resized

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
            unique_guid=(unique_guid or str(uuid_module.uuid4())).upper(),
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


@dataclass
class _HeaderRead:
    header: GptHeader | None
    array: bytes
    problem: str | None
    lba: int


def _read_header(disk: ByteSource, lba: int, sector_size: int, disk_sectors: int) -> _HeaderRead:
    if lba < 1 or lba >= disk_sectors:
        return _HeaderRead(None, b"", f"sector {lba} is outside the disk", lba)
    sector = read_exact(disk, lba * sector_size, sector_size, "GPT header")
    problem = header_problem(sector, lba, disk_sectors, sector_size)
    if problem is not None:
        return _HeaderRead(None, b"", problem, lba)
    header = parse_header(sector)
    array = read_exact(
        disk, header.entries_lba * sector_size, header.entry_array_bytes, "GPT partition entry array"
    )
    if crc32(array) != header.entries_crc:
        return _HeaderRead(
            None, b"", f"the GPT partition entry array of the header at sector {lba} fails its CRC check", lba
        )
    return _HeaderRead(header, array, None, lba)


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


def read_gpt_table(disk: ByteSource, sector_size: int, mbr: MbrSector | None) -> PartitionTable:
    """The GPT of ``disk``: primary header if usable, else the backup, with warnings/problems."""
    disk_sectors = disk.size // sector_size
    last_lba = disk_sectors - 1
    primary = _read_header(disk, 1, sector_size, disk_sectors)
    backup_candidates = []
    if primary.header is not None and primary.header.alternate_lba != 1:
        backup_candidates.append(primary.header.alternate_lba)
    if last_lba not in backup_candidates:
        backup_candidates.append(last_lba)
    backup = _HeaderRead(None, b"", "there is no backup GPT header", last_lba)
    for candidate in backup_candidates:
        backup = _read_header(disk, candidate, sector_size, disk_sectors)
        if backup.header is not None:
            break

    table = PartitionTable(
        kind="gpt", sector_size=sector_size, disk_id="", disk_sectors=disk_sectors, mbr=mbr
    )
    if primary.header is not None:
        used = primary
        table.gpt_header_source = "primary"
        if backup.header is None:
            table.warnings.append(f"The backup GPT header is missing or damaged ({backup.problem}).")
        elif backup.header.entries_crc != primary.header.entries_crc:
            table.warnings.append("The backup GPT partition entries differ from the primary ones.")
    elif backup.header is not None:
        used = backup
        table.gpt_header_source = "backup"
        table.warnings.append(
            f"The primary GPT header is unusable ({primary.problem}); the backup header at sector "
            f"{backup.lba} was used."
        )
    else:
        table.problems.append(
            f"The disk has a protective MBR but no usable GPT: primary: {primary.problem}; "
            f"backup: {backup.problem}."
        )
        return table

    header = used.header
    assert header is not None
    table.gpt_header = header
    table.disk_id = header.disk_guid
    table.first_usable_lba = header.first_usable_lba
    table.last_usable_lba = header.last_usable_lba
    table.gpt_entries = parse_entries(used.array, header)
    _check_disk_size(table, header, used.lba, last_lba)
    if mbr is not None:
        _check_protective_mbr(table, mbr, disk_sectors)
    _add_partitions(table, header)
    return table


def _check_disk_size(table: PartitionTable, header: GptHeader, header_lba: int, last_lba: int) -> None:
    backup_lba = header.alternate_lba if header_lba == 1 else header_lba
    if backup_lba < last_lba:
        table.warnings.append(
            f"The disk is larger than the GPT says (image was grown): the backup GPT header belongs at "
            f"sector {last_lba}, not {backup_lba}."
        )
    elif backup_lba > last_lba:
        table.warnings.append(
            f"The disk is smaller than the GPT says (image was truncated?): the GPT expects "
            f"{backup_lba + 1} sectors, the image has {last_lba + 1}."
        )


def _check_protective_mbr(table: PartitionTable, mbr: MbrSector, disk_sectors: int) -> None:
    others = [entry for entry in mbr.entries if entry.used and entry.type != 0xEE]
    if others:
        table.warnings.append(
            "The MBR is a hybrid MBR: besides the GPT protective entry it lists "
            f"{len(others)} partition(s) of its own, which BIOS tools may use instead of the GPT."
        )
    protective = next((entry for entry in mbr.entries if entry.type == 0xEE), None)
    expected = min(disk_sectors - 1, 0xFFFFFFFF)
    if protective is not None and not others and protective.sectors != expected:
        table.warnings.append(
            f"The protective MBR covers {protective.sectors} sectors, not the whole disk ({expected}); "
            "sfdisk and sgdisk correct this when they write."
        )


def _add_partitions(table: PartitionTable, header: GptHeader) -> None:
    sector_size = table.sector_size
    for index, entry in enumerate(table.gpt_entries):
        if not entry.used:
            continue
        number = index + 1
        if entry.last_lba < entry.first_lba:
            table.problems.append(
                f"GPT partition {number} ends (sector {entry.last_lba}) before it starts "
                f"(sector {entry.first_lba})."
            )
            continue
        if entry.first_lba < header.first_usable_lba or entry.last_lba > header.last_usable_lba:
            table.problems.append(
                f"GPT partition {number} (sectors {entry.first_lba}-{entry.last_lba}) lies outside the "
                f"usable area {header.first_usable_lba}-{header.last_usable_lba}."
            )
        sectors = entry.last_lba - entry.first_lba + 1
        table.partitions.append(
            Partition(
                number=number,
                start=entry.first_lba,
                end=entry.last_lba,
                sectors=sectors,
                size=sectors * sector_size,
                type_id=entry.type_guid,
                type_name=gpt_type_name(entry.type_guid),
                bootable=bool(entry.attributes & ATTRIBUTE_LEGACY_BIOS_BOOTABLE),
                kind="gpt",
                name=entry.name,
                uuid=entry.unique_guid,
                attributes=entry.attributes,
                attributes_text=gpt_attributes_text(entry.attributes),
                table_lba=header.entries_lba + (index * header.entry_size) // sector_size,
                slot=index,
            )
        )


# --- writers -------------------------------------------------------------------------


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


def gpt_writes(
    primary: GptHeader,
    entries: list[GptEntry],
    disk_sectors: int,
    sector_size: int,
    *,
    mbr: MbrSector | None = None,
    write_protective_mbr: bool = True,
) -> list[DiskWrite]:
    """Every sector of a GPT for a disk of ``disk_sectors``: protective MBR, both headers, both arrays.

    ``primary`` gives the layout (usable range, disk GUID, entry count and size); its
    alternate LBA, CRCs and the backup's position are computed here.
    """
    last_lba = disk_sectors - 1
    array = pack_entry_array(entries, primary.entry_count, primary.entry_size)
    array_sectors = primary.entry_array_sectors(sector_size)
    backup_array_lba = last_lba - array_sectors
    if backup_array_lba <= primary.last_usable_lba:
        raise ValueError("the backup GPT entry array would overlap the usable area")
    entries_crc = crc32(array)
    main = replace(primary, my_lba=1, alternate_lba=last_lba, entries_crc=entries_crc)
    backup = replace(main, my_lba=last_lba, alternate_lba=1, entries_lba=backup_array_lba)
    padded = array.ljust(array_sectors * sector_size, b"\0")
    writes = []
    if write_protective_mbr:
        writes.append(DiskWrite(0, 0, protective_mbr(disk_sectors, mbr), "protective MBR"))
    writes += [
        DiskWrite(1, sector_size, pack_header(main, sector_size), "primary GPT header"),
        DiskWrite(main.entries_lba, main.entries_lba * sector_size, padded, "primary GPT entry array"),
        DiskWrite(backup_array_lba, backup_array_lba * sector_size, padded, "backup GPT entry array"),
        DiskWrite(last_lba, last_lba * sector_size, pack_header(backup, sector_size), "backup GPT header"),
    ]
    return writes


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
        disk_guid=(disk_guid or str(uuid_module.uuid4())).upper(),
        entries_lba=2,
        entry_count=entry_count,
    )


def _primary_layout(table: PartitionTable) -> GptHeader:
    """The primary header to write back: the one read, or one rebuilt from the backup."""
    header = table.gpt_header
    if table.kind != "gpt" or header is None:
        raise ValueError("the table is not a readable GPT")
    if table.gpt_header_source == "primary":
        return replace(header, my_lba=1)
    return replace(header, my_lba=1, entries_lba=2)


def relocate_backup(table: PartitionTable, new_disk_sectors: int) -> tuple[PartitionTable, list[DiskWrite]]:
    """After the disk grew or shrank: the backup header and array at the new end, usable area to match.

    Returns the updated table and the sectors to write: protective MBR (resized, boot code
    kept), both headers, both arrays, and zeros over the old backup header so that no tool
    later finds a stale copy in the middle of the disk. Also repairs a damaged backup when
    ``new_disk_sectors`` is the current size. A smaller disk is fine as long as every
    partition still ends before the new backup entry array (the space cut off is free).
    """
    primary = _primary_layout(table)
    sector_size = table.sector_size
    array_sectors = primary.entry_array_sectors(sector_size)
    new_last = new_disk_sectors - 1
    new_last_usable = new_last - array_sectors - 1
    if new_last_usable < primary.first_usable_lba:
        raise ValueError(f"a disk of {new_disk_sectors} sectors is too small for this GPT")
    for number, entry in enumerate(table.gpt_entries, start=1):
        if entry.used and entry.last_lba > new_last_usable:
            raise ValueError(
                f"partition {number} ends at sector {entry.last_lba}, beyond the last usable sector "
                f"{new_last_usable} of a {new_disk_sectors}-sector disk"
            )
    primary = replace(primary, last_usable_lba=new_last_usable)
    writes = gpt_writes(primary, table.gpt_entries, new_disk_sectors, sector_size, mbr=table.mbr)
    header = table.gpt_header
    assert header is not None
    old_backup = header.alternate_lba if table.gpt_header_source == "primary" else header.my_lba
    if header.last_usable_lba < old_backup < new_last - array_sectors:
        writes.append(
            DiskWrite(
                old_backup, old_backup * sector_size, bytes(sector_size), "old backup GPT header (wiped)"
            )
        )
    array = pack_entry_array(table.gpt_entries, primary.entry_count, primary.entry_size)
    new_table = replace(
        table,
        disk_sectors=new_disk_sectors,
        last_usable_lba=new_last_usable,
        gpt_header=replace(primary, alternate_lba=new_last, entries_crc=crc32(array)),
        gpt_header_source="primary",
        warnings=[w for w in table.warnings if "GPT" not in w and "protective MBR" not in w],
    )
    return new_table, writes


def grow_gpt_partition(
    table: PartitionTable, part: Partition, new_end: int
) -> tuple[PartitionTable, list[DiskWrite]]:
    """Both entry arrays and headers rewritten with partition ``part`` ending at ``new_end``."""
    primary = _primary_layout(table)
    entries = list(table.gpt_entries)
    entries[part.slot] = replace(entries[part.slot], last_lba=new_end)
    writes = gpt_writes(
        primary, entries, table.disk_sectors, table.sector_size, mbr=table.mbr, write_protective_mbr=False
    )
    partitions = resized(table.partitions, part.number, new_end, table.sector_size)
    array = pack_entry_array(entries, primary.entry_count, primary.entry_size)
    new_header = replace(primary, alternate_lba=table.disk_sectors - 1, entries_crc=crc32(array))
    new_table = replace(
        table, gpt_entries=entries, partitions=partitions, gpt_header=new_header, gpt_header_source="primary"
    )
    return new_table, writes
