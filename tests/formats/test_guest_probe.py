"""Files QEMU's own probe would read as another disk than imagewright does (red-team gaps):
a disk image whose guest disk is itself an image, an archive or compressed stream that is
also a disk image.

The check: converted to raw, such a guest is a file QEMU's probe opens as qcow2/vmdk/...;
``qemu-img info`` on the real conversion says so (the independent reader), and the controls
(real guests: a partitioned disk, an empty one) stay safe in every format.
"""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import pytest
from tests.fixtures import tools
from tests.fixtures.hostile_gaps import (
    gzip_that_probes_as_vdi,
    tar_that_is_a_qcow2,
    tar_that_is_a_vmdk_descriptor,
)
from tests.fixtures.hostile_members import backed_qcow2, small_raw

from imagewright.inspection import inspect_image

FORMATS = ("qcow2", "vmdk", "vpc", "vhdx", "vdi", "qed", "parallels")


def _convert(source: Path, fmt: str, out: Path, source_format: str = "raw") -> Path:
    tools.qemu_img("convert", "-f", source_format, "-O", fmt, source, out)
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_guest_disk_that_probes_as_qcow2_is_refused(fmt: str, tmp_path: Path) -> None:
    inner = backed_qcow2(tmp_path / "inner.qcow2")
    image = _convert(inner, fmt, tmp_path / f"outer.{fmt}")
    report = inspect_image(image)
    assert not report.verdict.safe
    assert any(f"inside this {fmt} image begins with a qcow2" in r for r in report.verdict.reasons)
    # Independent check: the guest, converted to raw, is what QEMU's probe calls qcow2 with a
    # backing file.
    raw = _convert(image, "raw", tmp_path / "guest.raw", fmt)
    info = json.loads(tools.qemu_img("info", "--output=json", raw))
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == "/etc/passwd"


@pytest.mark.parametrize("fmt", FORMATS)
def test_real_guest_disks_stay_safe(fmt: str, tmp_path: Path) -> None:
    disk = small_raw(tmp_path / "disk.raw")
    for source in (disk, tools.sparse_file(tmp_path / "empty.raw", 1 << 20)):
        image = _convert(source, fmt, tmp_path / f"{source.stem}.{fmt}")
        report = inspect_image(image)
        assert report.verdict.safe, report.verdict.reasons


def test_a_tar_that_is_also_a_backed_qcow2_is_refused(tmp_path: Path) -> None:
    path = tar_that_is_a_qcow2(tmp_path / "disk.tar")
    with tarfile.open(path) as tar:  # a real tar to Python's reader ...
        assert [m.size for m in tar.getmembers()] == [0]
    info = json.loads(tools.qemu_img("info", "--output=json", path))  # ... and a qcow2 to QEMU's
    assert (info["format"], info["backing-filename"]) == ("qcow2", "/etc/passwd")
    report = inspect_image(path)
    assert report.format == "tar"
    assert report.verdict.reasons[0].startswith("the file is a tar to imagewright, but QEMU's own")


def test_a_tar_that_is_also_a_vmdk_descriptor_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_bytes(b"\xca" * (1 << 20))
    path = tar_that_is_a_vmdk_descriptor(tmp_path / "disk.tar", b"canary", 2048)
    with tarfile.open(path) as tar:
        assert len(tar.getmembers()) == 1
    # QEMU's probe takes it for a VMDK descriptor and copies the file it names.
    out = tmp_path / "copied.raw"
    tools.qemu_img("convert", "-O", "raw", path, out)
    assert out.read_bytes() == canary.read_bytes()
    report = inspect_image(path)
    assert any("would open it as vmdk" in r for r in report.verdict.reasons)


def test_a_gzip_that_probes_as_vdi_is_refused(tmp_path: Path) -> None:
    path = gzip_that_probes_as_vdi(tmp_path / "disk.img.gz")
    assert gzip.decompress(path.read_bytes()) == bytes(1 << 20)
    result = tools.run("qemu-img", "info", path, check=False)
    assert b"VDI" in result.stderr
    report = inspect_image(path)
    assert any("would open it as vdi" in r for r in report.verdict.reasons)


def test_real_archives_and_compressed_disks_stay_safe(tmp_path: Path) -> None:
    disk = small_raw(tmp_path / "disk.raw")
    tar = tmp_path / "disk.tar"
    with tarfile.open(tar, "w") as out:
        out.add(disk, "disk.raw")
    packed = tmp_path / "disk.raw.gz"
    packed.write_bytes(gzip.compress(disk.read_bytes()))
    for path in (tar, packed):
        assert json.loads(tools.qemu_img("info", "--output=json", path))["format"] == "raw"
        report = inspect_image(path)
        assert report.verdict.safe, report.verdict.reasons


def test_a_raw_disk_named_dmg_is_refused(tmp_path: Path) -> None:
    """By name, so not in the hostile catalogue (the registry names its blobs itself)."""
    path = tmp_path / "disk.dmg"
    path.write_bytes(bytes(1 << 20))
    result = tools.run("qemu-img", "info", path, check=False)  # QEMU's probe picks dmg by name
    assert b"dmg" in result.stderr
    assert any("would open this file as dmg" in r for r in inspect_image(path).verdict.reasons)
    renamed = path.rename(tmp_path / "disk.img")
    assert inspect_image(renamed).verdict.safe


def test_a_member_that_is_not_the_format_its_name_says_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_bytes(b"\xca" * (1 << 20))
    text = b'\xef\xbb\xbfversion=1\nCID=1\nparentCID=ffffffff\ncreateType="vmfs"\nRW 2048 VMFS "canary"\n'
    member = tmp_path / "disk.vmdk"
    member.write_bytes(text.ljust(1 << 20, b"\0"))
    # QEMU's probe calls it raw; an importer trusting the name reads it with -f vmdk and copies
    # the file the "descriptor" names.
    assert json.loads(tools.qemu_img("info", "--output=json", member))["format"] == "raw"
    copied = tmp_path / "copied.raw"
    tools.qemu_img("convert", "-f", "vmdk", "-O", "raw", member, copied)
    assert copied.read_bytes() == canary.read_bytes()
    archive = tmp_path / "disk.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(member, "disk.vmdk")
    reasons = inspect_image(archive).verdict.reasons
    assert any("is raw but its name says it is vmdk" in r for r in reasons), reasons


def test_members_that_are_what_their_names_say_stay_safe(tmp_path: Path) -> None:
    disk = small_raw(tmp_path / "disk.raw")
    archive = tmp_path / "disks.tar"
    with tarfile.open(archive, "w") as tar:
        for fmt, suffix in (("vmdk", "vmdk"), ("qcow2", "qcow2"), ("vpc", "vhd"), ("vdi", "vdi")):
            tar.add(_convert(disk, fmt, tmp_path / f"disk.{suffix}"), f"disk.{suffix}")
    report = inspect_image(archive)
    assert report.verdict.safe, report.verdict.reasons
