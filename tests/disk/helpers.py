"""Helpers the disk tests share: real tools driven on sparse files, and byte surgery."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

from tests.fixtures.tools import blkid, run, sfdisk, sparse_file

from imagewright.binary import FileSource
from imagewright.disk.partitions import PartitionTable, read_partition_table

MiB = 1024 * 1024


def blkid_probe(path: Path, offset: int = 0, size: int | None = None) -> dict[str, str]:
    """``blkid -p -o export`` of a region, with blkid's backslash escapes undone."""
    return {key: re.sub(r"\\(.)", r"\1", value) for key, value in blkid(path, offset, size).items()}


def sfdisk_json(path: Path) -> dict[str, Any]:
    proc = run("sfdisk", "--json", path)
    table: dict[str, Any] = json.loads(proc.stdout)["partitiontable"]
    return table


def new_disk(directory: Path, name: str, size: int, script: str) -> Path:
    path = sparse_file(directory / name, size)
    sfdisk(path, script)
    return path


def fdisk_commands(path: Path, commands: str, sector_size: int) -> None:
    """Drive interactive fdisk: sfdisk 2.38 has no way to use 4096-byte sectors on a file."""
    run("fdisk", "-b", str(sector_size), path, input=commands.encode())


def fdisk_list(path: Path, sector_size: int, columns: str) -> tuple[str, list[dict[str, str]]]:
    """``fdisk -l -o COLUMNS``: the disk identifier and one dict per partition row."""
    out = run("fdisk", "-b", str(sector_size), "-l", "-o", columns, path).stdout.decode()
    lines = out.splitlines()
    identifier = next(line.split(": ", 1)[1] for line in lines if line.startswith("Disk identifier"))
    header_at = next(i for i, line in enumerate(lines) if line.startswith("Device"))
    names = lines[header_at].split()
    rows = []
    for line in lines[header_at + 1 :]:
        if not line.strip():
            continue
        values = line.split(None, len(names) - 1)
        rows.append(dict(zip(names, values, strict=False)))
    return identifier, rows


def read_table(path: Path, sector_size: int = 512) -> PartitionTable | None:
    with FileSource(path) as src:
        return read_partition_table(src, sector_size)


def read_bytes(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


def write_bytes(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def copy_into(source: Path, target: Path, offset: int) -> None:
    """Copy a (sparse) filesystem image into ``target`` at ``offset``, skipping zero blocks."""
    chunk = 1 << 20
    with source.open("rb") as src, target.open("r+b") as dst:
        position = 0
        while True:
            data = src.read(chunk)
            if not data:
                break
            if data.count(0) != len(data):
                dst.seek(offset + position)
                dst.write(data)
            position += len(data)


def fix_gpt_header_crc(path: Path, lba: int, sector_size: int = 512) -> None:
    """Recompute the header CRC of the GPT header at ``lba`` after a test bent a field."""
    header = bytearray(read_bytes(path, lba * sector_size, sector_size))
    size = struct.unpack_from("<I", header, 12)[0]
    size = min(max(size, 92), sector_size)
    header[16:20] = b"\0\0\0\0"
    struct.pack_into("<I", header, 16, zlib.crc32(bytes(header[:size])) & 0xFFFFFFFF)
    write_bytes(path, lba * sector_size, bytes(header))
