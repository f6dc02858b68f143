"""bzip2: the stream header. The format has no index and no recorded size.

Byte layout of a stream start::

    0  "BZh"   3  block size digit '1'..'9' (x 100 000 bytes of input per block)
    4  48-bit magic of the first block 0x314159265359 (pi) — or 0x177245385090 (sqrt pi),
       the end-of-stream marker, in an empty stream

Blocks are bit-aligned, so nothing past the header can be located without decoding; the
uncompressed size is known only after decompressing everything. Several streams may be
concatenated (``pbzip2`` writes one per chunk); ``bz2.BZ2Decompressor`` handles one stream
and hands back what follows in ``unused_data``.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagewright.binary import ByteSource
from imagewright.errors import ImageFormatError
from imagewright.formats.containers import signature

MAGIC = signature.BZIP2_MAGIC


@dataclass
class Bzip2Details:
    """The first stream's header."""

    #: The compression level digit (1..9).
    level: int
    #: Bytes of input per block: level x 100 000.
    block_size: int
    #: Streams decompressed; set only when the whole file was decompressed.
    streams: int | None = None


#: The signature check lives in ``signature``: probing an image does not import this module.
probe = signature.bzip2


def read_details(src: ByteSource) -> Bzip2Details:
    head = src.pread(0, 10)
    if not probe(head):
        raise ImageFormatError("The file does not start with a bzip2 stream header.")
    level = head[3] - 0x30
    return Bzip2Details(level=level, block_size=level * 100_000)
