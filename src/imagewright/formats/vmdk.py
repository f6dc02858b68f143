"""VMDK: hosted sparse extents (KDMV), ESX COW deltas (COWD) and text descriptor files.

Sources: VMware "Virtual Disk Format 5.0" via libvmdk's "VMWare Virtual Disk Format (VMDK)"
and QEMU 7.2 ``block/vmdk.c`` (``vmdk_open_vmdk4``, ``vmdk_open_vmfs_sparse``,
``get_cluster_offset``, ``vmdk_read_extent``); digest: /work/shared/specs section 1.2.

Hosted sparse extent header (512 bytes, little-endian)::

    0  'KDMV'               4  version (1..3)       8  flags
    12 capacity (sectors)   20 grainSize (sectors)  28 descriptorOffset (sectors)
    36 descriptorSize       44 numGTEsPerGT         48 rgdOffset   56 gdOffset (~0 = GD_AT_END)
    64 overHead (sectors)   72 uncleanShutdown      73 '\\n' ' ' '\\r' '\\n'   77 compressAlgorithm

Flags: 0x1 newline test valid, 0x2 redundant GD, 0x4 zeroed-grain GTEs, 0x10000 compressed
grains, 0x20000 markers. A streamOptimized file whose gdOffset is GD_AT_END keeps the real
header in a footer at EOF-1024 (after a footer marker, before the end-of-stream marker).

Grain directory (GD) entries are u32 sector numbers of grain tables (GT); GT entries are u32
sector numbers of grains (0 unallocated, 1 zeroed when flag 0x4 is set). Compressed grains
start with a marker ``u64 lba, u32 size`` followed by a zlib stream.

NOTE (safety): the descriptor — a file of its own, or embedded in a sparse extent — names
extent files and a parent; each is a reference to another file and is refused. In an
embedded descriptor the only acceptable extent is the file itself (one SPARSE extent with a
plain base name).

NOTE (safety): QEMU does not read the descriptor the way the specification describes it, so
the file is read twice — once by the specification (``vmdk_descriptor.py``), once exactly as
QEMU 7.2 reads it (``vmdk_qemu.py``) — and every file either reading would open is refused,
as is every place where the two readings disagree. The QEMU behaviours mirrored here:

- ``vmdk_open_vmdk4``: the capacity-0 decision ("this sparse file is really a descriptor
  file; open its extents") is taken from the **header**, before a streamOptimized footer is
  read, and reads up to 1 MiB - 1 of text at ``descriptorOffset << 9`` (wrapping), past the
  header's descriptorSize. Such a file is refused whatever the footer says.
- ``vmdk_open``/``vmdk_parent_open``/``vmdk_read_cid``: the parent hint and parentCID are
  found by substring search in 10 KiB at byte 0x200 (0 for a descriptor file) — in comments,
  inside longer keys, past descriptorSize, across a NUL right after the key, and at 0x200 even
  when the header puts the descriptor elsewhere. A hint QEMU would honour is a reference;
  ``parentFileNameHint`` anywhere in that area in any letter case, a parentCID QEMU reads
  differently, a descriptor not at sector 1 (where QEMU looks) and text after the embedded
  descriptor's NUL are refused.
- ``vmdk_parse_extents``: extent lines are read with QEMU's own ``sscanf`` rules (fields
  across lines, no space needed after the size, names cut at CR or 511 bytes, a missing
  closing quote), and every file it would open is named.
- The streamOptimized footer is read where QEMU reads it (``total_sectors * 512 - 1536``, the
  file size rounded up to a sector); a file that is not a whole number of sectors, or whose
  header and footer disagree on the geometry or the descriptor, is refused.
- COWD (vmfsSparse) files are refused outright: they are deltas, and QEMU also searches them
  at 0x200 for a parent hint.
"""

from __future__ import annotations

import re
import sys
from array import array
from dataclasses import dataclass

from imagewright.binary import ByteSource, Layout, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats import probes
from imagewright.formats.base import ExternalReference, Limits, OpenedImage
from imagewright.formats.cluster_codecs import inflate_zlib_grain
from imagewright.formats.external_names import describe_external_name, protocol_prefix
from imagewright.formats.mapped_guest import GuestRun, LruCache, MappedGuestSource
from imagewright.formats.vmdk_descriptor import (
    NO_PARENT_CID,
    VmdkDescriptor,
    VmdkExtentLine,
    parse_descriptor,
)
from imagewright.formats.vmdk_qemu import (
    QEMU_DESC_SIZE,
    QEMU_SPARSE_DESC_OFFSET,
    c_string,
    descriptor_read_length,
    hint_key_offsets,
    qemu_extent_lines,
    qemu_parent_hint,
    qemu_read_cid,
    wrapped_sector_offset,
)
from imagewright.units import format_size

SPARSE_MAGIC = probes.VMDK_SPARSE_MAGIC
COWD_MAGIC = probes.VMDK_COWD_MAGIC
SECTOR = 512
GD_AT_END = 0xFFFF_FFFF_FFFF_FFFF

FLAG_NL_DETECT = 0x1
FLAG_RGD = 0x2
FLAG_ZERO_GRAIN = 0x4
FLAG_COMPRESSED = 0x10000
FLAG_MARKERS = 0x20000
FLAG_NAMES = {
    FLAG_NL_DETECT: "newline test",
    FLAG_RGD: "redundant grain directory",
    FLAG_ZERO_GRAIN: "zeroed-grain entries",
    FLAG_COMPRESSED: "compressed grains",
    FLAG_MARKERS: "markers",
}
COMPRESSION_NONE = 0
COMPRESSION_DEFLATE = 1
NEWLINE_CHECK = b"\n \r\n"
GTE_ZEROED = 1

MARKER_EOS = 0
MARKER_GT = 1
MARKER_GD = 2
MARKER_FOOTER = 3

#: Grain sizes we map (sectors). VMware requires a power of two larger than 8; every tool
#: writes 128 (64 KiB). 4096 sectors (2 MiB) bounds one decompressed grain.
MIN_GRAIN_SECTORS = 8
MAX_GRAIN_SECTORS = 4096
MAX_GTES_PER_GT = 512
#: QEMU's ceilings: 32 Mi grain-directory entries, 0x200000-sector COWD grains.
QEMU_MAX_GD_ENTRIES = 32 * 1024 * 1024
QEMU_MAX_COWD_GRAIN = 0x200000
COWD_GT_ENTRIES = 4096

SPARSE_HEADER = Layout(
    "VMDK sparse extent header",
    "<",
    [
        ("magic", "4s"),
        ("version", "I"),
        ("flags", "I"),
        ("capacity", "Q"),
        ("grain_size", "Q"),
        ("descriptor_offset", "Q"),
        ("descriptor_size", "Q"),
        ("num_gtes_per_gt", "I"),
        ("rgd_offset", "Q"),
        ("gd_offset", "Q"),
        ("overhead", "Q"),
        ("unclean_shutdown", "B"),
        ("newline_check", "4s"),
        ("compress_algorithm", "H"),
    ],
)
MARKER = Layout("VMDK metadata marker", "<", [("value", "Q"), ("size", "I"), ("type", "I")])
GRAIN_MARKER = Layout("VMDK grain marker", "<", [("lba", "Q"), ("size", "I")])
COWD_HEADER = Layout(
    "VMDK COWD header",
    "<",
    [
        ("magic", "4s"),
        ("version", "I"),
        ("flags", "I"),
        ("capacity", "I"),
        ("grain_size", "I"),
        ("gd_offset", "I"),
        ("num_gd_entries", "I"),
        ("free_sector", "I"),
        ("parent_or_geometry", "1024s"),
        ("parent_generation", "I"),
        ("generation", "I"),
        ("name", "60s"),
        ("description", "512s"),
        ("saved_generation", "I"),
        ("reserved", "8x"),
        ("dirty", "I"),
    ],
)

#: Header fields a streamOptimized footer must repeat (gdOffset is the one that differs):
#: the geometry and where the descriptor is. (Version and flags are QEMU's from the footer only.)
FOOTER_MUST_MATCH = (
    "capacity",
    "grain_size",
    "descriptor_offset",
    "descriptor_size",
    "num_gtes_per_gt",
    "compress_algorithm",
)

_PLAIN_BASE_NAME_RE = re.compile(r"^[^/\\\0]+$")


@dataclass
class VmdkSparseHeader:
    """The hosted sparse extent header (from the footer when gdOffset is GD_AT_END)."""

    version: int
    flags: int
    flag_names: list[str]
    capacity_sectors: int
    grain_sectors: int
    descriptor_offset_sectors: int
    descriptor_size_sectors: int
    num_gtes_per_gt: int
    rgd_offset_sectors: int
    gd_offset_sectors: int
    overhead_sectors: int
    unclean_shutdown: bool
    newline_check: str
    compress_algorithm: int
    gd_at_end: bool
    footer_used: bool


@dataclass
class VmdkCowdHeader:
    """The ESX COW sparse (vmfsSparse delta) header."""

    version: int
    flags: int
    capacity_sectors: int
    grain_sectors: int
    gd_offset_sectors: int
    num_gd_entries: int
    free_sector: int
    parent_file_name: str | None
    parent_generation: int
    generation: int
    name: str
    description: str
    saved_generation: int
    dirty: bool


@dataclass
class VmdkDetails:
    """What a VMDK file is (``sparse``, ``cowd`` or ``descriptor``) and everything it says."""

    kind: str
    create_type: str | None
    sparse_header: VmdkSparseHeader | None = None
    cowd_header: VmdkCowdHeader | None = None
    descriptor: VmdkDescriptor | None = None
    descriptor_bytes: int = 0


#: The signature check lives in ``probes``: the registry probes every format without importing its reader.
probe = probes.vmdk


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """Parse a VMDK file of any of the three kinds; see the module docstring."""
    magic = src.pread(0, 4)
    if magic == SPARSE_MAGIC:
        return _SparseReader(src, limits).read()
    if magic == COWD_MAGIC:
        return _open_cowd(src, limits)
    return _open_descriptor_file(src, limits)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="backslashreplace")


def is_plain_base_name(name: str) -> bool:
    """A bare file name in the same directory: no separators, no '..', no protocol prefix."""
    return bool(_PLAIN_BASE_NAME_RE.match(name)) and name not in (".", "..") and protocol_prefix(name) is None


def extent_reference(extent: VmdkExtentLine, why: str = "") -> ExternalReference | None:
    """The reference an extent line makes, or None for extents without a file (ZERO)."""
    if extent.filename is None:
        return None
    detail = f"{describe_external_name(extent.filename)}; {extent.access} {extent.type} extent"
    if why:
        detail += f", {why}"
    return ExternalReference("extent", extent.filename, detail)


def parent_references(descriptor: VmdkDescriptor) -> list[ExternalReference]:
    """The parent a descriptor names by file name hint, or by parentCID alone."""
    hint = descriptor.parent_file_name_hint
    if hint is not None:
        return [ExternalReference("parent", hint, f"{describe_external_name(hint)}; a delta disk's parent")]
    if descriptor.has_parent:
        return [
            ExternalReference(
                "parent",
                f"(unnamed parent, parentCID {descriptor.parent_cid})",
                "a delta disk whose parent content ID is set; its unwritten sectors live in another disk",
            )
        ]
    return []


def _check_cid(descriptor: VmdkDescriptor, problems: list[str]) -> None:
    if descriptor.cid is None:
        problems.append("the VMDK descriptor has no CID line")
    if descriptor.parent_cid is None:
        problems.append("the VMDK descriptor has no parentCID line")


def _add_reference(references: list[ExternalReference], reference: ExternalReference) -> None:
    """Append ``reference`` unless one of the same kind already names the same target."""
    if not any(ref.kind == reference.kind and ref.target == reference.target for ref in references):
        references.append(reference)


def qemu_extent_findings(
    text: bytes,
    descriptor: VmdkDescriptor | None,
    references: list[ExternalReference],
    problems: list[str],
    why: str,
) -> None:
    """Name every file QEMU's ``vmdk_parse_extents`` would open in the C string ``text``.

    ``descriptor`` is the specification's reading of the same text: a file QEMU opens that
    it does not list means the two readings differ, which is a reason of its own.
    """
    spec_names = {extent.filename for extent in descriptor.extents} if descriptor else set()
    for extent in qemu_extent_lines(text):
        if extent.outcome == "invalid":
            problems.append(
                f"QEMU rejects extent line {extent.line_number} of the VMDK descriptor "
                f"('{extent.filename}') only after opening the extents before it"
            )
            continue
        detail = (
            f"{describe_external_name(extent.filename)}; RW {extent.type} extent on line "
            f"{extent.line_number} as QEMU's sscanf reads it, {why}"
        )
        _add_reference(references, ExternalReference("extent", extent.filename, detail))
        if extent.filename not in spec_names:
            problems.append(
                f"QEMU reads an extent line (line {extent.line_number}, '{extent.filename}') that "
                "the VMDK specification's reading of the descriptor does not see"
            )


def qemu_parent_area_findings(
    area: bytes,
    area_offset: int,
    descriptor: VmdkDescriptor | None,
    references: list[ExternalReference],
    problems: list[str],
) -> str | None:
    """Mirror ``vmdk_parent_open`` and ``vmdk_read_cid`` on the 10 KiB QEMU reads at ``area_offset``.

    Returns the backing file name QEMU would take (None when it takes none).
    """
    hint = qemu_parent_hint(area)
    spec_hint = descriptor.parent_file_name_hint if descriptor is not None else None
    qemu_name: str | None = None
    if hint is not None:
        where = f"at byte {area_offset + hint.key_offset}"
        if hint.name:
            qemu_name = hint.name
            detail = (
                f"{describe_external_name(hint.name)}; QEMU finds 'parentFileNameHint' by substring "
                f"search {where} and opens this name as the backing file"
            )
            _add_reference(references, ExternalReference("parent", hint.name, detail))
        elif hint.failure:
            problems.append(f"the VMDK descriptor area holds 'parentFileNameHint' {where}; {hint.failure}")
        else:
            problems.append(
                f"the VMDK descriptor area holds an empty 'parentFileNameHint' {where}, which QEMU "
                "ignores but other readers may not"
            )
        if spec_hint is not None and spec_hint != hint.name:
            problems.append(
                f"QEMU reads the parent hint as '{hint.name or ''}', the VMDK specification's reading "
                f"as '{spec_hint}'"
            )
    elif spec_hint is None:
        for key_offset in hint_key_offsets(area):
            problems.append(
                f"the VMDK descriptor area holds 'parentFileNameHint' at byte {area_offset + key_offset} "
                "where QEMU's substring search does not see it (other letter case or after a NUL); "
                "readers disagree on whether the disk has a parent"
            )
            break
    qemu_parent_cid = qemu_read_cid(area, parent=True)
    spec_parent_cid = descriptor.parent_cid_value if descriptor is not None else None
    if spec_parent_cid is not None and qemu_parent_cid != spec_parent_cid:
        qemu_text = "no parentCID" if qemu_parent_cid is None else f"parentCID {qemu_parent_cid:08x}"
        problems.append(
            f"QEMU reads {qemu_text} at byte {area_offset}, but the descriptor's parentCID line says "
            f"{spec_parent_cid:08x}"
        )
    elif spec_parent_cid is None and qemu_parent_cid not in (None, NO_PARENT_CID):
        problems.append(f"QEMU reads parentCID {qemu_parent_cid:08x}: the disk claims a parent")
    return qemu_name


def read_padded(src: ByteSource, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``, zeros past the end of the file (QEMU's ``bdrv_pread``)."""
    if offset >= src.size:
        return bytes(length)
    return src.pread(offset, min(length, src.size - offset)).ljust(length, b"\0")


# -- descriptor files -----------------------------------------------------------------------
def _open_descriptor_file(src: ByteSource, limits: Limits) -> OpenedImage:
    problems: list[str] = []
    length = min(src.size, limits.max_descriptor_bytes)
    if src.size > limits.max_descriptor_bytes:
        problems.append(
            f"the VMDK descriptor is {format_size(src.size)}, larger than the "
            f"{format_size(limits.max_descriptor_bytes)} allowed"
        )
    raw = read_exact(src, 0, length, "VMDK descriptor")
    if not probes.vmdk_descriptor(raw[:4096]):
        raise ImageFormatError("The file is not a VMDK image (no KDMV/COWD magic and no descriptor text).")
    text, _, after_nul = raw.partition(b"\0")
    if after_nul.strip(b"\0"):
        # A text file has no reason to hold NUL bytes; QEMU stops reading at the first one,
        # so whatever follows is invisible to it but maybe not to other tools.
        problems.append("the VMDK descriptor contains a NUL byte followed by more text")
    descriptor = parse_descriptor(text, problems)
    _check_cid(descriptor, problems)
    if descriptor.create_type is None:
        problems.append("the VMDK descriptor has no createType")
    references: list[ExternalReference] = []
    for extent in descriptor.extents:
        reference = extent_reference(extent)
        if reference is not None:
            references.append(reference)
    references.extend(parent_references(descriptor))
    # vmdk_open: a file without sparse magic is a descriptor file, read from byte 0 as a C
    # string of at most 1 MiB - 1; its parent hint and CIDs come from its first 10 KiB.
    qemu_text = c_string(raw[: descriptor_read_length(src.size)])
    qemu_extent_findings(qemu_text, descriptor, references, problems, "opened by QEMU")
    hint = qemu_parent_area_findings(raw[:QEMU_DESC_SIZE], 0, descriptor, references, problems)
    hint = descriptor.parent_file_name_hint or hint
    return OpenedImage(
        format="vmdk",
        encryption=None,
        virtual_size=descriptor.qemu_virtual_sectors() * SECTOR,
        details=VmdkDetails(
            kind="descriptor",
            create_type=descriptor.create_type,
            descriptor=descriptor,
            descriptor_bytes=len(text),
        ),
        guest=None,
        references=references,
        problems=problems,
        backing_file=hint,
        backing_format="vmdk" if hint is not None else None,
        subformat=descriptor.create_type,
    )


# -- COWD -------------------------------------------------------------------------------------
def _open_cowd(src: ByteSource, limits: Limits) -> OpenedImage:
    problems: list[str] = []
    raw = src.pread(0, COWD_HEADER.size)
    if len(raw) < COWD_HEADER.size:
        problems.append(f"the COWD header is truncated: the file holds {len(raw)} of its 2048 bytes")
    hdr = COWD_HEADER.unpack(raw.ljust(COWD_HEADER.size, b"\0"))
    parent_name = _text(hdr["parent_or_geometry"])
    # In a child (delta) extent bytes 32..1055 hold the parent's file name; in a root extent
    # they hold the geometry as u32s, which never decodes to printable text.
    if not parent_name or not parent_name.isprintable():
        parent_name = ""
    header = VmdkCowdHeader(
        version=hdr["version"],
        flags=hdr["flags"],
        capacity_sectors=hdr["capacity"],
        grain_sectors=hdr["grain_size"],
        gd_offset_sectors=hdr["gd_offset"],
        num_gd_entries=hdr["num_gd_entries"],
        free_sector=hdr["free_sector"],
        parent_file_name=parent_name or None,
        parent_generation=hdr["parent_generation"],
        generation=hdr["generation"],
        name=_text(hdr["name"]),
        description=_text(hdr["description"]),
        saved_generation=hdr["saved_generation"],
        dirty=bool(hdr["dirty"]),
    )
    if not 1 <= header.grain_sectors <= QEMU_MAX_COWD_GRAIN:
        problems.append(f"the COWD grain size of {header.grain_sectors} sectors is out of range")
    gd_bytes = header.num_gd_entries * 4
    if header.num_gd_entries > QEMU_MAX_GD_ENTRIES or gd_bytes > limits.max_table_bytes:
        problems.append(f"the COWD grain directory has {header.num_gd_entries} entries, more than allowed")
    elif header.gd_offset_sectors * SECTOR + gd_bytes > src.size:
        problems.append("the COWD grain directory lies beyond the end of the file")
    detail = "a COWD (vmfsSparse) extent is a delta disk; its unwritten sectors live in a parent disk"
    if parent_name:
        reference = ExternalReference(
            "parent", parent_name, f"{describe_external_name(parent_name)}; {detail}"
        )
    else:
        reference = ExternalReference("parent", "(parent not named in the file)", detail)
    references = [reference]
    # vmdk_open sets desc_offset to 0x200 for a COWD file too: QEMU looks for a parent hint
    # (and the CIDs) inside the COWD header's own bytes there.
    area = read_padded(src, QEMU_SPARSE_DESC_OFFSET, QEMU_DESC_SIZE)
    hint = qemu_parent_hint(area)
    if hint is not None and hint.name:
        where = f"at byte {QEMU_SPARSE_DESC_OFFSET + hint.key_offset}"
        detail = (
            f"{describe_external_name(hint.name)}; QEMU finds 'parentFileNameHint' in the COWD file "
            f"{where} and opens this name as the backing file"
        )
        _add_reference(references, ExternalReference("parent", hint.name, detail))
    return OpenedImage(
        format="vmdk",
        encryption=None,
        virtual_size=header.capacity_sectors * SECTOR,
        details=VmdkDetails(kind="cowd", create_type="vmfsSparse", cowd_header=header),
        guest=None,
        references=references,
        problems=problems,
        subformat="vmfsSparse",
    )


# -- hosted sparse extents ----------------------------------------------------------------------
class _SparseReader:
    def __init__(self, src: ByteSource, limits: Limits) -> None:
        self.src = src
        self.limits = limits
        self.problems: list[str] = []
        self.references: list[ExternalReference] = []
        self.mapping_ok = True

    def problem(self, sentence: str, *, breaks_mapping: bool = True) -> None:
        self.problems.append(sentence)
        if breaks_mapping:
            self.mapping_ok = False

    def read(self) -> OpenedImage:
        src = self.src
        raw = src.pread(0, SPARSE_HEADER.size)
        if len(raw) < SPARSE_HEADER.size:
            self.problem(
                f"the VMDK sparse header is truncated: the file holds {len(raw)} of its "
                f"{SPARSE_HEADER.size} bytes"
            )
        hdr = SPARSE_HEADER.unpack(raw.ljust(SPARSE_HEADER.size, b"\0"))
        gd_at_end = hdr["gd_offset"] == GD_AT_END
        # vmdk_open_vmdk4 decides "capacity 0: this is a descriptor file" from the header at
        # byte 0, before it ever reads a streamOptimized footer.
        if hdr["capacity"] == 0 and hdr["descriptor_offset"] != 0:
            return self._read_as_qemu_descriptor_file(self._header(hdr, gd_at_end, False))
        footer_used = False
        if gd_at_end:
            footer = self._read_footer()
            if footer is not None:
                self._compare_header_and_footer(hdr, footer)
                hdr = footer
                footer_used = True
        header = self._header(hdr, gd_at_end, footer_used)
        descriptor, descriptor_bytes = self._read_embedded_descriptor(header)
        if descriptor is not None:
            self.references.extend(parent_references(descriptor))
        qemu_hint = self._qemu_parent_area(descriptor)

        create_type = (
            "streamOptimized" if header.compress_algorithm == COMPRESSION_DEFLATE else "monolithicSparse"
        )
        hint: str | None = qemu_hint
        if descriptor is not None:
            hint = descriptor.parent_file_name_hint or qemu_hint
            self._check_embedded_extents(descriptor)

        self._check_geometry(header)
        gd: array[int] | None = None
        if self.mapping_ok and 0 < header.capacity_sectors * SECTOR <= self.limits.max_virtual_size:
            # (An extent over the size limit is refused by safety.judge; its tables are not read.)
            gd = self._read_grain_directory(header)
        guest = None
        if gd is not None and self.mapping_ok and not self.references:
            guest = VmdkSparseGuest(src, header, gd)
        details = VmdkDetails(
            kind="sparse",
            create_type=descriptor.create_type if descriptor is not None else None,
            sparse_header=header,
            descriptor=descriptor,
            descriptor_bytes=descriptor_bytes,
        )
        return self._opened(details, header.capacity_sectors, guest, hint, create_type)

    def _opened(
        self,
        details: VmdkDetails,
        virtual_sectors: int,
        guest: ByteSource | None,
        hint: str | None,
        create_type: str,
    ) -> OpenedImage:
        return OpenedImage(
            format="vmdk",
            encryption=None,
            virtual_size=virtual_sectors * SECTOR,
            details=details,
            guest=guest,
            references=self.references,
            problems=self.problems,
            backing_file=hint,
            backing_format="vmdk" if hint is not None else None,
            subformat=create_type,
        )

    def _qemu_parent_area(self, descriptor: VmdkDescriptor | None) -> str | None:
        """vmdk_parent_open/vmdk_read_cid: 10 KiB at 0x200, whatever the header says."""
        area = read_padded(self.src, QEMU_SPARSE_DESC_OFFSET, QEMU_DESC_SIZE)
        return qemu_parent_area_findings(
            area, QEMU_SPARSE_DESC_OFFSET, descriptor, self.references, self.problems
        )

    def _read_as_qemu_descriptor_file(self, header: VmdkSparseHeader) -> OpenedImage:
        """A header with capacity 0 and a descriptor offset: QEMU opens that text's extents."""
        offset = wrapped_sector_offset(header.descriptor_offset_sectors)
        where = "beyond what QEMU can read" if offset is None else f"byte {offset}"
        self.problem(
            f"the sparse header has capacity 0 and a descriptor at {where}: QEMU then opens that "
            "text as a descriptor file and its extents, whatever a footer says"
        )
        descriptor: VmdkDescriptor | None = None
        text = b""
        if offset is not None:
            # vmdk_read_desc: the file's size in bytes (at most 1 MiB - 1) from that offset.
            length = min(descriptor_read_length(self.src.size), self.limits.max_descriptor_bytes)
            text = c_string(read_padded(self.src, offset, length))
            descriptor = parse_descriptor(text, self.problems)
            why = "opened because the sparse header's capacity is 0"
            for extent in descriptor.extents:
                reference = extent_reference(extent, why)
                if reference is not None:
                    _add_reference(self.references, reference)
            qemu_extent_findings(text, descriptor, self.references, self.problems, why)
            self.references.extend(parent_references(descriptor))
        qemu_hint = self._qemu_parent_area(None)
        hint = (descriptor.parent_file_name_hint if descriptor is not None else None) or qemu_hint
        details = VmdkDetails(
            kind="sparse",
            create_type=descriptor.create_type if descriptor is not None else None,
            sparse_header=header,
            descriptor=descriptor,
            descriptor_bytes=len(text),
        )
        virtual_sectors = descriptor.qemu_virtual_sectors() if descriptor is not None else 0
        create_type = (descriptor.create_type if descriptor is not None else None) or "monolithicSparse"
        return self._opened(details, virtual_sectors, None, hint, create_type)

    def _read_footer(self) -> dict[str, int] | None:
        size = self.src.size
        # vmdk_open_vmdk4 reads the footer at total_sectors * 512 - 1536: the file size rounded
        # up to whole sectors, the tail zero padded.
        rounded = -(-size // SECTOR) * SECTOR
        if size % SECTOR:
            self.problem(
                f"the streamOptimized file is {size} bytes, not a whole number of sectors: QEMU reads "
                f"its footer at byte {rounded - 1536}, other readers at byte {size - 1536}"
            )
        if rounded < 1536:
            self.problem("the streamOptimized footer is missing: the file is shorter than 1536 bytes")
            return None
        tail = read_padded(self.src, rounded - 1536, 1536)
        footer_marker = MARKER.unpack(tail, 0)
        footer = SPARSE_HEADER.unpack(tail, 512)
        eos = MARKER.unpack(tail, 1024)
        if (
            footer["magic"] != SPARSE_MAGIC
            or footer_marker["size"] != 0
            or footer_marker["type"] != MARKER_FOOTER
            or eos["value"] != 0
            or eos["size"] != 0
            or eos["type"] != MARKER_EOS
        ):
            self.problem(
                "the grain directory is at the end of the stream but the footer (footer marker, "
                "footer, end-of-stream marker) is missing or invalid"
            )
            return None
        return footer

    def _compare_header_and_footer(self, header: dict[str, int], footer: dict[str, int]) -> None:
        """QEMU takes some decisions from the header and the rest from the footer: they must agree."""
        differing = [name for name in FOOTER_MUST_MATCH if header[name] != footer[name]]
        if differing:
            fields = ", ".join(
                f"{name.replace('_', ' ')} {header[name]} vs {footer[name]}" for name in differing
            )
            self.problem(
                f"the streamOptimized header and footer disagree ({fields}); QEMU reads the "
                "header for some decisions and the footer for others"
            )

    def _header(self, hdr: dict[str, int], gd_at_end: bool, footer_used: bool) -> VmdkSparseHeader:
        flags = hdr["flags"]
        names = [name for bit, name in FLAG_NAMES.items() if flags & bit]
        names += [
            f"unknown flag {1 << bit:#x}"
            for bit in range(32)
            if flags & (1 << bit) and 1 << bit not in FLAG_NAMES
        ]
        newline = bytes(hdr["newline_check"])
        return VmdkSparseHeader(
            version=hdr["version"],
            flags=flags,
            flag_names=names,
            capacity_sectors=hdr["capacity"],
            grain_sectors=hdr["grain_size"],
            descriptor_offset_sectors=hdr["descriptor_offset"],
            descriptor_size_sectors=hdr["descriptor_size"],
            num_gtes_per_gt=hdr["num_gtes_per_gt"],
            rgd_offset_sectors=hdr["rgd_offset"],
            gd_offset_sectors=hdr["gd_offset"],
            overhead_sectors=hdr["overhead"],
            unclean_shutdown=bool(hdr["unclean_shutdown"]),
            newline_check=newline.hex(),
            compress_algorithm=hdr["compress_algorithm"],
            gd_at_end=gd_at_end,
            footer_used=footer_used,
        )

    def _read_embedded_descriptor(self, header: VmdkSparseHeader) -> tuple[VmdkDescriptor | None, int]:
        offset = header.descriptor_offset_sectors
        size = header.descriptor_size_sectors
        if offset == 0 or size == 0:
            self.problem(
                "the sparse extent has no embedded descriptor; it is probably one extent of a split "
                "VMDK, which cannot be used on its own",
                breaks_mapping=False,
            )
            return None, 0
        if offset > self.src.size // SECTOR or size > self.src.size // SECTOR:
            self.problem("the embedded descriptor lies beyond the end of the file", breaks_mapping=False)
            return None, 0
        length = size * SECTOR
        if length > self.limits.max_descriptor_bytes:
            self.problem(
                f"the embedded descriptor takes {format_size(length)}, more than the "
                f"{format_size(self.limits.max_descriptor_bytes)} allowed",
                breaks_mapping=False,
            )
            length = self.limits.max_descriptor_bytes
        start = offset * SECTOR
        if start + length > self.src.size:
            self.problem("the embedded descriptor lies beyond the end of the file", breaks_mapping=False)
            length = max(0, self.src.size - start)
        if offset != 1:
            self.problem(
                f"the embedded descriptor is at sector {offset}, but QEMU reads descriptor keys "
                "(the parent hint, the CIDs) at sector 1 whatever the header says",
                breaks_mapping=False,
            )
        raw = self.src.pread(start, length)
        text_bytes = len(raw.split(b"\0", 1)[0])
        if not is_cid_rewrite_residue(raw[:text_bytes], raw[text_bytes:]):
            self.problem(
                "the embedded descriptor holds more text after its terminating NUL, which QEMU does "
                "not read but other readers may",
                breaks_mapping=False,
            )
        if not raw[:text_bytes].strip():
            self.problem(
                "the sparse extent's embedded descriptor is empty; it is probably one extent of a "
                "split VMDK, which cannot be used on its own",
                breaks_mapping=False,
            )
            return None, 0
        descriptor = parse_descriptor(raw, self.problems)
        _check_cid(descriptor, self.problems)
        return descriptor, text_bytes

    def _check_embedded_extents(self, descriptor: VmdkDescriptor) -> None:
        extents = descriptor.extents
        if (
            len(extents) == 1
            and extents[0].type == "SPARSE"
            and extents[0].filename is not None
            and is_plain_base_name(extents[0].filename)
        ):
            return
        self.problem(
            "the embedded descriptor must name this file as its only SPARSE extent, by a plain file "
            f"name; it lists {len(extents)} extent{'s' if len(extents) != 1 else ''} instead",
            breaks_mapping=False,
        )
        for extent in extents:
            reference = extent_reference(extent, "named by the embedded descriptor of a sparse extent")
            if reference is not None:
                self.references.append(reference)

    def _check_geometry(self, header: VmdkSparseHeader) -> None:
        if header.version > 3:
            self.problem(f"VMDK sparse extent version {header.version} is not supported (1 to 3 exist)")
        if header.compress_algorithm not in (COMPRESSION_NONE, COMPRESSION_DEFLATE):
            self.problem(f"the grain compression algorithm {header.compress_algorithm} is unknown")
        grain = header.grain_sectors
        if not (MIN_GRAIN_SECTORS <= grain <= MAX_GRAIN_SECTORS and grain & (grain - 1) == 0):
            self.problem(
                f"the grain size of {grain} sectors is not a power of two between "
                f"{MIN_GRAIN_SECTORS} and {MAX_GRAIN_SECTORS}"
            )
        if not 1 <= header.num_gtes_per_gt <= MAX_GTES_PER_GT:
            self.problem(
                f"the grain table size of {header.num_gtes_per_gt} entries is outside 1 to {MAX_GTES_PER_GT}"
            )
        if header.flags & FLAG_NL_DETECT and bytes.fromhex(header.newline_check) != NEWLINE_CHECK:
            self.problem(
                "the newline-detection bytes of the sparse header are damaged; the file was probably "
                "transferred in text mode"
            )
        if header.overhead_sectors > self.src.size // SECTOR:
            self.problem(
                f"the file is truncated: grains start at sector {header.overhead_sectors}, but the "
                f"file holds {self.src.size // SECTOR} sectors"
            )

    def _read_grain_directory(self, header: VmdkSparseHeader) -> array[int] | None:
        reach = header.grain_sectors * header.num_gtes_per_gt
        entries = (header.capacity_sectors + reach - 1) // reach
        gd_bytes = entries * 4
        if entries > QEMU_MAX_GD_ENTRIES or gd_bytes > self.limits.max_table_bytes:
            self.problem(
                f"the grain directory has {entries} entries ({format_size(gd_bytes)}), more than the "
                f"{format_size(self.limits.max_table_bytes)} allowed"
            )
            return None
        offset = header.gd_offset_sectors
        if offset in (0, GD_AT_END):
            self.problem("the sparse header has no grain directory offset")
            return None
        if offset * SECTOR + gd_bytes > self.src.size:
            self.problem(
                f"the grain directory (sector {offset}, {gd_bytes} bytes) lies beyond the end of the "
                f"{self.src.size}-byte file"
            )
            return None
        if header.flags & FLAG_RGD and header.rgd_offset_sectors * SECTOR + gd_bytes > self.src.size:
            self.problem(
                "the redundant grain directory lies beyond the end of the file", breaks_mapping=False
            )
        gd = le32_table(read_exact(self.src, offset * SECTOR, gd_bytes, "VMDK grain directory"))
        gt_bytes = header.num_gtes_per_gt * 4
        outside = [
            index for index, sector in enumerate(gd) if sector and sector * SECTOR + gt_bytes > self.src.size
        ]
        if outside:
            self.problem(
                f"{len(outside)} grain tables lie beyond the end of the file (first for grain directory "
                f"entry {outside[0]})"
            )
            return None
        return gd


def le32_table(data: bytes) -> array[int]:
    """Little-endian u32 entries as an ``array`` of native integers."""
    table = array("I")
    table.frombytes(data)
    if sys.byteorder == "big":
        table.byteswap()
    return table


class VmdkSparseGuest(MappedGuestSource):
    """Guest bytes of a self-contained hosted sparse extent (monolithicSparse, streamOptimized)."""

    def __init__(self, image: ByteSource, header: VmdkSparseHeader, gd: array[int]) -> None:
        super().__init__(image, header.capacity_sectors * SECTOR, "VMDK")
        self._grain_bytes = header.grain_sectors * SECTOR
        self._grain_sectors = header.grain_sectors
        self._gtes = header.num_gtes_per_gt
        self._gd = gd
        self._compressed = header.compress_algorithm == COMPRESSION_DEFLATE
        self._markers = bool(header.flags & FLAG_MARKERS)
        self._zero_grains = bool(header.flags & FLAG_ZERO_GRAIN)
        self._gt_cache: LruCache[int, array[int]] = LruCache(256)
        # Decompressed grains: a filesystem probe touches a handful of scattered grains (the
        # table, each superblock, LUKS's secondary headers, the GPT backup) several times over;
        # keep up to 4 MiB of them so each is inflated once.
        self._grains: LruCache[tuple[int, int], bytes] = LruCache(max(2, (4 << 20) // self._grain_bytes))

    def _load_gt(self, sector: int) -> array[int]:
        return le32_table(read_exact(self._image, sector * SECTOR, self._gtes * 4, "VMDK grain table"))

    def map_run(self, offset: int, max_length: int) -> GuestRun:
        grain_index = offset // self._grain_bytes
        in_grain = offset % self._grain_bytes
        length = min(max_length, self._grain_bytes - in_grain)
        gd_index = grain_index // self._gtes
        if gd_index >= len(self._gd):
            raise ImageFormatError(f"The VMDK grain directory has no entry for guest offset {offset}.")
        gt_sector = self._gd[gd_index]
        if gt_sector == 0:
            reach_end = (gd_index + 1) * self._gtes * self._grain_bytes
            return GuestRun(min(max_length, reach_end - offset))
        table = self._gt_cache.get_or_load(gt_sector, self._load_gt)
        grain_sector = table[grain_index % self._gtes]
        if grain_sector == 0 or (self._zero_grains and grain_sector == GTE_ZEROED):
            return GuestRun(length)
        if not self._compressed:
            return GuestRun(length, host_offset=grain_sector * SECTOR + in_grain)
        grain = self._grains.get_or_load((grain_sector, grain_index), self._decompress)
        if in_grain + length > len(grain):
            raise ImageFormatError(
                f"The compressed VMDK grain at sector {grain_sector} holds {len(grain)} bytes, too few "
                f"for guest offset {offset}."
            )
        return GuestRun(length, data=grain[in_grain : in_grain + length])

    def _decompress(self, key: tuple[int, int]) -> bytes:
        grain_sector, grain_index = key
        host = grain_sector * SECTOR
        what = f"VMDK grain at sector {grain_sector}"
        if self._markers:
            marker = GRAIN_MARKER.unpack(self.read_host(host, GRAIN_MARKER.size))
            size = marker["size"]
            if size == 0 or size > 2 * self._grain_bytes:
                raise ImageFormatError(f"The {what} claims {size} compressed bytes.")
            expected_lba = grain_index * self._grain_sectors
            if marker["lba"] != expected_lba:
                raise ImageFormatError(
                    f"The {what} is marked for sector {marker['lba']}, but the grain table maps it "
                    f"to sector {expected_lba}."
                )
            data = self.read_host(host + GRAIN_MARKER.size, size)
        else:
            data = self.read_host(host, self._grain_bytes)
        return inflate_zlib_grain(data, self._grain_bytes, what)


#: QEMU writes CIDs with ``%x``: one takes 1 to 8 hex digits.
_MAX_CID_SHRINK = 7


def is_cid_rewrite_residue(text: bytes, after: bytes) -> bool:
    """Whether ``after`` (what follows the descriptor's NUL) is only what QEMU itself leaves.

    QEMU rewrites the embedded descriptor in place on the first write to an image
    (``vmdk_write_cid``, a new random CID): when the new CID has fewer hex digits the text
    shifts left and the last bytes of the old text stay behind the new NUL. About 1 in 100
    images ``qemu-img convert`` writes carry such a residue. It is a few bytes, each run of
    them a copy of the end of the text; anything else after the NUL is hidden text.
    """
    residue = after.rstrip(b"\0")
    if not residue:
        return True
    if len(residue) > _MAX_CID_SHRINK + 1:
        return False
    return all(text.endswith(piece) for piece in residue.split(b"\0") if piece)
