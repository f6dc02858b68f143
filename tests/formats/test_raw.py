"""The raw reader: the fallback that accepts every file, against qemu-img 7.2."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fixtures.tools import qemu_img_info, run, sparse_file, write_at
from tests.formats.sparse_checks import raw_copy

from imagewright.binary import BytesSource, FileSource
from imagewright.formats import raw, registry
from imagewright.formats.base import Limits

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.mark.parametrize("data", [b"", b"x", bytes(512), b"QFI\xfb" + bytes(10)])
def test_probe_accepts_anything(data: bytes) -> None:
    assert raw.probe(BytesSource(data), data)


@pytest.mark.parametrize("size", [0, 1, 513, 10_000_001, 8 * MiB])
def test_virtual_size_is_the_file_size_like_qemu(tmp_path: Path, size: int) -> None:
    image = sparse_file(tmp_path / "disk.raw", size)
    if size:
        write_at(image, size - 1, b"\x5a")
    with FileSource(image) as src:
        result = raw.open_image(src, Limits())
        info = qemu_img_info(image, "raw")
        assert (result.format, result.virtual_size) == (info["format"], info["virtual-size"])
        assert result.details == raw.RawDetails(size)
        assert result.problems == [] and result.references == [] and result.backing_file is None
        assert result.guest is not None and result.guest.size == result.virtual_size
        if size % 512 == 0:
            assert result.guest is src
        if size:
            # QEMU completes the last sector with zeros; so does the guest view.
            expected = raw_copy(image, "raw", tmp_path / "copy.raw").read_bytes()
            assert result.guest.pread(0, result.virtual_size) == expected
            assert result.guest.pread(size - 1, 1000) == b"\x5a" + bytes(result.virtual_size - size)


def test_plain_disks_are_detected_as_raw_like_qemu(tmp_path: Path) -> None:
    mbr = sparse_file(tmp_path / "mbr.raw", 8 * MiB)
    write_at(mbr, 510, b"\x55\xaa")
    empty = sparse_file(tmp_path / "empty.raw", 4 * MiB)
    for image in (mbr, empty):
        with FileSource(image) as src:
            assert registry.detect_disk_format(src, src.pread(0, 65536)).name == "raw"
        assert qemu_img_info(image)["format"] == "raw"


def test_a_luks2_volume_is_raw_to_qemu_and_to_us(tmp_path: Path) -> None:
    volume = sparse_file(tmp_path / "luks2.img", 20 * MiB)
    run(
        "cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
        "--pbkdf-force-iterations", "1000", volume, "-", input=b"pw",
    )  # fmt: skip
    assert qemu_img_info(volume)["format"] == "raw"
    with FileSource(volume) as src:
        assert registry.detect_disk_format(src, src.pread(0, 65536)).name == "raw"


def test_a_20_gib_sparse_disk_opens_without_reading(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "big.raw", 20 * 1024 * MiB)
    with FileSource(image) as src:
        result = raw.open_image(src, Limits())
        assert src.bytes_read == 0
        assert result.virtual_size == 20 * 1024 * MiB
