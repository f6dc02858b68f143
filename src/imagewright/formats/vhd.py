"""VHD (Virtual PC / Hyper-V generation 1; qemu's "vpc" driver): footer, dynamic header, BAT.

Sources: Microsoft "Virtual Hard Disk Image Format Specification" 1.0 (hard disk footer,
dynamic disk header, BAT, parent locators) and QEMU 7.2 ``block/vpc.c`` (``vpc_open``,
``get_image_offset``, ``vpc_co_preadv``), whose behaviour this reader reproduces for the
virtual size and the guest bytes. All integers are big-endian.

Layouts::

    footer (512 B; at EOF-512, and a copy at 0 for dynamic/differencing disks)
      0 cookie 'conectix'   8 features   12 format version   16 data offset u64
     24 timestamp (s since 2000-01-01)   28 creator app (4 chars)   32 creator version
     36 creator host OS     40 original size u64   48 current size u64
     56 cylinders u16   58 heads u8   59 sectors/track u8   60 disk type (2/3/4)
     64 checksum (ones' complement of the byte sum, this field as zero)   68 unique id (16)
     84 saved state u8
    dynamic disk header (1024 B at the footer's data offset)
      0 'cxsparse'   8 data offset u64 (unused)   16 BAT offset u64   24 version
     28 max BAT entries   32 block size   36 checksum   40 parent unique id (16)
     56 parent timestamp  64 parent unicode name (512 B, UTF-16BE)   576 8 parent locators
    parent locator (24 B): platform code, data space, data length, reserved, data offset u64
    BAT: u32 sector numbers, 0xFFFFFFFF = unallocated; a block is a sector bitmap padded
         to 512 B, then block-size bytes of data.

Which footer, and which size (QEMU 7.2): QEMU takes the footer at offset 0 when it carries
the cookie (dynamic path) and otherwise the one at EOF-512 (fixed path). The virtual size is
the CHS product cylinders x heads x sectors x 512, except for creators that size disks by
``current_size`` ('win ' Hyper-V, 'qem2' qemu-img with force_size, 'd2v ' Disk2vhd, 'CTXS'
XenConverter, 'tap\\0' XenServer) and for the maximal geometry 65535/16/255, where QEMU uses
``current_size`` so as not to truncate. QEMU reads every sector of an allocated block from
the file and ignores the sector bitmap (so does this reader); unallocated blocks read as
zeros. QEMU opens a differencing disk like a dynamic one, without its parent.

NOTE (safety): a differencing disk names its parent (by name and by up to eight platform
locators); that reference is refused by the policy, and its guest view is not offered
because its unallocated blocks live in the parent. The BAT is bounded by
``Limits.max_table_bytes`` and every allocated block must lie inside the file, clear of the
footer copy, the dynamic header and the BAT.

NOTE (safety): QEMU 7.2's ``vpc`` driver never opens a parent — it reads a differencing disk
as if it had none (``vpc_open`` knows no parent locators) — but Hyper-V and Virtual PC do,
so the reference is refused all the same (``tests/formats/test_qemu_reading.py`` checks
both). QEMU's probe sees only a cookie at offset 0, so it calls a fixed VHD raw: the same
guest bytes plus the footer, which ``registry.probe_conflicts`` accepts.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from array import array
from dataclasses import dataclass
from typing import Any

from imagewright.binary import ByteSource, Layout, PrefixExhaustedError, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats import probes
from imagewright.formats.base import ExternalReference, Limits, OpenedImage
from imagewright.formats.block_map import sort_block_map
from imagewright.formats.external_names import describe_external_name
from imagewright.formats.mapped_guest import GuestRun, MappedGuestSource
from imagewright.units import format_size

COOKIE = probes.VHD_COOKIE
DYNAMIC_COOKIE = b"cxsparse"
FOOTER_SIZE = probes.VHD_FOOTER_SIZE
DYNAMIC_HEADER_SIZE = 1024
SECTOR = 512
UNALLOCATED = 0xFFFFFFFF
NO_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF

DISK_TYPES = {2: "fixed", 3: "dynamic", 4: "differencing"}
FIXED, DYNAMIC, DIFFERENCING = probes.VHD_FIXED, 3, 4

#: QEMU refuses disks larger than 2040 GiB (``VHD_MAX_SECTORS``).
MAX_SECTORS = 0xFF000000
#: The largest CHS geometry; QEMU then trusts ``current_size`` instead.
MAX_GEOMETRY_SECTORS = 65535 * 16 * 255
#: Creators whose disks QEMU sizes by ``current_size`` rather than by CHS geometry.
CURRENT_SIZE_CREATORS = (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0")
#: No VHD writer uses blocks above this; the spec's default is 2 MiB.
MAX_BLOCK_SIZE = 256 * 1024 * 1024
#: Parent locator data longer than this is not decoded (a path is far shorter).
MAX_LOCATOR_BYTES = 64 * 1024
#: Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC).
VHD_EPOCH = 946684800

FOOTER = Layout(
    "VHD footer",
    ">",
    [
        ("cookie", "8s"),
        ("features", "I"),
        ("format_version", "I"),
        ("data_offset", "Q"),
        ("timestamp", "I"),
        ("creator_application", "4s"),
        ("creator_version", "I"),
        ("creator_host_os", "4s"),
        ("original_size", "Q"),
        ("current_size", "Q"),
        ("cylinders", "H"),
        ("heads", "B"),
        ("sectors_per_track", "B"),
        ("disk_type", "I"),
        ("checksum", "I"),
        ("unique_id", "16s"),
        ("saved_state", "B"),
        ("reserved", "427x"),
    ],
)

DYNAMIC_HEADER = Layout(
    "VHD dynamic disk header",
    ">",
    [
        ("cookie", "8s"),
        ("data_offset", "Q"),
        ("table_offset", "Q"),
        ("header_version", "I"),
        ("max_table_entries", "I"),
        ("block_size", "I"),
        ("checksum", "I"),
        ("parent_unique_id", "16s"),
        ("parent_timestamp", "I"),
        ("reserved1", "4x"),
        ("parent_unicode_name", "512s"),
        ("parent_locators", "192s"),
        ("reserved2", "256x"),
    ],
)

PARENT_LOCATOR = Layout(
    "VHD parent locator entry",
    ">",
    [
        ("platform_code", "4s"),
        ("data_space", "I"),
        ("data_length", "I"),
        ("reserved", "4x"),
        ("data_offset", "Q"),
    ],
)

#: Platform codes and how their data is encoded (VHD spec, "Parent Locator Entries").
LOCATOR_ENCODINGS = {
    b"W2ku": "utf-16-le",  # absolute Windows path, Unicode
    b"W2ru": "utf-16-le",  # relative Windows path, Unicode
    b"Wi2k": "latin-1",  # deprecated: absolute Windows path, ASCII
    b"Wi2r": "latin-1",  # deprecated: relative Windows path, ASCII
    b"MacX": "utf-8",  # file:// URL
}


@dataclass(frozen=True)
class VhdParentLocator:
    """One used parent locator entry of a differencing disk."""

    platform_code: str
    data_space: int
    data_length: int
    data_offset: int
    #: The decoded path or URL; None when the data could not be read (see ``problem``).
    path: str | None
    problem: str | None = None


@dataclass(frozen=True)
class VhdDynamicHeader:
    """The dynamic disk header and what its BAT says."""

    offset: int
    data_offset: int
    table_offset: int
    header_version: str
    max_table_entries: int
    block_size: int
    bitmap_size: int
    checksum: str
    checksum_valid: bool
    parent_unique_id: str
    parent_timestamp: int
    parent_unicode_name: str
    parent_locators: tuple[VhdParentLocator, ...]
    #: Allocated BAT entries; None when the BAT was not read (too large).
    allocated_blocks: int | None


@dataclass(frozen=True)
class VhdDetails:
    """The VHD footer (the one QEMU uses) and, for sparse disks, the dynamic header."""

    footer_offset: int
    features: int
    format_version: str
    data_offset: int
    timestamp: int
    created: str
    creator_application: str
    creator_version: str
    creator_host_os: str
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors_per_track: int
    chs_size: int
    #: How QEMU sizes this disk: "chs" (geometry product) or "current_size".
    size_source: str
    disk_type: int
    checksum: str
    checksum_valid: bool
    unique_id: str
    saved_state: bool
    #: Whether the footer copy at the start equals the one at the end; None if not applicable.
    footer_copy_matches: bool | None
    dynamic: VhdDynamicHeader | None = None


def vhd_checksum(data: bytes, field_offset: int) -> int:
    """Ones' complement of the byte sum with the 4-byte checksum field counted as zero."""
    total = sum(data) - sum(data[field_offset : field_offset + 4])
    return ~total & 0xFFFFFFFF


#: The signature check lives in ``probes``: the registry probes every format without importing its reader.
probe = probes.vhd


def _text(code: bytes) -> str:
    """A four-character code as text (creator app, host OS, platform code)."""
    return code.decode("latin-1").rstrip("\0")


def _version(value: int) -> str:
    return f"{value >> 16}.{value & 0xFFFF}"


def _read_tail_footer(src: ByteSource) -> bytes | None:
    """The 512 bytes at EOF-512 when they carry the cookie; None otherwise or out of reach."""
    if src.size < FOOTER_SIZE:
        return None
    try:
        tail = read_exact(src, src.size - FOOTER_SIZE, FOOTER_SIZE, "VHD footer")
    except PrefixExhaustedError:
        return None
    return tail if tail[:8] == COOKIE else None


def qemu_virtual_size(footer: dict[str, Any]) -> tuple[int, str]:
    """The virtual size QEMU 7.2 gives a VHD, and whether it came from CHS or current_size."""
    chs_sectors: int = footer["cylinders"] * footer["heads"] * footer["sectors_per_track"]
    current_size: int = footer["current_size"]
    if footer["creator_application"] in CURRENT_SIZE_CREATORS or chs_sectors == MAX_GEOMETRY_SECTORS:
        return (current_size // SECTOR) * SECTOR, "current_size"
    return chs_sectors * SECTOR, "chs"


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """Parse the footer(s), the dynamic header and the BAT, and validate them against the file."""
    if src.size < FOOTER_SIZE:
        raise ImageFormatError(f"The file is {src.size} bytes long, too short for a 512-byte VHD footer.")
    problems: list[str] = []
    first = read_exact(src, 0, FOOTER_SIZE, "VHD footer")
    tail = _read_tail_footer(src)
    if first[:8] == COOKIE:
        # QEMU's dynamic path: the copy at offset 0 is the footer it uses.
        footer_bytes, footer_offset = first, 0
        if tail is None:
            if src.size > FOOTER_SIZE:
                problems.append(
                    "the VHD has a footer copy at its start but no footer at its end; the file is "
                    "truncated or damaged"
                )
            copy_matches: bool | None = None
        else:
            copy_matches = tail == first
            if not copy_matches:
                problems.append(
                    "the VHD footer at the start of the file differs from the footer at its end, so "
                    "tools would disagree about the disk"
                )
    elif tail is not None:
        footer_bytes, footer_offset, copy_matches = tail, src.size - FOOTER_SIZE, None
    else:
        raise ImageFormatError("The file has no VHD footer ('conectix') at its start or its end.")

    footer = FOOTER.unpack(footer_bytes)
    checksum_valid = vhd_checksum(footer_bytes, 64) == footer["checksum"]
    if not checksum_valid:
        problems.append(
            f"the VHD footer checksum is wrong (stored 0x{footer['checksum']:08x}, computed "
            f"0x{vhd_checksum(footer_bytes, 64):08x}); QEMU refuses such a disk"
        )
    disk_type = footer["disk_type"]
    if disk_type not in DISK_TYPES:
        raise ImageFormatError(
            f"The VHD disk type {disk_type} is not fixed (2), dynamic (3) or differencing (4)."
        )
    if footer_offset == 0 and disk_type == FIXED:
        raise ImageFormatError(
            "The VHD footer at the start of the file says 'fixed', but a fixed disk keeps its "
            "footer only at the end."
        )
    if footer_offset != 0 and disk_type != FIXED:
        raise ImageFormatError(
            f"The VHD footer says '{DISK_TYPES[disk_type]}' but the file has no footer copy at its start."
        )

    virtual_size, size_source = qemu_virtual_size(footer)
    if virtual_size > MAX_SECTORS * SECTOR:
        problems.append(
            f"the VHD virtual size {format_size(virtual_size)} exceeds the format's maximum of 2040 GiB"
        )
    chs = footer["cylinders"] * footer["heads"] * footer["sectors_per_track"] * SECTOR
    timestamp = footer["timestamp"]
    details = VhdDetails(
        footer_offset=footer_offset,
        features=footer["features"],
        format_version=_version(footer["format_version"]),
        data_offset=footer["data_offset"],
        timestamp=timestamp,
        created=datetime.datetime.fromtimestamp(VHD_EPOCH + timestamp, datetime.UTC).isoformat(),
        creator_application=_text(footer["creator_application"]),
        creator_version=_version(footer["creator_version"]),
        creator_host_os=_text(footer["creator_host_os"]),
        original_size=footer["original_size"],
        current_size=footer["current_size"],
        cylinders=footer["cylinders"],
        heads=footer["heads"],
        sectors_per_track=footer["sectors_per_track"],
        chs_size=chs,
        size_source=size_source,
        disk_type=disk_type,
        checksum=f"{footer['checksum']:08x}",
        checksum_valid=checksum_valid,
        unique_id=str(uuid.UUID(bytes=footer["unique_id"])),
        saved_state=bool(footer["saved_state"]),
        footer_copy_matches=copy_matches,
    )

    if disk_type == FIXED:
        data_end = src.size - FOOTER_SIZE
        if virtual_size > data_end:
            problems.append(
                f"the fixed VHD claims {virtual_size} bytes of data but the file holds only {data_end}"
            )
        return OpenedImage(
            format="vpc",
            encryption=None,
            virtual_size=virtual_size,
            details=details,
            guest=FixedVhdGuest(src, virtual_size, data_end),
            problems=problems,
            subformat="fixed",
        )

    dynamic, bat = _open_dynamic(src, footer["data_offset"], virtual_size, limits, problems)
    references: list[ExternalReference] = []
    guest: ByteSource | None = None
    if disk_type == DIFFERENCING:
        references.append(_parent_reference(dynamic))
    elif bat is not None:
        guest = DynamicVhdGuest(src, virtual_size, bat, dynamic.block_size, dynamic.bitmap_size)
    return OpenedImage(
        format="vpc",
        encryption=None,
        virtual_size=virtual_size,
        details=dataclasses.replace(details, dynamic=dynamic),
        guest=guest,
        references=references,
        problems=problems,
        subformat=DISK_TYPES[disk_type],
    )


def _open_dynamic(
    src: ByteSource, header_offset: int, virtual_size: int, limits: Limits, problems: list[str]
) -> tuple[VhdDynamicHeader, array[int] | None]:
    """Read and check the dynamic header and its BAT (QEMU's dynamic path of ``vpc_open``)."""
    if header_offset < FOOTER_SIZE or header_offset > src.size - DYNAMIC_HEADER_SIZE:
        raise ImageFormatError(
            f"The VHD dynamic header offset {header_offset} lies outside the {src.size}-byte file."
        )
    raw = read_exact(src, header_offset, DYNAMIC_HEADER_SIZE, "VHD dynamic disk header")
    header = DYNAMIC_HEADER.unpack(raw)
    if header["cookie"] != DYNAMIC_COOKIE:
        raise ImageFormatError(
            f"The VHD dynamic disk header at offset {header_offset} has no 'cxsparse' cookie."
        )
    checksum_valid = vhd_checksum(raw, 36) == header["checksum"]
    if not checksum_valid:
        problems.append("the VHD dynamic disk header checksum is wrong")
    if header["header_version"] != 0x00010000:
        problems.append(
            f"the VHD dynamic disk header version {_version(header['header_version'])} is not 1.0"
        )

    block_size = header["block_size"]
    if block_size < SECTOR or block_size & (block_size - 1):
        raise ImageFormatError(
            f"The VHD block size {block_size} is not a power of two of at least 512 bytes."
        )
    if block_size > MAX_BLOCK_SIZE:
        problems.append(
            f"the VHD block size {format_size(block_size)} is larger than the {format_size(MAX_BLOCK_SIZE)} "
            "any VHD writer uses"
        )
    bitmap_size = ((block_size // (8 * SECTOR)) + SECTOR - 1) // SECTOR * SECTOR
    entries = header["max_table_entries"]
    if entries * block_size < virtual_size:
        raise ImageFormatError(
            f"The VHD BAT has {entries} entries of {format_size(block_size)}, too few to cover the "
            f"{format_size(virtual_size)} disk."
        )
    table_offset = header["table_offset"]
    table_bytes = entries * 4
    locators = tuple(_parent_locators(src, header["parent_locators"]))
    bat: array[int] | None = None
    allocated: int | None = None
    if table_bytes > limits.max_table_bytes:
        problems.append(
            f"the VHD BAT has {entries} entries ({format_size(table_bytes)}), more than the "
            f"{format_size(limits.max_table_bytes)} allowed for a metadata table"
        )
    elif table_offset + table_bytes > src.size:
        raise ImageFormatError(
            f"The VHD BAT (bytes {table_offset}..{table_offset + table_bytes}) lies beyond the end of "
            f"the {src.size}-byte file."
        )
    else:
        bat = array("I", read_exact(src, table_offset, table_bytes, "VHD BAT"))
        if bat.itemsize != 4:
            raise AssertionError("array('I') must hold 32-bit entries")
        bat.byteswap()  # big-endian on disk; every supported host is little-endian
        allocated = _check_bat(
            bat,
            file_size=src.size,
            block_size=block_size,
            bitmap_size=bitmap_size,
            metadata=((0, FOOTER_SIZE), (header_offset, DYNAMIC_HEADER_SIZE), (table_offset, table_bytes)),
            problems=problems,
        )

    dynamic = VhdDynamicHeader(
        offset=header_offset,
        data_offset=header["data_offset"],
        table_offset=table_offset,
        header_version=_version(header["header_version"]),
        max_table_entries=entries,
        block_size=block_size,
        bitmap_size=bitmap_size,
        checksum=f"{header['checksum']:08x}",
        checksum_valid=checksum_valid,
        parent_unique_id=str(uuid.UUID(bytes=header["parent_unique_id"])),
        parent_timestamp=header["parent_timestamp"],
        parent_unicode_name=_utf16_name(header["parent_unicode_name"], "utf-16-be"),
        parent_locators=locators,
        allocated_blocks=allocated,
    )
    return dynamic, bat


def _check_bat(
    bat: array[int],
    *,
    file_size: int,
    block_size: int,
    bitmap_size: int,
    metadata: tuple[tuple[int, int], ...],
    problems: list[str],
) -> int:
    """Every allocated block (bitmap + data) must lie inside the file and clear of the metadata.

    QEMU refuses an image whose blocks reach past the end ("The image has been truncated").
    Returns the number of allocated entries. Only the first bad entry is described.
    """
    span = bitmap_size + block_size
    allocated = sort_block_map(bat, (UNALLOCATED,)).others
    if not allocated:
        return 0
    unallocated = len(bat) - len(allocated)
    # Quick and sufficient: every block lies inside the file and after all the metadata.
    sectors = [bat[index] for index in allocated]
    highest = max(sectors) * SECTOR
    lowest = min(sectors) * SECTOR
    if highest + span <= file_size and lowest >= max(start + length for start, length in metadata):
        return len(bat) - unallocated
    beyond: int | None = None
    overlapping: int | None = None
    last_start = file_size - span
    for index, sector in enumerate(bat):
        if sector == UNALLOCATED:
            continue
        start = sector * SECTOR
        if start > last_start and beyond is None:
            beyond = index
        if overlapping is None:
            for meta_start, meta_length in metadata:
                if start < meta_start + meta_length and meta_start < start + span:
                    overlapping = index
        if beyond is not None and overlapping is not None:
            break
    if beyond is not None:
        problems.append(
            f"VHD BAT entry {beyond} points to sector {bat[beyond]}, whose block lies beyond the end of "
            f"the {file_size}-byte file"
        )
    if overlapping is not None:
        problems.append(
            f"VHD BAT entry {overlapping} points to sector {bat[overlapping]}, whose block overlaps the "
            "footer, the dynamic header or the BAT"
        )
    return len(bat) - unallocated


def _utf16_name(raw: bytes, encoding: str) -> str:
    """A NUL-terminated UTF-16 name; undecodable units become U+FFFD."""
    for index in range(0, len(raw) - 1, 2):
        if raw[index : index + 2] == b"\0\0":
            raw = raw[:index]
            break
    return raw.decode(encoding, errors="replace")


def _parent_locators(src: ByteSource, table: bytes) -> list[VhdParentLocator]:
    locators = []
    for index in range(8):
        entry = PARENT_LOCATOR.unpack(table, index * PARENT_LOCATOR.size)
        code = entry["platform_code"]
        if code == b"\0\0\0\0":
            continue
        length, offset = entry["data_length"], entry["data_offset"]
        path: str | None = None
        problem: str | None = None
        encoding = LOCATOR_ENCODINGS.get(code)
        if encoding is None:
            problem = f"platform code {_text(code)!r} is not a path this reader decodes"
        elif length > MAX_LOCATOR_BYTES:
            problem = f"its data is {length} bytes long, more than a path needs"
        elif offset + length > src.size:
            problem = "its data lies beyond the end of the file"
        else:
            data = src.pread(offset, length)
            if encoding == "utf-16-le":
                path = _utf16_name(data, encoding)
            else:
                path = data.split(b"\0", 1)[0].decode(encoding, errors="replace")
        locators.append(
            VhdParentLocator(
                platform_code=_text(code),
                data_space=entry["data_space"],
                data_length=length,
                data_offset=offset,
                path=path,
                problem=problem,
            )
        )
    return locators


def _parent_reference(dynamic: VhdDynamicHeader) -> ExternalReference:
    """The parent a differencing disk asks for: its best locator path, else its name."""
    preferred = {"W2ru": 0, "W2ku": 1, "MacX": 2, "Wi2r": 3, "Wi2k": 4}
    paths = sorted(
        (loc for loc in dynamic.parent_locators if loc.path),
        key=lambda loc: preferred.get(loc.platform_code, 9),
    )
    target = paths[0].path if paths else dynamic.parent_unicode_name
    target = target or f"the disk with unique id {dynamic.parent_unique_id}"
    where = describe_external_name(target) if paths or dynamic.parent_unicode_name else "an unnamed disk"
    detail = f"VHD differencing disk; {where}; parent unique id {dynamic.parent_unique_id}"
    if len(paths) > 1:
        detail += f"; {len(paths)} locators"
    return ExternalReference("parent", target, detail)


class FixedVhdGuest(MappedGuestSource):
    """A fixed VHD's guest bytes: the file up to its footer (zeros past a short file)."""

    def __init__(self, image: ByteSource, virtual_size: int, data_end: int) -> None:
        super().__init__(image, virtual_size, "fixed VHD")
        self._data_end = data_end

    def map_run(self, offset: int, max_length: int) -> GuestRun:
        if offset < self._data_end:
            return GuestRun(min(max_length, self._data_end - offset), host_offset=offset)
        return GuestRun(max_length)


class DynamicVhdGuest(MappedGuestSource):
    """A dynamic VHD's guest bytes through the BAT, as QEMU reads them (bitmap ignored)."""

    def __init__(
        self, image: ByteSource, virtual_size: int, bat: array[int], block_size: int, bitmap_size: int
    ) -> None:
        super().__init__(image, virtual_size, "dynamic VHD")
        self._bat = bat
        self._block_size = block_size
        self._bitmap_size = bitmap_size

    def map_run(self, offset: int, max_length: int) -> GuestRun:
        index, within = divmod(offset, self._block_size)
        length = min(max_length, self._block_size - within)
        sector = self._bat[index] if index < len(self._bat) else UNALLOCATED
        if sector == UNALLOCATED:
            return GuestRun(length)
        return GuestRun(length, host_offset=sector * SECTOR + self._bitmap_size + within)
