"""Linux swap (v0, v1) and hibernation images, as libblkid ``superblocks/swap.c``.

The signature ends the first page: at page size - 10 for 4, 8, 16, 32 and 64 KiB pages
(spec section 1.9). A v1 header at byte 1024 holds version, last page, UUID (1036) and
label (1052). ``S1SUSPEND``/``S2SUSPEND``/``ULSUSPEND``/``LINHIB0001`` (or TuxOnIce's magic at
byte 0) mark a swap area holding a hibernation image: blkid calls that ``swsuspend``.
"""

from __future__ import annotations

import struct

from imagewright.binary import ByteSource
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import blkid_label, read_or_none, uuid_or_none

MIN_SIZE = 10 * 4096
PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)
TUXONICE_MAGIC = b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c"
_SUSPEND_MAGICS = {
    b"S1SUSPEND": "s1suspend",
    b"S2SUSPEND": "s2suspend",
    b"ULSUSPEND": "ulsuspend",
    b"LINHIB0001": "linhib0001",
}


def probe(src: ByteSource) -> FilesystemInfo | None:
    if src.size < MIN_SIZE:
        return None
    head = read_or_none(src, 0, len(TUXONICE_MAGIC))
    if head is None:
        return None
    if head == TUXONICE_MAGIC:
        return _with_header(src, "swsuspend", "tuxonice", PAGE_SIZES[0])
    for page_size in PAGE_SIZES:
        tail = read_or_none(src, page_size - 10, 10)
        if tail is None:
            return None
        for magic, version in _SUSPEND_MAGICS.items():
            if tail.startswith(magic):
                return _with_header(src, "swsuspend", version, page_size)
        if tail == b"SWAP-SPACE":
            # Swap v0 has neither label nor UUID.
            return FilesystemInfo(type="swap", version="0", usage="other", details={"page_size": page_size})
        if tail == b"SWAPSPACE2":
            return _with_header(src, "swap", "1", page_size)
    return None


def _with_header(src: ByteSource, fs_type: str, version: str, page_size: int) -> FilesystemInfo | None:
    header = read_or_none(src, 1024, 4 * 3 + 16 + 16 + 4 * 117 + 4)
    if header is None:
        return None
    little = struct.unpack_from("<I", header, 0)[0]
    big = struct.unpack_from(">I", header, 0)[0]
    endian = "<" if little == 1 or big != 1 else ">"
    if version == "1":
        if little != 1 and big != 1:
            return None
        if struct.unpack_from("<I", header, 4)[0] == 0:
            return None
    info = FilesystemInfo(type=fs_type, version=version, usage="other")
    # libblkid's sanity check: label and UUID are trusted only when this padding is clean.
    padding_clean = struct.unpack_from("<II", header, 12 + 32 + 32 * 4) == (0, 0)
    if padding_clean:
        if header[28] != 0:
            info.label = blkid_label(header[28:44])
        info.uuid = uuid_or_none(header[12:28])
    last_page = struct.unpack_from(endian + "I", header, 4)[0]
    bad_pages = struct.unpack_from(endian + "I", header, 8)[0]
    info.size_bytes = (last_page + 1) * page_size
    info.details.update(
        {
            "page_size": page_size,
            "endianness": "little" if endian == "<" else "big",
            "bad_pages": bad_pages,
        }
    )
    if fs_type == "swsuspend":
        info.details["hibernation_image"] = version
    return info
