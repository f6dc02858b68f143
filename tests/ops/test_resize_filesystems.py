"""resize: flat ext4 images grown with resize2fs, --grow-filesystem, --no-partition, and shrinking
(allowed when the tail is free, refused otherwise) — checked with e2fsck, dumpe2fs, debugfs,
sfdisk, sgdisk and qemu-img."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fixtures.tools import run, sfdisk, sparse_file
from tests.ops.resize_fixtures import (
    SECTOR,
    GiB,
    MiB,
    block_count,
    e2fsck_clean,
    end_of,
    in_format,
    info,
    make_disk,
    make_ext4,
    partitions_by_number,
    sfdisk_table,
    sha256,
    stray_files,
    to_raw,
)

from imagewright.errors import InvalidArgumentError, UnsupportedFormatError
from imagewright.ops.resize import resize

pytestmark = pytest.mark.integration


def flat_ext4(directory: Path, disk_size: int, fs_size: int | None = None) -> Path:
    path = sparse_file(directory / "flat.img", disk_size)
    make_ext4(path, 0, fs_size or disk_size, directory)
    return path


def hostname(device: str) -> bytes:
    return run("debugfs", "-R", "cat /etc/hostname", device).stdout


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("raw", None), ("qcow2", None), ("qcow2", "cluster_size=2097152,compression_type=zstd"), ("vmdk", None)],
)
def test_flat_ext4_grows_with_resize2fs(tmp_path: Path, fmt: str, options: str | None) -> None:
    image = in_format(flat_ext4(tmp_path, 128 * MiB), fmt, options)
    before_info = info(image, fmt)
    report = resize(image, "+1G")
    assert report.partition_table is None and report.partition is None
    assert (report.filesystem, report.filesystem_action) == ("ext4", "grown")
    assert report.filesystem_old_size == 128 * MiB and report.filesystem_new_size == 128 * MiB + GiB
    raw = to_raw(image, fmt, tmp_path) if fmt != "raw" else image
    e2fsck_clean(str(raw))
    blocks, size = block_count(str(raw))
    assert blocks * size == 128 * MiB + GiB  # the filesystem fills the disk
    assert hostname(str(raw)) == b"resize-test\n"
    after_info = info(image, fmt)
    assert after_info["virtual-size"] == 128 * MiB + GiB
    assert after_info.get("cluster-size") == before_info.get("cluster-size")
    assert after_info.get("format-specific", {}).get("data", {}).get("compression-type") == before_info.get(
        "format-specific", {}
    ).get("data", {}).get("compression-type")
    if fmt != "raw":
        assert b"No errors were found" in run("qemu-img", "check", "-f", fmt, image).stdout
    assert "was grown to" in "\n".join(report.summary())
    assert stray_files(tmp_path) == []


def test_flat_ext4_with_no_partition_grows_only_the_disk(tmp_path: Path) -> None:
    image = flat_ext4(tmp_path, 64 * MiB)
    blocks = block_count(str(image))
    report = resize(image, "+64M", grow_partition=False)
    assert report.filesystem_action == "none"
    assert image.stat().st_size == 128 * MiB
    assert block_count(str(image)) == blocks
    e2fsck_clean(str(image))


def test_flat_xfs_is_not_grown_and_the_report_says_so(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "xfs.img", 320 * MiB)
    run("mkfs.xfs", "-q", image)
    report = resize(image, "+64M")
    assert (report.filesystem, report.filesystem_action) == ("xfs", "not-grown")
    assert any("grow the xfs filesystem inside the guest" in note for note in report.notes)
    assert image.stat().st_size == 384 * MiB


@pytest.mark.parametrize(("layout", "fmt"), [("gpt", "raw"), ("mbr-logical", "qcow2"), ("gpt-sgdisk", "vdi")])
def test_grow_filesystem_runs_resize2fs_in_the_partition(tmp_path: Path, layout: str, fmt: str) -> None:
    disk = make_disk(tmp_path, layout)
    image = in_format(disk.path, fmt)
    report = resize(image, "+1G", grow_filesystem=True)
    assert report.partition is not None
    assert report.filesystem_action == "grown"
    raw = to_raw(image, fmt, tmp_path) if fmt != "raw" else image
    device = f"{raw}?offset={disk.fs_offset}"
    e2fsck_clean(device)
    blocks, size = block_count(device)
    assert blocks * size == report.partition.new_size - report.partition.new_size % size
    assert report.filesystem_new_size == blocks * size
    assert hostname(device) == b"resize-test\n"
    if layout.startswith("gpt"):
        assert b"No problems found" in run("sgdisk", "-v", raw).stdout


def test_grow_filesystem_refuses_a_partition_without_ext(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "swap-last.img", 64 * MiB)
    sfdisk(path, "label: gpt\n,16M,L\n,,S\n")
    digest = sha256(path)
    with pytest.raises(InvalidArgumentError, match="ext2/3/4 filesystems only; partition 2"):
        resize(path, "+64M", grow_filesystem=True)
    assert sha256(path) == digest
    report = resize(path, "+64M")
    assert report.filesystem_action == "none"


# --- shrinking ------------------------------------------------------------------------------


def gpt_with_free_tail(directory: Path) -> tuple[Path, int]:
    """256 MiB with partitions over the first ~97 MiB; ext4 in partition 2. Returns (path, last end)."""
    path = sparse_file(directory / "tail.img", 256 * MiB)
    sfdisk(path, "label: gpt\n,32M,U\n,64M,L\n")
    part = partitions_by_number(sfdisk_table(path))[2]
    make_ext4(path, part["start"] * SECTOR, part["size"] * SECTOR, directory)
    return path, end_of(part)


@pytest.mark.parametrize(
    ("fmt", "options"), [("raw", None), ("qcow2", None), ("vdi", None), ("vpc", "force_size=on")]
)
def test_shrink_into_free_space_moves_the_gpt_backup(tmp_path: Path, fmt: str, options: str | None) -> None:
    raw, last_end = gpt_with_free_tail(tmp_path)
    before = sfdisk_table(raw)
    image = in_format(raw, fmt, options)
    report = resize(image, "-96M")
    assert report.new_virtual_size == 160 * MiB and report.partition is None
    assert report.gpt_backup_moved and report.filesystem_action == "none"
    assert info(image, fmt)["virtual-size"] == 160 * MiB
    check = to_raw(image, fmt, tmp_path) if fmt != "raw" else image
    assert b"No problems found" in run("sgdisk", "-v", check).stdout
    after = sfdisk_table(check)
    assert after["lastlba"] == 160 * MiB // SECTOR - 34
    assert [(p["start"], p["size"], p["uuid"]) for p in after["partitions"]] == [
        (p["start"], p["size"], p["uuid"]) for p in before["partitions"]
    ]
    e2fsck_clean(f"{check}?offset={after['partitions'][1]['start'] * SECTOR}")
    assert last_end < after["lastlba"]


def test_shrink_to_the_exact_minimum_and_not_one_sector_less(tmp_path: Path) -> None:
    raw, last_end = gpt_with_free_tail(tmp_path)
    minimum = (last_end + 1 + 33) * SECTOR
    digest = sha256(raw)
    with pytest.raises(
        InvalidArgumentError,
        match=f"keeps every partition and the 33 sectors of the GPT backup is {minimum} bytes",
    ):
        resize(raw, str(minimum - SECTOR))
    assert sha256(raw) == digest
    resize(raw, str(minimum))
    assert raw.stat().st_size == minimum
    assert b"No problems found" in run("sgdisk", "-v", raw).stdout
    assert sfdisk_table(raw)["lastlba"] == last_end


def test_mbr_shrinks_to_the_end_of_its_last_partition(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "mbr.img", 128 * MiB)
    sfdisk(path, "label: dos\n,16M,83\n,,5\n,8M,83\n")
    parts = partitions_by_number(sfdisk_table(path))
    last_end = max(end_of(p) for p in parts.values())  # the extended partition reaches the disk's end
    assert last_end == 128 * MiB // SECTOR - 1
    with pytest.raises(InvalidArgumentError, match="cut into partition 2"):
        resize(path, "-1M")
    # A disk whose extended partition ends early can shrink to it.
    path2 = sparse_file(tmp_path / "mbr2.img", 128 * MiB)
    sfdisk(path2, "label: dos\n,16M,83\n,32M,5\nstart=36864,size=8M,type=83\n")
    end = max(end_of(p) for p in partitions_by_number(sfdisk_table(path2)).values())
    resize(path2, str((end + 1) * SECTOR))
    assert path2.stat().st_size == (end + 1) * SECTOR
    run("sfdisk", "--verify", path2)
    assert partitions_by_number(sfdisk_table(path2)).keys() == {1, 2, 5}


def test_flat_shrink_keeps_the_filesystem_or_refuses(tmp_path: Path) -> None:
    image = flat_ext4(tmp_path, 256 * MiB, fs_size=64 * MiB)
    digest = sha256(image)
    with pytest.raises(InvalidArgumentError, match="would cut the ext4 filesystem"):
        resize(image, "32M")
    assert sha256(image) == digest
    report = resize(image, "-128M")
    assert report.new_virtual_size == 128 * MiB
    e2fsck_clean(str(image))


def test_shrinking_an_unrecognised_disk_is_refused(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "blank.img", 64 * MiB)
    with pytest.raises(InvalidArgumentError, match=r"cannot\s+tell whether the end of the disk is in use"):
        resize(image, "-1M")
    assert image.stat().st_size == 64 * MiB


def test_partition_options_do_not_apply_to_shrinking(tmp_path: Path) -> None:
    raw, _ = gpt_with_free_tail(tmp_path)
    with pytest.raises(InvalidArgumentError, match="apply only when it grows"):
        resize(raw, "-16M", partition=2)
    assert stray_files(tmp_path) == []


def test_qcow2_snapshots_are_never_dropped(tmp_path: Path) -> None:
    image = in_format(flat_ext4(tmp_path, 64 * MiB), "qcow2")
    run("qemu-img", "snapshot", "-c", "before-resize", image)
    digest = sha256(image)
    with pytest.raises(UnsupportedFormatError, match="1 internal snapshot"):
        resize(image, "+64M")
    assert sha256(image) == digest
    # Growing only the disk keeps the image in place: the snapshot stays.
    resize(image, "+64M", grow_partition=False)
    assert b"before-resize" in run("qemu-img", "snapshot", "-l", image).stdout
    assert info(image, "qcow2")["virtual-size"] == 128 * MiB
    assert stray_files(tmp_path) == []
