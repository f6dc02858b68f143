"""Disks for the resize tests, made by the real tools: sfdisk/sgdisk tables, mke2fs filesystems.

Every disk is a sparse raw file; ``in_format`` converts it with qemu-img. The layouts:

- ``mbr``: two primaries, ext4 in the last one;
- ``mbr-logical``: a primary, an extended partition with two logicals, ext4 in the last logical;
- ``gpt``: three GPT partitions made by sfdisk, ext4 in the last one;
- ``gpt-sgdisk``: the same shape made by sgdisk (EFI system, BIOS boot, Linux).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixtures.tools import qemu_img, run, sfdisk, sparse_file

from imagewright.files import TEMP_MARK

MiB = 1 << 20
GiB = 1 << 30
SECTOR = 512

LAYOUTS: dict[str, str] = {
    "mbr": "label: dos\nlabel-id: 0x1badcafe\n,32M,83,*\n,,83\n",
    # After an extended partition, sfdisk makes the next entries logical partitions 5, 6, ...
    "mbr-logical": "label: dos\nlabel-id: 0x0ddba11\n,16M,83\n,,5\n,16M,82\n,,83\n",
    "gpt": (
        "label: gpt\nlabel-id: 01234567-89AB-CDEF-0123-456789ABCDEF\n"
        'size=1M,type=21686148-6449-6E6F-744E-656564454649,name="bios"\n'
        'size=32M,type=U,name="esp"\n'
        'type=L,name="root",uuid=11111111-2222-3333-4444-555555555555\n'
    ),
}
SGDISK_ARGS = [
    "-n", "1:2048:+32M", "-t", "1:ef00", "-c", "1:esp",
    "-n", "2:0:+1M", "-t", "2:ef02", "-c", "2:bios",
    "-n", "3:0:0", "-t", "3:8300", "-c", "3:root",
]  # fmt: skip


@dataclass(frozen=True)
class Disk:
    path: Path
    #: The partition holding the ext4 filesystem, and its byte offset.
    fs_partition: int
    fs_offset: int
    fs_size: int


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sfdisk_table(path: Path) -> dict[str, Any]:
    proc = run("sfdisk", "--json", path)
    table: dict[str, Any] = json.loads(proc.stdout)["partitiontable"]
    return table


def partitions_by_number(table: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(re.sub(r".*\D", "", p["node"])): p for p in table["partitions"]}


def end_of(entry: dict[str, Any]) -> int:
    return int(entry["start"]) + int(entry["size"]) - 1


def root_dir(directory: Path) -> Path:
    """A small tree for mke2fs -d: the filesystem then has files e2fsck walks."""
    root = directory / "rootfs"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "hostname").write_text("resize-test\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 4096)
    return root


def make_ext4(image: Path, offset: int, size: int, directory: Path) -> None:
    args: list[str | Path] = ["mke2fs", "-q", "-F", "-t", "ext4", "-d", root_dir(directory)]
    if offset:
        args += ["-E", f"offset={offset}"]
    run(*args, image, f"{size // 1024}k")


def make_disk(directory: Path, layout: str, size: int = 256 * MiB, name: str | None = None) -> Disk:
    """A sparse raw disk of ``size`` with ``layout``'s table and ext4 in its last partition."""
    path = sparse_file(directory / (name or f"{layout}.img"), size)
    if layout == "gpt-sgdisk":
        run("sgdisk", "-U", "89ABCDEF-0123-4567-89AB-CDEF01234567", *SGDISK_ARGS, path)
    else:
        sfdisk(path, LAYOUTS[layout])
    parts = partitions_by_number(sfdisk_table(path))
    last = max(parts, key=lambda n: (end_of(parts[n]), n))
    entry = parts[last]
    offset, fs_size = int(entry["start"]) * SECTOR, int(entry["size"]) * SECTOR
    make_ext4(path, offset, fs_size, directory)
    return Disk(path, last, offset, fs_size)


def in_format(raw: Path, fmt: str, options: str | None = None, name: str | None = None) -> Path:
    """``raw`` converted to ``fmt`` next to it (the raw itself for fmt == raw)."""
    if fmt == "raw":
        return raw
    out = raw.with_name(name or f"{raw.stem}.{fmt}")
    extra = ["-o", options] if options else []
    qemu_img("convert", "-f", "raw", "-O", fmt, *extra, raw, out)
    return out


def to_raw(image: Path, fmt: str, directory: Path) -> Path:
    """A raw copy of the guest disk of ``image`` (for sfdisk, sgdisk and e2fsprogs)."""
    out = directory / f"{image.name}.check.raw"
    qemu_img("convert", "-f", fmt, "-O", "raw", image, out)
    return out


def info(image: Path, fmt: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(qemu_img("info", "--output=json", "-f", fmt, image))
    return data


def block_count(device: str) -> tuple[int, int]:
    """(block count, block size) from ``dumpe2fs -h``."""
    out = run("dumpe2fs", "-h", device).stdout.decode()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["Block count"]), int(fields["Block size"])


def e2fsck_clean(device: str) -> str:
    proc = run("e2fsck", "-fn", device, check=False)
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, output
    return output


def stray_files(directory: Path) -> list[str]:
    """Anything a resize left behind: its temporary names all contain '.iw-' (``files.TEMP_MARK``)."""
    return sorted(p.name for p in directory.iterdir() if TEMP_MARK in p.name)
