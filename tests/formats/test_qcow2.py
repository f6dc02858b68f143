"""The qcow2 reader against qemu-img 7.2: header facts, references, and every guest byte."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures import hostile_encrypted, hostile_qcow2
from tests.fixtures.hostile import CASES, HostileCase
from tests.fixtures.hostile_other_formats import create_luks_qcow2
from tests.fixtures.tools import qemu_img, qemu_img_info, run, write_at
from tests.formats.sparse_checks import (
    MiB,
    assert_guest_equals_raw_fully,
    assert_guest_matches_raw,
    assert_matches_qemu_info,
    assert_refused_with,
    open_mutated,
    opened,
    pattern_commands,
    pattern_ranges,
    qemu_io,
    raw_copy,
)

from imagewright.binary import FileSource
from imagewright.errors import ImageFormatError
from imagewright.formats import qcow, qcow2
from imagewright.formats.base import Limits
from imagewright.formats.safety import judge

pytestmark = pytest.mark.integration

KiB = 1024


def create(path: Path, size: int, *options: str) -> Path:
    args = ["create", "-q", "-f", "qcow2"]
    if options:
        args += ["-o", ",".join(options)]
    qemu_img(*args, str(path), str(size))
    return path


@pytest.mark.parametrize(
    ("options", "cluster", "size"),
    [
        pytest.param(("compat=0.10",), 64 * KiB, 64 * MiB, id="v2"),
        pytest.param(("cluster_size=512",), 512, 8 * MiB, id="v3-512"),
        pytest.param(("cluster_size=4096",), 4 * KiB, 32 * MiB, id="v3-4k"),
        pytest.param((), 64 * KiB, 64 * MiB, id="v3-64k"),
        pytest.param(("cluster_size=2M",), 2 * MiB, 64 * MiB, id="v3-2m"),
        pytest.param(("lazy_refcounts=on",), 64 * KiB, 64 * MiB, id="lazy-refcounts"),
        pytest.param(("refcount_bits=1",), 64 * KiB, 64 * MiB, id="refcount-bits-1"),
        pytest.param(("refcount_bits=64",), 64 * KiB, 64 * MiB, id="refcount-bits-64"),
        pytest.param(("extended_l2=on",), 64 * KiB, 64 * MiB, id="extended-l2"),
        pytest.param(("extended_l2=on", "cluster_size=16k"), 16 * KiB, 32 * MiB, id="extended-l2-16k"),
        pytest.param(("compression_type=zstd",), 64 * KiB, 64 * MiB, id="zstd-type"),
        pytest.param(("preallocation=metadata",), 64 * KiB, 64 * MiB, id="prealloc-metadata"),
        pytest.param(("preallocation=full",), 64 * KiB, 16 * MiB, id="prealloc-full"),
    ],
)
def test_guest_view_reads_exactly_what_qemu_reads(
    tmp_path: Path, options: tuple[str, ...], cluster: int, size: int
) -> None:
    image = create(tmp_path / "disk.qcow2", size, *options)
    qemu_io(image, "qcow2", *pattern_commands(cluster, size))
    raw = raw_copy(image, "qcow2", tmp_path / "disk.raw")
    with opened(qcow2, image) as result:
        info = assert_matches_qemu_info(result, image, "qcow2")
        data = info["format-specific"]["data"]  # type: ignore[index]
        details = result.details
        assert isinstance(details, qcow2.Qcow2Details)
        assert details.cluster_size == cluster == info["cluster-size"]
        assert details.version == (2 if data["compat"] == "0.10" else 3)
        assert result.subformat == f"v{details.version}"
        if details.version == 3:
            assert details.lazy_refcounts == data["lazy-refcounts"]
            assert details.refcount_bits == data["refcount-bits"]
            assert details.compression == data["compression-type"]
            assert details.extended_l2 == data["extended-l2"]
            assert details.corrupt == data["corrupt"]
        assert result.problems == [] and result.references == []
        assert judge(result, Limits()).safe
        assert result.guest is not None
        assert_guest_matches_raw(result.guest, raw, pattern_ranges(cluster, size))
        assert_guest_equals_raw_fully(result.guest, raw)


@pytest.mark.parametrize(
    ("compression", "cluster", "extended_l2"),
    [
        ("zlib", 512, "off"),
        ("zlib", 4 * KiB, "off"),
        ("zlib", 64 * KiB, "off"),
        ("zlib", 2 * MiB, "off"),
        ("zlib", 64 * KiB, "on"),
        ("zstd", 64 * KiB, "off"),
        ("zstd", 2 * MiB, "off"),
        ("zstd", 32 * KiB, "on"),
    ],
)
def test_compressed_clusters_read_like_qemu(
    tmp_path: Path, compression: str, cluster: int, extended_l2: str
) -> None:
    size = 16 * MiB
    source = tmp_path / "source.raw"
    with source.open("wb") as f:
        f.truncate(size)
        # Compressible text, incompressible noise and zeros, at cluster edges and the end.
        for offset, block in [
            (0, b"imagewright " * 10000),
            (cluster * 3 - 17, os.urandom(3 * cluster)),
            (size // 2, b"\x01\x02" * 40000),
            (size - cluster, b"tail" * (cluster // 4)),
        ]:
            f.seek(offset)
            f.write(block)
    image = tmp_path / "compressed.qcow2"
    qemu_img(
        "convert", "-q", "-c", "-f", "raw", "-O", "qcow2",
        "-o", f"cluster_size={cluster},compression_type={compression},extended_l2={extended_l2}",
        str(source), str(image),
    )  # fmt: skip
    check = json.loads(run("qemu-img", "check", "--output=json", image).stdout)
    assert check["compressed-clusters"] > 0
    raw = raw_copy(image, "qcow2", tmp_path / "back.raw")
    assert raw.read_bytes() == source.read_bytes()
    with opened(qcow2, image) as result:
        assert_matches_qemu_info(result, image, "qcow2")
        assert result.details.compression == compression
        assert result.details.extended_l2 == (extended_l2 == "on")
        assert result.guest is not None
        assert_guest_equals_raw_fully(result.guest, raw, chunk=MiB + 3)
        assert_guest_matches_raw(result.guest, raw, [(cluster * 3 - 20, 2 * cluster)])


def test_damaged_compressed_cluster_is_a_format_error(tmp_path: Path) -> None:
    source = tmp_path / "source.raw"
    source.write_bytes(b"compress me " * 100000)
    image = tmp_path / "compressed.qcow2"
    qemu_img("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", str(source), str(image))
    data = image.read_bytes()
    l1_offset = int.from_bytes(data[40:48], "big")
    l2_offset = int.from_bytes(data[l1_offset : l1_offset + 8], "big") & 0x00FF_FFFF_FFFF_FE00
    entry = int.from_bytes(data[l2_offset : l2_offset + 8], "big")
    assert entry & (1 << 62), "the first cluster should be compressed"
    host = entry & ((1 << 54) - 1)  # 64 KiB clusters: x = 62 - (16 - 8)
    write_at(image, host, b"\xff" * 64)
    with opened(qcow2, image) as result:
        assert result.guest is not None
        with pytest.raises(ImageFormatError, match="compressed"):
            result.guest.pread(0, 4096)


@pytest.mark.parametrize("backing_format", ["qcow2", "raw"])
def test_backing_file_is_a_reference_and_matches_qemu(tmp_path: Path, backing_format: str) -> None:
    base = tmp_path / f"base.{backing_format}"
    qemu_img("create", "-q", "-f", backing_format, str(base), "64M")
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base.name, "-F", backing_format, str(overlay))
    with opened(qcow2, overlay) as result:
        assert_matches_qemu_info(result, overlay, "qcow2")
        assert result.backing_file == "base." + backing_format
        assert result.backing_format == backing_format
        assert [ref.kind for ref in result.references] == ["backing-file"]
        assert result.references[0].detail == "another file next to the image"
        assert result.guest is None
        assert_refused_with(result, "backing file 'base.")


def test_backing_file_without_format_extension(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    qemu_img(
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        "-u",
        "-b",
        "/srv/base.img",
        "-F",
        "raw",
        str(overlay),
        "1G",
    )
    with opened(qcow2, overlay) as result:
        assert_matches_qemu_info(result, overlay, "qcow2")
        assert result.details.version == 2
        assert result.references[0].target == "/srv/base.img"
        assert result.references[0].detail == "an absolute path"


def test_external_data_file_is_a_reference(tmp_path: Path) -> None:
    image = create(tmp_path / "meta.qcow2", 64 * MiB, f"data_file={tmp_path / 'data.raw'}")
    info = qemu_img_info(image)
    with opened(qcow2, image) as result:
        assert_matches_qemu_info(result, image, "qcow2")
        assert result.details.data_file == info["format-specific"]["data"]["data-file"]
        assert "external data file" in result.details.incompatible_feature_names
        assert [(ref.kind, ref.target) for ref in result.references] == [
            ("data-file", str(tmp_path / "data.raw"))
        ]
        assert result.guest is None
        assert_refused_with(result, "external data file")


def test_internal_snapshots_are_listed_like_qemu_img(tmp_path: Path) -> None:
    size = 16 * MiB
    image = create(tmp_path / "snap.qcow2", size)
    qemu_io(image, "qcow2", "write -P 0x21 0 1M")
    qemu_img("snapshot", "-c", "first", str(image))
    qemu_io(image, "qcow2", "write -P 0x42 512k 1M")
    qemu_img("snapshot", "-c", "the second snapshot", str(image))
    qemu_io(image, "qcow2", "write -P 0x63 4M 64k")
    info = qemu_img_info(image)
    raw = raw_copy(image, "qcow2", tmp_path / "snap.raw")
    with opened(qcow2, image) as result:
        details = result.details
        assert details.nb_snapshots == 2
        expected = [
            (s["id"], s["name"], s["vm-state-size"], s["date-sec"], s["date-nsec"]) for s in info["snapshots"]
        ]
        assert [
            (s.id, s.name, s.vm_state_size, s.date_sec, s.date_nsec) for s in details.snapshots
        ] == expected
        assert all(s.disk_size == size for s in details.snapshots)
        assert result.problems == []
        assert result.guest is not None
        assert_guest_equals_raw_fully(result.guest, raw)


def test_bitmaps_extension_is_read(tmp_path: Path) -> None:
    image = create(tmp_path / "bitmaps.qcow2", 64 * MiB)
    qemu_img("bitmap", "--add", str(image), "b0")
    qemu_img("bitmap", "--add", str(image), "b1")
    with opened(qcow2, image) as result:
        details = result.details
        assert details.bitmap_count == 2
        assert "bitmaps" in details.autoclear_feature_names
        assert [ext.name for ext in details.extensions].count("bitmaps") == 1
        assert result.problems == []


def test_luks_encryption_is_reported_and_not_read(tmp_path: Path) -> None:
    image = create_luks_qcow2(tmp_path / "luks.qcow2", "64M")
    with opened(qcow2, image) as result:
        assert_matches_qemu_info(result, image, "qcow2")
        details = result.details
        assert details.encryption == "luks"
        assert (
            details.crypto_header_offset is not None
            and details.crypto_header_offset % details.cluster_size == 0
        )
        assert details.crypto_header_length
        assert result.guest is None
        assert judge(result, Limits()).safe


def test_legacy_aes_encryption_is_reported_not_refused(tmp_path: Path) -> None:
    # The reader names no other file; inspection still refuses the unread guest (hostile_encrypted).
    image = hostile_encrypted.qcow2_aes(tmp_path)
    with opened(qcow2, image) as result:
        assert_matches_qemu_info(result, image, "qcow2")
        assert result.details.encryption == "aes"
        assert result.guest is None
        assert judge(result, Limits()).safe


def test_virtual_size_is_rounded_down_to_a_sector_like_qemu(tmp_path: Path) -> None:
    image = create(tmp_path / "odd.qcow2", 1024)
    write_at(image, hostile_qcow2.OFF_SIZE, struct.pack(">Q", 1001))
    with opened(qcow2, image) as result:
        assert result.details.size == 1001
        assert_matches_qemu_info(result, image, "qcow2")
        assert result.virtual_size == 512


def test_feature_bits_are_named(tmp_path: Path) -> None:
    image = create(tmp_path / "features.qcow2", 64 * MiB, "lazy_refcounts=on")
    qemu_io(image, "qcow2", "write -P 1 0 64k")  # leaves nothing dirty, but check the names
    write_at(image, hostile_qcow2.OFF_INCOMPATIBLE, struct.pack(">Q", 1))
    with opened(qcow2, image) as result:
        assert result.details.dirty
        assert result.details.incompatible_feature_names == ["dirty"]
        assert result.details.compatible_feature_names == ["lazy refcounts"]
        names = {(entry.kind, entry.bit): entry.name for entry in result.details.feature_table}
        assert names[("incompatible", 0)] == "dirty bit"
        assert result.problems == []


def test_opening_a_20_gib_image_reads_only_headers(tmp_path: Path) -> None:
    image = create(tmp_path / "big.qcow2", 20 * 1024 * MiB)
    qemu_io(image, "qcow2", "write -P 7 0 1M", f"write -P 9 {20 * 1024 * MiB - MiB} 1M")
    with FileSource(image) as src:
        start = time.perf_counter()
        result = qcow2.open_image(src, Limits())
        elapsed = time.perf_counter() - start
        assert src.bytes_read < 256 * KiB
        assert elapsed < 0.5
        assert result.guest is not None
        assert result.guest.pread(20 * 1024 * MiB - 1, 1) == b"\x09"


@pytest.mark.parametrize(
    "case",
    [case for case in CASES if case.build.__module__ == hostile_qcow2.__name__],
    ids=lambda case: case.name,
)
def test_hostile_cases_are_refused_by_the_reader(tmp_path: Path, case: HostileCase) -> None:
    path = case.build(tmp_path)
    with FileSource(path) as src:
        head = src.pread(0, 4096)
        module = qcow2 if qcow2.probe(src, head) else qcow
        assert module.probe(src, head)
        result = module.open_image(src, Limits())
        assert_refused_with(result, case.reason)


# -- property-based: mutated real images ------------------------------------------------------
@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Small real images (with data, snapshots, compression) whose bytes hypothesis bends."""
    directory = tmp_path_factory.mktemp("qcow2-seeds")
    seeds: dict[str, bytes] = {}
    plain = create(directory / "plain.qcow2", 4 * MiB, "cluster_size=4096")
    qemu_io(plain, "qcow2", *pattern_commands(4096, 4 * MiB))
    qemu_img("snapshot", "-c", "snap", str(plain))
    seeds["plain"] = plain.read_bytes()
    extended = create(directory / "extended.qcow2", 4 * MiB, "extended_l2=on", "cluster_size=16k")
    qemu_io(extended, "qcow2", *pattern_commands(16 * KiB, 4 * MiB))
    seeds["extended"] = extended.read_bytes()
    source = directory / "source.raw"
    source.write_bytes(b"abc" * (MiB // 3) + os.urandom(4096))
    for compression in ("zlib", "zstd"):
        out = directory / f"{compression}.qcow2"
        qemu_img(
            "convert", "-q", "-c", "-f", "raw", "-O", "qcow2",
            "-o", f"cluster_size=4096,compression_type={compression}", str(source), str(out),
        )  # fmt: skip
        seeds[compression] = out.read_bytes()
    overlay = directory / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw", str(overlay), "4M")
    seeds["overlay"] = overlay.read_bytes()
    return seeds


#: (offset, width) of every qcow2 header field.
HEADER_FIELDS = [(4, 4), (8, 8), (16, 4), (20, 4), (24, 8), (32, 4), (36, 4), (40, 8), (48, 8), (56, 4),
                 (60, 4), (64, 8), (72, 8), (80, 8), (88, 8), (96, 4), (100, 4), (104, 1)]  # fmt: skip
INTERESTING = [0, 1, 2, 3, 7, 8, 9, 16, 21, 22, 63, 64, 104, 112, 511, 512, 4096, 65536, 2**31, 2**32 - 1,
               2**62, 2**63, 2**64 - 1]  # fmt: skip


def _set_field(data: bytearray, offset: int, width: int, value: int) -> None:
    data[offset : offset + width] = (value % (1 << (8 * width))).to_bytes(width, "big")


def _tables(data: bytes) -> list[int]:
    """File offsets of the L1 table and the first L2 table of a seed image."""
    l1 = int.from_bytes(data[40:48], "big")
    l2 = int.from_bytes(data[l1 : l1 + 8], "big") & 0x00FF_FFFF_FFFF_FE00 if l1 + 8 <= len(data) else 0
    return [l1, l2]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(["plain", "extended", "zlib", "zstd", "overlay"]),
    fields=st.lists(
        st.tuples(st.sampled_from(HEADER_FIELDS), st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1)),
        max_size=3,
    ),
    header_edits=st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 255)), max_size=6),
    table_edits=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 4095), st.integers(0, 255)), max_size=6),
    anywhere=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4),
    reads=st.lists(st.tuples(st.integers(0, 8 * MiB), st.integers(1, 256 * KiB)), max_size=3),
)
def test_mutated_real_images_raise_only_imagewright_errors(
    seed_images: dict[str, bytes],
    *,
    seed: str,
    fields: list[tuple[tuple[int, int], int]],
    header_edits: list[tuple[int, int]],
    table_edits: list[tuple[int, int, int]],
    anywhere: list[tuple[float, int]],
    reads: list[tuple[int, int]],
) -> None:
    data = bytearray(seed_images[seed])
    tables = _tables(bytes(data))
    for (offset, width), value in fields:
        _set_field(data, offset, width, value)
    for offset, value in header_edits:
        data[offset] = value
    for table, offset, value in table_edits:
        position = tables[table] + offset
        if 0 < position < len(data):
            data[position] = value
    for fraction, value in anywhere:
        data[int(fraction * len(data))] = value
    open_mutated(qcow2, bytes(data), reads)


@settings(max_examples=200, deadline=None)
@given(
    version=st.sampled_from([2, 3, 4, 0xFFFFFFFF]),
    body=st.binary(max_size=2048),
)
def test_random_bytes_after_the_magic_raise_only_imagewright_errors(version: int, body: bytes) -> None:
    open_mutated(qcow2, qcow2.MAGIC + struct.pack(">I", version) + body)
