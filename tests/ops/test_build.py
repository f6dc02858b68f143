"""imagewright build: the disk it writes, cross-checked with sfdisk, blkid, e2fsck, sgdisk and
inspect; bad input refused in one sentence with nothing left behind; and three real boots of
the test guest (flat ext4, tarball, directory) that reach its marker line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from tests.fixtures.tools import run, sfdisk_json
from tests.ops.resize_fixtures import block_count, e2fsck_clean

from imagewright.compute.boot import boot
from imagewright.compute.testguest import FlatFilesystem, TestGuest
from imagewright.inspection import inspect_image

pytestmark = pytest.mark.integration

SECTOR = 512
MiB = 1024 * 1024


def build_json(run_cli: Callable[..., Result], *args: str | Path) -> dict[str, Any]:
    result = run_cli(["build", "--json", *args])
    assert result.exit_code == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def extract(image: Path, part: dict[str, Any], dest: Path) -> Path:
    """Copy one partition's byte range out, so tools see it as a whole device of its own."""
    run(
        "dd", f"if={image}", f"of={dest}", "bs=512", f"skip={part['start']}",
        f"count={part['sectors']}", "conv=sparse", "status=none",
    )  # fmt: skip
    assert dest.stat().st_size == part["sectors"] * SECTOR
    return dest


def blkid_value(device: Path, tag: str) -> str:
    return run("blkid", "-p", "-o", "value", "-s", tag, device).stdout.decode().strip()


def by_role(report: dict[str, Any], role: str) -> dict[str, Any]:
    (part,) = [p for p in report["partitions"] if p["role"] == role]
    return part


def assert_sfdisk_matches(image: Path, report: dict[str, Any], label: str) -> None:
    table = sfdisk_json(image)
    assert table["label"] == label
    found = [
        (int(p["node"].removeprefix(str(image))), p["start"], p["size"], p["type"].lower())
        for p in table["partitions"]
    ]
    expected = [(p["number"], p["start"], p["sectors"], p["type"].lower()) for p in report["partitions"]]
    assert found == expected
    assert report["disk_size"] == image.stat().st_size


def assert_partitions_hold_what_report_says(image: Path, report: dict[str, Any], scratch: Path) -> None:
    root = extract(image, by_role(report, "root"), scratch / "root.part")
    assert blkid_value(root, "TYPE") == "ext4"
    assert blkid_value(root, "UUID") == report["root_filesystem"]["uuid"]
    assert by_role(report, "root")["filesystem_uuid"] == report["root_filesystem"]["uuid"]
    fsck = run("e2fsck", "-fn", root, check=False)
    assert fsck.returncode == 0, fsck.stdout.decode() + fsck.stderr.decode()
    swap = extract(image, by_role(report, "swap"), scratch / "swap.part")
    assert blkid_value(swap, "TYPE") == "swap"
    assert blkid_value(swap, "UUID") == report["swap_uuid"]
    assert by_role(report, "swap")["filesystem_uuid"] == report["swap_uuid"]


def assert_inspect_sees(image: Path, report: dict[str, Any], kind: str) -> None:
    disk = inspect_image(image).disk
    assert disk is not None and disk.partition_table is not None
    assert disk.partition_table.kind == kind
    parts = {p.number: p for p in disk.partition_table.partitions}
    root, swap = by_role(report, "root"), by_role(report, "swap")
    root_fs = parts[root["number"]].filesystem
    assert root_fs is not None and root_fs.type == "ext4"
    assert (root_fs.uuid or "").lower() == report["root_filesystem"]["uuid"]
    swap_fs = parts[swap["number"]].filesystem
    assert swap_fs is not None and swap_fs.type == "swap"
    assert disk.boot is not None and disk.boot.code.kind == "grub2"


def test_directory_to_mbr_raw_with_swap(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    image = tmp_path / "disk.raw"
    report = build_json(
        run_cli, "--from", testguest_rootfs.root, "-o", image, "--swap", "64M", "--table", "mbr"
    )
    assert report["table"] == "mbr" and report["output_format"] == "raw"
    assert report["firmware"] == "bios" and report["boots_under"] == ["bios"]
    assert any("BIOS only" in note for note in report["notes"]), report["notes"]
    assert report["source_kind"] == "directory"
    assert [p["role"] for p in report["partitions"]] == ["swap", "root"]
    assert by_role(report, "root")["bootable"] is True
    assert by_role(report, "swap")["sectors"] * SECTOR == 64 * MiB
    assert_sfdisk_matches(image, report, "dos")
    assert_partitions_hold_what_report_says(image, report, tmp_path)
    assert_inspect_sees(image, report, "mbr")


def test_directory_to_gpt_raw_with_swap(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    image = tmp_path / "disk.img"
    report = build_json(
        run_cli, "--from", testguest_rootfs.root, "-o", image, "--swap", "32M", "--table", "gpt"
    )
    assert report["table"] == "gpt"
    assert [p["role"] for p in report["partitions"]][-2:] == ["swap", "root"]
    assert_sfdisk_matches(image, report, "gpt")
    verify = run("sgdisk", "-v", image)
    assert b"No problems found" in verify.stdout, verify.stdout.decode()
    assert_partitions_hold_what_report_says(image, report, tmp_path)
    assert_inspect_sees(image, report, "gpt")


@pytest.mark.parametrize("table", ["mbr", "gpt"])
def test_root_after_swap_grows_with_resize_and_with_growpart(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, tmp_path: Path, table: str
) -> None:
    """The root partition is the last one on a disk with swap, so it can grow: our resize grows
    it (and its ext4), and so does cloud-utils' growpart, which stops at the next partition."""
    image = tmp_path / "disk.raw"
    report = build_json(
        run_cli, "--from", testguest_rootfs.root, "-o", image, "--swap", "32M", "--table", table,
        "--size", "256M",
    )  # fmt: skip
    root = by_role(report, "root")
    on_disk = sorted(sfdisk_json(image)["partitions"], key=lambda p: p["start"])
    assert on_disk[-1]["node"] == f"{image}{root['number']}"
    assert on_disk[-2]["node"] == f"{image}{by_role(report, 'swap')['number']}"
    grown_end = (256 + 128) * MiB // SECTOR - 34  # growpart's end: 33 sectors kept free

    ours = tmp_path / "ours.raw"
    run("cp", "--sparse=always", image, ours)
    resized = run_cli(["resize", "--json", "--grow-filesystem", ours, "+128M"])
    assert resized.exit_code == 0, resized.stderr
    growth = json.loads(resized.stdout)["partition"]
    assert growth["number"] == root["number"] and growth["new_end"] == grown_end

    theirs = tmp_path / "theirs.raw"
    run("cp", "--sparse=always", image, theirs)
    resized = run_cli(["resize", "--no-partition", theirs, "+128M"])
    assert resized.exit_code == 0, resized.stderr
    changed = run("growpart", theirs, str(root["number"])).stdout.decode()
    assert changed.startswith(f"CHANGED: partition={root['number']}"), changed

    for grown in (ours, theirs):
        (entry,) = [p for p in sfdisk_json(grown)["partitions"] if p["node"] == f"{grown}{root['number']}"]
        assert (entry["start"], entry["start"] + entry["size"] - 1) == (root["start"], grown_end)
        part = extract(grown, {"start": entry["start"], "sectors": entry["size"]}, tmp_path / "root.part")
        if grown == theirs:
            run("resize2fs", part)  # what cloud-init's resizefs does after growpart
        e2fsck_clean(str(part))
        blocks, block_size = block_count(str(part))
        # Grown by (nearly) all 128 MiB; resize2fs may leave the partition's last few blocks out.
        assert root["sectors"] * SECTOR + 127 * MiB < blocks * block_size <= entry["size"] * SECTOR
        assert blkid_value(part, "UUID") == report["root_filesystem"]["uuid"]
    if table == "gpt":
        assert b"No problems found" in run("sgdisk", "-v", theirs).stdout


# --- bad input ----------------------------------------------------------------------------


def assert_refused(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("imagewright: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", ["directory", "flat-ext4"])
def test_source_too_big_for_size(
    run_cli: Callable[..., Result],
    testguest_rootfs: TestGuest,
    testguest_flat_ext4: FlatFilesystem,
    tmp_path: Path,
    kind: str,
) -> None:
    source = testguest_rootfs.root if kind == "directory" else testguest_flat_ext4.path
    out = tmp_path / "out"
    out.mkdir()
    # 16 MiB holds a partition table and a root partition, but not the ~29 MiB test guest.
    result = run_cli(["build", "--from", source, "-o", out / "disk.raw", "--size", "16M"])
    assert_refused(result, "16 MiB disk", "give --size")
    assert os.listdir(out) == []


def test_random_file_is_no_source(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(MiB))
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(["build", "--from", noise, "-o", out / "disk.raw"])
    assert_refused(result, str(noise))
    assert os.listdir(out) == []


def test_rootfs_without_kernel(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for sub in ("etc", "bin", "usr", "boot"):
        (tree / sub).mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("nokernel\n")
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(["build", "--from", tree, "-o", out / "disk.raw"])
    assert_refused(result, "Nothing to boot", "--kernel")
    assert os.listdir(out) == []


def test_existing_output_without_force(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "disk.raw"
    existing.write_bytes(b"keep me")
    result = run_cli(["build", "--from", testguest_rootfs.root, "-o", existing])
    assert_refused(result, "--force")
    assert existing.read_bytes() == b"keep me"
    assert os.listdir(out) == ["disk.raw"]


# --- boots ----------------------------------------------------------------------------------


def boot_to_marker(image: Path, fmt: str, guest: TestGuest, tmp_path: Path) -> str:
    result = boot(
        image, format=fmt, timeout=180, expect=guest.marker, snapshot=True,
        console_log=tmp_path / "console.log",
    )  # fmt: skip
    assert result.matched, "\n".join(result.last_lines)
    assert result.matched_line is not None
    return result.matched_line


@pytest.mark.slow
def test_boot_flat_ext4_mbr_raw(
    run_cli: Callable[..., Result],
    testguest_rootfs: TestGuest,
    testguest_flat_ext4: FlatFilesystem,
    tmp_path: Path,
) -> None:
    image = tmp_path / "disk.raw"
    report = build_json(run_cli, "--from", testguest_flat_ext4.path, "-o", image, "--firmware", "bios")
    assert report["source_kind"] == "filesystem-image" and report["table"] == "mbr"
    # The flat image is copied as it is: its UUID survives into the disk.
    assert report["root_filesystem"]["uuid"] == testguest_flat_ext4.uuid
    line = boot_to_marker(image, "raw", testguest_rootfs, tmp_path)
    assert " swaps=0 " in line, line


@pytest.mark.slow
def test_boot_tarball_gpt_qcow2_with_swap(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, testguest_tarball: Path, tmp_path: Path
) -> None:
    image = tmp_path / "disk.qcow2"
    report = build_json(run_cli, "--from", testguest_tarball, "-o", image, "--table", "gpt", "--swap", "64M")
    assert report["source_kind"] == "tarball" and report["output_format"] == "qcow2"
    assert json.loads(run("qemu-img", "info", "--output=json", image).stdout)["format"] == "qcow2"
    line = boot_to_marker(image, "qcow2", testguest_rootfs, tmp_path)
    assert " swaps=1 " in line, line


@pytest.mark.slow
def test_boot_directory_mbr_qcow2_with_swap(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    image = tmp_path / "disk.qcow2"
    report = build_json(
        run_cli, "--from", testguest_rootfs.root, "-o", image, "--swap", "64M", "--table", "mbr"
    )
    assert report["table"] == "mbr" and report["output_format"] == "qcow2"
    line = boot_to_marker(image, "qcow2", testguest_rootfs, tmp_path)
    assert " swaps=1 " in line, line
