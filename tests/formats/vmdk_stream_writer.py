"""Write a streamOptimized VMDK the way VMware does (GD_AT_END, footer, end-of-stream marker).

qemu-img 7.2 writes its streamOptimized files with the grain directory up front, so the
VMware layout that OVAs carry has to be produced here; qemu reads both, and the tests check
that our reader and qemu agree on every byte of it. Layout (VMware "Virtual Disk Format 5.0",
"Stream-Optimized Compressed Sparse Extents"): header (gdOffset = GD_AT_END) → descriptor →
grain markers → [GT marker + GT] per used table → GD marker + GD → footer marker → footer
(the header with the real gdOffset) → end-of-stream marker.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SECTOR = 512
GD_AT_END = 0xFFFF_FFFF_FFFF_FFFF


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % SECTOR)


def _header(capacity: int, grain: int, descriptor_sectors: int, gd_offset: int, overhead: int) -> bytes:
    flags = 0x1 | 0x10000 | 0x20000
    header = struct.pack(
        "<4sIIQQQQIQQQB4sH",
        b"KDMV", 3, flags, capacity, grain, 1, descriptor_sectors, 512, 0, gd_offset, overhead,
        0, b"\n \r\n", 1,
    )  # fmt: skip
    return header.ljust(SECTOR, b"\0")


def _marker(value: int, kind: int) -> bytes:
    return struct.pack("<QII", value, 0, kind).ljust(SECTOR, b"\0")


def write_stream_optimized(path: Path, guest: bytes, name: str | None = None, grain: int = 128) -> Path:
    """Write ``guest`` (a multiple of 512 bytes) as a VMware-layout streamOptimized VMDK."""
    assert len(guest) % SECTOR == 0
    capacity = len(guest) // SECTOR
    grain_bytes = grain * SECTOR
    descriptor = (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="streamOptimized"\n\n# Extent description\n'
        f'RDONLY {capacity} SPARSE "{name or path.name}"\n\n# The Disk Data Base\n#DDB\n\n'
        'ddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "7"\n'
        'ddb.uuid = "60 00 C2 9a 5a 2d 59 2d-56 9a 3d a0 96 d8 4f 64"\n'
    ).encode()
    descriptor_sectors = len(_pad(descriptor)) // SECTOR
    overhead = 1 + descriptor_sectors
    out = bytearray(_header(capacity, grain, descriptor_sectors, GD_AT_END, overhead))
    out += _pad(descriptor)
    grains = (capacity + grain - 1) // grain
    grain_table = [0] * grains
    for index in range(grains):
        chunk = guest[index * grain_bytes : (index + 1) * grain_bytes]
        if not chunk.strip(b"\0"):
            continue
        grain_table[index] = len(out) // SECTOR
        compressed = zlib.compress(chunk)
        out += _pad(struct.pack("<QI", index * grain, len(compressed)) + compressed)
    tables = (grains + 511) // 512
    directory = [0] * tables
    for table in range(tables):
        entries = grain_table[table * 512 : (table + 1) * 512]
        if not any(entries):
            continue
        entries += [0] * (512 - len(entries))
        out += _marker(4, 1)
        directory[table] = len(out) // SECTOR
        out += struct.pack("<512I", *entries)
    gd = _pad(struct.pack(f"<{tables}I", *directory))
    out += _marker(len(gd) // SECTOR, 2)
    gd_offset = len(out) // SECTOR
    out += gd
    out += _marker(1, 3)
    out += _header(capacity, grain, descriptor_sectors, gd_offset, overhead)
    out += _marker(0, 0)
    path.write_bytes(bytes(out))
    return path
