"""resize's parts one by one: sizes (VHD geometry against qemu-img), the partition planner,
qemu-io writes, the copy resize works on (``files``: sparse copies, commit, cleanup) and 4 KiB-sector
disks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.disk.helpers import fdisk_commands, fdisk_list, read_table
from tests.fixtures.tools import qemu_img, qemu_img_info, run, sfdisk, sparse_file
from tests.ops.resize_fixtures import GiB, MiB, sha256

from imagewright.errors import ImageIOError, InvalidArgumentError, ProgramError
from imagewright.files import AtomicOutput, copy_range, copy_sparse
from imagewright.ops.resize import resize
from imagewright.ops.resize.layout import check_shrink, choose_partition, last_partition, plan_table
from imagewright.ops.resize.sizes import plan_size, requested_size, vhd_chs_size
from imagewright.programs import qemu_io

TiB = 1 << 40


# --- sizes ----------------------------------------------------------------------------------


def test_requested_sizes() -> None:
    assert requested_size(GiB, ("+", MiB)) == GiB + MiB
    assert requested_size(GiB, ("-", MiB)) == GiB - MiB
    assert requested_size(GiB, ("=", 8 * GiB)) == 8 * GiB
    with pytest.raises(InvalidArgumentError):
        requested_size(GiB, ("*", 2))
    with pytest.raises(InvalidArgumentError, match="4096-byte sectors"):
        plan_size(GiB, ("+", 512), fmt="raw", sector_size=4096)
    with pytest.raises(InvalidArgumentError, match="at most 2040 GiB"):
        plan_size(GiB, ("=", 2041 * GiB), fmt="vpc", vhd_size_source="current_size")
    assert plan_size(GiB, ("+", GiB), fmt="vpc", vhd_size_source="current_size").final == 2 * GiB


@pytest.mark.integration
@settings(max_examples=30, deadline=None)
@given(sectors=st.one_of(st.integers(1, 4_000_000), st.integers(4_000_000, 300 * GiB // 512)))
def test_vhd_geometry_matches_qemu_img(tmp_path_factory: pytest.TempPathFactory, sectors: int) -> None:
    path = tmp_path_factory.getbasetemp() / "geometry.vhd"
    path.unlink(missing_ok=True)
    qemu_img("create", "-q", "-f", "vpc", path, str(sectors * 512))
    assert vhd_chs_size(sectors * 512)[0] == qemu_img_info(path, "vpc")["virtual-size"]


# --- the planner ----------------------------------------------------------------------------


@pytest.mark.integration
def test_planner_choices_and_refusals(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "mbr.img", 64 * MiB)
    sfdisk(disk, "label: dos\n,8M,83\n,,5\n,8M,82\n,8M,83\n")
    table = read_table(disk)
    assert table is not None
    assert last_partition(table).number == 6  # type: ignore[union-attr]
    assert choose_partition(table, None).number == 6  # type: ignore[union-attr]
    with pytest.raises(InvalidArgumentError, match="extended partition"):
        choose_partition(table, 2)
    with pytest.raises(InvalidArgumentError, match="followed by partition 6"):
        choose_partition(table, 5)
    with pytest.raises(InvalidArgumentError, match="no partition 7"):
        choose_partition(table, 7)
    with pytest.raises(InvalidArgumentError, match="cut into partition 2"):
        check_shrink(table, 32 * MiB)
    empty = sparse_file(tmp_path / "empty.img", 16 * MiB)
    sfdisk(empty, "label: dos\n,,5\n")
    empty_table = read_table(empty)
    assert empty_table is not None
    with pytest.raises(InvalidArgumentError, match="extended partition without logical partitions"):
        choose_partition(empty_table, None)


@pytest.mark.integration
def test_mbr_partitions_stop_at_two_tib_and_the_plan_says_so(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "mbr.img", 64 * MiB)
    sfdisk(disk, "label: dos\n,8M,83\n,,83\n")
    table = read_table(disk)
    assert table is not None
    plan = plan_table(table, 3 * TiB)
    assert plan.growth is not None
    assert plan.growth.new_end == plan.growth.start + 0xFFFFFFFF - 1
    assert any("2 TiB" in note for note in plan.notes)
    # A GPT is not limited.
    gpt = sparse_file(tmp_path / "gpt.img", 64 * MiB)
    sfdisk(gpt, "label: gpt\n,8M\n,\n")
    gpt_table = read_table(gpt)
    assert gpt_table is not None
    gpt_plan = plan_table(gpt_table, 3 * TiB)
    assert gpt_plan.growth is not None and gpt_plan.growth.new_end == 3 * TiB // 512 - 34
    assert gpt_plan.notes == []


@pytest.mark.integration
def test_a_4096_byte_sector_gpt_grows_in_its_own_sectors(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "4k.img", 64 * MiB)
    fdisk_commands(disk, "g\nn\n1\n\n+8M\nn\n2\n\n\nw\n", 4096)
    report = resize(disk, "+64M")
    assert report.partition is not None and report.partition.sector_size == 4096
    sectors = 128 * MiB // 4096
    _, rows = fdisk_list(disk, 4096, "Device,Start,End")
    assert int(rows[-1]["End"]) == sectors - 34 == report.partition.new_end
    table = read_table(disk, 4096)
    assert table is not None and table.problems == []
    assert not [w for w in table.warnings if "backup" in w or "than the GPT says" in w]
    with pytest.raises(InvalidArgumentError, match="4096-byte sectors"):
        resize(disk, "+512")


# --- qemu-io --------------------------------------------------------------------------------


@pytest.mark.integration
def test_qemu_io_writes_guest_bytes(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", image, "64M")
    payloads = [
        (0, b"\x55\xaa" * 256),
        (3 * MiB + 7, os.urandom(70_000)),
        (64 * MiB - 512, b"end" * 170 + b"!!"),
    ]
    qemu_io.write_guest(image, "qcow2", payloads)
    raw = tmp_path / "disk.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", image, raw)
    data = raw.read_bytes()
    for offset, payload in payloads:
        assert data[offset : offset + len(payload)] == payload
    assert b"No errors were found" in run("qemu-img", "check", image).stdout
    with pytest.raises(ProgramError, match="qemu-io could not write"):
        qemu_io.write_guest(image, "qcow2", [(64 * MiB, b"beyond")])
    with pytest.raises(InvalidArgumentError):
        qemu_io.write_guest(image, "vmdk-but-not", [(0, b"x")])


@pytest.mark.integration
def test_qemu_io_refuses_a_temporary_directory_it_cannot_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spaced = tmp_path / "with space"
    spaced.mkdir()
    monkeypatch.setenv("TMPDIR", str(spaced))
    monkeypatch.setattr(tempfile, "tempdir", None)
    image = tmp_path / "disk.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", image, "1M")
    with pytest.raises(InvalidArgumentError, match="set TMPDIR to a plain path"):
        qemu_io.write_guest(image, "qcow2", [(0, b"x")])


# --- the copy resize works on ----------------------------------------------------------------


def test_copies_keep_holes_and_bytes(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "disk.img", 256 * MiB)
    with image.open("r+b") as f:
        for offset in (0, 100 * MiB + 123, 256 * MiB - 4096):
            f.seek(offset)
            f.write(os.urandom(4096))
    progress: list[tuple[int, int | None]] = []
    with AtomicOutput(image, in_place=True, doing="resizing") as workspace:
        copy = workspace.path
        copy_sparse(image, copy, lambda done, total: progress.append((done, total)))
        assert sha256(copy) == sha256(image)
        assert copy.stat().st_blocks * 512 <= image.stat().st_blocks * 512 + MiB
        assert progress and progress[-1] == (256 * MiB, 256 * MiB)
        region = workspace.scratch("region")
        region.write_bytes(b"")
        os.truncate(region, 8 * MiB)
        copy_range(image, 100 * MiB, 8 * MiB, region, 0)
        with image.open("rb") as f:
            f.seek(100 * MiB)
            assert region.read_bytes() == f.read(8 * MiB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img"]


def test_commit_refuses_an_image_changed_meanwhile(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"a" * 4096)
    with AtomicOutput(image, in_place=True, doing="resizing") as workspace:
        copy_sparse(image, workspace.path)
        image.write_bytes(b"b" * 8192)
        with pytest.raises(ImageIOError, match="changed while imagewright was resizing it"):
            workspace.commit()
    assert image.read_bytes() == b"b" * 8192
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img"]


@pytest.mark.integration
def test_a_read_only_directory_is_one_sentence(tmp_path: Path) -> None:
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mountpoint)
    try:
        image = sparse_file(mountpoint / "disk.img", MiB)
        run("mount", "-o", "remount,ro", mountpoint)
        with pytest.raises(ImageIOError, match="is not writable"):
            resize(image, "+1M")
        assert image.stat().st_size == MiB
    finally:
        run("umount", "-l", mountpoint)
