"""Issue 13, categories 2-5, through every door: each generated case is refused by ``inspect``
and by every command that takes a file (``convert``, ``resize``, ``prepare``, ``build``) — exit
status 1, one sentence, no output file, nothing left beside it, the input unchanged. The
controls (real images of every kind made by the real tools) stay ``safe``.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures import hostile_members, tools
from tests.fixtures.hostile import CASES, HostileCase
from tests.fixtures.hostile_containers import make_ova

from imagewright.inspection import inspect_image

pytestmark = pytest.mark.integration

RunCli = Callable[..., Result]
MiB = 1024 * 1024

MEMBER_CASES = [case for case in CASES if case.build.__module__ == hostile_members.__name__]
#: A 1 GiB raw disk of zeros in 40 KiB of zstd: more than inspection decompresses for so small
#: a file (refused there), but an honest empty disk that convert decompresses whole and takes.
TAKEN_BY_CONVERT = {"zstd-small-file-decompresses-past-its-budget"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every case, built once."""
    paths = {}
    for case in MEMBER_CASES:
        directory = tmp_path_factory.mktemp(case.name)
        paths[case.name] = case.build(directory)
    return paths


def test_every_category_has_cases() -> None:
    names = {case.name for case in MEMBER_CASES}
    for category, cases in hostile_members.PAYLOAD_CASES.items():
        assert cases, category
        assert set(cases) <= names, category
    assert names == {name for cases in hostile_members.PAYLOAD_CASES.values() for name in cases}


def _one_sentence(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("imagewright: error: ") and lines[0].endswith(".")
    assert "Traceback" not in result.output and "internal error" not in result.output
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _private_copy(source: Path, directory: Path) -> Path:
    directory.mkdir()
    copy = directory / source.name
    shutil.copyfile(source, copy)
    return copy


@pytest.mark.parametrize("case", MEMBER_CASES, ids=lambda case: case.name)
def test_inspect_refuses(case: HostileCase, built: dict[str, Path], run_cli: RunCli) -> None:
    name = case.name
    result = run_cli(["inspect", "--json", built[name]])
    assert result.exit_code == 1, result.output
    assert '"safe": false' in result.stdout
    assert case.reason.lower() in result.stdout.lower()


@pytest.mark.parametrize("case", MEMBER_CASES, ids=lambda case: case.name)
def test_convert_refuses_and_writes_nothing(
    case: HostileCase, built: dict[str, Path], run_cli: RunCli, tmp_path: Path
) -> None:
    name = case.name
    if name in TAKEN_BY_CONVERT:
        _converts_the_empty_disk(built[name], run_cli, tmp_path)
        return
    source = _private_copy(built[name], tmp_path / "in")
    before = _digest(source)
    out = tmp_path / "out"
    out.mkdir()
    _one_sentence(run_cli(["convert", source, out / "result.qcow2"]))
    assert list(out.iterdir()) == []  # no output, no scratch file, no temporary
    assert _digest(source) == before


def _converts_the_empty_disk(source: Path, run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "empty.qcow2"
    result = run_cli(["convert", source, out])
    assert result.exit_code == 0, result.output
    assert tools.qemu_img_info(out)["virtual-size"] == 1 << 30
    tools.qemu_img(
        "compare", "-f", "qcow2", out, "-F", "raw", tools.sparse_file(tmp_path / "zeros.raw", 1 << 30)
    )


@pytest.mark.parametrize("case", MEMBER_CASES, ids=lambda case: case.name)
def test_resize_refuses_and_changes_nothing(
    case: HostileCase, built: dict[str, Path], run_cli: RunCli, tmp_path: Path
) -> None:
    source = _private_copy(built[case.name], tmp_path / "in")
    before = _digest(source)
    _one_sentence(run_cli(["resize", source, "+1M"]))
    assert _digest(source) == before
    assert list(source.parent.iterdir()) == [source]


@pytest.mark.parametrize("case", MEMBER_CASES, ids=lambda case: case.name)
def test_prepare_refuses_and_changes_nothing(
    case: HostileCase, built: dict[str, Path], run_cli: RunCli, tmp_path: Path
) -> None:
    source = _private_copy(built[case.name], tmp_path / "in")
    before = _digest(source)
    _one_sentence(run_cli(["prepare", source]))
    assert _digest(source) == before
    assert list(source.parent.iterdir()) == [source]


@pytest.mark.parametrize("case", MEMBER_CASES, ids=lambda case: case.name)
def test_build_refuses_and_writes_nothing(
    case: HostileCase, built: dict[str, Path], run_cli: RunCli, tmp_path: Path
) -> None:
    source = _private_copy(built[case.name], tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    line = _one_sentence(run_cli(["build", "--from", source, "-o", out / "disk.raw"]))
    assert list(out.iterdir()) == []
    if case.name == "rootfs-sparse-member-claims-a-pebibyte":
        assert "1 PiB" in line  # refused for its size, not an internal error


# --- controls ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real qcow2 by qemu-img: a 64 MiB disk with an MBR and data at a few offsets."""
    directory = tmp_path_factory.mktemp("control")
    raw = tools.sparse_file(directory / "disk.raw", 64 * MiB)
    tools.sfdisk(raw, "label: dos\nstart=2048, type=83\n")
    for offset in (MiB, 30 * MiB, 63 * MiB):
        tools.qemu_io_write(raw, "raw", offset, 256 * 1024, 0x3C)
    image = directory / "disk.qcow2"
    tools.qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, image)
    return image


@pytest.mark.parametrize(
    ("tool", "suffix"), [("gzip", ".gz"), ("xz", ".xz"), ("zstd", ".zst"), ("bzip2", ".bz2")]
)
def test_compressed_qcow2_control_is_safe_and_converts(
    tool: str, suffix: str, small_qcow2: Path, tmp_path: Path, run_cli: RunCli
) -> None:
    packed = tmp_path / f"disk.qcow2{suffix}"
    packed.write_bytes(tools.run(tool, "-c", small_qcow2).stdout)
    report = inspect_image(packed)
    assert report.verdict.safe, report.verdict.reasons
    assert report.container is not None and report.container.inner is not None
    assert report.container.inner.format == "qcow2"
    assert report.container.inner.disk is not None and report.container.inner.disk.partition_table is not None
    out = tmp_path / "out.qcow2"
    result = run_cli(["convert", packed, out])
    assert result.exit_code == 0, result.output
    tools.qemu_img("compare", "-f", "qcow2", small_qcow2, "-F", "qcow2", out)


@pytest.mark.parametrize("disks", [("disk1.vmdk",), ("disk1.vmdk", "disk2.vmdk")])
def test_ova_control_is_safe_and_every_disk_was_inspected(disks: tuple[str, ...], tmp_path: Path) -> None:
    ova = make_ova(tmp_path, disks=disks)
    report = inspect_image(ova)
    assert report.verdict.safe, report.verdict.reasons
    assert report.container is not None
    # Every member with data was inspected by its content: the descriptor, the manifest, the disks.
    assert [image.name for image in report.container.images] == ["appliance.ovf", "appliance.mf", *disks]
    for disk in disks:
        image = report.container.image_of(disk)
        assert image is not None and image.format == "vmdk" and image.subformat == "streamOptimized"
    gzipped = tmp_path / "appliance.ova.gz"
    gzipped.write_bytes(tools.run("gzip", "-c", ova).stdout)
    again = inspect_image(gzipped)
    assert again.verdict.safe, again.verdict.reasons


def test_rootfs_tarball_control_is_safe(testguest_tarball: Path) -> None:
    report = inspect_image(testguest_tarball)
    assert report.verdict.safe, report.verdict.reasons
    assert report.container is not None and report.container.kind == "rootfs-archive"
    # A root filesystem's files become files of a guest, never disks: none is inspected as one.
    assert report.container.images == []


def test_a_plain_tar_of_a_disk_is_safe_and_its_disk_inspected(small_qcow2: Path, tmp_path: Path) -> None:
    archive = tmp_path / "disk.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(small_qcow2, arcname="disk.qcow2")
    report = inspect_image(archive)
    assert report.verdict.safe, report.verdict.reasons
    assert report.container is not None
    image = report.container.image_of("disk.qcow2")
    assert image is not None and image.format == "qcow2"
