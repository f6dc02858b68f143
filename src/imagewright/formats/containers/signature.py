"""The first look at an image: does it start with a compressed stream's magic?

``probe_container`` asks this of every image it is given, so the four formats' signatures and
probes live here, in a module that imports nothing: the header modules (``gzip``, ``xz``,
``bzip2``, ``zstd``, whose ``probe`` and magic numbers are these) load when a stream of their
format is read, not to tell an uncompressed disk image from a compressed one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagewright.formats.containers.decompress import CompressionFormat

#: RFC 1952: ID1 ID2 and CM=8 (deflate); FLG bits 5-7 are reserved (zero).
GZIP_MAGIC = b"\x1f\x8b\x08"
GZIP_RESERVED_FLAGS = 0xE0
#: xz file format 1.2, stream header magic.
XZ_HEADER_MAGIC = b"\xfd7zXZ\x00"
#: bzip2: 'BZh', a block size digit, then a block or end-of-stream magic.
BZIP2_MAGIC = b"BZh"
_BZIP2_BLOCK_MAGIC = b"\x31\x41\x59\x26\x53\x59"
_BZIP2_END_MAGIC = b"\x17\x72\x45\x38\x50\x90"
#: RFC 8878: a zstd frame's magic; skippable frames use 0x184D2A50-0x184D2A5F.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_SKIPPABLE_LOW = 0x184D2A50


def gzip(head: bytes) -> bool:
    # FLG reserved bits must be clear, as gzip(1) requires; that also keeps random data out.
    return len(head) >= 10 and head[:3] == GZIP_MAGIC and not head[3] & GZIP_RESERVED_FLAGS


def xz(head: bytes) -> bool:
    return head[:6] == XZ_HEADER_MAGIC


def bzip2(head: bytes) -> bool:
    return (
        len(head) >= 10
        and head[:3] == BZIP2_MAGIC
        and 0x31 <= head[3] <= 0x39
        and head[4:10] in (_BZIP2_BLOCK_MAGIC, _BZIP2_END_MAGIC)
    )


def zstd(head: bytes) -> bool:
    """A zstd frame, or a skippable frame (which pzstd and others put first)."""
    if len(head) >= 8 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == ZSTD_SKIPPABLE_LOW:
        return True
    return head[:4] == ZSTD_MAGIC and len(head) >= 6 and not head[4] & 0x08


def probe_compression(head: bytes) -> CompressionFormat | None:
    if gzip(head):
        return "gzip"
    if xz(head):
        return "xz"
    if bzip2(head):
        return "bzip2"
    if zstd(head):
        return "zstd"
    return None
