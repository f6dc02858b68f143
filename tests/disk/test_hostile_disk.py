"""Hostile and mutated partition tables, superblocks and sectors: only ImagewrightError escapes.

Seeds are real structures made by sfdisk and the mkfs tools. Each seed records exactly the
bytes our readers read from the real image; hypothesis then bends those bytes (single bytes,
boundary integers, whole random runs) and, for GPT, recomputes the CRCs so that the bent
field reaches the checks behind them. Every call must finish quickly and raise nothing but
an ImagewrightError.
"""

from __future__ import annotations

import contextlib
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.disk.test_filesystems import MAKERS
from tests.fixtures import hostile_disk
from tests.fixtures.hostile import CASES
from tests.fixtures.tools import sfdisk, sparse_file

from imagewright.binary import ByteSource, FileSource
from imagewright.disk.bootcode import detect_boot_code
from imagewright.disk.filesystems import PROBES, probe_filesystem
from imagewright.disk.partitions import (
    grow_partition,
    max_partition_end,
    read_partition_table,
    relocate_gpt_backup,
)
from imagewright.errors import ImagewrightError

MiB = 1024 * 1024
#: A parser that takes longer than this on a few sectors has a loop to find.
TIME_LIMIT = 1.0


class SparseSource:
    """A disk of ``size`` bytes holding ``chunks`` at their offsets and zeros elsewhere."""

    def __init__(self, size: int, chunks: dict[int, bytes]) -> None:
        self._size = size
        self._chunks = sorted(chunks.items())

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self._size:
            return b""
        length = min(length, self._size - offset)
        out = bytearray(length)
        for start, data in self._chunks:
            low, high = max(start, offset), min(start + len(data), offset + length)
            if low < high:
                out[low - offset : high - offset] = data[low - start : high - start]
        return bytes(out)


class Recorder:
    """Wraps a source and keeps every byte range read through it."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self.chunks: dict[int, bytes] = {}

    @property
    def size(self) -> int:
        return self._source.size

    def pread(self, offset: int, length: int) -> bytes:
        data = self._source.pread(offset, length)
        if len(data) > len(self.chunks.get(offset, b"")):
            self.chunks[offset] = data
        return data


@dataclass(frozen=True)
class Seed:
    name: str
    size: int
    chunks: dict[int, bytes]


def record(path: Path, reader: Callable[[ByteSource], object]) -> Seed:
    with FileSource(path) as src:
        recorder = Recorder(src)
        reader(recorder)
        return Seed(path.name, src.size, dict(recorder.chunks))


def record_filesystem(path: Path) -> Seed:
    """The bytes read by the one probe that recognises ``path``: mutations land where they matter."""
    with FileSource(path) as src:
        for entry in PROBES:
            recorder = Recorder(src)
            if entry.probe(recorder) is not None:
                return Seed(path.name, src.size, dict(recorder.chunks))
    raise AssertionError(f"no probe recognises {path}")


BOUNDARY_VALUES = (
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
)


@st.composite
def bent(draw: st.DrawFn, seed: Seed) -> dict[int, bytearray]:
    chunks = {offset: bytearray(data) for offset, data in seed.chunks.items()}
    offsets = sorted(chunks)
    for _ in range(draw(st.integers(1, 6))):
        buf = chunks[draw(st.sampled_from(offsets))]
        if not buf:
            continue
        # Header fields crowd the first bytes of a structure: aim there half of the time.
        pos = draw(st.one_of(st.integers(0, min(len(buf), 256) - 1), st.integers(0, len(buf) - 1)))
        how = draw(st.sampled_from(["byte", "int", "run", "u64"]))
        if how == "byte":
            buf[pos] = draw(st.integers(0, 255))
        elif how == "int":
            fmt = draw(st.sampled_from(["<H", ">H", "<I", ">I"]))
            value = draw(st.sampled_from(BOUNDARY_VALUES)) & (0xFFFF if fmt[1] == "H" else 0xFFFFFFFF)
            packed = struct.pack(fmt, value)
            buf[pos : pos + len(packed)] = packed[: max(0, len(buf) - pos)]
        elif how == "u64":
            value = draw(st.sampled_from((0, 1, 2**32, 2**63, 2**64 - 1, draw(st.integers(0, 2**64 - 1)))))
            packed = struct.pack("<Q", value)
            buf[pos : pos + 8] = packed[: max(0, len(buf) - pos)]
        else:
            run = draw(st.binary(min_size=1, max_size=64))
            buf[pos : pos + len(run)] = run[: max(0, len(buf) - pos)]
    return chunks


def timed(call: Callable[[], object]) -> None:
    started = time.process_time()
    with contextlib.suppress(ImagewrightError):
        call()
    assert time.process_time() - started < TIME_LIMIT


FS_KINDS = [
    "ext4", "ext2-with-journal-dev", "swap", "swsuspend-s1", "vfat12", "vfat16", "vfat32", "xfs", "btrfs",
    "reiserfs-3.6", "reiserfs-3.5", "ntfs", "iso9660-joliet-rr", "iso9660-el-torito", "luks1", "luks2",
    "lvm2-sector1", "squashfs",
]  # fmt: skip


@pytest.fixture(scope="module")
def fs_seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Seed]:
    tmp = tmp_path_factory.mktemp("fs-seeds")
    return {kind: record_filesystem(MAKERS[kind](tmp)) for kind in FS_KINDS}


@pytest.mark.parametrize("kind", FS_KINDS)
def test_mutated_superblocks_raise_only_imagewright_errors(fs_seeds: dict[str, Seed], kind: str) -> None:
    seed = fs_seeds[kind]
    # The seed as recorded is recognised: the mutations start from a valid superblock.
    assert probe_filesystem(SparseSource(seed.size, seed.chunks)) is not None

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(chunks=bent(seed))
    def check(chunks: dict[int, bytearray]) -> None:
        source = SparseSource(seed.size, {k: bytes(v) for k, v in chunks.items()})
        timed(lambda: probe_filesystem(source))
        for entry in PROBES:
            # Each probe alone, without the registry's safety net, must be just as safe.
            timed(lambda entry=entry: entry.probe(source))  # type: ignore[misc]

    check()


@settings(max_examples=300, deadline=None)
@given(
    sector=st.binary(min_size=512, max_size=512),
    lba1=st.binary(min_size=512, max_size=512),
    gpt=st.booleans(),
)
def test_random_sectors(sector: bytes, lba1: bytes, gpt: bool) -> None:
    if gpt:
        lba1 = b"EFI PART" + lba1[8:]
        sector = sector[:446] + b"\x00\x00\x00\x00\xee" + sector[451:510] + b"\x55\xaa"
    source = SparseSource(8 * MiB, {0: sector, 512: lba1, 8 * MiB - 512: lba1})
    timed(lambda: read_partition_table(source))
    timed(lambda: probe_filesystem(source))
    assert detect_boot_code(sector).kind in {"grub2", "grub-legacy", "syslinux", "windows", "other", "none"}


@pytest.fixture(scope="module")
def table_seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Seed]:
    tmp = tmp_path_factory.mktemp("pt-seeds")
    mbr = sparse_file(tmp / "mbr.img", 64 * MiB)
    sfdisk(mbr, "label: dos\n,8M,83,*\n,,5\n,4M,83\n,4M,82\n,4M,7\n,,83\n")
    gpt = sparse_file(tmp / "gpt.img", 64 * MiB)
    sfdisk(
        gpt,
        'label: gpt\nsize=1M,type=21686148-6449-6E6F-744E-656564454649,name="bios"\nsize=8M,type=U\ntype=L\n',
    )
    return {"mbr": record(mbr, read_partition_table), "gpt": record(gpt, read_partition_table)}


def exercise_writers(source: ByteSource) -> None:
    table = read_partition_table(source)
    if table is None or table.problems:
        return
    for part in table.partitions[:3]:
        try:
            end = max_partition_end(table, part.number)
            grow_partition(table, part.number, end)
        except ImagewrightError:
            pass
    if table.kind == "gpt":
        relocate_gpt_backup(table, source.size + 8 * MiB)


@pytest.mark.parametrize("kind", ["mbr", "gpt"])
def test_mutated_partition_tables_raise_only_imagewright_errors(
    table_seeds: dict[str, Seed], kind: str
) -> None:
    seed = table_seeds[kind]

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(chunks=bent(seed), fix_crcs=st.booleans())
    def check(chunks: dict[int, bytearray], fix_crcs: bool) -> None:
        if fix_crcs and kind == "gpt":
            fix_gpt_crcs(chunks, seed.size)
        source = SparseSource(seed.size, {k: bytes(v) for k, v in chunks.items()})
        timed(lambda: exercise_writers(source))

    check()


def fix_gpt_crcs(chunks: dict[int, bytearray], disk_size: int) -> None:
    """Recompute array and header CRCs in place, so bent fields get past the CRC checks."""
    view = SparseSource(disk_size, {k: bytes(v) for k, v in chunks.items()})
    for header_offset in (512, disk_size - 512):
        header = chunks.get(header_offset)
        if header is None or len(header) < 92:
            continue
        entries_lba, count, size = struct.unpack_from("<QII", header, 72)
        array_offset = entries_lba * 512
        if array_offset in chunks and 0 < count * size <= len(chunks[array_offset]):
            struct.pack_into(
                "<I", header, 88, zlib.crc32(view.pread(array_offset, count * size)) & 0xFFFFFFFF
            )
        header_size = min(max(struct.unpack_from("<I", header, 12)[0], 92), len(header))
        header[16:20] = b"\0\0\0\0"
        struct.pack_into("<I", header, 16, zlib.crc32(bytes(header[:header_size])) & 0xFFFFFFFF)


GPT_HEADER_FIELDS = [
    (8, "I"),
    (12, "I"),
    (24, "Q"),
    (32, "Q"),
    (40, "Q"),
    (48, "Q"),
    (72, "Q"),
    (80, "I"),
    (84, "I"),
]


def test_every_gpt_header_field_bent_with_valid_crcs(table_seeds: dict[str, Seed]) -> None:
    seed = table_seeds["gpt"]

    @settings(max_examples=400, deadline=None)
    @given(
        field=st.sampled_from(GPT_HEADER_FIELDS),
        value=st.one_of(st.sampled_from(BOUNDARY_VALUES), st.integers(0, 2**64 - 1)),
        both=st.booleans(),
    )
    def check(field: tuple[int, str], value: int, both: bool) -> None:
        chunks = {offset: bytearray(data) for offset, data in seed.chunks.items()}
        offset, fmt = field
        value &= 0xFFFFFFFF if fmt == "I" else 2**64 - 1
        for header_offset in (512, seed.size - 512) if both else (512,):
            if header_offset in chunks:
                struct.pack_into("<" + fmt, chunks[header_offset], offset, value)
        fix_gpt_crcs(chunks, seed.size)
        source = SparseSource(seed.size, {k: bytes(v) for k, v in chunks.items()})
        timed(lambda: exercise_writers(source))

    check()


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.build.__module__ == hostile_disk.__name__], ids=lambda c: c.name
)
def test_catalogued_hostile_tables_are_refused_with_their_reason(tmp_path: Path, case: object) -> None:
    build = case.build  # type: ignore[attr-defined]
    reason = case.reason  # type: ignore[attr-defined]
    path = build(tmp_path)
    started = time.process_time()
    with FileSource(path) as src:
        table = read_partition_table(src)
        assert src.bytes_read < 4 * MiB
    assert time.process_time() - started < TIME_LIMIT
    assert table is not None
    assert any(reason.lower() in problem.lower() for problem in table.problems), table.problems
