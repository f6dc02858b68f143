"""xz (the .xz file format 1.1.0): streams, their index, and the exact uncompressed size.

An .xz file is one or more streams, optionally separated by stream padding (NUL bytes in
multiples of four). Each stream::

    Stream Header (12)  magic FD 37 7A 58 5A 00 | flags (2: 0x00, check type) | CRC32 (4)
    Blocks ...          each padded to a multiple of 4
    Index               0x00 | varint record count | records (varint unpadded size,
                        varint uncompressed size) | NUL padding to 4 | CRC32 (4)
    Stream Footer (12)  CRC32 (4) | backward size (4, LE; index size = (n + 1) * 4) |
                        flags (2, equal to the header's) | magic "YZ"

Read backwards from the end of the file (footer → index → header), the indexes give the
exact uncompressed size of every stream without decompressing anything — what
``xz --robot -lv`` prints. Every count and size read here is bounded; a truncated file
has no valid footer at its end and is refused at once.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from imagewright.binary import ByteSource, MiB, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats.containers import signature

HEADER_MAGIC = signature.XZ_HEADER_MAGIC
FOOTER_MAGIC = b"YZ"
_HEADER_SIZE = 12
_FOOTER_SIZE = 12

#: Largest index we read (one record per block: 16 MiB is over a million blocks).
MAX_INDEX_BYTES = 16 * MiB
#: Most streams in one file (concatenated .xz files).
MAX_STREAMS = 10_000
#: Most blocks over all streams.
MAX_BLOCKS = 2_000_000
#: Most stream padding we walk over between streams.
MAX_PADDING = 1 * MiB

CHECK_NAMES = {0: "None", 1: "CRC32", 4: "CRC64", 10: "SHA-256"}


@dataclass
class XzDetails:
    """What the stream footers and indexes say; matches ``xz --robot -lv`` totals."""

    streams: int
    blocks: int
    #: Exact total of all streams' uncompressed sizes, from the indexes.
    uncompressed_size: int
    #: Bytes of the file taken by streams (everything but stream padding).
    compressed_size: int
    stream_padding: int
    #: Integrity check names used by the streams (``CRC64`` is xz's default).
    checks: list[str]


#: The signature check lives in ``signature``: probing an image does not import this module.
probe = signature.xz


def _varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """xz multibyte integer (spec 1.2): up to 9 bytes, 7 bits each, no redundant zero byte."""
    value = 0
    for i in range(9):
        if pos + i >= len(data):
            raise ImageFormatError(f"The xz {what} is truncated.")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise ImageFormatError(f"The xz {what} holds a malformed number.")
            return value, pos + i + 1
    raise ImageFormatError(f"The xz {what} holds a number longer than 9 bytes.")


def _check_crc(data: bytes, stored: bytes, what: str) -> None:
    if zlib.crc32(data).to_bytes(4, "little") != stored:
        raise ImageFormatError(f"The xz {what} fails its CRC32 check.")


@dataclass
class _Stream:
    start: int
    end: int
    blocks: int
    uncompressed_size: int
    check: int


def _read_stream_backwards(src: ByteSource, end: int) -> _Stream:
    """The stream whose footer ends at ``end``."""
    if end < _HEADER_SIZE + _FOOTER_SIZE:
        raise ImageFormatError("The xz file is truncated: it is too short to hold a stream.")
    footer = read_exact(src, end - _FOOTER_SIZE, _FOOTER_SIZE, "xz stream footer")
    if footer[10:12] != FOOTER_MAGIC:
        raise ImageFormatError("The xz file is truncated or damaged: it does not end with a stream footer.")
    _check_crc(footer[4:10], footer[0:4], "stream footer")
    flags = footer[8:10]
    if flags[0] != 0 or flags[1] & 0xF0:
        raise ImageFormatError("The xz stream footer sets unsupported flags.")
    index_size = (int.from_bytes(footer[4:8], "little") + 1) * 4
    if index_size > MAX_INDEX_BYTES:
        raise ImageFormatError(
            f"The xz index claims {index_size} bytes, more than {MAX_INDEX_BYTES} allowed."
        )
    index_start = end - _FOOTER_SIZE - index_size
    if index_start < _HEADER_SIZE:
        raise ImageFormatError("The xz index lies before the start of the file.")
    index = read_exact(src, index_start, index_size, "xz index")
    if index[0] != 0:
        raise ImageFormatError("The xz index does not start with its indicator byte.")
    _check_crc(index[:-4], index[-4:], "index")
    count, pos = _varint(index, 1, "index")
    if count > MAX_BLOCKS:
        raise ImageFormatError(f"The xz index lists {count} blocks, more than {MAX_BLOCKS} allowed.")
    blocks_size = 0
    uncompressed = 0
    for _ in range(count):
        unpadded, pos = _varint(index, pos, "index")
        size, pos = _varint(index, pos, "index")
        if unpadded < 5 or unpadded > (1 << 63) - 4:
            raise ImageFormatError("The xz index lists a block of impossible size.")
        blocks_size += (unpadded + 3) & ~3
        uncompressed += size
    padding = index[pos:-4]
    if len(padding) > 3 or any(padding) or (pos + len(padding)) % 4:
        raise ImageFormatError("The xz index has malformed padding.")
    start = index_start - blocks_size - _HEADER_SIZE
    if start < 0:
        raise ImageFormatError("The xz index lists more block data than the file holds.")
    header = read_exact(src, start, _HEADER_SIZE, "xz stream header")
    if header[:6] != HEADER_MAGIC:
        raise ImageFormatError("The xz index does not agree with the stream header position.")
    _check_crc(header[6:8], header[8:12], "stream header")
    if header[6:8] != flags:
        raise ImageFormatError("The xz stream header and footer disagree on the stream flags.")
    return _Stream(start, end, count, uncompressed, flags[1])


def _skip_padding_backwards(src: ByteSource, end: int) -> int:
    """Where the stream padding (NUL bytes) ending at ``end`` starts."""
    pos = end
    while pos > 0 and end - pos < MAX_PADDING:
        chunk_start = max(0, pos - 4096)
        chunk = src.pread(chunk_start, pos - chunk_start)
        stripped = chunk.rstrip(b"\0")
        pos = chunk_start + len(stripped)
        if stripped:
            break
    if end - pos >= MAX_PADDING:
        raise ImageFormatError(f"The xz file ends in more than {MAX_PADDING} NUL bytes of stream padding.")
    # A stream ends in "YZ", so every trailing NUL is padding, which comes in whole 4-byte units.
    if (end - pos) % 4:
        raise ImageFormatError("The xz stream padding is not a multiple of four bytes.")
    return pos


def read_details(src: ByteSource) -> XzDetails:
    """Walk every stream from the end of the file (xz spec 2.1.2 and 4)."""
    end = src.size
    streams: list[_Stream] = []
    padding_total = 0
    while end > 0:
        if len(streams) >= MAX_STREAMS:
            raise ImageFormatError(f"The xz file holds more than {MAX_STREAMS} streams.")
        # Padding may follow the last stream too (xz spec 2.2).
        unpadded_end = _skip_padding_backwards(src, end)
        padding_total += end - unpadded_end
        end = unpadded_end
        if end == 0:
            break
        stream = _read_stream_backwards(src, end)
        streams.append(stream)
        end = stream.start
    if not streams:
        raise ImageFormatError("The xz file holds no stream.")
    if sum(s.blocks for s in streams) > MAX_BLOCKS:
        raise ImageFormatError(f"The xz file holds more than {MAX_BLOCKS} blocks.")
    streams.reverse()
    checks = list(dict.fromkeys(CHECK_NAMES.get(s.check, f"Unknown-{s.check}") for s in streams))
    return XzDetails(
        streams=len(streams),
        blocks=sum(s.blocks for s in streams),
        uncompressed_size=sum(s.uncompressed_size for s in streams),
        compressed_size=sum(s.end - s.start for s in streams),
        stream_padding=padding_total,
        checks=checks,
    )
