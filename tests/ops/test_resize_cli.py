"""imagewright resize on the command line: the report, --json, and every kind of bad input —
one sentence, exit 1, the image byte for byte as it was, no temporary file left behind."""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.hostile import every_case
from tests.fixtures.hostile_other_formats import create_luks
from tests.fixtures.tools import mounted_tmpfs, qemu_img, run, sparse_file
from tests.ops.resize_fixtures import (
    Disk,
    MiB,
    in_format,
    make_disk,
    sha256,
    stray_files,
)

from imagewright.errors import ImagewrightError
from imagewright.ops.resize import resize

pytestmark = pytest.mark.integration

CASES = every_case()


@pytest.fixture(scope="module")
def gpt_disk(tmp_path_factory: pytest.TempPathFactory) -> Disk:
    return make_disk(tmp_path_factory.mktemp("cli-disks"), "gpt")


@pytest.fixture(scope="module")
def logical_disk(tmp_path_factory: pytest.TempPathFactory) -> Disk:
    return make_disk(tmp_path_factory.mktemp("cli-disks"), "mbr-logical")


def copy_of(disk: Disk, directory: Path, name: str = "disk.img") -> Path:
    target = directory / name
    run("cp", "--sparse=always", disk.path, target)
    return target


def assert_refused(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("imagewright: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_report_and_json(run_cli: Callable[..., Result], gpt_disk: Disk, tmp_path: Path) -> None:
    image = in_format(copy_of(gpt_disk, tmp_path), "qcow2")
    result = run_cli(["resize", image, "+1G"])
    assert result.exit_code == 0, result.stderr
    assert "256 MiB -> 1.2 GiB" in result.stdout
    assert "partition 3 now ends at sector 2621406" in result.stdout
    assert "its ext4 filesystem will grow to fill it at first boot (imagewright-agent)" in result.stdout
    result = run_cli(["resize", "--json", image, "+512M"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["old_virtual_size"] == 256 * MiB + 1024 * MiB
    assert report["new_virtual_size"] == 256 * MiB + 1536 * MiB
    assert report["partition"]["old_end"] == 2621406
    assert report["partition"]["new_end"] == (256 + 1536) * 2048 - 34
    assert report["filesystem_action"] == "at-first-boot"
    assert report["output_format"] == "qcow2"
    assert report["gpt_backup_moved"] is True


def test_negative_delta_is_an_argument_not_an_option(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "gpt.img", 64 * MiB)
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", image, input=b"label: gpt\n,16M\n")
    result = run_cli(["resize", image, "-32M"])
    assert result.exit_code == 0, result.stderr
    assert image.stat().st_size == 32 * MiB
    assert b"No problems found" in run("sgdisk", "-v", image).stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["+1X"], ["'1X' is not a size"]),
        (["lots"], ["'lots' is not a size"]),
        (["1.5"], ["not a whole number of bytes"]),
        (["+1000"], ["not a whole number of 512-byte sectors"]),
        (["0"], ["cannot be resized to 0 bytes"]),
        (["-300M"], ["cannot be resized to"]),
        (["+1G", "--partition", "9"], ["has no partition 9 (its partitions: 1, 2, 3)"]),
        (
            ["+1G", "--partition", "2"],
            ["Partition 2 is followed by partition 3", "only the partition that ends last"],
        ),
        (["-200M"], ["would cut into partition 3"]),
        (["+1G", "--max-virtual-size", "1G"], ["larger than the 1 GiB imagewright accepts"]),
        (["+20T"], ["larger than the 16 TiB"]),
    ],
)
def test_bad_arguments(
    run_cli: Callable[..., Result], gpt_disk: Disk, tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    image = copy_of(gpt_disk, tmp_path)
    digest = sha256(image)
    assert_refused(run_cli(["resize", image, *args]), *fragments)
    assert sha256(image) == digest
    assert stray_files(tmp_path) == []


def test_extended_partition_and_flat_disk_partitions(
    run_cli: Callable[..., Result], logical_disk: Disk, tmp_path: Path
) -> None:
    image = copy_of(logical_disk, tmp_path)
    digest = sha256(image)
    assert_refused(
        run_cli(["resize", image, "+1G", "--partition", "2"]),
        "Partition 2 is an extended partition; name the logical partition inside it (5, 6)",
    )
    assert_refused(run_cli(["resize", image, "+1G", "--partition", "5"]), "followed by partition 6")
    assert sha256(image) == digest
    flat = sparse_file(tmp_path / "flat.img", 32 * MiB)
    run("mke2fs", "-q", "-t", "ext4", flat)
    assert_refused(run_cli(["resize", flat, "+1G", "--partition", "1"]), "has no partition table")
    usage = run_cli(["resize", flat, "+1G", "--partition", "1", "--no-partition"])
    assert usage.exit_code == 2
    assert stray_files(tmp_path) == []


def test_unsafe_images_are_refused(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", evil)
    digest = sha256(evil)
    assert_refused(run_cli(["resize", evil, "+1G"]), "refused", "backing file")
    assert sha256(evil) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.qcow2"]
    assert_refused(run_cli(["resize", tmp_path / "missing.img", "+1G"]), "missing.img")


def test_every_hostile_image_is_refused_and_left_alone(tmp_path: Path) -> None:
    assert len(CASES) >= 25
    for case in CASES:
        directory = tmp_path / case.name
        directory.mkdir()
        image = case.build(directory)
        before = {p.name: sha256(p) for p in directory.iterdir() if p.is_file()}
        with pytest.raises(ImagewrightError):
            resize(image, "+64M")
        after = {p.name: sha256(p) for p in directory.iterdir() if p.is_file()}
        assert after == before, case.name


def test_unsupported_formats_and_wrappers(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    raw = sparse_file(tmp_path / "plain.raw", 16 * MiB)
    images = {
        "qed": tmp_path / "disk.qed",
        "parallels": tmp_path / "disk.hds",
    }
    for fmt, path in images.items():
        qemu_img("create", "-q", "-f", fmt, path, "16M")
        assert_refused(
            run_cli(["resize", path, "+1G"]), f"does not resize {fmt} images", "imagewright convert"
        )
    luks = create_luks(tmp_path / "disk.luks", "16M")
    # An encrypted guest is refused by the gate before resize looks at its format.
    assert_refused(run_cli(["resize", luks, "+1G"]), "its guest data is encrypted (luks)")
    packed = tmp_path / "plain.raw.gz"
    with raw.open("rb") as fin, gzip.open(packed, "wb") as fout:
        fout.write(fin.read())
    assert_refused(
        run_cli(["resize", packed, "+1G"]),
        "is compressed (gzip)",
        "decompress it first with `imagewright convert`",
    )
    archive = tmp_path / "disk.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(raw, arcname="disk.raw")
    assert_refused(run_cli(["resize", archive, "+1G"]), "archive, not a disk image")
    assert stray_files(tmp_path) == []


# --- full disks ------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs mounted for the test (we are root); unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "small", "48m") as mountpoint:
        yield mountpoint


def data_disk(path: Path, data: bytes) -> Path:
    """A 64 MiB GPT disk whose only partition holds ``data`` (allocated bytes in the file)."""
    sparse_file(path, 64 * MiB)
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", path, input=b"label: gpt\n,\n")
    with path.open("r+b") as f:
        f.seek(MiB)
        f.write(data)
    return path


def test_full_disk_is_refused_before_copying(run_cli: Callable[..., Result], small_tmpfs: Path) -> None:
    image = data_disk(small_tmpfs / "disk.img", os.urandom(30 * MiB))
    digest = sha256(image)
    line = assert_refused(run_cli(["resize", image, "+1G"]), "free", "the image was not changed")
    assert "a copy of disk.img" in line
    assert sha256(image) == digest
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["disk.img"]


def test_running_out_of_space_midway_leaves_the_image(
    run_cli: Callable[..., Result], small_tmpfs: Path
) -> None:
    # Compressible data: the streamOptimized VMDK is small, its raw working copy is not.
    raw = data_disk(small_tmpfs.parent / "big.img", bytes([0x5A]) * (60 * MiB))
    image = small_tmpfs / "disk.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, image)
    assert image.stat().st_size < 4 * MiB
    digest = sha256(image)
    assert_refused(run_cli(["resize", image, "+1G"]), "ran out of free space", "the image was left as it was")
    assert sha256(image) == digest
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["disk.vmdk"]


def test_file_size_limit(gpt_disk: Disk, tmp_path: Path) -> None:
    image = data_disk(tmp_path / "disk.img", os.urandom(24 * MiB))
    digest = sha256(image)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 * MiB, 8 * MiB))

    proc = subprocess.run(
        [sys.executable, "-m", "imagewright.cli.main", "resize", str(image), "+1G"],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "File too large" in lines[0], proc.stderr
    assert sha256(image) == digest
    assert stray_files(tmp_path) == []
