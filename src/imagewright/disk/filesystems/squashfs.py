"""squashfs, following libblkid ``superblocks/squashfs.c``.

Magic ``hsqs`` (little-endian) at byte 0; version 4 is ``squashfs``, versions 1-3 (also
big-endian ``sqsh``) are ``squashfs3``. A version-4 superblock records its block size (u32 at
12), compression (u16 at 20) and the bytes used (u64 at 40).
"""

from __future__ import annotations

from imagewright.binary import ByteSource
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import read_or_none, u16be, u16le, u32le, u64le

_COMPRESSION = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}


def probe(src: ByteSource) -> FilesystemInfo | None:
    sb = read_or_none(src, 0, 96)
    if sb is None:
        return None
    if sb[:4] == b"hsqs":
        major, minor = u16le(sb, 28), u16le(sb, 30)
    elif sb[:4] == b"sqsh":
        major, minor = u16be(sb, 28), u16be(sb, 30)
    else:
        return None
    if major >= 4:
        if sb[:4] != b"hsqs":
            return None
        info = FilesystemInfo(type="squashfs", version=f"{major}.{minor}")
        info.size_bytes = u64le(sb, 40)
        info.details.update(
            {
                "block_size": u32le(sb, 12),
                "inodes": u32le(sb, 4),
                "compression": _COMPRESSION.get(u16le(sb, 20), "unknown"),
            }
        )
        return info
    info = FilesystemInfo(type="squashfs3", version=f"{major}.{minor}", block_size=1024)
    return info
