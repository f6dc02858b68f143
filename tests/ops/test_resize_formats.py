"""resize: MBR (primary, logical) and GPT (sfdisk, sgdisk) disks with ext4 in the last partition,
in raw, qcow2, vmdk, vhdx, vdi and vhd, grown by 1 GiB — checked with sfdisk, sgdisk, growpart,
qemu-img info/check and e2fsck."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fixtures.tools import run
from tests.ops.resize_fixtures import (
    SECTOR,
    Disk,
    GiB,
    MiB,
    block_count,
    e2fsck_clean,
    end_of,
    in_format,
    info,
    make_disk,
    partitions_by_number,
    sfdisk_table,
    stray_files,
    to_raw,
)

from imagewright.binary import FileSource
from imagewright.disk.partitions import read_partition_table
from imagewright.inspection import inspect_image
from imagewright.ops.resize import resize
from imagewright.ops.resize.sizes import vhd_chs_size
from imagewright.programs.runner import record_invocations

pytestmark = pytest.mark.integration

LAYOUTS = ["mbr", "mbr-logical", "gpt", "gpt-sgdisk"]
FORMATS = ["raw", "qcow2", "vmdk", "vhdx", "vdi", "vpc"]
#: qemu-img info keys that change on every write (VMDK's content id) and are not options.
VOLATILE = {"cid", "parent-cid"}


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Disk]:
    directory = tmp_path_factory.mktemp("resize-disks")
    return {layout: make_disk(directory, layout) for layout in LAYOUTS}


def copy_disk(disk: Disk, directory: Path) -> Path:
    target = directory / "disk.img"
    run("cp", "--sparse=always", disk.path, target)
    return target


def options_of(image: Path, fmt: str) -> dict[str, object]:
    data = info(image, fmt)
    specific = data.get("format-specific", {}).get("data", {})
    kept = {key: value for key, value in specific.items() if key not in VOLATILE}
    if "extents" in kept:  # VMDK: one extent whose size is the disk's; compare the rest
        kept["extents"] = [
            {k: v for k, v in extent.items() if k not in ("virtual-size", "filename", "cluster-size")}
            for extent in kept["extents"]
        ]
    kept["cluster-size"] = data.get("cluster-size")
    return kept


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_grow_by_one_gib(disks: dict[str, Disk], tmp_path: Path, layout: str, fmt: str) -> None:
    disk = disks[layout]
    image = in_format(copy_disk(disk, tmp_path), fmt)
    before_size = info(image, fmt)["virtual-size"]
    before_options = options_of(image, fmt)
    before = partitions_by_number(sfdisk_table(disk.path))
    blocks_before = block_count(f"{disk.path}?offset={disk.fs_offset}")

    report = resize(image, "+1G")

    expected_size = vhd_chs_size(before_size + GiB)[0] if fmt == "vpc" else before_size + GiB
    assert report.new_virtual_size == expected_size
    assert info(image, fmt)["virtual-size"] == expected_size
    assert options_of(image, fmt) == before_options
    if fmt in ("qcow2", "vmdk", "vhdx", "vdi"):
        assert b"No errors were found" in run("qemu-img", "check", "-f", fmt, image).stdout

    raw = to_raw(image, fmt, tmp_path) if fmt != "raw" else image
    sectors = expected_size // SECTOR
    table = sfdisk_table(raw)
    after = partitions_by_number(table)
    # growpart's end: 33 sectors short of the disk's end (= the GPT's last usable sector).
    new_end = sectors - 34
    assert end_of(after[disk.fs_partition]) == new_end
    assert report.partition is not None
    assert (report.partition.number, report.partition.new_end) == (disk.fs_partition, new_end)
    assert after[disk.fs_partition]["start"] == before[disk.fs_partition]["start"]
    for number, entry in before.items():
        if number == disk.fs_partition:
            continue
        if layout == "mbr-logical" and number == 2:  # the extended container grows with its logical
            assert entry["start"] == after[2]["start"] and end_of(after[2]) == new_end
            continue
        assert after[number] == {**entry, "node": after[number]["node"]}
    run("sfdisk", "--verify", raw)
    if layout.startswith("gpt"):
        assert table["lastlba"] == new_end
        verify = run("sgdisk", "-v", raw)
        assert b"No problems found" in verify.stdout, verify.stdout
        assert report.gpt_backup_moved
    # The filesystem is untouched: it grows at first boot.
    device = f"{raw}?offset={disk.fs_offset}"
    e2fsck_clean(device)
    assert block_count(device) == blocks_before
    assert report.filesystem == "ext4" and report.filesystem_action == "at-first-boot"
    assert "will grow to fill it at first boot (imagewright-agent)" in "\n".join(report.summary())
    # Our own reader agrees with sfdisk.
    with FileSource(raw) as src:
        ours = read_partition_table(src)
    assert ours is not None and ours.problems == [] and ours.warnings == []
    assert ours.partition(disk.fs_partition).end == new_end  # type: ignore[union-attr]
    assert stray_files(tmp_path) == []


@pytest.mark.parametrize("layout", ["mbr", "gpt", "gpt-sgdisk"])
def test_same_table_as_growpart(disks: dict[str, Disk], tmp_path: Path, layout: str) -> None:
    """growpart (cloud-utils) on a disk grown by truncate writes the very table we write."""
    disk = disks[layout]
    ours = copy_disk(disk, tmp_path)
    theirs = tmp_path / "growpart.img"
    run("cp", "--sparse=always", disk.path, theirs)
    with theirs.open("r+b") as f:
        f.truncate(disk.path.stat().st_size + GiB)
    run("growpart", theirs, str(disk.fs_partition))
    resize(ours, "+1G")
    mine, reference = sfdisk_table(ours), sfdisk_table(theirs)
    for table in (mine, reference):
        table.pop("device")
        for entry in table["partitions"]:
            entry.pop("node")
    assert mine == reference


def test_vhd_sized_by_current_size_takes_the_exact_size(disks: dict[str, Disk], tmp_path: Path) -> None:
    image = in_format(copy_disk(disks["gpt"], tmp_path), "vpc", "force_size=on,subformat=fixed")
    report = resize(image, "+1G")
    assert report.new_virtual_size == 256 * MiB + GiB
    assert report.notes == []
    assert info(image, "vpc")["virtual-size"] == 256 * MiB + GiB
    # A fixed VHD is the raw disk plus a 512-byte footer.
    assert image.stat().st_size == 256 * MiB + GiB + 512
    assert b"No problems found" in run("sgdisk", "-v", to_raw(image, "vpc", tmp_path)).stdout


def test_vhd_sized_by_geometry_is_rounded_up_and_says_so(disks: dict[str, Disk], tmp_path: Path) -> None:
    image = in_format(copy_disk(disks["mbr"], tmp_path), "vpc")
    before = info(image, "vpc")["virtual-size"]
    report = resize(image, "+1G")
    assert report.requested_size == before + GiB
    assert report.new_virtual_size > report.requested_size
    assert any("CHS geometry" in note and str(report.new_virtual_size) in note for note in report.notes)
    # qemu-img itself, asked for the requested size, makes a VHD of exactly that rounded size.
    probe = tmp_path / "probe.vhd"
    run("qemu-img", "create", "-q", "-f", "vpc", probe, str(report.requested_size))
    assert info(probe, "vpc")["virtual-size"] == report.new_virtual_size


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("vmdk", "subformat=streamOptimized,adapter_type=lsilogic,hwversion=6"),
        ("vhdx", "subformat=fixed,block_size=8388608"),
        ("vhdx", "block_size=33554432"),
        ("vdi", "static=on"),
        ("vpc", "subformat=fixed"),
        ("qcow2", "compat=0.10,cluster_size=4096"),
        ("qcow2", "refcount_bits=8,extended_l2=on"),
        ("qcow2", "cluster_size=2097152,lazy_refcounts=on,compression_type=zstd"),
    ],
)
def test_format_options_are_kept(disks: dict[str, Disk], tmp_path: Path, fmt: str, options: str) -> None:
    image = in_format(copy_disk(disks["gpt"], tmp_path), fmt, options)
    before = inspect_image(image)
    before_options = options_of(image, fmt)
    resize(image, "+256M")
    after = inspect_image(image)
    assert after.subformat == before.subformat
    assert options_of(image, fmt) == before_options
    if fmt == "vmdk":
        assert after.details.descriptor.adapter_type == "lsilogic"
        assert after.details.descriptor.virtual_hw_version == "6"
    if fmt == "vhdx":
        assert after.details.block_size == before.details.block_size
        assert after.details.leave_blocks_allocated == before.details.leave_blocks_allocated
    if fmt == "vdi":
        assert after.details.image_type == before.details.image_type
    if fmt == "vpc":
        assert (after.details.disk_type, after.details.size_source) == (
            before.details.disk_type,
            before.details.size_source,
        )
    assert after.partition_table is not None and after.partition_table.warnings == []
    assert stray_files(tmp_path) == []


def test_qcow2_sectors_go_through_qemu_io_without_converting(disks: dict[str, Disk], tmp_path: Path) -> None:
    image = in_format(copy_disk(disks["gpt"], tmp_path), "qcow2")
    with record_invocations() as log:
        report = resize(image, "+1G")
    assert report.method == "copy"
    assert "qemu-io" in log.programs()
    assert not any(argv[1] == "convert" for argv in log.argvs if argv[0].endswith("qemu-img"))
    # Every image qemu-io and qemu-img opened was named with its format (never probed).
    for argv in log.argvs:
        if argv[0].endswith(("qemu-io", "qemu-img")) and argv[1] in ("-f", "resize", "check", "info"):
            assert "-f" in argv


def test_a_disk_already_at_the_size_grows_only_its_partition(disks: dict[str, Disk], tmp_path: Path) -> None:
    """A disk grown by another tool: +0 moves the GPT backup and grows the last partition."""
    image = copy_disk(disks["gpt"], tmp_path)
    with image.open("r+b") as f:
        f.truncate(512 * MiB)
    report = resize(image, "+0")
    assert report.new_virtual_size == report.old_virtual_size == 512 * MiB
    assert report.gpt_backup_moved and report.partition is not None
    assert report.partition.new_end == 512 * MiB // SECTOR - 34
    assert b"No problems found" in run("sgdisk", "-v", image).stdout
    again = resize(image, "+0")
    assert again.method == "unchanged" and not again.gpt_backup_moved
    assert "nothing changed" in again.summary()[0]


def test_copies_stay_sparse(disks: dict[str, Disk], tmp_path: Path) -> None:
    image = copy_disk(disks["mbr"], tmp_path)
    allocated = image.stat().st_blocks * 512
    resize(image, "+4G")
    assert image.stat().st_size == 256 * MiB + 4 * GiB
    assert image.stat().st_blocks * 512 <= allocated + MiB


def test_moving_a_copy_back_keeps_mode(disks: dict[str, Disk], tmp_path: Path) -> None:
    image = copy_disk(disks["mbr"], tmp_path)
    image.chmod(0o640)
    resize(image, "+1M")
    assert image.stat().st_mode & 0o777 == 0o640
