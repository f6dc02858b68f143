"""VDI (VirtualBox): header, block map and guest view.

Sources: QEMU 7.2 ``block/vdi.c`` (``vdi_open``, ``vdi_co_preadv``, ``vdi_co_check``) and
VirtualBox ``VDICore.h`` (``VDIIMAGETYPE``: 1 normal, 2 fixed, 3 undo, 4 diff). All integers
are little-endian; UUIDs are VirtualBox ``RTUUID``s, whose first three fields are
little-endian (QEMU byte-swaps them on load). Header (512 bytes)::

    0x000 text banner (64)      0x040 signature 0xBEDA107F   0x044 version (0x00010001)
    0x048 header size           0x04C image type             0x050 image flags
    0x054 description (256)     0x154 block map offset       0x158 data offset
    0x15C cylinders/heads/sectors (legacy geometry)          0x168 sector size (512)
    0x170 disk size u64         0x178 block size (1 MiB)     0x17C block extra
    0x180 blocks in image       0x184 blocks allocated
    0x188 UUIDs: image, last snapshot, link, parent (16 each)

Block map: one u32 per block; 0xFFFFFFFF never allocated and 0xFFFFFFFE discarded both read
as zeros; any other value is a block index into the data area
(``data offset + index x block size``).

NOTE (safety): an undo or diff image reads its unallocated blocks from a parent image named
by its link/parent UUIDs; such references are refused by the policy (QEMU refuses non-null
link or parent UUIDs too) and no guest view is offered for them. The block map is bounded
by ``Limits.max_table_bytes`` and QEMU's own cap, and every allocated entry must point
inside the file. (QEMU 7.2's ``vdi_open`` refuses diff and undo images; VirtualBox opens
their parents.)
"""

from __future__ import annotations

import uuid
from array import array
from dataclasses import dataclass

from imagewright.binary import ByteSource, Layout, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats import probes
from imagewright.formats.base import ExternalReference, Limits, OpenedImage
from imagewright.formats.block_map import sort_block_map
from imagewright.formats.mapped_guest import GuestRun, MappedGuestSource
from imagewright.units import format_size

SIGNATURE = probes.VDI_SIGNATURE
VERSION_1_1 = 0x00010001
HEADER_SIZE = probes.VDI_HEADER_SIZE
SECTOR = 512
#: The only block size QEMU accepts (``DEFAULT_CLUSTER_SIZE``).
QEMU_BLOCK_SIZE = 1024 * 1024
UNALLOCATED = 0xFFFFFFFF
DISCARDED = 0xFFFFFFFE
#: QEMU 7.2 ``VDI_BLOCKS_IN_IMAGE_MAX``: the map (rounded to a sector) must fit an int.
QEMU_MAX_BLOCKS = (2**31 - SECTOR) // 4
QEMU_MAX_DISK_SIZE = QEMU_MAX_BLOCKS * QEMU_BLOCK_SIZE
#: Header sizes VirtualBox writes for version 1.1 (0x180 without, 0x190 with LCHS geometry).
HEADER_SIZES = range(0x180, 0x191)
#: Other block sizes are only plausible within these bounds (VirtualBox never writes them).
MIN_BLOCK_SIZE = SECTOR
MAX_BLOCK_SIZE = 256 * 1024 * 1024

IMAGE_TYPES = {1: "normal", 2: "fixed", 3: "undo", 4: "diff"}
UNDO, DIFF = 3, 4
NULL_UUID = bytes(16)

HEADER = Layout(
    "VDI header",
    "<",
    [
        ("text", "64s"),
        ("signature", "I"),
        ("version", "I"),
        ("header_size", "I"),
        ("image_type", "I"),
        ("image_flags", "I"),
        ("description", "256s"),
        ("offset_bmap", "I"),
        ("offset_data", "I"),
        ("cylinders", "I"),
        ("heads", "I"),
        ("sectors", "I"),
        ("sector_size", "I"),
        ("unused1", "4x"),
        ("disk_size", "Q"),
        ("block_size", "I"),
        ("block_extra", "I"),
        ("blocks_in_image", "I"),
        ("blocks_allocated", "I"),
        ("uuid_image", "16s"),
        ("uuid_last_snap", "16s"),
        ("uuid_link", "16s"),
        ("uuid_parent", "16s"),
        ("unused2", "56x"),
    ],
)


@dataclass(frozen=True)
class VdiDetails:
    """The VDI header fields and what the block map holds."""

    text: str
    version: str
    header_size: int
    image_type: int
    image_flags: int
    description: str
    offset_bmap: int
    offset_data: int
    cylinders: int
    heads: int
    sectors: int
    sector_size: int
    disk_size: int
    block_size: int
    block_extra: int
    blocks_in_image: int
    blocks_allocated: int
    uuid_image: str
    uuid_last_snap: str
    uuid_link: str
    uuid_parent: str
    #: Entries of the block map that point at data; None when the map was not read.
    allocated_entries: int | None
    discarded_entries: int | None


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


#: The signature check lives in ``probes``: the registry probes every format without importing its reader.
probe = probes.vdi


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """Validate the header like QEMU's ``vdi_open`` and every block map entry against the file."""
    fields = HEADER.unpack(read_exact(src, 0, HEADER_SIZE, "VDI header"))
    if fields["signature"] != SIGNATURE:
        raise ImageFormatError("The file is not a VDI image (no 0xBEDA107F signature at 0x40).")
    version = fields["version"]
    if version != VERSION_1_1:
        raise ImageFormatError(f"The VDI version {version >> 16}.{version & 0xFFFF} is not 1.1.")
    problems: list[str] = []
    image_type = fields["image_type"]
    if image_type not in IMAGE_TYPES:
        raise ImageFormatError(f"The VDI image type {image_type} is not normal, fixed, undo or diff (1-4).")
    if fields["header_size"] not in HEADER_SIZES:
        problems.append(f"the VDI header size {fields['header_size']} is not one VirtualBox writes (384-400)")
    offset_bmap, offset_data = fields["offset_bmap"], fields["offset_data"]
    if offset_bmap % SECTOR or offset_data % SECTOR:
        raise ImageFormatError("The VDI block map or data offset is not a multiple of 512 bytes.")
    if fields["sector_size"] != SECTOR:
        raise ImageFormatError(f"The VDI sector size {fields['sector_size']} is not 512.")

    disk_size = fields["disk_size"]
    if disk_size > QEMU_MAX_DISK_SIZE:
        problems.append(
            f"the VDI disk size {format_size(disk_size)} exceeds QEMU's maximum of "
            f"{format_size(QEMU_MAX_DISK_SIZE)}"
        )
    # 'VBoxManage convertfromraw' writes odd sizes; QEMU rounds them up to a whole sector.
    virtual_size = -(-disk_size // SECTOR) * SECTOR
    block_size = fields["block_size"]
    if block_size != QEMU_BLOCK_SIZE:
        problems.append(f"the VDI block size {block_size} is not the 1 MiB QEMU accepts")
    if block_size < MIN_BLOCK_SIZE or block_size > MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise ImageFormatError(
            f"The VDI block size {block_size} is not a power of two between 512 and 256 MiB."
        )
    if fields["block_extra"]:
        problems.append(
            f"the VDI has {fields['block_extra']} bytes of per-block extra data, which QEMU ignores"
        )
    blocks = fields["blocks_in_image"]
    if virtual_size > blocks * block_size:
        raise ImageFormatError(
            f"The VDI disk size {disk_size} exceeds what its {blocks} blocks of "
            f"{format_size(block_size)} hold."
        )
    if blocks > QEMU_MAX_BLOCKS:
        problems.append(f"the VDI claims {blocks} blocks, more than QEMU's maximum of {QEMU_MAX_BLOCKS}")

    references: list[ExternalReference] = []
    for key, what in (("uuid_parent", "parent"), ("uuid_link", "link")):
        if fields[key] != NULL_UUID:
            references.append(
                ExternalReference(
                    "parent",
                    f"the VirtualBox image with UUID {uuid.UUID(bytes_le=fields[key])}",
                    f"VDI {IMAGE_TYPES[image_type]} image; {what} UUID",
                )
            )
    if image_type in (UNDO, DIFF):
        problems.append(
            f"the VDI is a{'n' if image_type == UNDO else ''} {IMAGE_TYPES[image_type]} image, whose "
            "unallocated blocks come from a parent image"
        )

    map_bytes = blocks * 4
    bmap: array[int] | None = None
    allocated: int | None = None
    discarded: int | None = None
    if offset_bmap < HEADER_SIZE:
        raise ImageFormatError(f"The VDI block map offset {offset_bmap} lies inside the 512-byte header.")
    if offset_data < offset_bmap + map_bytes and offset_data + block_size > offset_bmap:
        problems.append("the VDI data area overlaps its block map")
    if map_bytes > limits.max_table_bytes:
        problems.append(
            f"the VDI block map has {blocks} entries ({format_size(map_bytes)}), more than the "
            f"{format_size(limits.max_table_bytes)} allowed for a metadata table"
        )
    elif offset_bmap + map_bytes > src.size:
        raise ImageFormatError(
            f"The VDI block map (bytes {offset_bmap}..{offset_bmap + map_bytes}) lies beyond the end of "
            f"the {src.size}-byte file."
        )
    else:
        bmap = array("I", read_exact(src, offset_bmap, map_bytes, "VDI block map"))
        if bmap.itemsize != 4:
            raise AssertionError("array('I') must hold 32-bit entries")
        # Little-endian on disk, as on every supported host.
        allocated, discarded = _check_block_map(
            bmap,
            file_size=src.size,
            offset_data=offset_data,
            block_size=block_size,
            virtual_size=virtual_size,
            problems=problems,
        )

    details = VdiDetails(
        text=_text(fields["text"]).rstrip("\n"),
        version="1.1",
        header_size=fields["header_size"],
        image_type=image_type,
        image_flags=fields["image_flags"],
        description=_text(fields["description"]),
        offset_bmap=offset_bmap,
        offset_data=offset_data,
        cylinders=fields["cylinders"],
        heads=fields["heads"],
        sectors=fields["sectors"],
        sector_size=fields["sector_size"],
        disk_size=disk_size,
        block_size=block_size,
        block_extra=fields["block_extra"],
        blocks_in_image=blocks,
        blocks_allocated=fields["blocks_allocated"],
        uuid_image=str(uuid.UUID(bytes_le=fields["uuid_image"])),
        uuid_last_snap=str(uuid.UUID(bytes_le=fields["uuid_last_snap"])),
        uuid_link=str(uuid.UUID(bytes_le=fields["uuid_link"])),
        uuid_parent=str(uuid.UUID(bytes_le=fields["uuid_parent"])),
        allocated_entries=allocated,
        discarded_entries=discarded,
    )
    guest = None
    if bmap is not None and image_type not in (UNDO, DIFF) and not references:
        guest = VdiGuest(src, virtual_size, bmap, offset_data, block_size)
    return OpenedImage(
        format="vdi",
        encryption=None,
        virtual_size=virtual_size,
        details=details,
        guest=guest,
        references=references,
        problems=problems,
        subformat=IMAGE_TYPES[image_type],
    )


def _check_block_map(
    bmap: array[int],
    *,
    file_size: int,
    offset_data: int,
    block_size: int,
    virtual_size: int,
    problems: list[str],
) -> tuple[int, int]:
    """Every allocated entry must index a block inside the file; returns (allocated, discarded)."""
    sorted_map = sort_block_map(bmap, (UNALLOCATED, DISCARDED))
    discarded = sorted_map.marker_counts[DISCARDED]
    allocated = len(sorted_map.others)
    if not allocated:
        return 0, discarded
    blocks = len(bmap)
    # Quick and sufficient: the highest block index is in range and wholly inside the file.
    highest = max(bmap[index] for index in sorted_map.others)
    if highest < blocks and offset_data + (highest + 1) * block_size <= file_size:
        return allocated, discarded
    # The last block may stop at the end of the disk rather than at a block boundary.
    for block, entry in enumerate(bmap):
        if entry >= DISCARDED:
            continue
        if entry >= blocks:
            problems.append(
                f"VDI block map entry {block} holds block index {entry}, beyond the {blocks} blocks"
            )
            break
        length = min(block_size, max(0, virtual_size - block * block_size))
        if offset_data + entry * block_size + length > file_size:
            problems.append(
                f"VDI block map entry {block} points to block {entry}, which lies beyond the end of the "
                f"{file_size}-byte file"
            )
            break
    return allocated, discarded


class VdiGuest(MappedGuestSource):
    """Guest bytes through the block map, as QEMU's ``vdi_co_preadv`` reads them."""

    def __init__(
        self, image: ByteSource, virtual_size: int, bmap: array[int], offset_data: int, block_size: int
    ) -> None:
        super().__init__(image, virtual_size, "VDI")
        self._bmap = bmap
        self._offset_data = offset_data
        self._block_size = block_size

    def map_run(self, offset: int, max_length: int) -> GuestRun:
        block, within = divmod(offset, self._block_size)
        length = min(max_length, self._block_size - within)
        entry = self._bmap[block] if block < len(self._bmap) else UNALLOCATED
        if entry >= DISCARDED:
            return GuestRun(length)
        return GuestRun(length, host_offset=self._offset_data + entry * self._block_size + within)
