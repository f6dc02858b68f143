"""A stand-in for ``imagewright.ops.inspect`` until that module lands (then delete this file).

It answers the two questions ``guest/`` asks of an inspection, for the images guest tests
build: which qemu format is this file (by magic, never by asking qemu-img to probe), may it be
opened (no backing or data files), and where are the filesystems in the raw disk (MBR
primaries and logicals, GPT entries, or a filesystem at offset 0). Every count and offset
read is bounded. The real ``inspect`` does all of this properly, with the full safety policy.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imagewright.errors import ImageFormatError, UnsafeImageError

SECTOR = 512
#: ``read(offset, length)`` of the raw disk; short or empty past its end.
Reader = Callable[[int, int], bytes]
_MAX_GPT_ENTRIES = 256
_MAX_LOGICAL = 64
_LINUX_GPT_TYPES = {
    "0fc63daf-8483-4772-8e79-3d69d8477de4",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
    "44479540-f297-41b2-9af7-d131d5f0458a",
    "b921b045-1df0-41c3-af44-4c6f280d3fae",
}


@dataclass
class InterimFilesystem:
    type: str | None
    label: str | None = None
    uuid: str | None = None


@dataclass
class InterimPartition:
    number: int
    start: int
    sectors: int
    size: int
    type: str
    filesystem: InterimFilesystem | None = None


@dataclass
class InterimPartitionTable:
    kind: str
    partitions: list[InterimPartition] = field(default_factory=list)
    sector_size: int = SECTOR


@dataclass
class InterimVerdict:
    reasons: tuple[str, ...] = ()

    @property
    def safe(self) -> bool:
        return not self.reasons


@dataclass
class InterimReport:
    path: str
    format: str
    verdict: InterimVerdict
    #: Filled from the raw working copy by ``describe_raw`` (this stand-in cannot read qcow2).
    partition_table: InterimPartitionTable | None = None
    filesystem: InterimFilesystem | None = None
    needs_raw_layout: bool = True


def inspect_image(path: str) -> InterimReport:
    with open(path, "rb") as f:
        head = f.read(1024)
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 512))
        tail = f.read(512)
    reasons: list[str] = []
    if head[:4] == b"QFI\xfb":
        fmt = "qcow2" if struct.unpack_from(">I", head, 4)[0] >= 2 else "qcow"
        if len(head) >= 72 and struct.unpack_from(">Q", head, 8)[0] != 0:
            reasons.append("the image names a backing file; only self-contained images are accepted")
        if len(head) >= 80 and struct.unpack_from(">I", head, 4)[0] >= 3:
            incompatible = struct.unpack_from(">Q", head, 72)[0]
            if incompatible & 0x4:
                reasons.append(
                    "the image names an external data file; only self-contained images are accepted"
                )
    elif head[:4] == b"KDMV":
        fmt = "vmdk"
    elif head.lstrip().startswith(b"# Disk DescriptorFile"):
        fmt = "vmdk"
        reasons.append("the image is a VMDK descriptor naming extents in other files")
    elif head[:8] == b"vhdxfile":
        fmt = "vhdx"
    elif head[:8] == b"conectix" or tail[:8] == b"conectix":
        fmt = "vpc"
    elif len(head) >= 0x44 and head[0x40:0x44] == b"\x7f\x10\xda\xbe":
        fmt = "vdi"
    else:
        fmt = "raw"
    return InterimReport(path, fmt, InterimVerdict(tuple(reasons)))


def require_safe(report: InterimReport) -> None:
    if not report.verdict.safe:
        raise UnsafeImageError(
            f"imagewright refuses {report.path}: {report.verdict.reasons[0]}.", report.verdict.reasons
        )


def describe_raw(report: InterimReport, raw: Path) -> None:
    """Fill in the partition table / flat filesystem of ``report`` from its raw bytes."""
    with raw.open("rb") as f:
        f.seek(0, os.SEEK_END)
        disk_size = f.tell()

        def read(offset: int, length: int) -> bytes:
            if offset < 0 or offset >= disk_size:
                return b""
            f.seek(offset)
            return f.read(length)

        mbr = read(0, SECTOR)
        gpt = read(SECTOR, SECTOR)
        if gpt[:8] == b"EFI PART":
            report.partition_table = _gpt(read, gpt, disk_size)
        elif len(mbr) == SECTOR and mbr[510:512] == b"\x55\xaa" and _has_mbr_entries(mbr):
            report.partition_table = _mbr(read, mbr, disk_size)
        else:
            report.filesystem = _filesystem(read, 0)


def _has_mbr_entries(mbr: bytes) -> bool:
    for i in range(4):
        entry = mbr[446 + 16 * i : 462 + 16 * i]
        if entry[4] != 0 and entry[0] in (0, 0x80):
            return True
    return False


def _partition(
    read: Reader, number: int, start: int, sectors: int, kind: str, *, disk_size: int
) -> InterimPartition:
    if start <= 0 or sectors <= 0 or (start + sectors) * SECTOR > disk_size:
        raise ImageFormatError(f"Partition {number} lies outside the disk.")
    return InterimPartition(number, start, sectors, sectors * SECTOR, kind, _filesystem(read, start * SECTOR))


def _mbr(read: Reader, mbr: bytes, disk_size: int) -> InterimPartitionTable:
    table = InterimPartitionTable("dos")
    extended: tuple[int, int] | None = None
    for i in range(4):
        _status, kind, start, sectors = struct.unpack_from("<B3xB3xII", mbr, 446 + 16 * i)
        if kind == 0:
            continue
        if kind in (0x05, 0x0F, 0x85):
            extended = (start, sectors)
            continue
        table.partitions.append(_partition(read, i + 1, start, sectors, f"{kind:#04x}", disk_size=disk_size))
    if extended is not None:
        ebr_start = extended[0]
        number = 5
        seen: set[int] = set()
        while ebr_start and number < 5 + _MAX_LOGICAL and ebr_start not in seen:
            seen.add(ebr_start)
            ebr = read(ebr_start * SECTOR, SECTOR)
            if len(ebr) < SECTOR or ebr[510:512] != b"\x55\xaa":
                break
            _, kind, rel, sectors = struct.unpack_from("<B3xB3xII", ebr, 446)
            if kind and sectors:
                table.partitions.append(
                    _partition(read, number, ebr_start + rel, sectors, f"{kind:#04x}", disk_size=disk_size)
                )
                number += 1
            _, next_kind, next_rel, _ = struct.unpack_from("<B3xB3xII", ebr, 462)
            ebr_start = extended[0] + next_rel if next_kind else 0
    return table


def _gpt(read: Reader, header: bytes, disk_size: int) -> InterimPartitionTable:
    table = InterimPartitionTable("gpt")
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    if not 128 <= entry_size <= 1024 or count > _MAX_GPT_ENTRIES:
        raise ImageFormatError("The GPT header describes an implausible partition entry array.")
    array = read(entries_lba * SECTOR, count * entry_size)
    for index in range(min(count, len(array) // entry_size)):
        entry = array[index * entry_size : (index + 1) * entry_size]
        type_guid = str(uuid.UUID(bytes_le=entry[:16]))
        if type_guid == "00000000-0000-0000-0000-000000000000":
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        if last < first:
            raise ImageFormatError(f"GPT partition {index + 1} ends before it starts.")
        kind = "linux" if type_guid in _LINUX_GPT_TYPES else type_guid
        table.partitions.append(
            _partition(read, index + 1, first, last - first + 1, kind, disk_size=disk_size)
        )
    return table


def _filesystem(read: Reader, offset: int) -> InterimFilesystem | None:
    superblock = read(offset + 1024, 1024)
    if len(superblock) >= 0x88 and superblock[0x38:0x3A] == b"\x53\xef":
        compat, incompat, ro_compat = struct.unpack_from("<III", superblock, 0x5C)
        if incompat & ~0x16 or ro_compat & ~0x7:
            kind = "ext4"
        elif compat & 0x4:
            kind = "ext3"
        else:
            kind = "ext2"
        label = superblock[0x78:0x88].split(b"\0", 1)[0].decode("utf-8", "replace")
        return InterimFilesystem(kind, label or None, str(uuid.UUID(bytes=superblock[0x68:0x78])))
    start = read(offset, 4)
    if start == b"XFSB":
        return InterimFilesystem("xfs")
    if read(offset + 0x10040, 8) == b"_BHRfS_M":
        return InterimFilesystem("btrfs")
    if read(offset + 512, 8) == b"LABELONE" or read(offset, 8) == b"LABELONE":
        return InterimFilesystem("LVM2_member")
    if read(offset + 4086, 10) in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return InterimFilesystem("swap")
    return None
