"""gzip (RFC 1952): the member header, the trailer's ISIZE, and a bounded member decoder.

Byte layout of a member header (all integers little endian)::

    0  ID1 0x1f   1  ID2 0x8b   2  CM (8 = deflate)   3  FLG
    4  MTIME u32  8  XFL        9  OS
    then, by FLG bit: FEXTRA (0x04) u16 XLEN + XLEN bytes, FNAME (0x08) NUL-terminated
    latin-1, FCOMMENT (0x10) NUL-terminated latin-1, FHCRC (0x02) u16 CRC of the header.
    FLG bits 5..7 are reserved and must be zero (gzip(1) refuses them).

The trailer of each member is CRC32 u32 + ISIZE u32 (uncompressed length mod 2^32).
A file may hold several members back to back (``cat a.gz b.gz``); the last four bytes of the
file are the ISIZE of the *last* member only, so they never give the total size of a
multi-member file, nor of anything of 4 GiB or more. We report them as a hint.

NOTE: members are inflated by ISA-L (``isal_zlib.decompressobj(wbits=31)``: the same gzip
format as zlib, about 3x faster on one core), which checks CRC32 and ISIZE of each member it
finishes, as zlib does. It does not refuse a member header with reserved flag bits (zlib
and gzip(1) do), so ``GzipMemberDecoder`` checks every member's header for them itself.
Output is always requested with ``max_length`` so a member that inflates 1000:1 never
produces more than the caller asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagewright.binary import ByteSource
from imagewright.errors import ImageFormatError
from imagewright.formats.containers import signature

MAGIC = signature.GZIP_MAGIC

_FHCRC = 0x02
_FEXTRA = 0x04
_FNAME = 0x08
_FCOMMENT = 0x10
_RESERVED = signature.GZIP_RESERVED_FLAGS

#: Longest FNAME/FCOMMENT we read; gzip(1) has no limit, a header is not a place for megabytes.
MAX_TEXT_FIELD = 64 * 1024

OS_NAMES = {
    0: "FAT",
    1: "Amiga",
    2: "VMS",
    3: "Unix",
    4: "VM/CMS",
    5: "Atari TOS",
    6: "HPFS",
    7: "Macintosh",
    8: "Z-System",
    9: "CP/M",
    10: "TOPS-20",
    11: "NTFS",
    12: "QDOS",
    13: "Acorn RISCOS",
    255: "unknown",
}


@dataclass
class GzipDetails:
    """Facts from the first member header and the file's last four bytes."""

    original_name: str | None
    comment: str | None
    #: Seconds since the epoch as recorded by the compressor (0 = not recorded).
    mtime: int
    os: int
    os_name: str
    extra_flags: int
    has_header_crc: bool
    extra_field_length: int
    #: Size of the first member header in bytes (where the deflate data starts).
    header_size: int
    #: The last member's uncompressed size mod 2^32 (the file's last four bytes): a hint only.
    last_member_isize_mod_2_32: int
    #: Members decompressed; set only when the whole stream was decompressed.
    members: int | None = None


#: The signature check lives in ``signature``: probing an image does not import this module.
probe = signature.gzip


def _read_text_field(src: ByteSource, offset: int, what: str) -> tuple[str, int]:
    """A NUL-terminated latin-1 field starting at ``offset``; returns it and the next offset."""
    data = src.pread(offset, MAX_TEXT_FIELD + 1)
    end = data.find(b"\0")
    if end < 0:
        if len(data) > MAX_TEXT_FIELD:
            raise ImageFormatError(f"The gzip {what} field is longer than {MAX_TEXT_FIELD} bytes.")
        raise ImageFormatError(f"The gzip header is truncated inside its {what} field.")
    return data[:end].decode("latin-1"), offset + end + 1


def read_details(src: ByteSource) -> GzipDetails:
    """Parse the first member header (RFC 1952 section 2.3) and the file's last four bytes."""
    head = src.pread(0, 10)
    if len(head) < 10 or head[:2] != MAGIC[:2]:
        raise ImageFormatError("The file does not start with a gzip header.")
    if head[2] != 8:
        raise ImageFormatError(
            f"The gzip header names compression method {head[2]}; only deflate (8) exists."
        )
    flags = head[3]
    if flags & _RESERVED:
        raise ImageFormatError("The gzip header sets reserved flag bits.")
    pos = 10
    extra_length = 0
    if flags & _FEXTRA:
        xlen = src.pread(pos, 2)
        if len(xlen) < 2:
            raise ImageFormatError("The gzip header is truncated inside its extra field.")
        extra_length = int.from_bytes(xlen, "little")
        pos += 2 + extra_length
    name = comment = None
    if flags & _FNAME:
        name, pos = _read_text_field(src, pos, "file name")
    if flags & _FCOMMENT:
        comment, pos = _read_text_field(src, pos, "comment")
    if flags & _FHCRC:
        pos += 2
    if pos > src.size:
        raise ImageFormatError("The gzip header is truncated.")
    trailer = src.pread(src.size - 4, 4) if src.size >= pos + 8 else b""
    if len(trailer) != 4:
        raise ImageFormatError("The gzip file is too short to hold a member trailer.")
    os_id = head[9]
    return GzipDetails(
        original_name=name,
        comment=comment,
        mtime=int.from_bytes(head[4:8], "little"),
        os=os_id,
        os_name=OS_NAMES.get(os_id, f"unassigned ({os_id})"),
        extra_flags=head[8],
        has_header_crc=bool(flags & _FHCRC),
        extra_field_length=extra_length,
        header_size=pos,
        last_member_isize_mod_2_32=int.from_bytes(trailer, "little"),
    )


class GzipMemberDecoder:
    """One gzip member through ISA-L, with the ``needs_input``/``max_length`` contract of
    ``lzma.LZMADecompressor`` so one driver handles every codec.

    The inflater keeps input it could not use (because ``max_length`` was reached) in
    ``unconsumed_tail``; we hold it and feed it back first.
    """

    def __init__(self) -> None:
        # Imported here: ``probe_container`` imports this module's header checks for every
        # image inspected, and only a gzip stream needs ISA-L (tests/test_cli_startup.py).
        from isal import isal_zlib

        self._inflate = isal_zlib.decompressobj(wbits=16 + isal_zlib.MAX_WBITS)
        self._tail = b""
        self._needs_input = True
        self._header_checked = False

    @property
    def eof(self) -> bool:
        return self._inflate.eof

    @property
    def unused_data(self) -> bytes:
        return self._inflate.unused_data

    @property
    def needs_input(self) -> bool:
        return self._needs_input

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        buf = self._tail + data if self._tail else data
        if max_length < 0:
            raise ValueError("an unbounded decompression was requested")
        if not self._header_checked and len(buf) >= 4:
            if buf[3] & _RESERVED:
                raise ImageFormatError("A gzip member header sets reserved flag bits.")
            self._header_checked = True
        out = self._inflate.decompress(buf, max_length)
        self._tail = self._inflate.unconsumed_tail
        # Output cut at max_length may leave output pending inside zlib even with no tail.
        self._needs_input = not self._tail and len(out) < max_length
        return out
