"""A disk image whose guest disk QEMU would itself probe as an image is refused (red-team gap).

The check: converted to raw, such a guest is a file QEMU's probe opens as qcow2/vmdk/...;
``qemu-img info`` on the real conversion says so (the independent reader), and the controls
(real guests: a partitioned disk, an empty one) stay safe in every format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.fixtures import tools
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
