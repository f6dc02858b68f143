"""convert streams a compressed raw disk (issue 18): no scratch copy, the stream judged as it
flows, qemu-img reading it through the in-process NBD server — checked with qemu-img
compare, sha256sum, the compressors' own CLIs, and a filesystem too small for a scratch copy.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.fixtures import tools
from tests.fixtures.hostile_containers import gzip_nested_compression
from tests.fixtures.hostile_members import backed_qcow2
from tests.ops.resize_fixtures import make_disk

from imagewright.errors import ImagewrightError, UnsafeImageError
from imagewright.formats.base import Limits
from imagewright.inspection import inspect_image
from imagewright.ops.convert import convert
from imagewright.programs.runner import record_invocations

pytestmark = pytest.mark.integration

MiB = 1 << 20
COMPRESSORS = {"gzip": ["gzip", "-1", "-c"], "xz": ["xz", "-0", "-T1", "-c"], "zstd": ["zstd", "-q", "-c"]}
SUFFIX = {"gzip": ".gz", "xz": ".xz", "zstd": ".zst", "bzip2": ".bz2"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def pack(raw: Path, tool: str, out_dir: Path | None = None, *extra: str) -> Path:
    """``raw`` compressed by the real tool (stdin to stdout: gzip and bzip2 record no size;
    xz records it in its index; zstd records it per frame only with ``--content-size``)."""
    out = (out_dir or raw.parent) / (raw.name + SUFFIX[tool])
    argv = [*COMPRESSORS.get(tool, [tool, "-c"]), *extra]
    with raw.open("rb") as src, out.open("wb") as dst:
        subprocess.run(argv, stdin=src, stdout=dst, check=True)
    return out


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 MiB: a GPT (sfdisk) with ext4 in its last partition, and 48 MiB of random data in
    runs (more than a 72 MiB filesystem holds twice)."""
    directory = tmp_path_factory.mktemp("stream-disk")
    made = make_disk(directory, "gpt", 160 * MiB)
    with made.path.open("r+b") as f:
        for index in range(6):
            f.seek(40 * MiB + index * 18 * MiB)
            f.write(os.urandom(8 * MiB))
    return made.path


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``pack`` remembered for the module: each (file, tool, options) is compressed once (per
    xdist worker) into a directory of its own; the tests only read what they get (bzip2 and xz
    take 8-10 s of CPU over the 160 MiB disk)."""
    directory = tmp_path_factory.mktemp("packed")
    made: dict[tuple[Path, str, tuple[str, ...]], Path] = {}

    def get(raw: Path, tool: str, *extra: str) -> Path:
        key = (raw, tool, extra)
        if key not in made:
            out_dir = directory / str(len(made))
            out_dir.mkdir()
            made[key] = pack(raw, tool, out_dir, *extra)
        return made[key]

    return get


def _identical(raw: Path, out: Path, fmt: str) -> None:
    compare = tools.run("qemu-img", "compare", "-f", "raw", "-F", fmt, raw, out)
    assert b"Images are identical" in compare.stdout


@pytest.fixture
def small_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """TMPDIR on a 2 MiB tmpfs: room for NBD sockets, none for a scratch copy."""
    with tools.mounted_tmpfs(tmp_path / "tmpdir", "2m") as tmpdir:
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
        yield tmpdir


@pytest.mark.parametrize(
    ("tool", "extra"),
    [("gzip", ()), ("bzip2", ()), ("xz", ()), ("zstd", ()), ("zstd", ("--content-size",))],
    ids=["gzip", "bzip2", "xz-indexed", "zstd-no-size", "zstd-sized"],
)
@pytest.mark.parametrize("out_name", ["out.qcow2", "out.raw"])
def test_a_compressed_raw_disk_larger_than_the_free_space_converts(
    disk: Path,
    packed: Callable[..., Path],
    tmp_path: Path,
    small_tmp: Path,
    tool: str,
    extra: tuple[str, ...],
    out_name: str,
) -> None:
    """The output's filesystem holds the output (48 MiB of data) but not also a scratch copy
    of the data; TMPDIR holds nothing. The result is the disk, bit for bit."""
    source = packed(disk, tool, *extra)
    with tools.mounted_tmpfs(tmp_path / "out", "72m") as out_dir:
        out = out_dir / out_name
        result = convert(source, out)
        fmt = "qcow2" if out_name.endswith("qcow2") else "raw"
        _identical(disk, out, fmt)
        assert result.source_access == "streamed" and result.source_format == "raw"
        assert result.source_compression == tool
        assert result.virtual_size == disk.stat().st_size
        assert result.checksums["sha256"] == sha256(out)
        assert sorted(p.name for p in out_dir.iterdir()) == [out_name]
        # What was found inside, from regions kept as the disk went by: the same as inspecting it.
        report = result.source_report
        assert report is not None and report.verdict.safe and not result.notes
        plain = inspect_image(disk)
        assert report.partition_table is not None and report.disk == plain.disk
        assert report.partition_table.partitions[-1].filesystem is not None
    assert list(small_tmp.iterdir()) == []


def test_compressed_raw_to_compressed_raw_is_one_stream(
    disk: Path, packed: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.raw.zst"
    with record_invocations() as calls:
        result = convert(packed(disk, "gzip"), out)
    assert calls.argvs == []  # raw to raw: no qemu-img at all
    unpacked = tools.run("zstd", "-dcq", out).stdout
    assert hashlib.sha256(unpacked).hexdigest() == sha256(disk)
    assert result.content_checksums == {"sha256": sha256(disk)}
    assert result.checksums["sha256"] == sha256(out)


def test_an_odd_sized_raw_disk_is_padded_like_qemu_img(tmp_path: Path) -> None:
    raw = tmp_path / "odd.raw"
    raw.write_bytes(os.urandom(3 * MiB + 100))
    packed = pack(raw, "gzip")
    result = convert(packed, tmp_path / "out.qcow2")
    plain = convert(raw, tmp_path / "plain.qcow2")
    assert result.virtual_size == plain.virtual_size == 3 * MiB + 512
    tools.run(
        "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", tmp_path / "plain.qcow2", tmp_path / "out.qcow2"
    )


# --- hostile streams ------------------------------------------------------------------------


def _corrupt_last_crc(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # gzip trailer: CRC32 then ISIZE
    path.write_bytes(bytes(data))
    return path


def _qemu_img_ran(calls: list[list[str]]) -> bool:
    return any(argv[0].endswith("qemu-img") for argv in calls)


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 MiB of data that is not zeros (a stream of pieces worth judging)."""
    path = tmp_path_factory.mktemp("small") / "disk.raw"
    path.write_bytes(os.urandom(16 * MiB))
    return path


HOSTILE_GZIP: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "bad-crc-at-the-end": (lambda raw: _corrupt_last_crc(pack(raw, "gzip")).read_bytes(), "corrupt"),
    "trailing-garbage": (lambda raw: pack(raw, "gzip").read_bytes() + b"hidden" * 100, "after the end"),
    "truncated": (lambda raw: pack(raw, "gzip").read_bytes()[:-5000], "truncated"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_GZIP))
@pytest.mark.parametrize("out_name", ["out.qcow2", "out.raw"])
def test_a_hostile_gzip_is_refused_before_qemu_img_runs(
    small_disk: Path, tmp_path: Path, case: str, out_name: str
) -> None:
    build, reason = HOSTILE_GZIP[case]
    source = tmp_path / "in" / "disk.raw.gz"
    source.parent.mkdir()
    source.write_bytes(build(small_disk))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with record_invocations() as calls, pytest.raises(UnsafeImageError, match=reason):
        convert(source, out_dir / out_name)
    assert not _qemu_img_ran(calls.argvs)  # gzip records no size: judged whole before qemu-img
    assert list(out_dir.iterdir()) == []


def test_a_bomb_is_refused(tmp_path: Path) -> None:
    raw = tools.sparse_file(tmp_path / "zeros.raw", 64 * MiB)
    for tool in ("gzip", "xz"):
        packed = pack(raw, tool)
        with record_invocations() as calls, pytest.raises(UnsafeImageError, match="decompression bomb"):
            convert(packed, tmp_path / "out.qcow2", limits=Limits(max_virtual_size=32 * MiB))
        assert not _qemu_img_ran(calls.argvs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zeros.raw", "zeros.raw.gz", "zeros.raw.xz"]


def test_nested_compression_is_refused(tmp_path: Path) -> None:
    source = gzip_nested_compression(tmp_path)
    with record_invocations() as calls, pytest.raises(UnsafeImageError, match="compression inside"):
        convert(source, tmp_path / "out.qcow2")
    assert not _qemu_img_ran(calls.argvs)
    assert not (tmp_path / "out.qcow2").exists()


def test_a_qcow2_with_a_backing_file_inside_gzip_is_refused_before_qemu_img(tmp_path: Path) -> None:
    qcow2 = backed_qcow2(tmp_path / "evil.qcow2")
    source = tmp_path / "evil.qcow2.gz"
    source.write_bytes(gzip.compress(qcow2.read_bytes()))
    qcow2.unlink()
    with record_invocations() as calls, pytest.raises(UnsafeImageError, match="/etc/passwd"):
        convert(source, tmp_path / "out.raw")
    assert calls.argvs == []
    assert [p.name for p in tmp_path.iterdir()] == ["evil.qcow2.gz"]


def _corrupt_middle(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    middle = len(data) * 3 // 4
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("out_name", ["out.qcow2", "out.vmdk", "out.raw", "out.raw.gz"])
def test_a_stream_refused_midway_leaves_no_output(small_disk: Path, tmp_path: Path, out_name: str) -> None:
    """xz records its size: one pass, qemu-img reads while the stream is judged; damage three
    quarters in fails the reads, qemu-img fails, and the output never appears."""
    source = _corrupt_middle(pack(small_disk, "xz", tmp_path, "--block-size=1MiB"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with record_invocations() as calls, pytest.raises(ImagewrightError, match="corrupt") as caught:
        convert(source, out_dir / out_name)
    assert "qemu-img" not in str(caught.value)  # the stream's reason, not qemu-img's read error
    assert _qemu_img_ran(calls.argvs) == (not out_name.startswith("out.raw"))
    assert list(out_dir.iterdir()) == []


def test_a_bad_check_at_the_very_end_fails_the_last_read(small_disk: Path, tmp_path: Path) -> None:
    """The last piece is held back until the end is judged: qemu-img never completes."""
    source = pack(small_disk, "xz", tmp_path)
    data = bytearray(source.read_bytes())
    # xz: ... last block, its CRC64 check, index, stream footer (12 bytes). Damage the check.
    index_at = len(data) - 12 - (int.from_bytes(data[-8:-4], "little") + 1) * 4
    data[index_at - 8] ^= 0xFF
    source.write_bytes(bytes(data))
    with pytest.raises(ImagewrightError) as caught:
        convert(source, tmp_path / "out.qcow2")
    assert "xz" in str(caught.value)
    assert not (tmp_path / "out.qcow2").exists()


# --- other formats inside, and the end of the stream ------------------------------------------


def test_a_compressed_qcow2_is_spooled_and_says_so(disk: Path, tmp_path: Path) -> None:
    qcow2 = tmp_path / "disk.qcow2"
    tools.qemu_img("convert", "-f", "raw", "-O", "qcow2", disk, qcow2)
    packed = pack(qcow2, "gzip")
    result = convert(packed, tmp_path / "out.vmdk")
    assert result.source_access == "spooled" and result.source_format == "qcow2"
    assert any("random access" in note for note in result.notes)
    _identical(disk, tmp_path / "out.vmdk", "vmdk")


@pytest.fixture(scope="module")
def fixed_vhd(disk: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The disk as a fixed VHD (qemu-img), made once for the module."""
    vhd = tmp_path_factory.mktemp("fixed-vhd") / "disk.vhd"
    tools.qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", disk, vhd)
    return vhd


@pytest.mark.parametrize("out_name", ["out.qcow2", "out.raw"])
@pytest.mark.parametrize("tool", ["gzip", "xz"])
def test_a_fixed_vhd_is_known_by_its_footer(
    disk: Path, fixed_vhd: Path, packed: Callable[..., Path], tmp_path: Path, tool: str, out_name: str
) -> None:
    """A fixed VHD starts like a raw disk; its footer, at the very end, says otherwise. gzip
    into qcow2: seen by the checking pass; xz, or gzip into raw (one pass, no checking pass):
    seen as the stream ends (its tail recalled), and converted again the spool way. The scratch
    copy goes next to the output, and goes."""
    result = convert(packed(fixed_vhd, tool), tmp_path / out_name)
    assert result.source_format == "vpc" and result.source_access == "spooled"
    _identical(disk, tmp_path / out_name, "qcow2" if out_name.endswith("qcow2") else "raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == [out_name]


@pytest.mark.parametrize("tool", ["gzip", "bzip2"])
def test_a_stream_without_a_recorded_size_is_decompressed_once_into_raw(
    disk: Path, packed: Callable[..., Path], tmp_path: Path, tool: str
) -> None:
    """A raw output needs no size before the stream: no checking pass (its progress stage
    never shows), where a qcow2 output (an NBD export has a size) has one. Both outputs are
    the disk, and the raw one's checksums are those of an independent reader."""
    source = packed(disk, tool)
    stages: dict[str, list[str]] = {}
    checksums: dict[str, dict[str, str]] = {}
    for out_name in ("out.raw", "out.qcow2"):
        seen: list[str] = []
        result = convert(
            source,
            tmp_path / out_name,
            checksums=("md5", "sha512"),
            progress=lambda stage, _done, _total, seen=seen: seen.append(stage),
        )
        assert result.source_access == "streamed" and result.virtual_size == disk.stat().st_size
        _identical(disk, tmp_path / out_name, "qcow2" if out_name.endswith("qcow2") else "raw")
        stages[out_name] = seen
        checksums[out_name] = dict(result.checksums)
    assert "checking" not in stages["out.raw"] and "converting" in stages["out.raw"]
    assert "checking" in stages["out.qcow2"]
    md5 = tools.run("md5sum", tmp_path / "out.raw").stdout.split()[0].decode()
    sha512 = tools.run("sha512sum", tmp_path / "out.raw").stdout.split()[0].decode()
    assert checksums["out.raw"] == {"md5": md5, "sha512": sha512}


# --- interruption -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 GiB of random data in zstd (sized): several seconds to stream into a qcow2."""
    directory = tmp_path_factory.mktemp("slow-stream")
    raw = directory / "slow.raw"
    with raw.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(16 * MiB))
    packed = pack(raw, "zstd", None, "--content-size", "-1")
    raw.unlink()
    return packed


def _start(src: Path, dst: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "imagewright.cli.main", "convert", str(src), str(dst)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _qemu_img_children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found.extend(_qemu_img_children(int(child)))
    except OSError:
        pass
    return [c for c in found if _comm(c) == "qemu-img"]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _wait_for(predicate: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("the condition was not reached in time")
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_midway_leaves_nothing(slow_packed: Path, tmp_path: Path) -> None:
    proc = _start(slow_packed, tmp_path / "out.qcow2")
    _wait_for(lambda: bool(_qemu_img_children(proc.pid)))
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_kill_9_midway_leaves_no_output_and_the_next_run_sweeps(slow_packed: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.qcow2"
    proc = _start(slow_packed, dst)
    _wait_for(lambda: bool(_qemu_img_children(proc.pid)))
    children = _qemu_img_children(proc.pid)
    time.sleep(0.5)
    proc.kill()
    proc.communicate(timeout=60)
    # qemu-img loses its source (the socket closes) and ends by itself.
    _wait_for(lambda: not any(_comm(c) == "qemu-img" for c in children), timeout=60)
    assert not dst.exists()
    result = convert(slow_packed, dst)
    assert result.source_access == "streamed"
    assert [p.name for p in tmp_path.iterdir()] == ["out.qcow2"]
