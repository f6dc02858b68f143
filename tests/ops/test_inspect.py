"""inspect, end to end: what it says about images made by the real tools equals what those
tools (qemu-img info, sfdisk --json, blkid) say."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from tests.fixtures.tools import blkid, qemu_img, qemu_img_info, run, sfdisk, sfdisk_json, sparse_file

from imagewright.errors import ImageIOError, UnsafeImageError
from imagewright.gate import require_safe
from imagewright.inspection import ImageReport, inspect_image

MiB = 1 << 20

# Every format and subformat qemu-img 7.2 can create here, with the options that make it.
CREATABLE: list[tuple[str, str, list[str]]] = [
    ("raw", "raw", []),
    ("qcow2-v2", "qcow2", ["-o", "compat=0.10"]),
    ("qcow2-v3", "qcow2", ["-o", "compat=1.1"]),
    ("qcow2-zstd", "qcow2", ["-o", "compression_type=zstd"]),
    ("qcow2-extl2", "qcow2", ["-o", "extended_l2=on,cluster_size=128k"]),
    ("qcow2-prealloc", "qcow2", ["-o", "preallocation=metadata"]),
    ("qcow", "qcow", []),
    ("vmdk-monolithicSparse", "vmdk", ["-o", "subformat=monolithicSparse"]),
    ("vmdk-streamOptimized", "vmdk", ["-o", "subformat=streamOptimized"]),
    ("vpc-dynamic", "vpc", ["-o", "subformat=dynamic"]),
    ("vpc-fixed", "vpc", ["-o", "subformat=fixed"]),
    ("vpc-force-size", "vpc", ["-o", "force_size=on"]),
    ("vhdx-dynamic", "vhdx", ["-o", "subformat=dynamic"]),
    ("vhdx-fixed", "vhdx", ["-o", "subformat=fixed"]),
    ("vdi-dynamic", "vdi", []),
    ("vdi-static", "vdi", ["-o", "static=on"]),
    ("qed", "qed", []),
    ("parallels", "parallels", []),
]
# Subformats whose extents live in other files: inspect knows them and refuses them.
MULTI_FILE = [
    ("vmdk-monolithicFlat", ["-o", "subformat=monolithicFlat"]),
    ("vmdk-twoGbMaxExtentSparse", ["-o", "subformat=twoGbMaxExtentSparse"]),
    ("vmdk-twoGbMaxExtentFlat", ["-o", "subformat=twoGbMaxExtentFlat"]),
]


@pytest.mark.integration
@pytest.mark.parametrize(("name", "fmt", "options"), CREATABLE, ids=[c[0] for c in CREATABLE])
@pytest.mark.parametrize("size", ["64M", "1G", "20G", "100000001"])
def test_format_and_virtual_size_equal_qemu_img(
    tmp_path: Path, name: str, fmt: str, options: list[str], size: str
) -> None:
    if fmt == "vpc" and "fixed" in name and size == "20G":
        size = "2G"  # a fixed VHD is written in full; keep the test small
    path = tmp_path / f"image.{name}"
    qemu_img("create", "-q", "-f", fmt, *options, path, size)
    # qemu probes a fixed VHD (footer only at the end) as raw; we know it is a VHD, so ask
    # qemu-img about it as one.
    info = qemu_img_info(path, fmt if name == "vpc-fixed" else None)
    report = inspect_image(path)
    assert report.format == info["format"]
    assert report.virtual_size == info["virtual-size"]
    assert report.backing_file == info.get("backing-filename")
    assert report.verdict.safe, report.verdict.reasons


@pytest.mark.integration
@pytest.mark.parametrize(("name", "options"), MULTI_FILE, ids=[c[0] for c in MULTI_FILE])
def test_multi_file_vmdk_is_recognised_and_refused(tmp_path: Path, name: str, options: list[str]) -> None:
    path = tmp_path / "disk.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", *options, path, "3G")
    info = qemu_img_info(path)
    report = inspect_image(path)
    assert (report.format, report.virtual_size) == (info["format"], info["virtual-size"])
    assert not report.verdict.safe
    assert "extent" in report.verdict.reasons[0]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("fmt", "backing_fmt"),
    [("qcow2", "raw"), ("qcow2", "qcow2"), ("qcow", "raw"), ("vmdk", "vmdk"), ("qed", "raw")],
)
def test_backing_file_equals_qemu_img_and_is_refused(tmp_path: Path, fmt: str, backing_fmt: str) -> None:
    base = tmp_path / f"base.{backing_fmt}"
    qemu_img("create", "-q", "-f", backing_fmt, base, "64M")
    overlay = tmp_path / f"overlay.{fmt}"
    qemu_img("create", "-q", "-f", fmt, "-b", base, "-F", backing_fmt, overlay)
    info = qemu_img_info(overlay)
    report = inspect_image(overlay)
    assert report.backing_file == info["backing-filename"]
    assert report.virtual_size == info["virtual-size"]
    assert not report.verdict.safe
    with pytest.raises(UnsafeImageError, match="refused"):
        require_safe(report)


# --- partition tables inside every format ----------------------------------------------------

MBR_SCRIPT = "label: dos\nlabel-id: 0x1234abcd\n,64M,83,*\n,32M,82\n,,5\n,40M,83\n,20M,b\n,,8e\n"
GPT_SCRIPT = (
    "label: gpt\nsize=1M, type=21686148-6449-6E6F-744E-656564454649, name=bios\n"
    "size=64M, type=L, name=root\nsize=32M, type=S, name=swap\n"
    "type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"
)
CONTAINER_FORMATS: list[tuple[str, str, list[str]]] = [
    ("raw", "raw", []),
    ("qcow2", "qcow2", []),
    ("vmdk-sparse", "vmdk", []),
    ("vmdk-stream", "vmdk", ["-o", "subformat=streamOptimized"]),
    ("vhd", "vpc", ["-o", "force_size=on"]),
    ("vhdx", "vhdx", []),
    ("vdi", "vdi", []),
]


@pytest.fixture(scope="module", params=[("mbr", MBR_SCRIPT), ("gpt", GPT_SCRIPT)], ids=["mbr", "gpt"])
def partitioned_raw(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    label, script = request.param
    raw = tmp_path_factory.mktemp(f"pt-{label}") / "disk.raw"
    sparse_file(raw, 256 * MiB)
    sfdisk(raw, script)
    # A filesystem in the second (MBR) / root (GPT) partition, seen through every format.
    table = sfdisk_json(raw)
    root = table["partitions"][0 if label == "mbr" else 1]
    run(
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        "rootfs",
        "-E",
        f"offset={root['start'] * 512}",
        raw,
        f"{root['size'] // 2}k",
    )
    return label, raw


@pytest.mark.integration
@pytest.mark.parametrize(("name", "fmt", "options"), CONTAINER_FORMATS, ids=[c[0] for c in CONTAINER_FORMATS])
def test_partitions_inside_every_format_equal_sfdisk(
    tmp_path: Path, partitioned_raw: tuple[str, Path], name: str, fmt: str, options: list[str]
) -> None:
    label, raw = partitioned_raw
    image = tmp_path / f"disk.{name}"
    qemu_img("convert", "-f", "raw", "-O", fmt, *options, raw, image)
    report = inspect_image(image)
    expected = sfdisk_json(raw)
    table = report.partition_table
    assert table is not None
    assert table.kind == {"dos": "mbr", "gpt": "gpt"}[expected["label"]]
    ours = [(f"{p.number}", p.start, p.sectors, p.type_id.upper()) for p in table.partitions]
    theirs = [
        (node["node"].rsplit("raw", 1)[1], node["start"], node["size"], node["type"].upper())
        for node in expected["partitions"]
    ]
    assert ours == theirs
    root = table.partitions[0 if label == "mbr" else 1]
    assert root.filesystem is not None
    fs = blkid(raw, offset=root.start * 512)
    assert (root.filesystem.type, root.filesystem.label, root.filesystem.uuid) == (
        fs["TYPE"],
        fs["LABEL"],
        fs["UUID"],
    )


# --- filesystems, flat images, boot code ---------------------------------------------------------

FLAT = [
    ("ext2", ["mke2fs", "-q", "-F", "-t", "ext2", "-L", "two"]),
    ("ext3", ["mke2fs", "-q", "-F", "-t", "ext3", "-L", "three"]),
    ("ext4", ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "four"]),
    ("swap", ["mkswap", "-L", "swappy"]),
    ("vfat", ["mkfs.vfat", "-n", "FATTY"]),
    ("xfs", ["mkfs.xfs", "-q", "-f", "-L", "xfsy"]),
    ("btrfs", ["mkfs.btrfs", "-q", "-f", "-L", "butter"]),
]


@pytest.mark.integration
@pytest.mark.parametrize(("fstype", "mkfs"), FLAT, ids=[f[0] for f in FLAT])
def test_flat_filesystem_images_match_blkid(tmp_path: Path, fstype: str, mkfs: list[str]) -> None:
    raw = sparse_file(tmp_path / "flat.img", 320 * MiB)
    run(*mkfs, raw)
    image = tmp_path / "flat.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, image)
    report = inspect_image(image)
    assert report.partition_table is None
    fs = report.filesystem
    expected = blkid(raw)
    assert fs is not None
    assert (fs.type, fs.label, fs.uuid) == (expected["TYPE"], expected.get("LABEL"), expected.get("UUID"))


@pytest.mark.integration
def test_grub_boot_code_and_bios_boot_partition(tmp_path: Path) -> None:
    raw = sparse_file(tmp_path / "disk.raw", 64 * MiB)
    sfdisk(raw, "label: gpt\n,1M,21686148-6449-6E6F-744E-656564454649\n,,L\n")
    boot_img = Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()
    with raw.open("r+b") as f:
        f.write(boot_img[:440])
    report = inspect_image(raw)
    assert report.disk is not None and report.disk.boot is not None
    assert report.disk.boot.code.kind == "grub2"
    assert report.disk.boot.partitions.bios_boot == [1]


# --- containers -------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("tool", ["gzip", "xz", "zstd", "bzip2"])
def test_compressed_qcow2_is_judged_by_its_header(tmp_path: Path, tool: str) -> None:
    safe = tmp_path / "safe.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", safe, "20G")
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", evil, "1G")
    for path, expect_safe in ((safe, True), (evil, False)):
        packed = tmp_path / f"{path.name}.{tool}"
        packed.write_bytes(run(tool, "-c", path).stdout)
        report = inspect_image(packed)
        assert report.format == tool
        assert report.container is not None and report.container.inner is not None
        assert report.container.inner.format == "qcow2"
        assert report.container.inner.virtual_size == qemu_img_info(path)["virtual-size"]
        assert report.verdict.safe is expect_safe, report.verdict.reasons


def _ova(tmp_path: Path, disk: Path, href: str | None = None) -> Path:
    href = href or disk.name
    ovf = tmp_path / "vm.ovf"
    ovf.write_text(
        '<?xml version="1.0"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
        'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">'
        f'<References><File ovf:id="file1" ovf:href="{href}" ovf:size="{disk.stat().st_size}"/></References>'
        "<DiskSection><Info>disks</Info>"
        '<Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="1073741824" '
        'ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>'
        '<VirtualSystem ovf:id="vm"><Info>A VM</Info><Name>vm</Name></VirtualSystem></Envelope>\n'
    )
    ova = tmp_path / "vm.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(ovf, arcname="vm.ovf")
        tar.add(disk, arcname=disk.name)
    return ova


@pytest.mark.integration
def test_ova_members_are_inspected_in_turn(tmp_path: Path) -> None:
    disk = tmp_path / "disk1.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", disk, "1G")
    report = inspect_image(_ova(tmp_path, disk))
    assert report.format == "ova"
    assert report.verdict.safe, report.verdict.reasons
    assert report.container is not None
    image = report.container.image_of("disk1.vmdk")
    assert image is not None and image.format == "vmdk"
    assert image.virtual_size == 1 << 30


@pytest.mark.integration
def test_ova_whose_disk_has_a_parent_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", base, "1G")
    delta = tmp_path / "disk1.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", delta)
    report = inspect_image(_ova(tmp_path, delta))
    assert not report.verdict.safe
    assert any("member 'disk1.vmdk'" in r and "parent" in r for r in report.verdict.reasons)


# --- the CLI ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_cli_human_and_json(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    raw = sparse_file(tmp_path / "disk.raw", 64 * MiB)
    sfdisk(raw, "label: dos\n,,83,*\n")
    image = tmp_path / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, image)
    human = run_cli(["inspect", image])
    assert human.exit_code == 0
    for text in ("qcow2", "64 MiB", "Linux", "verdict:", "safe", "mbr"):
        assert text in human.stdout
    machine = run_cli(["inspect", "--json", image])
    data: dict[str, Any] = json.loads(machine.stdout)
    assert data["format"] == "qcow2" and data["virtual_size"] == 64 * MiB
    assert data["verdict"]["safe"] is True
    assert data["disk"]["partition_table"]["partitions"][0]["start"] == 2048
    both = run_cli(["inspect", "--json", image, raw])
    assert [r["format"] for r in json.loads(both.stdout)] == ["qcow2", "raw"]


@pytest.mark.integration
def test_cli_refusal_exit_code_and_missing_file(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", evil)
    refused = run_cli(["inspect", evil])
    assert refused.exit_code == 1
    assert "refused: the image names a backing file '/etc/passwd'" in refused.stdout
    missing = run_cli(["inspect", tmp_path / "nope.img"])
    assert missing.exit_code == 1
    assert (
        missing.stderr.strip().startswith("imagewright: error:")
        and len(missing.stderr.strip().splitlines()) == 1
    )
    with pytest.raises(ImageIOError):
        inspect_image(tmp_path / "nope.img")


@pytest.mark.integration
def test_max_virtual_size_option(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    image = tmp_path / "big.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", image, "2T")
    assert run_cli(["inspect", image]).exit_code == 0
    limited = run_cli(["inspect", "--max-virtual-size", "1T", image])
    assert limited.exit_code == 1
    assert "exceeds the limit" in limited.stdout


def test_report_reads_only_headers(tmp_path: Path) -> None:
    image = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "20G"], check=True)
    report: ImageReport = inspect_image(image)
    assert report.bytes_read < 4 * MiB
