"""How QEMU 7.2 reads VMDK descriptor text: C strings, ``strstr`` and ``sscanf``, byte for byte.

The VMDK specification describes a descriptor as lines of ``key = "value"`` and extent lines
(``vmdk_descriptor.py`` reads it that way). QEMU does not: ``block/vmdk.c`` treats the text as
one C string and searches it. This module mirrors each of those searches exactly, so that the
reader can list every file QEMU would open and refuse wherever the two readings differ.

What QEMU 7.2 does (``block/vmdk.c``):

``vmdk_read_desc``
    reads ``min(file size, 1 MiB - 1)`` bytes at an offset (zeros past the end of the file)
    and ends the C string there; the first NUL ends it earlier.
``vmdk_open``
    a file that does not start with ``KDMV``/``COWD`` is a descriptor file, parsed from byte 0
    by ``vmdk_open_desc_file``; a sparse file (``KDMV`` or ``COWD``) sets ``desc_offset`` to
    0x200, *whatever* the header's descriptorOffset says.
``vmdk_open_vmdk4``
    when the **header**'s capacity is 0 and its descriptorOffset is not, the text at
    ``descriptorOffset << 9`` (a u64 shift that wraps) is read with ``vmdk_read_desc`` and
    opened as a descriptor file — before a streamOptimized footer is even looked at.
``vmdk_parse_description``
    ``strstr(desc, "createType")`` — in a comment or inside a longer key too — then skips two
    characters and copies to the next ``"``, across line ends.
``vmdk_parse_extents``
    for each line start: ``sscanf(p, "%10s %ld %10s \\"%511[^\\n\\r\\"]\\" %ld", ...)``. Each
    space in the format skips any white space *including newlines*, so one extent may span
    lines; ``%10s`` stops after 10 characters, so ``VMFSSPARSE"x"`` needs no space; a name
    stops at ``\\r``, at a quote or after 511 characters and is still used when its closing
    quote is missing (4 conversions). Only ``RW`` lines of types FLAT, SPARSE, VMFS,
    VMFSSPARSE and SESPARSE with a positive size are opened; a line of a known shape but the
    wrong count of fields aborts the open (``Invalid extent line``) after the extents before
    it were opened.
``vmdk_parent_open``
    reads 10 KiB (``DESC_SIZE``) at ``desc_offset`` into a zeroed 10 KiB + 1 buffer,
    ``strstr(desc, "parentFileNameHint")``, skips 20 bytes (the key, ``=`` and ``"`` — or any
    two bytes, even a NUL) and copies up to the next ``"`` (``strchr``, which may start past
    the C string's NUL). A non-empty name becomes the backing file, format ``vmdk``; a
    ``json:`` or ``nbd:`` name is honoured like any backing file name.
``vmdk_read_cid``
    ``strstr`` of ``CID`` / ``parentCID`` in the same 10 KiB (last byte forced to NUL), skip
    one more byte, ``sscanf("%x")``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

#: ``DESC_SIZE``: what ``vmdk_parent_open`` and ``vmdk_read_cid`` read at ``desc_offset``.
QEMU_DESC_SIZE = 20 * 512
#: ``vmdk_read_desc`` reads at most this much (``(1 << 20) - 1``).
QEMU_READ_DESC_MAX = (1 << 20) - 1
#: ``desc_offset`` of every sparse (KDMV or COWD) file in ``vmdk_open``.
QEMU_SPARSE_DESC_OFFSET = 0x200
#: ``sizeof(bs->auto_backing_file)`` (PATH_MAX): a longer hint fails the open.
QEMU_MAX_HINT = 4096 - 1
#: ``ct[128]`` in ``vmdk_open_desc_file``.
QEMU_MAX_CREATE_TYPE = 128 - 1
#: The createType values ``vmdk_open_desc_file`` accepts for a descriptor file.
QEMU_DESCRIPTOR_CREATE_TYPES = frozenset(
    {b"monolithicFlat", b"vmfs", b"vmfsSparse", b"seSparse", b"twoGbMaxExtentSparse", b"twoGbMaxExtentFlat"}
)
QEMU_EXTENT_TYPES = frozenset({b"FLAT", b"SPARSE", b"VMFS", b"VMFSSPARSE", b"SESPARSE"})

HINT_KEY = b"parentFileNameHint"
#: ``p_name += sizeof("parentFileNameHint") + 1``: the key's 18 bytes, its NUL, plus one.
_HINT_SKIP = len(HINT_KEY) + 2

#: C's ``isspace`` in the "C" locale: what ``sscanf`` skips for a space in its format.
_C_SPACE = b" \t\n\v\f\r"
_WS = rb"[ \t\n\v\f\r]"
_NON_WS = rb"[^ \t\n\v\f\r]"
#: The extent ``sscanf`` after its first conversion (``%10s`` = ``RW``, checked by the caller),
#: with possessive quantifiers so that no backtracking can make it match what sscanf would not.
_EXTENT_SSCANF = re.compile(
    rb"RW" + _WS + rb"*+(?P<sectors>[+-]?[0-9]++)"
    rb"(?:" + _WS + rb"*+(?P<type>" + _NON_WS + rb"{1,10}+)"
    rb"(?:" + _WS + rb'*+"(?P<name>[^\n\r"]{1,511}+)'
    rb'(?:"' + _WS + rb"*+(?P<offset>[+-]?[0-9]++))?"
    rb")?)?"
)
#: Every extent ``sscanf`` converts at least four fields of (a name: the lines QEMU opens or
#: rejects), from a line start: only blanks (not newlines) before the ``RW`` token, which
#: must end in white space. One C-speed search over the text, so that a megabyte of lines
#: that begin like an extent and are not one costs no Python per line (red-team: 60 such
#: descriptors in a 128 KB .tar.gz took 7 s). Matches cannot hide one another: inside a
#: match, a later line can begin only with the type field or the offset, never with an
#: ``RW`` token that sscanf would take four fields from.
_EXTENT_FROM_BLANKS = (
    rb"[ \t\v\f\r]*+(?=RW(?!" + _NON_WS + rb"))(?P<extent>RW" + _WS + rb"*+[+-]?[0-9]++"
    rb"" + _WS + rb"*+" + _NON_WS + rb"{1,10}+" + _WS + rb'*+"[^\n\r"]{1,511}+)'
)
#: The first line, then every line after a newline. (A literal newline, not a multi-line
#: ``^``: the regex engine then jumps from newline to newline instead of trying the anchor at
#: every byte — twice as fast on a megabyte of false extent lines, which an archive may hold
#: 64 times.)
_EXTENT_AT_FIRST_LINE = re.compile(_EXTENT_FROM_BLANKS)
_EXTENT_AT_LINE_START = re.compile(rb"\n" + _EXTENT_FROM_BLANKS)
_HEX = re.compile(rb"[ \t\n\v\f\r]*+([+-]?)(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]++)")
_HINT_ANY_CASE = re.compile(re.escape(HINT_KEY), re.IGNORECASE)

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


def c_string(buffer: bytes) -> bytes:
    """``buffer`` up to its first NUL: what C string functions see."""
    end = buffer.find(b"\0")
    return buffer if end < 0 else buffer[:end]


def qemu_read_desc(src_read: bytes) -> bytes:
    """The C string ``vmdk_read_desc`` leaves, given the bytes it read (already bounded)."""
    return c_string(src_read[:QEMU_READ_DESC_MAX])


def descriptor_read_length(file_size: int) -> int:
    """How many bytes ``vmdk_read_desc`` reads: the file's size, at most 1 MiB - 1."""
    return min(file_size, QEMU_READ_DESC_MAX)


def wrapped_sector_offset(sectors: int) -> int | None:
    """``sectors << 9`` as QEMU's u64 arithmetic computes it; None when ``bdrv_pread`` refuses it."""
    offset = (sectors << 9) & 0xFFFF_FFFF_FFFF_FFFF
    return offset if offset <= INT64_MAX else None


# -- vmdk_parent_open ------------------------------------------------------------------------
@dataclass(frozen=True)
class QemuParentHint:
    """What ``vmdk_parent_open`` makes of the ``parentFileNameHint`` it found."""

    #: Where the key starts in the 10 KiB area QEMU read.
    key_offset: int
    #: The backing file name QEMU takes (None when it fails the open instead).
    name: str | None
    #: Why QEMU fails the open, when it does.
    failure: str = ""

    @property
    def opens(self) -> bool:
        return bool(self.name)


def qemu_parent_hint(area: bytes) -> QemuParentHint | None:
    """``vmdk_parent_open`` on the 10 KiB ``area`` read at ``desc_offset`` (zero padded)."""
    buffer = area[:QEMU_DESC_SIZE].ljust(QEMU_DESC_SIZE + 1, b"\0")  # g_malloc0(DESC_SIZE + 1)
    text_end = buffer.find(b"\0")
    key = buffer.find(HINT_KEY, 0, text_end)
    if key < 0:
        return None
    start = key + _HINT_SKIP
    if start > QEMU_DESC_SIZE:
        return QemuParentHint(key, None, "QEMU would read past the end of its 10 KiB buffer")
    nul = buffer.find(b"\0", start)
    quote = buffer.find(b'"', start, nul)
    if quote < 0:
        return QemuParentHint(key, None, "no closing quote follows it, so QEMU fails to open the image")
    if quote - start > QEMU_MAX_HINT:
        return QemuParentHint(key, None, "the name is longer than QEMU's 4095 bytes")
    return QemuParentHint(key, buffer[start:quote].decode("utf-8", errors="backslashreplace"))


def hint_key_offsets(area: bytes) -> list[int]:
    """Every ``parentFileNameHint`` in ``area`` in any letter case, NULs or not (bounded count)."""
    return [match.start() for _, match in zip(range(16), _HINT_ANY_CASE.finditer(area), strict=False)]


# -- vmdk_read_cid ----------------------------------------------------------------------------
def qemu_read_cid(area: bytes, *, parent: bool) -> int | None:
    """``vmdk_read_cid``: the CID (or parentCID) QEMU finds in the 10 KiB ``area``, or None."""
    buffer = bytearray(area[:QEMU_DESC_SIZE].ljust(QEMU_DESC_SIZE, b"\0"))
    buffer[QEMU_DESC_SIZE - 1] = 0
    key = b"parentCID" if parent else b"CID"
    position = bytes(buffer).find(key, 0, buffer.find(b"\0"))
    if position < 0:
        return None
    match = _HEX.match(buffer, position + len(key) + 1)
    if match is None:
        return None
    digits = match.group(2).lstrip(b"0") or b"0"
    # strtoul saturates at ULONG_MAX; sscanf then stores the low 32 bits.
    value = 0xFFFF_FFFF_FFFF_FFFF if len(digits) > 16 else int(digits, 16)
    if match.group(1) == b"-":
        value = -value
    return value & 0xFFFF_FFFF


# -- vmdk_parse_description -------------------------------------------------------------------
def qemu_create_type(text: bytes) -> bytes | None:
    """``vmdk_parse_description(desc, "createType", ct, 128)``: the value QEMU takes, or None."""
    position = text.find(b"createType")
    if position < 0:
        return None
    start = position + len(b"createType") + 2
    if start >= len(text):
        return None
    end = text.find(b'"', start)
    if end < 0 or end - start > QEMU_MAX_CREATE_TYPE:
        return None
    return text[start:end]


# -- vmdk_parse_extents -----------------------------------------------------------------------
@dataclass(frozen=True)
class QemuExtentLine:
    """One extent as ``vmdk_parse_extents`` reads it from a line start."""

    line_number: int
    sectors: int
    type: str
    #: The file name QEMU opens (relative to the descriptor's directory unless absolute).
    filename: str
    offset: int | None
    #: ``opens``: QEMU opens ``filename``; ``invalid``: QEMU aborts the open on this line.
    outcome: str


def _clamp_int64(digits: bytes) -> int:
    """``strtol`` of ``[+-]digits``: saturates at the int64 limits."""
    negative = digits.startswith(b"-")
    magnitude = digits.lstrip(b"+-").lstrip(b"0") or b"0"
    value = INT64_MAX + 1 if len(magnitude) > 19 else int(magnitude)
    return max(INT64_MIN, -value) if negative else min(INT64_MAX, value)


def qemu_extent_lines(text: bytes) -> list[QemuExtentLine]:
    """Every extent ``vmdk_parse_extents`` opens (or aborts on) in the C string ``text``.

    A line is parsed from its start; white space (newlines too) before ``RW`` is skipped, so
    several line starts can reach one ``RW`` token: QEMU then opens the file once per line
    start, which changes nothing here (each token is reported once).
    """
    extents: list[QemuExtentLine] = []
    counted_to, line_number = 0, 1
    first = _EXTENT_AT_FIRST_LINE.match(text)
    later = _EXTENT_AT_LINE_START.finditer(text, first.end() if first is not None else 0)
    for found in itertools.chain((first,) if first is not None else (), later):
        position = found.start("extent")
        match = _EXTENT_SSCANF.match(text, position)
        if match is None or match.group("name") is None:
            continue  # (cannot happen: the search asked for the same four fields)
        extent_type = match.group("type")
        sectors = _clamp_int64(match.group("sectors"))
        offset_digits = match.group("offset")
        conversions = 5 if offset_digits is not None else 4
        offset = _clamp_int64(offset_digits) if offset_digits is not None else None
        if extent_type == b"FLAT":
            invalid = conversions != 5 or (offset is not None and offset < 0)
        elif extent_type == b"VMFS":
            invalid = conversions != 4
        else:
            invalid = conversions != 4
        if not invalid and (sectors <= 0 or extent_type not in QEMU_EXTENT_TYPES):
            continue
        line_number += text.count(b"\n", counted_to, position)
        counted_to = position
        extents.append(
            QemuExtentLine(
                line_number=line_number,
                sectors=sectors,
                type=extent_type.decode("ascii", errors="backslashreplace"),
                filename=match.group("name").decode("utf-8", errors="backslashreplace"),
                offset=offset,
                outcome="invalid" if invalid else "opens",
            )
        )
        if invalid:
            break  # "Invalid extent line": QEMU gives up here
    return extents
