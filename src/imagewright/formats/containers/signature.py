"""The first look at an image: does it start with a compressed stream's magic?

``probe_container`` asks this of every image it is given, so it imports only the header
modules of the four formats (``gzip``, ``xz``, ``bzip2``, ``zstd``: magic bytes and small
header records) and nothing that decompresses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagewright.formats.containers import bzip2, gzip, xz, zstd

if TYPE_CHECKING:
    from imagewright.formats.containers.decompress import CompressionFormat


def probe_compression(head: bytes) -> CompressionFormat | None:
    if gzip.probe(head):
        return "gzip"
    if xz.probe(head):
        return "xz"
    if bzip2.probe(head):
        return "bzip2"
    if zstd.probe(head):
        return "zstd"
    return None
