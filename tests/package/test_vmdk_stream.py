"""The streamOptimized VMDK writer, checked by three readers that are not it: qemu-img
(check, compare, info), libvmdk (an implementation independent of QEMU) and imagewright's
own inspect; and the layout VMware products expect, byte by byte."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from tests.fixtures.tools import qemu_img, qemu_img_info, run
from tests.package.helpers import MiB, libvmdk_sha256, make_disk, sha256_file, write_vmdk

from imagewright.errors import InvalidArgumentError
from imagewright.inspection import inspect_image
from imagewright.package.vmdk_stream import GD_AT_END, VmdkOptions

pytestmark = pytest.mark.integration

SPAN = 32 * MiB  # what one grain table covers (512 grains of 64 KiB)
# Data in grain table spans 0, 1 and 3 (span 2 all zeros: its GT must not be written), odd
# offsets, a write across two spans, and the last sector of the disk.
SIZE = 4 * SPAN + 3 * 512
WRITES = [
    (0, 512, 0x11),
    (70_000, 200_000, 0x22),
    (SPAN - 4096, 8192, 0x33),
    (3 * SPAN + 5 * MiB, MiB, 0x44),
    (SIZE - 512, 512, 0x55),
]


def raw_sha256_padded(path: Path, size: int) -> str:
    import hashlib

    digest = hashlib.sha256(path.read_bytes())
    digest.update(bytes(size - path.stat().st_size))
    return digest.hexdigest()


@pytest.fixture(scope="module")
def raw_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disk(tmp_path_factory.mktemp("vmdk-src") / "disk.raw", SIZE, WRITES)


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vmdk", "vhdx"])
def test_any_source_becomes_a_streamoptimized_vmdk_qemu_and_libvmdk_read_identical(
    fmt: str, raw_source: Path, tmp_path: Path
) -> None:
    source = raw_source
    if fmt != "raw":
        source = tmp_path / f"disk.{fmt}"
        qemu_img("convert", "-f", "raw", "-O", fmt, raw_source, source)
    output = tmp_path / "out.vmdk"
    writer = write_vmdk(source, output)

    assert writer.size == output.stat().st_size
    assert "No errors were found" in qemu_img("check", "-f", "vmdk", output)
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "vmdk", raw_source, output)
    info = qemu_img_info(output, "vmdk")
    assert info["virtual-size"] == SIZE
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert info["format-specific"]["data"]["extents"][0]["compressed"] is True
    assert libvmdk_sha256(output) == (SIZE, sha256_file(raw_source))
    report = inspect_image(output)
    assert report.verdict.safe, report.verdict.reasons
    assert (report.format, report.subformat, report.virtual_size) == ("vmdk", "streamOptimized", SIZE)


def test_the_layout_is_vmwares_stream_layout(raw_source: Path, tmp_path: Path) -> None:
    output = tmp_path / "layout.vmdk"
    writer = write_vmdk(
        raw_source, output, VmdkOptions(adapter_type="ide", hw_version="7", file_name="layout.vmdk")
    )
    data = output.read_bytes()
    header = struct.unpack_from("<4sIIQQQQIQQQB4sH", data, 0)
    magic, version, flags, capacity, grain, desc_offset, desc_size, gtes, rgd, gd, overhead = header[:11]
    assert (magic, version, flags, capacity, grain) == (b"KDMV", 3, 0x30001, SIZE // 512, 128)
    assert (desc_offset, desc_size, gtes, rgd, gd, overhead) == (1, 20, 512, 0, GD_AT_END, 128)
    assert header[12:] == (b"\n \r\n", 1)
    # Trailer: footer marker, footer (the header with the real GD offset), end-of-stream marker.
    assert struct.unpack_from("<QII", data, len(data) - 1536) == (1, 0, 3)
    footer = struct.unpack_from("<4sIIQQQQIQQQ", data, len(data) - 1024)
    assert footer[:9] == header[:9] and footer[10] == overhead
    assert data[len(data) - 512 :] == bytes(512)
    gd_sector = footer[9]
    assert struct.unpack_from("<QII", data, (gd_sector - 1) * 512) == (1, 0, 2)
    gd = struct.unpack_from("<5I", data, gd_sector * 512)
    # Spans 0, 1 and 3 hold data; span 2 is all zeros (no GT); there are 5 spans (the
    # last holds three sectors).
    assert gd[2] == 0 and all(gd[i] for i in (0, 1, 3, 4))
    for gt_sector in (gd[0], gd[1], gd[3], gd[4]):
        assert struct.unpack_from("<QII", data, (gt_sector - 1) * 512) == (4, 0, 1)
    # Grains are written in guest order, each behind a marker giving its LBA.
    gt0 = struct.unpack_from("<512I", data, gd[0] * 512)
    first = gt0[0] * 512
    lba, size = struct.unpack_from("<QI", data, first)
    assert (lba, data[first + 12 : first + 14]) == (0, b"\x78\x01")
    assert size < 200
    # Zero grains are skipped: grains 5..15 of span 0 are untouched by the writes.
    assert gt0[6:15] == (0,) * 9
    descriptor = data[512 : 512 * 21].rstrip(b"\0").decode()
    for line in (
        'createType="streamOptimized"',
        f'RW {SIZE // 512} SPARSE "layout.vmdk"',
        'ddb.adapterType = "ide"',
        'ddb.virtualHWVersion = "7"',
        'ddb.toolsVersion = "2147483647"',
        'ddb.geometry.heads = "16"',
        "parentCID=ffffffff",
    ):
        assert line in descriptor.splitlines()
    # Grains 0, 1-4, 511-512, sixteen at 3 spans + 5 MiB; the last grain holds 3 sectors.
    assert writer.populated_size == 23 * 64 * 1024 + 3 * 512
    run("qemu-img", "check", "-f", "vmdk", output)


def test_an_all_zero_disk_has_no_grains_and_no_tables(tmp_path: Path) -> None:
    source = make_disk(tmp_path / "zero.raw", 100 * MiB, [])
    output = tmp_path / "zero.vmdk"
    writer = write_vmdk(source, output)
    # header + descriptor + padding (64 KiB), GD marker + GD, footer marker + footer, EOS.
    assert output.stat().st_size == 64 * 1024 + 512 + 512 + 1024 + 512
    assert writer.populated_size == 0
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "vmdk", source, output)
    assert libvmdk_sha256(output) == (100 * MiB, sha256_file(source))


def test_an_unaligned_raw_disk_is_read_as_qemu_reads_it_padded_to_a_sector(tmp_path: Path) -> None:
    source = tmp_path / "odd.raw"
    source.write_bytes(b"\xab" * 100_001)
    output = tmp_path / "odd.vmdk"
    write_vmdk(source, output)
    assert qemu_img_info(output, "vmdk")["virtual-size"] == 100_352
    assert libvmdk_sha256(output) == (100_352, raw_sha256_padded(source, 100_352))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"adapter_type": "nvme"}, "not a VMDK adapter type"),
        ({"hw_version": "7a"}, "must be a number"),
        ({"tools_version": ""}, "must be a number"),
        ({"file_name": "../x.vmdk"}, "cannot be a VMDK extent file name"),
        ({"file_name": 'a"b.vmdk'}, "cannot be a VMDK extent file name"),
    ],
)
def test_descriptor_values_that_would_break_it_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        VmdkOptions(**options)
