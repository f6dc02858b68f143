"""Compressed wrappers made by the real gzip, xz, bzip2 and zstd CLIs around disks made by
qemu-img/sfdisk: what we report equals what the tools report, the decompressed prefix equals
the real file, and a bomb costs what its size pays for, and is refused."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.fixtures import tools
from tests.fixtures.hostile_containers import raw_disk

from imagewright.binary import FileSource, PrefixExhaustedError, PrefixSource
from imagewright.formats.base import HEAD_SIZE, Budget, Limits
from imagewright.formats.containers import OpenedContainer, open_container, probe_container
from imagewright.formats.containers.bzip2 import Bzip2Details
from imagewright.formats.containers.gzip import GzipDetails
from imagewright.formats.containers.xz import XzDetails
from imagewright.formats.containers.zstd import ZstdDetails

MiB = 1024 * 1024
GiB = 1024 * MiB

COMPRESSORS = {
    "gzip": ("gzip", "-c"),
    "xz": ("xz", "-T1", "-c"),
    "bzip2": ("bzip2", "-c"),
    "zstd": ("zstd", "-q", "-c"),
}


def compress(src: Path, fmt: str, out: Path, *extra: str) -> Path:
    program, *args = COMPRESSORS[fmt]
    proc = tools.run(program, *args, *extra, src)
    out.write_bytes(proc.stdout)
    return out


def open_path(path: Path, limits: Limits | None = None) -> OpenedContainer:
    with FileSource(path) as src:
        return open_container(src, limits or Limits(), name_hint=path.name)


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24 MiB raw disk (MBR by sfdisk) with qemu-io patterns at several offsets, so the
    decompressed bytes are not just zeros."""
    path = raw_disk(tmp_path_factory.mktemp("disk") / "disk.raw", 24 * MiB)
    for offset, pattern in ((1 * MiB, 0x11), (5 * MiB + 123 * 512, 0x22), (9 * MiB, 0x33), (20 * MiB, 0x44)):
        tools.qemu_io_write(path, "raw", offset, 256 * 1024, pattern)
    return path


@pytest.fixture(scope="module")
def qcow2(disk: Path) -> Path:
    path = disk.with_name("disk.qcow2")
    tools.qemu_img("convert", "-f", "raw", "-O", "qcow2", disk, path)
    return path


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_compressed_raw_disk_is_examined_whole_and_equals_the_real_bytes(
    fmt: str, disk: Path, tmp_path: Path
) -> None:
    path = compress(disk, fmt, tmp_path / f"disk.raw.{fmt}")
    with FileSource(path) as src:
        assert probe_container(src, src.pread(0, HEAD_SIZE)) == fmt
        opened = open_container(src, Limits(), name_hint=path.name)
        read = src.bytes_read
    assert (opened.format, opened.kind, opened.layers) == (fmt, "compressed", [fmt])
    assert opened.problems == []
    # 24 MiB, mostly zeros: decompressed to the end, held in memory without its zeros.
    assert not opened.partial
    inner = opened.inner
    assert isinstance(inner, PrefixSource) and inner.complete
    real = disk.read_bytes()
    assert inner.prefix_length == len(real) == opened.uncompressed_size
    assert inner.pread(0, len(real)) == real
    assert inner.size == len(real) and inner.total_size_known
    # Each compressed byte is read about once (xz also reads its index at the end).
    assert read < path.stat().st_size + 256 * 1024
    assert opened.to_dict()["details"]["compression"]


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_compressed_disk_beyond_the_memory_limit_is_refused_as_not_examined(
    fmt: str, disk: Path, tmp_path: Path
) -> None:
    path = compress(disk, fmt, tmp_path / f"disk.raw.{fmt}")
    limits = Limits(max_held_bytes=512 * 1024)  # less than the disk's data (4 x 256 KiB)
    opened = open_path(path, limits)
    assert opened.partial
    assert any("could not be examined within the limit" in problem for problem in opened.problems)
    inner = opened.inner
    assert isinstance(inner, PrefixSource) and not inner.complete
    real = disk.read_bytes()
    assert inner.pread(0, inner.prefix_length) == real[: inner.prefix_length]
    with pytest.raises(PrefixExhaustedError):
        inner.pread(inner.prefix_length - 10, 20)


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_compressed_qcow2_is_peeled_to_the_qcow2_header(fmt: str, qcow2: Path, tmp_path: Path) -> None:
    path = compress(qcow2, fmt, tmp_path / f"disk.qcow2.{fmt}")
    opened = open_path(path)
    real = qcow2.read_bytes()
    assert opened.kind == "compressed" and opened.problems == []
    assert opened.inner is not None
    assert opened.inner.pread(0, 4) == b"QFI\xfb"
    # The qcow2 is smaller than the prefix: decompressed to the end, so its size is exact.
    assert opened.uncompressed_size == len(real)
    assert not opened.partial
    assert opened.inner.size == len(real)
    assert opened.inner.pread(0, len(real)) == real


def test_gzip_header_and_isize_match_gzip_l(disk: Path, tmp_path: Path) -> None:
    path = tmp_path / "disk.raw.gz"
    tools.run("sh", "-c", f"gzip -c -n '{disk}' > '{path}'")
    named = tmp_path / "named.gz"
    named.write_bytes(tools.run("gzip", "-c", "-N", disk).stdout)
    listing = tools.run("gzip", "-l", "--quiet", path).stdout.decode().split()
    details = open_path(path).details.compression
    assert isinstance(details, GzipDetails)
    assert details.last_member_isize_mod_2_32 == int(listing[1]) == disk.stat().st_size
    assert details.original_name is None and details.os_name == "Unix"
    named_details = open_path(named).details.compression
    assert isinstance(named_details, GzipDetails)
    assert named_details.original_name == "disk.raw"
    assert named_details.mtime == int(disk.stat().st_mtime)


def test_multi_member_gzip_is_read_across_members(disk: Path, tmp_path: Path) -> None:
    small_a = tmp_path / "a.bin"
    small_b = tmp_path / "b.bin"
    small_a.write_bytes(disk.read_bytes()[: 3 * MiB])
    small_b.write_bytes(disk.read_bytes()[5 * MiB : 7 * MiB])
    a_gz = compress(small_a, "gzip", tmp_path / "a.gz")
    b_gz = compress(small_b, "gzip", tmp_path / "b.gz")
    joined = tmp_path / "joined.gz"
    joined.write_bytes(a_gz.read_bytes() + b_gz.read_bytes())
    # gzip itself reads it as one stream:
    assert tools.run("gzip", "-dc", joined).stdout == small_a.read_bytes() + small_b.read_bytes()
    opened = open_path(joined)
    details = opened.details.compression
    assert isinstance(details, GzipDetails) and details.members == 2
    assert opened.uncompressed_size == 5 * MiB and not opened.partial
    assert opened.inner is not None
    assert opened.inner.pread(0, 5 * MiB) == small_a.read_bytes() + small_b.read_bytes()
    assert any("2 concatenated members" in note for note in opened.notes)


def test_xz_index_gives_the_sizes_xz_list_reports(disk: Path, tmp_path: Path) -> None:
    blocks = compress(disk, "xz", tmp_path / "blocks.xz", "--block-size=1MiB")
    second = compress(disk, "xz", tmp_path / "second.xz", "--check=sha256")
    joined = tmp_path / "joined.xz"
    # Two streams with stream padding (4 NUL bytes) between them and after them: legal xz.
    joined.write_bytes(blocks.read_bytes() + bytes(4) + second.read_bytes() + bytes(8))
    for path in (blocks, joined):
        robot = tools.run("xz", "--robot", "-lv", path).stdout.decode()
        totals = next(line.split("\t") for line in robot.splitlines() if line.startswith("totals"))
        opened = open_path(path)
        details = opened.details.compression
        assert isinstance(details, XzDetails)
        assert opened.problems == []
        assert details.streams == int(totals[1])
        assert details.blocks == int(totals[2])
        assert details.compressed_size + details.stream_padding == int(totals[3])
        assert details.uncompressed_size == int(totals[4]) == opened.uncompressed_size
        assert ",".join(details.checks) == totals[6]
        assert details.stream_padding == int(totals[7])
    blocks_details = open_path(blocks).details.compression
    assert isinstance(blocks_details, XzDetails) and blocks_details.blocks == 24  # 24 MiB in 1 MiB blocks


@pytest.mark.parametrize("content_size", [True, False])
def test_zstd_frames_match_zstd_list(content_size: bool, disk: Path, tmp_path: Path) -> None:
    flag = "--content-size" if content_size else "--no-content-size"
    one = compress(disk, "zstd", tmp_path / "one.zst", flag)
    two = tmp_path / "two.zst"
    two.write_bytes(one.read_bytes() + one.read_bytes())
    for path, frames in ((one, 1), (two, 2)):
        listing = tools.run("zstd", "-lv", path).stdout.decode()
        opened = open_path(path)
        details = opened.details.compression
        assert isinstance(details, ZstdDetails) and opened.problems == []
        assert details.frames == int(re.search(r"# Zstandard Frames: (\d+)", listing).group(1)) == frames  # type: ignore[union-attr]
        compressed = int(re.search(r"Compressed Size: .*\((\d+) B\)", listing).group(1))  # type: ignore[union-attr]
        assert details.compressed_size == compressed
        window = int(re.search(r"Window Size: .*\((\d+) B\)", listing).group(1))  # type: ignore[union-attr]
        assert details.window_size == window
        size = re.search(r"Decompressed Size: .*\((\d+) B\)", listing)
        if content_size:
            assert size is not None
            assert details.total_content_size == int(size.group(1)) == frames * disk.stat().st_size
            assert opened.uncompressed_size == frames * disk.stat().st_size
        else:
            assert size is None
            assert details.content_size is None and details.total_content_size is None
            # Not recorded, but known: the stream was decompressed to its end.
            assert opened.uncompressed_size == frames * disk.stat().st_size
        assert opened.inner is not None
        assert opened.inner.pread(0, MiB) == disk.read_bytes()[:MiB]


def test_bzip2_level_and_streams(disk: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(disk.read_bytes()[: 2 * MiB])
    one = compress(small, "bzip2", tmp_path / "one.bz2", "-3")
    two = tmp_path / "two.bz2"
    two.write_bytes(one.read_bytes() * 2)
    opened = open_path(two)
    details = opened.details.compression
    assert isinstance(details, Bzip2Details)
    assert (details.level, details.block_size, details.streams) == (3, 300_000, 2)
    assert opened.uncompressed_size == 4 * MiB == len(tools.run("bzip2", "-dc", two).stdout)


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_truncated_stream_is_a_problem(fmt: str, disk: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(disk.read_bytes()[: 2 * MiB] + bytes(range(256)) * 4096)
    whole = compress(small, fmt, tmp_path / f"whole.{fmt}")
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    # The tool agrees that it is damaged:
    assert tools.run(COMPRESSORS[fmt][0], "-t", cut, check=False).returncode != 0
    opened = open_path(cut)
    assert any("truncated" in problem for problem in opened.problems), opened.problems


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_corrupt_stream_is_a_problem(fmt: str, disk: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(bytes(range(256)) * 8192)
    whole = bytearray(compress(small, fmt, tmp_path / f"whole.{fmt}").read_bytes())
    middle = len(whole) // 2
    whole[middle : middle + 16] = bytes(b ^ 0xA5 for b in whole[middle : middle + 16])
    bad = tmp_path / f"bad.{fmt}"
    bad.write_bytes(bytes(whole))
    assert tools.run(COMPRESSORS[fmt][0], "-t", bad, check=False).returncode != 0
    opened = open_path(bad)
    assert opened.problems, "a corrupt stream must be a reason to refuse"


def test_data_after_a_gzip_stream_is_a_problem_and_zero_padding_a_note(disk: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(disk.read_bytes()[:MiB])
    gz = compress(small, "gzip", tmp_path / "s.gz").read_bytes()
    padded = tmp_path / "padded.gz"
    padded.write_bytes(gz + bytes(10240 - len(gz) % 10240))
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(gz + b"conectix" + bytes(504))
    opened = open_path(padded)
    assert opened.problems == [] and any("zero bytes of padding" in note for note in opened.notes)
    opened = open_path(garbage)
    assert any("not part of it" in problem for problem in opened.problems)


def test_nested_compression_is_refused(disk: Path, tmp_path: Path) -> None:
    inner = compress(disk, "xz", tmp_path / "disk.raw.xz")
    outer = compress(inner, "gzip", tmp_path / "disk.raw.xz.gz")
    opened = open_path(outer)
    assert any("compression inside compression" in problem for problem in opened.problems)


def _concatenated_zeros(path: Path, fmt: str, total: int, piece: int, level: str) -> Path:
    """``total`` bytes of zeros as a stream of ``piece``-sized members, each streamed through
    the compressor CLI (never stored uncompressed); concatenated members are legal."""
    program, *args = COMPRESSORS[fmt]
    member = path.with_suffix(".member")
    tools.run("sh", "-c", f"head -c {piece} /dev/zero | {program} {' '.join(args)} {level} > '{member}'")
    data = member.read_bytes()
    member.unlink()
    with path.open("wb") as out:
        for _ in range(total // piece):
            out.write(data)
    return path


_MEASURE = """
import json, re, sys, time
from imagewright.binary import FileSource
from imagewright.formats.base import Limits
from imagewright.formats.containers import open_container
# CPU time, not wall time: what the bomb costs, not how busy the machine is.
started = time.process_time()
with FileSource(sys.argv[1]) as src:
    opened = open_container(src, Limits())
    read = src.bytes_read
elapsed = time.process_time() - started
print(json.dumps({
    "elapsed": elapsed,
    # VmHWM: this process's own peak RSS (getrusage's maxrss survives exec from the parent).
    "maxrss_kib": int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)),
    "kind": opened.kind,
    "size": opened.uncompressed_size,
    "prefix": opened.inner.prefix_length if opened.inner is not None else None,
    "bytes_read": read,
    "problems": opened.problems,
}))
"""


@pytest.mark.parametrize(
    ("fmt", "piece", "level"),
    [("gzip", 512 * MiB, "-9"), ("xz", 512 * MiB, "-0"), ("zstd", GiB, f"-3 --stream-size={GiB}")],
)
def test_ten_gib_bomb_costs_a_bounded_prefix(fmt: str, piece: int, level: str, tmp_path: Path) -> None:
    bomb = _concatenated_zeros(tmp_path / f"bomb.{fmt}", fmt, 10 * GiB, piece, level)
    assert bomb.stat().st_size < 32 * MiB
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(bomb)], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["kind"] == "compressed"
    # Stopped where the budget for its input ran out, and refused for it.
    assert result["prefix"] <= Budget(Limits(), bomb.stat().st_size).decompressed_total
    assert any("could not be examined within the limit" in problem for problem in result["problems"])
    assert result["elapsed"] < 1.0, result
    assert result["maxrss_kib"] < 100 * 1024, result
    if fmt in ("xz", "zstd"):
        assert result["size"] == 10 * GiB  # from the xz indexes / zstd frame headers


def test_zstd_with_a_leading_skippable_frame(disk: Path, tmp_path: Path) -> None:
    one = compress(disk, "zstd", tmp_path / "one.zst")
    skippable = (0x184D2A50).to_bytes(4, "little") + (16).to_bytes(4, "little") + b"metadata-for-pz!"
    path = tmp_path / "skip.zst"
    path.write_bytes(skippable + one.read_bytes())
    assert tools.run("zstd", "-dc", path).stdout == disk.read_bytes()  # zstd itself accepts it
    opened = open_path(path)
    details = opened.details.compression
    assert isinstance(details, ZstdDetails) and opened.problems == []
    assert (details.frames, details.skippable_frames) == (1, 1)
    assert opened.inner is not None and opened.inner.pread(0, MiB) == disk.read_bytes()[:MiB]
