"""The one safety gate, called as a library: every entry point that hands an image to QEMU
(or to any program) refuses a hostile image by itself — no CLI in front of it — before any
program runs and without writing anything. Issue 14, item 2.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tests.fixtures import tools
from tests.fixtures.hostile_members import (
    BACKING,
    NOT_EXAMINED,
    backed_qcow2,
    gzip_vmdk_descriptor_past_the_examined_bytes,
    tar_member_without_a_disk_suffix,
)

from imagewright.binary import BytesSource, FileSource
from imagewright.compute.accel import PROBE_BOOT_SECTOR
from imagewright.compute.boot import Drive, boot
from imagewright.errors import ImagewrightError, UnsafeImageError
from imagewright.gate import admit
from imagewright.guest import open_guest
from imagewright.ops.build import build
from imagewright.ops.convert import convert
from imagewright.ops.prepare import prepare
from imagewright.ops.resize import resize
from imagewright.programs.runner import record_invocations

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A qcow2 whose backing file is /etc/passwd."""
    return backed_qcow2(tmp_path / "hostile.qcow2")


@pytest.fixture
def harmless(tmp_path: Path) -> Path:
    path = tmp_path / "probe.raw"
    path.write_bytes(PROBE_BOOT_SECTOR)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_admit_refuses_a_path_and_the_same_bytes_as_any_byte_source(hostile: Path) -> None:
    with pytest.raises(UnsafeImageError, match="backing file '/etc/passwd'"):
        admit(hostile)
    # The registry's way: a blob judged through ranged reads, never a path.
    with pytest.raises(UnsafeImageError, match="backing file '/etc/passwd'") as caught:
        admit(BytesSource(hostile.read_bytes()), name="images/42")
    assert str(caught.value).startswith("images/42 is refused:")
    with FileSource(hostile) as src, pytest.raises(UnsafeImageError):
        admit(src, name="blob")


def test_admit_refuses_what_was_not_examined(tmp_path: Path) -> None:
    path = gzip_vmdk_descriptor_past_the_examined_bytes(tmp_path)
    with pytest.raises(UnsafeImageError, match=NOT_EXAMINED):
        admit(path)
    # Spooled, the whole stream is examined, and the VMDK is refused for what it really is.
    scratch: list[Path] = []

    def spool(suffix: str) -> Path:
        scratch.append(tmp_path / f"spool.{suffix}")
        return scratch[-1]

    with pytest.raises(UnsafeImageError) as caught:
        admit(path, spool=spool)
    assert NOT_EXAMINED not in str(caught.value)
    assert "capacity 0" in str(caught.value) or "/etc/passwd" in str(caught.value)


def test_admit_spools_a_compressed_image_and_judges_the_copy(tmp_path: Path) -> None:
    raw = tools.sparse_file(tmp_path / "disk.raw", 16 * MiB)
    tools.sfdisk(raw, "label: dos\nstart=2048, type=83\n")
    tools.qemu_io_write(raw, "raw", 4 * MiB, 65536, 0x42)
    packed = tmp_path / "disk.raw.xz"
    packed.write_bytes(tools.run("xz", "-T1", "-c", raw).stdout)
    admitted = admit(packed, spool=lambda suffix: tmp_path / f"copy.{suffix}")
    assert admitted.spooled is not None and admitted.compression == "xz"
    assert admitted.spooled.read_bytes() == raw.read_bytes()
    assert admitted.spooled.stat().st_blocks * 512 < 2 * MiB  # zeros became holes
    assert admitted.report.format == "raw" and admitted.report.partition_table is not None
    assert admitted.qemu_format() == "raw"


def test_a_member_chosen_by_content_refuses_the_archive(tmp_path: Path) -> None:
    with pytest.raises(UnsafeImageError, match=BACKING):
        admit(tar_member_without_a_disk_suffix(tmp_path))


def test_naming_another_format_is_refused_and_raw_is_allowed(harmless: Path, tmp_path: Path) -> None:
    admitted = admit(harmless)
    assert admitted.qemu_format() == "raw"
    with pytest.raises(UnsafeImageError, match="not vmdk"):
        admitted.qemu_format("vmdk")
    qcow2 = tmp_path / "plain.qcow2"
    tools.qemu_img("create", "-q", "-f", "qcow2", qcow2, "1M")
    assert admit(qcow2).qemu_format("raw") == "raw"  # raw interprets nothing


def test_compute_boot_refuses_a_hostile_image_by_itself(hostile: Path, harmless: Path) -> None:
    before = _digest(hostile)
    with record_invocations() as calls:
        with pytest.raises(UnsafeImageError, match=BACKING):
            boot(hostile, timeout=30)
        with pytest.raises(UnsafeImageError, match=BACKING):
            boot(hostile, format="qcow2", timeout=30)
        # As an extra disk, a Drive, or a CD-ROM beside a harmless disk: refused all the same.
        with pytest.raises(UnsafeImageError, match=BACKING):
            boot(harmless, format="raw", timeout=30, drives=[hostile])
        with pytest.raises(UnsafeImageError, match=BACKING):
            boot(harmless, format="raw", timeout=30, drives=[Drive(hostile, format="qcow2")])
        with pytest.raises(UnsafeImageError, match=BACKING):
            boot(harmless, format="raw", timeout=30, cdroms=[hostile])
    assert calls.argvs == []  # no QEMU (not even the accelerator probe) ran
    assert _digest(hostile) == before


def test_compute_boot_refuses_an_archive_and_a_non_raw_cdrom(harmless: Path, tmp_path: Path) -> None:
    archive = tmp_path / "disk.tar"
    tools.run("tar", "-C", tmp_path, "-cf", archive, harmless.name)
    with pytest.raises(ImagewrightError, match="not a disk image QEMU can boot"):
        boot(archive, timeout=30)
    qcow2 = tmp_path / "cd.qcow2"
    tools.qemu_img("create", "-q", "-f", "qcow2", qcow2, "1M")
    with pytest.raises(ImagewrightError, match="a CD-ROM must be a raw ISO"):
        boot(harmless, format="raw", timeout=30, cdroms=[qcow2])


def test_convert_refuses_by_itself(hostile: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with record_invocations() as calls, pytest.raises(UnsafeImageError, match=BACKING):
        convert(hostile, out / "copy.raw")
    assert calls.argvs == [] and list(out.iterdir()) == []


def test_resize_refuses_by_itself(hostile: Path) -> None:
    before = _digest(hostile)
    with record_invocations() as calls, pytest.raises(UnsafeImageError, match=BACKING):
        resize(hostile, "+1M")
    assert calls.argvs == [] and _digest(hostile) == before


def test_build_refuses_by_itself(hostile: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with record_invocations() as calls, pytest.raises(UnsafeImageError, match=BACKING):
        build(hostile, out / "disk.raw")
    assert calls.argvs == [] and list(out.iterdir()) == []


def test_guest_sessions_and_prepare_refuse_by_themselves(hostile: Path) -> None:
    before = _digest(hostile)
    with record_invocations() as calls:
        with pytest.raises(UnsafeImageError, match=BACKING), open_guest(hostile):
            pass
        with pytest.raises(UnsafeImageError, match=BACKING), open_guest(hostile, writable=True):
            pass
        with pytest.raises(UnsafeImageError, match=BACKING):
            prepare(hostile)
    assert calls.argvs == [] and _digest(hostile) == before
