"""The streamOptimized VMDK writer: grains in, one front-to-back byte stream out.

Layout (VMware "Virtual Disk Format 5.0", stream-optimized compressed sparse extents;
spec digest section 1.2; what ``formats/vmdk.py`` and QEMU 7.2 ``block/vmdk.c`` read)::

    sector 0          sparse header: version 3, flags 0x30001 (newline test, compressed
                      grains, markers), gdOffset = GD_AT_END (the real one is in the footer)
    sectors 1..20     embedded descriptor (createType "streamOptimized", one SPARSE extent)
    ... to OVERHEAD   zero padding (grains start 64 KiB in)
    grains            per non-zero grain: u64 LBA, u32 compressed size, zlib stream,
                      padded to a sector — in guest order
    after the grains of each grain table's span (512 grains = 32 MiB) that holds any:
                      GT marker (u64 4 sectors, u32 0, u32 type 1, padding) + the GT (2 KiB)
    at the end        GD marker (type 2) + GD; footer marker (type 3) + footer (the header
                      again, with the real gdOffset); end-of-stream marker (type 0)

Nothing is ever written twice or out of order: the output can be a pipe, a tar member, a
socket. Memory holds one grain table (2 KiB) and the grain directory (4 bytes per 32 MiB of
capacity: 128 KiB for 1 TiB). Zero grains are skipped: their GT entry stays 0 (the extent
has no parent, so an unallocated grain reads as zeros), and a grain table whose span is all
zeros is not written at all (its GD entry stays 0, which QEMU and libvmdk read as zeros).

Each grain's zlib stream is built from the grain's shared deflate block (``deflate``), so a
VMDK written beside a raw.gz or an EC2 bundle costs no compression of its own.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

from imagewright.errors import InvalidArgumentError
from imagewright.package.deflate import FINAL_BLOCK, GRAIN, ZLIB_HEADER
from imagewright.package.grains import GrainBatch

SECTOR = 512
GRAIN_SECTORS = GRAIN // SECTOR
GTES_PER_GT = 512
GT_SECTORS = GTES_PER_GT * 4 // SECTOR
DESCRIPTOR_SECTORS = 20
#: Sectors before the first grain: header, descriptor, padding to 64 KiB.
OVERHEAD_SECTORS = GRAIN_SECTORS
GD_AT_END = 0xFFFF_FFFF_FFFF_FFFF
VERSION = 3
FLAG_NL_DETECT = 0x1
FLAG_COMPRESSED = 0x10000
FLAG_MARKERS = 0x20000
FLAGS = FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS
COMPRESSION_DEFLATE = 1
MARKER_EOS = 0
MARKER_GT = 1
MARKER_GD = 2
MARKER_FOOTER = 3
#: GT entries are 32-bit sector numbers: a file (and so a disk) beyond 2 TiB cannot be addressed.
MAX_CAPACITY = (1 << 32) * SECTOR
#: What ``ddb.adapterType`` may say (VMware: ide, buslogic, lsilogic, legacyESX).
ADAPTER_TYPES = ("ide", "buslogic", "lsilogic", "legacyESX")
#: QEMU's and open-vmdk's default: "no tools installed / unknown version".
DEFAULT_TOOLS_VERSION = "2147483647"
DEFAULT_HW_VERSION = "4"

_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
_MARKER = struct.Struct("<QII")
_GRAIN_MARKER = struct.Struct("<QI")
_ADLER = struct.Struct(">I")
_PAD = bytes(SECTOR)


def _pad(length: int) -> bytes:
    return _PAD[: -length % SECTOR]


@dataclass(frozen=True)
class VmdkOptions:
    """What the descriptor's disk database says about the disk."""

    adapter_type: str = "lsilogic"
    hw_version: str = DEFAULT_HW_VERSION
    tools_version: str = DEFAULT_TOOLS_VERSION
    #: The file name the extent line names (the VMDK's own name: it is the only extent).
    file_name: str = "disk.vmdk"

    def __post_init__(self) -> None:
        if self.adapter_type not in ADAPTER_TYPES:
            raise InvalidArgumentError(
                f"'{self.adapter_type}' is not a VMDK adapter type; choose one of {', '.join(ADAPTER_TYPES)}."
            )
        for name, value in (("virtualHWVersion", self.hw_version), ("toolsVersion", self.tools_version)):
            if not value.isascii() or not value.isdigit() or len(value) > 10:
                raise InvalidArgumentError(f"The VMDK {name} must be a number, not '{value[:20]}'.")
        if not _plain_name(self.file_name):
            raise InvalidArgumentError(f"'{self.file_name[:60]}' cannot be a VMDK extent file name.")


def _plain_name(name: str) -> bool:
    return (
        0 < len(name) <= 200
        and name.isprintable()
        and not any(c in name for c in '/\\"\0')
        and name not in (".", "..")
    )


def sparse_header(capacity_sectors: int, gd_offset: int) -> bytes:
    """The 512-byte sparse extent header (also the footer, with the real ``gd_offset``)."""
    packed = _HEADER.pack(
        b"KDMV",
        VERSION,
        FLAGS,
        capacity_sectors,
        GRAIN_SECTORS,
        1,  # descriptorOffset
        DESCRIPTOR_SECTORS,
        GTES_PER_GT,
        0,  # rgdOffset: no redundant GD in a stream
        gd_offset,
        OVERHEAD_SECTORS,
        0,  # uncleanShutdown
        b"\n \r\n",
        COMPRESSION_DEFLATE,
    )
    return packed + bytes(SECTOR - len(packed))


def descriptor_text(capacity_sectors: int, options: VmdkOptions, cid: int | None = None) -> str:
    """The embedded descriptor (VMware's order and spelling)."""
    if cid is None:
        cid = secrets.randbits(32)
        while cid in (0xFFFFFFFF, 0xFFFFFFFE):  # "no parent" and "all zeros" to some readers
            cid = secrets.randbits(32)
    heads = 16 if options.adapter_type == "ide" else 255
    cylinders = min(65535, -(-capacity_sectors // (heads * 63)))
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        f"CID={cid:08x}\n"
        "parentCID=ffffffff\n"
        'createType="streamOptimized"\n'
        "\n"
        "# Extent description\n"
        f'RW {capacity_sectors} SPARSE "{options.file_name}"\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        f'ddb.adapterType = "{options.adapter_type}"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        f'ddb.geometry.heads = "{heads}"\n'
        'ddb.geometry.sectors = "63"\n'
        f'ddb.longContentID = "{secrets.token_hex(12)}{cid:08x}"\n'
        f'ddb.toolsVersion = "{options.tools_version}"\n'
        f'ddb.virtualHWVersion = "{options.hw_version}"\n'
    )


def _marker(value: int, kind: int) -> bytes:
    return _MARKER.pack(value, 0, kind) + bytes(SECTOR - _MARKER.size)


class StreamOptimizedWriter:
    """A ``GrainTarget`` writing a streamOptimized VMDK of ``virtual_size`` bytes to ``write``.

    ``write(bytes)`` receives the file front to back. After ``finish``: ``size`` is the
    file's length and ``populated_size`` the guest bytes its grains hold.
    """

    def __init__(self, write: Callable[[bytes], None], virtual_size: int, options: VmdkOptions) -> None:
        if virtual_size <= 0:
            raise InvalidArgumentError("A streamOptimized VMDK needs a disk of at least one byte.")
        self.capacity_sectors = -(-virtual_size // SECTOR)
        if self.capacity_sectors * SECTOR > MAX_CAPACITY:
            raise InvalidArgumentError(
                "A streamOptimized VMDK holds at most 2 TiB (its grain tables address 32-bit sectors)."
            )
        self._write = write
        self.size = 0
        self.populated_size = 0
        grains = -(-self.capacity_sectors // GRAIN_SECTORS)
        self._gd = [0] * -(-grains // GTES_PER_GT)
        self._gt: list[int] = [0] * GTES_PER_GT
        self._gt_index = 0
        self._gt_used = False
        descriptor = descriptor_text(self.capacity_sectors, options).encode("ascii")
        if len(descriptor) > DESCRIPTOR_SECTORS * SECTOR:
            raise InvalidArgumentError("The VMDK descriptor does not fit its 20 sectors.")
        head = sparse_header(self.capacity_sectors, GD_AT_END) + descriptor
        self._emit(head + bytes(OVERHEAD_SECTORS * SECTOR - len(head)))

    def _emit(self, data: bytes) -> None:
        self._write(data)
        self.size += len(data)

    def batch(self, batch: GrainBatch) -> None:
        """The batch's data grains, framed from their deflate blocks, written in one piece."""
        frames: list[bytes] = []
        # Where the next frame starts: what is written plus the frames gathered so far.
        position = self.size
        for grain in batch.grains:
            # A zero grain (or run) is not stored; only the grain table it ends in counts.
            last = grain.index + grain.count - 1 if grain.data is None else grain.index
            if last // GTES_PER_GT != self._gt_index:
                if frames:
                    self._emit(b"".join(frames))
                    frames = []
                self._flush_gt()
                self._gt_index = last // GTES_PER_GT
                position = self.size
            if grain.data is None:
                continue
            block = grain.block
            assert block is not None
            sector = position // SECTOR
            if sector > 0xFFFF_FFFF:
                raise InvalidArgumentError(
                    "The streamOptimized VMDK grew past 2 TiB, beyond what its grain tables can address."
                )
            self._gt[grain.index % GTES_PER_GT] = sector
            self._gt_used = True
            self.populated_size += grain.length
            # The grain's zlib stream (RFC 1950) is its deflate block between a zlib header
            # and the final block + Adler-32: no compression here.
            stream_length = len(ZLIB_HEADER) + len(block.data) + len(FINAL_BLOCK) + 4
            framed = _GRAIN_MARKER.size + stream_length
            frames += (
                _GRAIN_MARKER.pack(grain.offset // SECTOR, stream_length),
                ZLIB_HEADER,
                block.data,
                FINAL_BLOCK,
                _ADLER.pack(block.adler32),
                _pad(framed),
            )
            position += framed + (-framed % SECTOR)
        if frames:
            self._emit(b"".join(frames))

    def _flush_gt(self) -> None:
        if not self._gt_used:
            return
        self._emit(_marker(GT_SECTORS, MARKER_GT))
        self._gd[self._gt_index] = self.size // SECTOR
        self._emit(struct.pack(f"<{GTES_PER_GT}I", *self._gt))
        self._gt = [0] * GTES_PER_GT
        self._gt_used = False

    def finish(self) -> None:
        self._flush_gt()
        gd = struct.pack(f"<{len(self._gd)}I", *self._gd)
        gd += _pad(len(gd))
        self._emit(_marker(len(gd) // SECTOR, MARKER_GD))
        gd_sector = self.size // SECTOR
        self._emit(gd)
        self._emit(_marker(1, MARKER_FOOTER))
        self._emit(sparse_header(self.capacity_sectors, gd_sector))
        self._emit(_marker(0, MARKER_EOS))
