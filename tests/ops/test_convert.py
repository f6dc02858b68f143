"""convert: every format pair both ways, checksums, compression wrappers, sparseness,
memory, interruption and bad input — checked with qemu-img compare, sha256sum and the
compressors' own CLIs."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.hostile_other_formats import create_luks
from tests.fixtures.tools import qemu_img, qemu_img_info, qemu_io_write, run, sparse_file

from imagewright.errors import ImageIOError, InvalidArgumentError, OutputExistsError, UnsafeImageError
from imagewright.ops.convert import convert
from imagewright.ops.convert.plan import plan_output

MiB = 1 << 20
FORMATS = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx", "vdi": "vdi"}
# Scattered data: the first sector, odd offsets, block boundaries, the very end.
WRITES = [
    (0, 512, 0x11),
    (3 * MiB + 512, 70_000, 0x22),
    (64 * MiB - 4096, 8192, 0x33),
    (200 * MiB, MiB, 0x44),
    (256 * MiB - 65536, 65536, 0x55),
]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 256 MiB disk with scattered data in every format."""
    workdir = tmp_path_factory.mktemp("convert-sources")
    raw = workdir / "src.raw"
    sparse_file(raw, 256 * MiB)
    for offset, length, pattern in WRITES:
        qemu_io_write(raw, "raw", offset, length, pattern)
    images = {"raw": raw}
    for name, fmt in FORMATS.items():
        if name == "raw":
            continue
        out = workdir / f"src.{name}"
        extra = ["-o", "force_size=on"] if fmt == "vpc" else []
        qemu_img("convert", "-f", "raw", "-O", fmt, *extra, raw, out)
        images[name] = out
    return images


@pytest.mark.integration
@pytest.mark.parametrize(("src_name", "dst_name"), list(itertools.product(FORMATS, FORMATS)))
def test_every_format_pair_is_identical_and_hashed(
    sources: dict[str, Path], tmp_path: Path, src_name: str, dst_name: str
) -> None:
    dst = tmp_path / f"out.{dst_name}"
    result = convert(sources[src_name], dst, checksums=("md5", "sha256"))
    assert result.format == FORMATS[dst_name]
    assert qemu_img_info(dst, FORMATS[dst_name])["format"] == FORMATS[dst_name]
    compare = run(
        "qemu-img", "compare", "-f", FORMATS[src_name], "-F", FORMATS[dst_name], sources[src_name], dst
    )
    assert b"Images are identical" in compare.stdout
    assert result.checksums["sha256"] == sha256(dst)
    assert result.checksums["md5"] == hashlib.md5(dst.read_bytes()).hexdigest()
    assert result.virtual_size == 256 * MiB


@pytest.mark.integration
@pytest.mark.parametrize(
    ("suffix", "decompress"), [(".gz", ["gzip", "-dc"]), (".xz", ["xz", "-dc"]), (".zst", ["zstd", "-dcq"])]
)
@pytest.mark.parametrize("inner", ["raw", "qcow2"])
def test_compressed_outputs_decompress_to_the_plain_conversion(
    sources: dict[str, Path], tmp_path: Path, suffix: str, decompress: list[str], inner: str
) -> None:
    plain = tmp_path / f"plain.{inner}"
    plain_result = convert(sources["vmdk"], plain)
    packed = tmp_path / f"packed.{inner}{suffix}"
    result = convert(sources["vmdk"], packed)
    assert result.compression == {".gz": "gzip", ".xz": "xz", ".zst": "zstd"}[suffix]
    unpacked = run(*decompress, packed).stdout
    assert hashlib.sha256(unpacked).hexdigest() == sha256(plain) or inner == "qcow2"
    assert result.checksums["sha256"] == sha256(packed)
    assert result.content_checksums is not None
    assert result.content_checksums["sha256"] == hashlib.sha256(unpacked).hexdigest()
    if inner == "raw":
        assert result.content_checksums["sha256"] == plain_result.checksums["sha256"]
    else:
        # qcow2 files of the same disk may differ in layout; what they hold must not.
        (tmp_path / "unpacked.qcow2").write_bytes(unpacked)
        compare = run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", plain, tmp_path / "unpacked.qcow2")
        assert b"Images are identical" in compare.stdout


@pytest.mark.integration
@pytest.mark.parametrize("wrapper", [("gzip", ".gz"), ("xz", ".xz"), ("zstd", ".zst"), ("bzip2", ".bz2")])
def test_compressed_sources_are_read_as_streams(
    sources: dict[str, Path], tmp_path: Path, wrapper: tuple[str, str]
) -> None:
    tool, suffix = wrapper
    packed = tmp_path / f"src.raw{suffix}"
    packed.write_bytes(run(tool, "-c", sources["raw"]).stdout)
    dst = tmp_path / "out.qcow2"
    result = convert(packed, dst)
    assert result.source_compression == {"gzip": "gzip", "xz": "xz", "zstd": "zstd", "bzip2": "bzip2"}[tool]
    compare = run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", sources["raw"], dst)
    assert b"Images are identical" in compare.stdout
    assert not list(tmp_path.glob(".out.qcow2.iw-*")), "scratch files were left behind"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("subformat", "fmt", "expected"),
    [
        ("streamOptimized", "vmdk", "streamOptimized"),
        ("fixed", "vhd", "fixed"),
        ("fixed", "vhdx", None),
        ("static", "vdi", None),
    ],
)
def test_subformats(
    sources: dict[str, Path], tmp_path: Path, subformat: str, fmt: str, expected: str | None
) -> None:
    dst = tmp_path / f"out.{fmt}"
    result = convert(sources["qcow2"], dst, subformat=subformat)
    assert result.subformat == subformat
    info = qemu_img_info(dst, FORMATS[fmt])
    if expected is not None and fmt == "vmdk":
        assert info["format-specific"]["data"]["create-type"] == expected
    compare = run("qemu-img", "compare", "-f", "qcow2", "-F", FORMATS[fmt], sources["qcow2"], dst)
    assert b"Images are identical" in compare.stdout


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["zlib", "zstd"])
def test_qcow2_cluster_compression(sources: dict[str, Path], tmp_path: Path, kind: str) -> None:
    dst = tmp_path / "out.qcow2"
    convert(sources["raw"], dst, cluster_compression=kind)
    info = qemu_img_info(dst, "qcow2")
    assert info["format-specific"]["data"]["compression-type"] == kind
    check = json.loads(run("qemu-img", "check", "--output=json", "-f", "qcow2", dst).stdout)
    assert check.get("compressed-clusters", 0) > 0
    compare = run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", sources["raw"], dst)
    assert b"Images are identical" in compare.stdout


def test_format_from_suffix_and_ambiguity(tmp_path: Path) -> None:
    assert plan_output(tmp_path / "a.raw.gz").format == "raw"
    assert plan_output(tmp_path / "a.raw.gz").compression == "gzip"
    assert plan_output(tmp_path / "a.vhd").format == "vpc"
    assert plan_output(tmp_path / "a.img.zst").compression == "zstd"
    assert plan_output(tmp_path / "a.gz", output_format="qcow2").format == "qcow2"
    with pytest.raises(InvalidArgumentError, match="Cannot tell the output format"):
        plan_output(tmp_path / "disk.gz")
    with pytest.raises(InvalidArgumentError, match="Cannot tell the output format"):
        plan_output(tmp_path / "disk")
    with pytest.raises(InvalidArgumentError, match="says gzip"):
        plan_output(tmp_path / "a.raw.gz", compression="xz")
    with pytest.raises(InvalidArgumentError, match="not a subformat"):
        plan_output(tmp_path / "a.vmdk", subformat="fixed")


@pytest.mark.integration
def test_existing_output_is_refused_without_force(sources: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "out.qcow2"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        convert(sources["raw"], dst)
    assert dst.read_bytes() == b"precious"
    convert(sources["raw"], dst, force=True)
    assert qemu_img_info(dst, "qcow2")["format"] == "qcow2"


@pytest.mark.integration
def test_unsafe_source_is_refused_before_qemu_img_runs(tmp_path: Path) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", evil)
    dst = tmp_path / "out.raw"
    with pytest.raises(UnsafeImageError, match="backing file"):
        convert(evil, dst)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["evil.qcow2"]


@pytest.mark.integration
def test_cli_bad_inputs_give_one_sentence(
    run_cli: Callable[..., Result], sources: dict[str, Path], tmp_path: Path
) -> None:
    cases = [
        [sources["raw"], tmp_path / "out.unknown"],
        [tmp_path / "missing.qcow2", tmp_path / "out.qcow2"],
        [sources["raw"], tmp_path / "out.qcow2", "--checksum", "crc99"],
        [sources["raw"], tmp_path / "nodir" / "out.qcow2"],
    ]
    for args in cases:
        result = run_cli(["convert", *args])
        assert result.exit_code == 1, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("imagewright: error:"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.integration
def test_cli_json_reports_checksums(
    run_cli: Callable[..., Result], sources: dict[str, Path], tmp_path: Path
) -> None:
    dst = tmp_path / "out.vdi"
    result = run_cli(["convert", sources["qcow2"], dst, "--checksum", "sha512", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["checksums"]["sha512"] == hashlib.sha512(dst.read_bytes()).hexdigest()
    assert report["format"] == "vdi"


# --- large, sparse, memory ------------------------------------------------------------------

MEASURE = """
import json, sys
from imagewright.ops.convert import convert
r = convert(sys.argv[1], sys.argv[2])
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the forking (large) test worker.
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({"maxrss_mib": int(hwm.split()[1]) / 1024, "size": r.output_size}))
"""


@pytest.fixture(scope="module")
def big_sparse_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 GiB raw holding 500 MiB of (incompressible) data in 50 scattered 10 MiB runs."""
    path = tmp_path_factory.mktemp("big") / "big.raw"
    sparse_file(path, 10 << 30)
    block = os.urandom(10 * MiB)
    with path.open("r+b") as f:
        for index in range(50):
            f.seek(index * (200 * MiB) + 4096 * index)
            f.write(block)
    return path


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("suffix", ["qcow2", "vmdk", "vhdx", "vdi", "raw.gz"])
def test_sparse_stays_sparse_and_memory_stays_flat(big_sparse_raw: Path, tmp_path: Path, suffix: str) -> None:
    dst = tmp_path / f"out.{suffix}"
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(big_sparse_raw), str(dst)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(proc.stdout)
    data = 500 * MiB
    assert measured["maxrss_mib"] < 150, measured
    on_disk = dst.stat().st_blocks * 512
    assert on_disk <= 1.1 * data, (suffix, on_disk)
    if suffix != "raw.gz":
        assert dst.stat().st_size <= 1.1 * data or suffix == "vhdx"  # vhdx preallocates its log


# --- interruption -----------------------------------------------------------------------------


def _start_cli(src: Path, dst: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "imagewright.cli.main", "convert", str(src), str(dst), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("the condition was not reached in time")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def slow_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 GiB of random data: compressing it with xz takes long enough to interrupt."""
    path = tmp_path_factory.mktemp("slow") / "slow.raw"
    with path.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(16 * MiB))
    return path


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            found.extend(int(c) for c in children)
    except OSError:  # it ended meanwhile
        pass
    return found


def _qemu_img_below(pid: int) -> list[int]:
    """The qemu-img processes among ``pid``'s descendants (it runs inside bubblewrap, two
    levels down; the first child may also be the one-time bwrap probe)."""
    found: list[int] = []
    for child in _children(pid):
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "qemu-img":
                found.append(child)
        except OSError:
            continue
        found.extend(_qemu_img_below(child))
    return found


@pytest.mark.slow
@pytest.mark.integration
def test_sigint_leaves_no_output(slow_source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.raw.xz"
    proc = _start_cli(slow_source, dst)
    _wait_for(lambda: any(tmp_path.glob(".out.raw.xz.iw-*")))
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.integration
def test_killing_qemu_img_leaves_no_output(slow_source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.vhdx"
    proc = _start_cli(slow_source, dst, "--checksum", "sha256")
    _wait_for(lambda: bool(_qemu_img_below(proc.pid)))
    for child in _qemu_img_below(proc.pid):
        os.kill(child, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert b"killed by signal 9" in stderr
    assert len(stderr.decode().strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs: a destination that fills up half-way through a conversion."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mountpoint)
    yield mountpoint
    run("umount", mountpoint)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["out.raw", "out.raw.gz", "out.qcow2"])
def test_full_disk_leaves_no_output_and_says_so(tmp_path: Path, small_tmpfs: Path, name: str) -> None:
    src = tmp_path / "data.raw"
    with src.open("wb") as f:
        for _ in range(8):
            f.write(os.urandom(8 * MiB))  # 64 MiB of incompressible data: more than fits
    dst = small_tmpfs / name
    with pytest.raises(ImageIOError) as caught:
        convert(src, dst)
    message = str(caught.value)
    assert "full" in message or "free" in message or "space" in message, message
    assert list(small_tmpfs.iterdir()) == []


@pytest.mark.integration
def test_archives_and_unreadable_formats_are_refused(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    sparse_file(disk, MiB)
    archive = tmp_path / "disk.tar"
    run("tar", "-C", tmp_path, "-cf", archive, "disk.raw")
    luks = tmp_path / "disk.luks"
    create_luks(luks, "4M")
    for source in (archive, luks):
        result = run_cli(["convert", source, tmp_path / "out.qcow2"])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("imagewright: error:")
        expected = "encrypted (luks)" if source == luks else "archive"
        assert expected in result.stderr, result.stderr
        assert not (tmp_path / "out.qcow2").exists()
