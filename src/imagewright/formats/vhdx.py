"""VHDX (Hyper-V): file identifier, headers, region tables, metadata, BAT, guest view.

Sources: Microsoft [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format" sections 2.1-2.6,
and QEMU 7.2 ``block/vhdx.c`` (``vhdx_parse_header``, ``vhdx_open_region_tables``,
``vhdx_parse_metadata``, ``vhdx_calc_bat_entries``, ``vhdx_check_bat_entries``,
``vhdx_co_readv``), ``block/vhdx.h`` and ``block/vhdx-log.c`` (``vhdx_parse_log``).
All integers are little-endian; GUIDs are stored in Microsoft's mixed-endian order.

Layout of the 1 MiB header section (MS-VHDX 2.1)::

    0       file type identifier: 'vhdxfile', then 512 bytes of UTF-16LE creator text
    64 KiB  header 1  \\ 4 KiB each, CRC-32C over the 4 KiB: 'head', crc, sequence u64,
    128 KiB header 2  /  file-write GUID, data-write GUID, log GUID, log version u16,
                         version u16 (1), log length u32, log offset u64
    192 KiB region table 1 \\ 64 KiB each, CRC-32C over 64 KiB: 'regi', crc, entry count
    256 KiB region table 2 /  (<= 2047), then 32-byte entries: GUID, file offset u64,
                               length u32, flags u32 (bit 0 = required)

The metadata region starts with a 64 KiB table: 'metadata', reserved u16, entry count u16
(<= 2047), then 32-byte entries: item GUID, offset u32 (from the region start), length
u32, flags u32 (1 user, 2 virtual disk, 4 required). The BAT holds u64 entries: state in
bits 0-2 and the file offset in MiB in bits 20-63; after every ``chunk ratio`` payload
entries comes one sector-bitmap entry, chunk ratio = 2^23 x logical sector size / block size.

Payload states: 0 NOT_PRESENT, 1 UNDEFINED, 2 ZERO, 3 UNMAPPED (5 in drafts, as QEMU
accepts), 6 FULLY_PRESENT, 7 PARTIALLY_PRESENT (differencing disks only). QEMU reads
FULLY_PRESENT blocks from the file and every other valid state as zeros.

NOTE (safety): a differencing disk (HasParent) names its parent through the parent
locator's key/value pairs; the reference is refused by the policy and no guest view is
offered (unallocated blocks live in the parent). A non-empty log means the image must be
replayed before its metadata can be trusted, so it is refused. Regions, metadata items and
every FULLY_PRESENT block must lie inside the file and must not overlap each other.
QEMU 7.2 itself refuses a HasParent image (``vhdx_parse_metadata``: ENOTSUP); Hyper-V opens
the parent, so the reference is refused here whatever QEMU does.

NOTE (memory): a valid BAT may be large — a 64 TiB disk (the format's maximum) with 1 MiB
blocks has 64 Mi payload entries, 512 MiB of table — so it is never read whole (QEMU reads it
whole: ``vhdx_open``). Opening streams it once, ``BAT_PAGE_ENTRIES`` at a time, through every
check below; the guest view reads the page an entry lies in when it needs it and keeps at
most ``BAT_CACHED_PAGES`` pages. Its size is bounded by the format itself (``MAX_VIRTUAL_SIZE``,
``MIN_BLOCK_SIZE``) and by the BAT region, which must lie inside the file; ``Limits.max_table_bytes``
(for tables that are read whole) does not apply.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from imagewright.binary import ByteSource, Layout, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats import probes
from imagewright.formats.base import ExternalReference, Limits, OpenedImage
from imagewright.formats.crc32c import crc32c_with_field_zeroed
from imagewright.formats.external_names import describe_external_name
from imagewright.formats.mapped_guest import GuestRun, LruCache, MappedGuestSource
from imagewright.units import format_size

KiB = 1024
MiB = 1024 * KiB
TiB = 1024 * 1024 * MiB

SIGNATURE = probes.VHDX_SIGNATURE
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
HEADER_BLOCK = 4 * KiB
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
REGION_TABLE_SIZE = 64 * KiB
HEADER_SECTION_SIZE = 1 * MiB
METADATA_TABLE_SIZE = 64 * KiB
MAX_TABLE_ENTRIES = 2047
MIN_BLOCK_SIZE = 1 * MiB
MAX_BLOCK_SIZE = 256 * MiB
#: The largest virtual disk [MS-VHDX] allows.
MAX_VIRTUAL_SIZE = 64 * TiB
#: [MS-VHDX] 2.6.1: 2^23 sectors per chunk.
SECTORS_PER_CHUNK = 1 << 23
BAT_OFFSET_MASK = 0xFFFFFFFFFFF00000
BAT_STATE_MASK = 0x7
#: BAT entries read at once: 1 MiB of table.
BAT_PAGE_ENTRIES = 128 * 1024
#: BAT pages the guest view keeps (at most 8 MiB of table, whatever the disk's size).
BAT_CACHED_PAGES = 8

NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, UNMAPPED_DRAFT = 0, 1, 2, 3, 5
FULLY_PRESENT, PARTIALLY_PRESENT = 6, 7
PAYLOAD_STATES = {
    NOT_PRESENT: "not present",
    UNDEFINED: "undefined",
    ZERO: "zero",
    UNMAPPED: "unmapped",
    UNMAPPED_DRAFT: "unmapped",
    FULLY_PRESENT: "fully present",
    PARTIALLY_PRESENT: "partially present",
}
BITMAP_STATES = {NOT_PRESENT: "not present", FULLY_PRESENT: "present"}

REGION_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
REGION_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")

ITEM_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
ITEM_VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
ITEM_PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
ITEM_LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
ITEM_PHYSICAL_SECTOR_SIZE = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
ITEM_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
KNOWN_ITEMS = {
    ITEM_FILE_PARAMETERS: "file parameters",
    ITEM_VIRTUAL_DISK_SIZE: "virtual disk size",
    ITEM_PAGE83: "page 83 data",
    ITEM_LOGICAL_SECTOR_SIZE: "logical sector size",
    ITEM_PHYSICAL_SECTOR_SIZE: "physical sector size",
    ITEM_PARENT_LOCATOR: "parent locator",
}
REQUIRED_ITEMS = (
    ITEM_FILE_PARAMETERS,
    ITEM_VIRTUAL_DISK_SIZE,
    ITEM_PAGE83,
    ITEM_LOGICAL_SECTOR_SIZE,
    ITEM_PHYSICAL_SECTOR_SIZE,
)
#: [MS-VHDX] 2.6.2.6.1: the locator type of a VHDX parent.
PARENT_LOCATOR_VHDX = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
#: Keys whose values name the parent file, in the order a reader would try them.
PARENT_PATH_KEYS = ("relative_path", "volume_path", "absolute_win32_path")

PARAM_LEAVE_BLOCKS_ALLOCATED = 0x1
PARAM_HAS_PARENT = 0x2
REGION_REQUIRED = 0x1
ITEM_REQUIRED = 0x4

HEADER = Layout(
    "VHDX header",
    "<",
    [
        ("signature", "4s"),
        ("checksum", "I"),
        ("sequence_number", "Q"),
        ("file_write_guid", "16s"),
        ("data_write_guid", "16s"),
        ("log_guid", "16s"),
        ("log_version", "H"),
        ("version", "H"),
        ("log_length", "I"),
        ("log_offset", "Q"),
    ],
)
REGION_TABLE_HEADER = Layout(
    "VHDX region table header",
    "<",
    [("signature", "4s"), ("checksum", "I"), ("entry_count", "I"), ("reserved", "4x")],
)
REGION_ENTRY = Layout(
    "VHDX region table entry",
    "<",
    [("guid", "16s"), ("file_offset", "Q"), ("length", "I"), ("flags", "I")],
)
METADATA_HEADER = Layout(
    "VHDX metadata table header",
    "<",
    [("signature", "8s"), ("reserved", "2x"), ("entry_count", "H"), ("reserved2", "20x")],
)
METADATA_ENTRY = Layout(
    "VHDX metadata table entry",
    "<",
    [("item_id", "16s"), ("offset", "I"), ("length", "I"), ("flags", "I"), ("reserved", "4x")],
)
PARENT_LOCATOR_HEADER = Layout(
    "VHDX parent locator header",
    "<",
    [("locator_type", "16s"), ("reserved", "2x"), ("key_value_count", "H")],
)
PARENT_LOCATOR_ENTRY = Layout(
    "VHDX parent locator entry",
    "<",
    [("key_offset", "I"), ("value_offset", "I"), ("key_length", "H"), ("value_length", "H")],
)


@dataclass(frozen=True)
class VhdxHeader:
    """One of the two headers, as found."""

    offset: int
    valid: bool
    sequence_number: int
    file_write_guid: str
    data_write_guid: str
    log_guid: str
    log_version: int
    version: int
    log_length: int
    log_offset: int
    checksum: str


@dataclass(frozen=True)
class VhdxRegion:
    guid: str
    name: str
    file_offset: int
    length: int
    required: bool


@dataclass(frozen=True)
class VhdxMetadataItem:
    item_id: str
    name: str
    offset: int
    length: int
    is_user: bool
    is_virtual_disk: bool
    is_required: bool


@dataclass(frozen=True)
class VhdxParentLocator:
    locator_type: str
    entries: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class VhdxDetails:
    """The VHDX structures that matter: headers, regions, metadata items and the BAT shape."""

    creator: str
    current_header: int
    headers: tuple[VhdxHeader, ...]
    sequence_number: int
    log_guid: str
    log_offset: int
    log_length: int
    regions: tuple[VhdxRegion, ...]
    second_region_table_matches: bool
    metadata_items: tuple[VhdxMetadataItem, ...]
    block_size: int
    leave_blocks_allocated: bool
    has_parent: bool
    virtual_disk_size: int
    logical_sector_size: int
    physical_sector_size: int
    page83_data: str
    chunk_ratio: int
    bat_offset: int
    bat_entries: int
    #: Count of payload blocks per state name (the whole BAT is always checked, page by page).
    payload_block_states: dict[str, int]
    parent_locator: VhdxParentLocator | None = None


def _guid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=raw)


#: The signature check lives in ``probes``: the registry probes every format without importing its reader.
probe = probes.vhdx


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """Parse and cross-check every VHDX structure QEMU reads; bound every table by the file."""
    ident = read_exact(src, 0, 8 + 512, "VHDX file type identifier")
    if ident[:8] != SIGNATURE:
        raise ImageFormatError("The file is not a VHDX image (no 'vhdxfile' signature).")
    creator = _utf16_until_nul(ident[8:])
    problems: list[str] = []

    headers = tuple(_read_header(src, offset) for offset in HEADER_OFFSETS)
    current = _current_header(headers)
    header = headers[current]
    regions = _RegionMap(src.size)
    _check_log(header, regions, problems)

    table = _read_region_table(src, REGION_TABLE_OFFSETS[0], "region table 1")
    try:
        second = _read_region_table(src, REGION_TABLE_OFFSETS[1], "region table 2")
    except ImageFormatError as err:
        problems.append(f"the second VHDX region table is unusable ({_sentence(err)})")
        second_matches = False
    else:
        second_matches = second == table
        if not second_matches:
            problems.append("the two VHDX region tables differ, so tools would disagree about the file")
    region_list, bat_region, metadata_region = _check_regions(table, regions, problems)

    meta = _read_metadata(src, metadata_region, problems)
    params_raw = meta.read(ITEM_FILE_PARAMETERS, 8)
    block_size = int.from_bytes(params_raw[:4], "little")
    param_flags = int.from_bytes(params_raw[4:8], "little")
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise ImageFormatError(
            f"The VHDX block size {block_size} is not a power of two between 1 MiB and 256 MiB."
        )
    has_parent = bool(param_flags & PARAM_HAS_PARENT)
    fixed = bool(param_flags & PARAM_LEAVE_BLOCKS_ALLOCATED)
    virtual_size = int.from_bytes(meta.read(ITEM_VIRTUAL_DISK_SIZE, 8), "little")
    logical = int.from_bytes(meta.read(ITEM_LOGICAL_SECTOR_SIZE, 4), "little")
    physical = int.from_bytes(meta.read(ITEM_PHYSICAL_SECTOR_SIZE, 4), "little")
    page83 = str(_guid(meta.read(ITEM_PAGE83, 16)))
    if logical not in (512, 4096):
        raise ImageFormatError(f"The VHDX logical sector size {logical} is neither 512 nor 4096.")
    if physical not in (512, 4096):
        problems.append(f"the VHDX physical sector size {physical} is neither 512 nor 4096")
    if virtual_size > MAX_VIRTUAL_SIZE:
        raise ImageFormatError(
            f"The VHDX virtual size {format_size(virtual_size)} exceeds the format's maximum of 64 TiB."
        )
    if virtual_size % logical:
        problems.append(
            f"the VHDX virtual size {virtual_size} is not a multiple of the {logical}-byte logical sector"
        )
    # QEMU counts whole logical sectors (``virtual_disk_size >> logical_sector_size_bits``).
    qemu_size = virtual_size // logical * logical

    references: list[ExternalReference] = []
    locator: VhdxParentLocator | None = None
    if has_parent:
        if ITEM_PARENT_LOCATOR not in meta.items:
            raise ImageFormatError("The VHDX says it has a parent but has no parent locator metadata item.")
        locator = _parent_locator(meta.read(ITEM_PARENT_LOCATOR, None))
        references.append(_parent_reference(locator))

    chunk_ratio = SECTORS_PER_CHUNK * logical // block_size
    data_blocks = -(-qemu_size // block_size)
    if has_parent:
        bat_entries = -(-data_blocks // chunk_ratio) * (chunk_ratio + 1)
    else:
        bat_entries = data_blocks + (data_blocks - 1) // chunk_ratio if data_blocks else 0
    bat_bytes = bat_entries * 8
    if bat_bytes > bat_region.length:
        raise ImageFormatError(
            f"The VHDX BAT needs {bat_entries} entries for a {format_size(qemu_size)} disk but its "
            f"region holds only {bat_region.length // 8}."
        )

    bat = PagedBat(src, bat_region.file_offset, bat_entries)
    shape = _BatShape(src.size, block_size, chunk_ratio, qemu_size, has_parent)
    states = _check_bat(bat, shape, regions, problems)

    details = VhdxDetails(
        creator=creator,
        current_header=current + 1,
        headers=headers,
        sequence_number=header.sequence_number,
        log_guid=header.log_guid,
        log_offset=header.log_offset,
        log_length=header.log_length,
        regions=region_list,
        second_region_table_matches=second_matches,
        metadata_items=meta.described,
        block_size=block_size,
        leave_blocks_allocated=fixed,
        has_parent=has_parent,
        virtual_disk_size=virtual_size,
        logical_sector_size=logical,
        physical_sector_size=physical,
        page83_data=page83,
        chunk_ratio=chunk_ratio,
        bat_offset=bat_region.file_offset,
        bat_entries=bat_entries,
        payload_block_states=states,
        parent_locator=locator,
    )
    guest = None
    if not has_parent:
        guest = VhdxGuest(src, qemu_size, bat, block_size, chunk_ratio)
    return OpenedImage(
        format="vhdx",
        encryption=None,
        virtual_size=qemu_size,
        details=details,
        guest=guest,
        references=references,
        problems=problems,
        subformat="differencing" if has_parent else "fixed" if fixed else "dynamic",
    )


def _sentence(err: Exception) -> str:
    text = str(err).rstrip(".")
    return text[:1].lower() + text[1:]


def _utf16_until_nul(raw: bytes) -> str:
    for index in range(0, len(raw) - 1, 2):
        if raw[index : index + 2] == b"\0\0":
            raw = raw[:index]
            break
    return raw.decode("utf-16-le", errors="replace")


class _RegionMap:
    """Byte ranges already claimed in the file, to refuse overlaps (QEMU's ``vhdx_region_check``)."""

    def __init__(self, file_size: int) -> None:
        self.file_size = file_size
        self._ranges: list[tuple[int, int, str]] = [(0, HEADER_SECTION_SIZE, "the header section")]

    def overlapping(self, start: int, length: int) -> str | None:
        end = start + length
        for other_start, other_end, name in self._ranges:
            if start < other_end and other_start < end:
                return name
        return None

    def claim(self, start: int, length: int, name: str, problems: list[str]) -> None:
        other = self.overlapping(start, length)
        if other is not None:
            problems.append(f"the VHDX {name} (bytes {start}..{start + length}) overlaps {other}")
        if start + length > self.file_size:
            problems.append(
                f"the VHDX {name} (bytes {start}..{start + length}) lies beyond the end of the "
                f"{self.file_size}-byte file"
            )
        self._ranges.append((start, start + length, f"the {name}"))

    def end(self) -> int:
        """Where the last claimed range ends."""
        return max(end for _, end, _ in self._ranges)


def _read_header(src: ByteSource, offset: int) -> VhdxHeader:
    raw = read_exact(src, offset, HEADER_BLOCK, "VHDX header")
    fields = HEADER.unpack(raw)
    valid = (
        fields["signature"] == b"head"
        and crc32c_with_field_zeroed(raw, 4) == fields["checksum"]
        and fields["version"] == 1
    )
    return VhdxHeader(
        offset=offset,
        valid=valid,
        sequence_number=fields["sequence_number"],
        file_write_guid=str(_guid(fields["file_write_guid"])),
        data_write_guid=str(_guid(fields["data_write_guid"])),
        log_guid=str(_guid(fields["log_guid"])),
        log_version=fields["log_version"],
        version=fields["version"],
        log_length=fields["log_length"],
        log_offset=fields["log_offset"],
        checksum=f"{fields['checksum']:08x}",
    )


def _current_header(headers: tuple[VhdxHeader, ...]) -> int:
    """The valid header with the higher sequence number (index 0 or 1), as QEMU picks it."""
    first, second = headers
    if first.valid and second.valid:
        if first.sequence_number > second.sequence_number:
            return 0
        if second.sequence_number > first.sequence_number:
            return 1
        # Disk2VHD writes two identical headers; QEMU accepts that, not two that disagree.
        if dataclasses.replace(first, offset=0) == dataclasses.replace(second, offset=0):
            return 0
        raise ImageFormatError("The two VHDX headers have the same sequence number but different contents.")
    if first.valid:
        return 0
    if second.valid:
        return 1
    raise ImageFormatError("Neither VHDX header is valid (signature 'head', version 1 and CRC-32C).")


def _check_log(header: VhdxHeader, regions: _RegionMap, problems: list[str]) -> None:
    """QEMU's ``vhdx_parse_log`` checks; a log that may hold entries needs replay."""
    if header.log_version != 0:
        raise ImageFormatError(f"The VHDX log version {header.log_version} is not 0.")
    if header.log_offset < MiB or header.log_offset % MiB:
        raise ImageFormatError(
            f"The VHDX log offset {header.log_offset} is not a multiple of 1 MiB past the header."
        )
    if header.log_length % MiB:
        raise ImageFormatError(f"The VHDX log length {header.log_length} is not a multiple of 1 MiB.")
    if header.log_length:
        regions.claim(header.log_offset, header.log_length, "log", problems)
    if header.log_guid != str(uuid.UUID(int=0)) and header.log_length:
        problems.append(
            f"the VHDX log (GUID {header.log_guid}) must be replayed before the image can be read "
            "consistently; open it once read-write in Hyper-V or run `qemu-img check -r all`"
        )


def _read_region_table(
    src: ByteSource, offset: int, name: str
) -> tuple[tuple[uuid.UUID, int, int, int], ...]:
    raw = read_exact(src, offset, REGION_TABLE_SIZE, f"VHDX {name}")
    header = REGION_TABLE_HEADER.unpack(raw)
    if header["signature"] != b"regi":
        raise ImageFormatError(f"The VHDX {name} has no 'regi' signature.")
    if crc32c_with_field_zeroed(raw, 4) != header["checksum"]:
        raise ImageFormatError(f"The VHDX {name} fails its CRC-32C check.")
    count = header["entry_count"]
    if count > MAX_TABLE_ENTRIES:
        raise ImageFormatError(
            f"The VHDX {name} claims {count} entries; at most {MAX_TABLE_ENTRIES} are allowed."
        )
    entries = []
    for index in range(count):
        entry = REGION_ENTRY.unpack(raw, REGION_TABLE_HEADER.size + index * REGION_ENTRY.size)
        entries.append((_guid(entry["guid"]), entry["file_offset"], entry["length"], entry["flags"]))
    return tuple(entries)


def _check_regions(
    table: tuple[tuple[uuid.UUID, int, int, int], ...], regions: _RegionMap, problems: list[str]
) -> tuple[tuple[VhdxRegion, ...], VhdxRegion, VhdxRegion]:
    described: list[VhdxRegion] = []
    found: dict[uuid.UUID, VhdxRegion] = {}
    for guid, offset, length, flags in table:
        name = {REGION_BAT: "BAT", REGION_METADATA: "metadata"}.get(guid, "unknown")
        region = VhdxRegion(str(guid), name, offset, length, bool(flags & REGION_REQUIRED))
        described.append(region)
        if guid in found:
            raise ImageFormatError(f"The VHDX region table lists the {name} region twice.")
        if name == "unknown":
            if region.required:
                problems.append(
                    f"the VHDX requires region {guid}, which no reader knows; it must not be opened"
                )
        else:
            found[guid] = region
            if offset % MiB or length % MiB or length == 0:
                problems.append(f"the VHDX {name} region is not aligned to 1 MiB")
        regions.claim(offset, length, f"{name} region", problems)
    for guid, name in ((REGION_BAT, "BAT"), (REGION_METADATA, "metadata")):
        if guid not in found:
            raise ImageFormatError(f"The VHDX region table has no {name} region.")
    return tuple(described), found[REGION_BAT], found[REGION_METADATA]


class _Metadata:
    """The metadata table and bounded reads of its items."""

    def __init__(self, src: ByteSource, region: VhdxRegion) -> None:
        self.src = src
        self.region = region
        self.items: dict[uuid.UUID, tuple[int, int]] = {}
        self.described: tuple[VhdxMetadataItem, ...] = ()

    def read(self, item: uuid.UUID, length: int | None) -> bytes:
        offset, item_length = self.items[item]
        name = KNOWN_ITEMS[item]
        if length is None:
            length = item_length
        elif item_length < length:
            raise ImageFormatError(
                f"The VHDX {name} metadata item is {item_length} bytes, shorter than {length}."
            )
        return read_exact(self.src, self.region.file_offset + offset, length, f"VHDX {name} metadata item")


def _read_metadata(src: ByteSource, region: VhdxRegion, problems: list[str]) -> _Metadata:
    size = min(METADATA_TABLE_SIZE, region.length)
    raw = read_exact(src, region.file_offset, size, "VHDX metadata table")
    header = METADATA_HEADER.unpack(raw)
    if header["signature"] != b"metadata":
        raise ImageFormatError("The VHDX metadata region has no 'metadata' signature.")
    count = header["entry_count"]
    if count > MAX_TABLE_ENTRIES or METADATA_HEADER.size + count * METADATA_ENTRY.size > size:
        raise ImageFormatError(
            f"The VHDX metadata table claims {count} entries; at most {MAX_TABLE_ENTRIES} fit in it."
        )
    meta = _Metadata(src, region)
    described = []
    for index in range(count):
        entry = METADATA_ENTRY.unpack(raw, METADATA_HEADER.size + index * METADATA_ENTRY.size)
        item = _guid(entry["item_id"])
        offset, length, flags = entry["offset"], entry["length"], entry["flags"]
        name = KNOWN_ITEMS.get(item, "unknown")
        described.append(
            VhdxMetadataItem(
                item_id=str(item),
                name=name,
                offset=offset,
                length=length,
                is_user=bool(flags & 1),
                is_virtual_disk=bool(flags & 2),
                is_required=bool(flags & ITEM_REQUIRED),
            )
        )
        if length and (offset < METADATA_TABLE_SIZE or offset + length > region.length):
            raise ImageFormatError(
                f"The VHDX metadata item {item} ({name}, bytes {offset}..{offset + length}) lies "
                f"outside the {region.length}-byte metadata region."
            )
        if name == "unknown":
            if flags & ITEM_REQUIRED:
                problems.append(f"the VHDX requires metadata item {item}, which no reader knows")
            continue
        if item in meta.items:
            raise ImageFormatError(f"The VHDX metadata table lists the {name} item twice.")
        meta.items[item] = (offset, length)
    for item in REQUIRED_ITEMS:
        if item not in meta.items:
            raise ImageFormatError(f"The VHDX metadata has no {KNOWN_ITEMS[item]} item.")
    meta.described = tuple(described)
    return meta


def _parent_locator(raw: bytes) -> VhdxParentLocator:
    """Decode the parent locator's key/value pairs (UTF-16LE, offsets from the item start)."""
    header = PARENT_LOCATOR_HEADER.unpack(raw)
    count = header["key_value_count"]
    if PARENT_LOCATOR_HEADER.size + count * PARENT_LOCATOR_ENTRY.size > len(raw):
        raise ImageFormatError(f"The VHDX parent locator claims {count} entries, more than its item holds.")
    entries = []
    for index in range(count):
        entry = PARENT_LOCATOR_ENTRY.unpack(
            raw, PARENT_LOCATOR_HEADER.size + index * PARENT_LOCATOR_ENTRY.size
        )
        texts = []
        for offset, length in (
            (entry["key_offset"], entry["key_length"]),
            (entry["value_offset"], entry["value_length"]),
        ):
            if offset + length > len(raw):
                raise ImageFormatError("A VHDX parent locator key or value lies outside its metadata item.")
            texts.append(raw[offset : offset + length].decode("utf-16-le", errors="replace"))
        entries.append((texts[0], texts[1]))
    return VhdxParentLocator(str(_guid(header["locator_type"])), tuple(entries))


def _parent_reference(locator: VhdxParentLocator) -> ExternalReference:
    values = dict(locator.entries)
    target = next((values[key] for key in PARENT_PATH_KEYS if values.get(key)), "")
    linkage = values.get("parent_linkage", "unknown")
    if target:
        detail = f"VHDX differencing disk; {describe_external_name(target)}; parent_linkage {linkage}"
    else:
        target = f"the VHDX with data-write GUID {linkage}"
        detail = "VHDX differencing disk without a parent path"
    return ExternalReference("parent", target, detail)


class PagedBat:
    """The BAT, read ``BAT_PAGE_ENTRIES`` entries at a time: never whole (see the NOTE above)."""

    def __init__(self, src: ByteSource, offset: int, entries: int) -> None:
        self._src = src
        self._offset = offset
        self.entries = entries
        self._cache: LruCache[int, array[int]] = LruCache(BAT_CACHED_PAGES)

    def read_page(self, number: int) -> array[int]:
        """Entries ``number * BAT_PAGE_ENTRIES`` onwards (fewer in the last page), read from the file."""
        first = number * BAT_PAGE_ENTRIES
        count = min(BAT_PAGE_ENTRIES, self.entries - first)
        if count <= 0:
            raise ImageFormatError(f"The VHDX BAT has no page {number}.")
        page = array("Q", read_exact(self._src, self._offset + 8 * first, 8 * count, "VHDX BAT"))
        if page.itemsize != 8:
            raise AssertionError("array('Q') must hold 64-bit entries")
        return page

    def pages(self) -> Iterator[tuple[int, array[int]]]:
        """(index of the first entry, entries) for every page, in order; one page in memory at a time."""
        for number in range(-(-self.entries // BAT_PAGE_ENTRIES)):
            yield number * BAT_PAGE_ENTRIES, self.read_page(number)

    def entry(self, index: int) -> int:
        """Entry ``index`` (0 beyond the table), through the cache of recently read pages."""
        if not 0 <= index < self.entries:
            return 0
        number, within = divmod(index, BAT_PAGE_ENTRIES)
        return self._cache.get_or_load(number, self.read_page)[within]


@dataclass(frozen=True)
class _BatShape:
    """What every BAT entry is judged against."""

    file_size: int
    block_size: int
    chunk_ratio: int
    #: QEMU's virtual size (whole logical sectors).
    virtual_size: int
    has_parent: bool


def _check_bat(bat: PagedBat, shape: _BatShape, regions: _RegionMap, problems: list[str]) -> dict[str, int]:
    """QEMU's ``vhdx_check_bat_entries`` and more: states, bounds and overlaps of every entry.

    Returns how many payload blocks are in each state. Only the first bad entry of each
    kind is described. The BAT is streamed page by page; a sound page is confirmed by
    ``_quick_check`` at C speed, and only one that fails it is walked entry by entry to name
    the culprit.
    """
    counts: dict[str, int] = {}
    seen: set[str] = set()
    regions_end = regions.end()

    def report(kind: str, message: str) -> None:
        if kind not in seen:
            seen.add(kind)
            problems.append(message)

    for first, page in bat.pages():
        page_counts = _quick_check(page, first, shape, regions_end)
        if page_counts is None:
            page_counts = _walk_page(page, first, shape, regions, report)
        for name, count in page_counts.items():
            counts[name] = counts.get(name, 0) + count
    return counts


def _walk_page(
    page: array[int], first: int, shape: _BatShape, regions: _RegionMap, report: Callable[[str, str], None]
) -> dict[str, int]:
    """The entry-by-entry check of one page (entries ``first`` onwards); its payload state counts."""
    counts: dict[str, int] = {}
    file_size, block_size, chunk_ratio = shape.file_size, shape.block_size, shape.chunk_ratio
    period = chunk_ratio + 1
    for index, entry in enumerate(page, first):
        state = entry & BAT_STATE_MASK
        offset = entry & BAT_OFFSET_MASK
        if index % period == chunk_ratio:
            if state not in BITMAP_STATES:
                report("bitmap-state", f"VHDX sector bitmap entry {index} has the invalid state {state}")
            elif state == FULLY_PRESENT and (offset < HEADER_SECTION_SIZE or offset + MiB > file_size):
                report("bitmap-offset", f"VHDX sector bitmap entry {index} points outside the file")
            continue
        block = index - index // period
        name = PAYLOAD_STATES.get(state)
        if name is None:
            report("state", f"VHDX BAT entry {index} has the invalid payload block state {state}")
            continue
        counts[name] = counts.get(name, 0) + 1
        if state == PARTIALLY_PRESENT and not shape.has_parent:
            report(
                "partial",
                f"VHDX BAT entry {index} is 'partially present', which only a differencing disk may use",
            )
        if state not in (FULLY_PRESENT, PARTIALLY_PRESENT):
            continue
        # The last block may be partial (QEMU once wrote such files and still accepts them).
        length = min(block_size, max(0, shape.virtual_size - block * block_size))
        if offset + length > file_size:
            report(
                "beyond",
                f"VHDX BAT entry {index} points to offset {offset}, whose block lies beyond the end of "
                f"the {file_size}-byte file",
            )
            continue
        other = regions.overlapping(offset, block_size)
        if other is not None:
            report("overlap", f"VHDX BAT entry {index} points to offset {offset}, inside {other}")
    return counts


#: Maps an entry's low byte to its state (bits 0-2), and to 1 when it points at data (6 or 7).
_STATE_OF_BYTE = bytes(b & BAT_STATE_MASK for b in range(256))
_HAS_DATA = bytes(1 if b & BAT_STATE_MASK in (FULLY_PRESENT, PARTIALLY_PRESENT) else 0 for b in range(256))


def _quick_check(page: array[int], first: int, shape: _BatShape, regions_end: int) -> dict[str, int] | None:
    """Payload state counts of one page (entries ``first`` onwards) when every entry is
    certainly valid, else None.

    Works on the entries' low bytes (``bytes[0::8]``, the state lives in bits 0-2) and on
    ``max``/``min`` over the data-bearing entries picked by ``itertools.compress``, so a
    4-million-entry BAT costs milliseconds. Sufficient, not necessary: every data block
    lies wholly inside the file and after every region, no state is invalid.
    """
    raw = page.tobytes()
    chunk_ratio = shape.chunk_ratio
    period = chunk_ratio + 1
    # The page's first sector bitmap entry: global indices chunk_ratio, chunk_ratio + period ...
    first_bitmap = (chunk_ratio - first) % period
    states = raw[0::8].translate(_STATE_OF_BYTE)
    bitmap_states = raw[8 * first_bitmap :: 8 * period].translate(_STATE_OF_BYTE)
    bitmap_bad = len(bitmap_states) - bitmap_states.count(NOT_PRESENT) - bitmap_states.count(FULLY_PRESENT)
    payload = {state: states.count(state) - bitmap_states.count(state) for state in range(8)}
    if bitmap_bad or payload[4] or (payload[PARTIALLY_PRESENT] and not shape.has_parent):
        return None
    selector = raw[0::8].translate(_HAS_DATA)
    if selector.count(1):
        # Two streaming passes: no list of millions of ints.
        highest = max(itertools.compress(page, selector)) & BAT_OFFSET_MASK
        lowest = min(itertools.compress(page, selector)) & BAT_OFFSET_MASK
        if highest + shape.block_size > shape.file_size or lowest < regions_end:
            return None
    counts: dict[str, int] = {}
    for state, count in payload.items():
        if count:
            name = PAYLOAD_STATES[state]
            counts[name] = counts.get(name, 0) + count
    return counts


class VhdxGuest(MappedGuestSource):
    """Guest bytes through the BAT: fully present blocks from the file, other states as zeros."""

    def __init__(
        self, image: ByteSource, virtual_size: int, bat: PagedBat, block_size: int, chunk_ratio: int
    ) -> None:
        super().__init__(image, virtual_size, "VHDX")
        self._bat = bat
        self._block_size = block_size
        self._chunk_ratio = chunk_ratio

    def map_run(self, offset: int, max_length: int) -> GuestRun:
        block, within = divmod(offset, self._block_size)
        length = min(max_length, self._block_size - within)
        index = block + block // self._chunk_ratio
        entry = self._bat.entry(index)
        state = entry & BAT_STATE_MASK
        if state == FULLY_PRESENT:
            return GuestRun(length, host_offset=(entry & BAT_OFFSET_MASK) + within)
        if state in PAYLOAD_STATES and state != PARTIALLY_PRESENT:
            return GuestRun(length)
        # QEMU fails such reads with EIO; so do we.
        raise ImageFormatError(f"The VHDX block at guest offset {offset} has the unreadable state {state}.")
