"""QED, Parallels and LUKS1: recognised and described the way qemu-img 7.2 sees them."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures import hostile_other_formats
from tests.fixtures.hostile import CASES, HostileCase
from tests.fixtures.hostile_other_formats import create_luks
from tests.fixtures.tools import qemu_img, qemu_img_info, run
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
from imagewright.formats import luks, parallels, qed, registry
from imagewright.formats.base import Limits

pytestmark = pytest.mark.integration

GiB = 1024 * MiB


def create(path: Path, fmt: str, size: int | str, *options: str) -> Path:
    opts = ["-o", ",".join(options)] if options else []
    qemu_img("create", "-q", "-f", fmt, *opts, str(path), str(size))
    return path


# -- QED ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "options"),
    [
        (64 * MiB, []),
        (10_000_001, []),
        (1 * GiB, ["cluster_size=4096"]),
        (3 * GiB, ["cluster_size=1M", "table_size=16"]),
        (20 * GiB, ["table_size=2"]),
    ],
)
def test_qed_matches_qemu_img(tmp_path: Path, size: int, options: list[str]) -> None:
    image = create(tmp_path / "disk.qed", "qed", size, *options)
    with opened(qed, image) as result:
        info = assert_matches_qemu_info(result, image, "qed")
        assert isinstance(result.details, qed.QedDetails)
        assert result.details.cluster_size == info["cluster-size"]
        assert result.problems == [] and result.references == []
        assert result.guest is not None and result.guest.size == result.virtual_size
    with FileSource(image) as src:
        assert registry.detect_disk_format(src, src.pread(0, 65536)).name == "qed"


@pytest.mark.parametrize(("backing_format", "expected"), [("raw", "raw"), ("vdi", None), ("qcow2", None)])
def test_qed_backing_file_is_a_reference_like_qemu_reports_it(
    tmp_path: Path, backing_format: str, expected: str | None
) -> None:
    image = tmp_path / "overlay.qed"
    qemu_img("create", "-q", "-f", "qed", "-u", "-b", "base.img", "-F", backing_format, str(image), "64M")
    with opened(qed, image) as result:
        # qemu-img info reports the backing format only when QED records "raw, do not probe".
        assert_matches_qemu_info(result, image, "qed")
        assert result.backing_file == "base.img"
        assert result.backing_format == expected
        assert result.guest is None
        assert [(ref.kind, ref.target) for ref in result.references] == [("backing-file", "base.img")]
        assert_refused_with(result, "names a backing file 'base.img'")


def test_qed_guest_view_reads_exactly_what_qemu_reads(tmp_path: Path) -> None:
    cluster, size = 64 * 1024, 48 * MiB + 4096
    image = create(tmp_path / "disk.qed", "qed", size)
    qemu_io(
        image, "qed", *pattern_commands(cluster, size - size % cluster), f"write -P 0x77 {size - 700} 700"
    )
    raw = raw_copy(image, "qed", tmp_path / "disk.raw")
    with opened(qed, image) as result:
        assert result.guest is not None
        assert_guest_matches_raw(
            result.guest, raw, [*pattern_ranges(cluster, size - size % cluster), (size - 1024, 1024)]
        )
        assert_guest_equals_raw_fully(result.guest, raw)


def test_qed_zero_clusters_and_bad_l2_entries(tmp_path: Path) -> None:
    image = create(tmp_path / "disk.qed", "qed", 8 * MiB, "cluster_size=4096")
    qemu_io(image, "qed", "write -P 0x42 0 64k")
    data = bytearray(image.read_bytes())
    l1 = struct.unpack_from("<Q", data, 40)[0]
    l2 = struct.unpack_from("<Q", data, l1)[0]
    struct.pack_into("<Q", data, l2 + 8, 1)  # cluster 1: the zero-cluster marker
    struct.pack_into("<Q", data, l2 + 16, 1 << 40)  # cluster 2: far outside the file
    image.write_bytes(bytes(data))
    with opened(qed, image) as result:
        assert result.guest is not None
        assert result.guest.pread(0, 4096) == b"\x42" * 4096
        assert result.guest.pread(4096, 4096) == bytes(4096)
        with pytest.raises(ImageFormatError, match="outside the file"):
            result.guest.pread(8192, 4096)


def test_qed_one_cluster_tables_are_refused_like_qemu(tmp_path: Path) -> None:
    image = create(tmp_path / "disk.qed", "qed", 8 * MiB, "table_size=1")
    assert run("qemu-img", "info", "-f", "qed", image, check=False).returncode != 0
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="L1 table offset"):
        qed.open_image(src, Limits())


def test_qed_header_checks_follow_qemu(tmp_path: Path) -> None:
    for offset, value, message in (
        (4, 3000, "cluster size 3000"),
        (8, 32, "table size 32"),
        (16, 0x10, "unknown feature bits 0x10"),
        (48, 1 << 62, "image size"),
        (40, 12345, "L1 table offset"),
    ):
        image = create(tmp_path / "disk.qed", "qed", 64 * MiB)
        data = bytearray(image.read_bytes())
        width = 8 if offset in (16, 40, 48) else 4
        data[offset : offset + width] = value.to_bytes(width, "little")
        image.write_bytes(bytes(data))
        with FileSource(image) as src, pytest.raises(ImageFormatError, match=message):
            qed.open_image(src, Limits())


# -- Parallels ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "options"), [(64 * MiB, []), (10_000_001, []), (20 * GiB, ["cluster_size=64k"])]
)
def test_parallels_matches_qemu_img(tmp_path: Path, size: int, options: list[str]) -> None:
    image = create(tmp_path / "disk.hdd", "parallels", size, *options)
    with opened(parallels, image) as result:
        assert_matches_qemu_info(result, image, "parallels")
        assert isinstance(result.details, parallels.ParallelsDetails)
        assert result.details.magic == "WithouFreSpacExt"
        assert result.details.allocated_clusters == 0
        assert result.problems == []
    with FileSource(image) as src:
        assert registry.detect_disk_format(src, src.pread(0, 65536)).name == "parallels"


def test_parallels_guest_view_reads_exactly_what_qemu_reads(tmp_path: Path) -> None:
    cluster, size = 64 * 1024, 24 * MiB
    image = create(tmp_path / "disk.hdd", "parallels", size, "cluster_size=64k")
    qemu_io(image, "parallels", *pattern_commands(cluster, size))
    raw = raw_copy(image, "parallels", tmp_path / "disk.raw")
    with opened(parallels, image) as result:
        assert result.guest is not None
        assert_guest_matches_raw(result.guest, raw, pattern_ranges(cluster, size))
        assert_guest_equals_raw_fully(result.guest, raw)


def test_parallels_old_magic_uses_32_bit_sizes_and_sector_offsets(tmp_path: Path) -> None:
    image = create(tmp_path / "disk.hdd", "parallels", 8 * MiB, "cluster_size=64k")
    qemu_io(image, "parallels", "write -P 0x31 64k 64k")
    data = bytearray(image.read_bytes())
    data[:16] = parallels.MAGIC_OLD
    struct.pack_into("<Q", data, 36, (1 << 32) | (8 * MiB // 512))  # high bits ignored for the old magic
    index = struct.unpack_from("<I", data, 64 + 4)[0]
    struct.pack_into("<I", data, 64 + 4, index * 128)  # old format: offsets in sectors, not clusters
    image.write_bytes(bytes(data))
    raw = raw_copy(image, "parallels", tmp_path / "disk.raw")
    with opened(parallels, image) as result:
        assert_matches_qemu_info(result, image, "parallels")
        assert result.guest is not None
        assert_guest_equals_raw_fully(result.guest, raw)
        assert result.guest.pread(64 * 1024, 4) == b"\x31" * 4


# -- LUKS --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def luks_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_luks(tmp_path_factory.mktemp("luks") / "disk.luks", "100M")


def test_luks_matches_qemu_img(luks_image: Path) -> None:
    with opened(luks, luks_image) as result:
        info = assert_matches_qemu_info(result, luks_image, "luks")
        specific = info["format-specific"]["data"]
        details = result.details
        assert isinstance(details, luks.LuksDetails)
        assert details.payload_offset == specific["payload-offset"]
        assert details.uuid == specific["uuid"]
        assert details.master_key_iterations == specific["master-key-iters"]
        assert (details.cipher_name, details.cipher_mode, details.hash_spec) == (
            "aes",
            "xts-plain64",
            "sha256",
        )
        assert [slot.active for slot in details.slots] == [slot["active"] for slot in specific["slots"]]
        assert [slot.key_offset for slot in details.slots] == [
            slot["key-offset"] for slot in specific["slots"]
        ]
        assert result.guest is None
        assert result.problems == [] and result.references == []
    with FileSource(luks_image) as src:
        assert registry.detect_disk_format(src, src.pread(0, 65536)).name == "luks"


def test_every_format_qemu_img_creates_here_is_detected_as_qemu_detects_it(
    tmp_path: Path, luks_image: Path
) -> None:
    images = [luks_image]
    for fmt in ("raw", "qcow2", "vmdk", "vdi", "vhdx", "vpc", "qed", "parallels"):
        images.append(create(tmp_path / f"disk.{fmt}", fmt, 16 * MiB))
    for image in images:
        with FileSource(image) as src:
            ours = registry.detect_disk_format(src, src.pread(0, 65536)).name
        assert ours == qemu_img_info(image)["format"], image.name


@pytest.mark.parametrize(
    "case",
    [case for case in CASES if case.build.__module__ == hostile_other_formats.__name__],
    ids=lambda case: case.name,
)
def test_hostile_cases_are_refused_by_the_reader(tmp_path: Path, case: HostileCase) -> None:
    path = case.build(tmp_path)
    with FileSource(path) as src:
        module = {"qed": qed, "parallels": parallels, "luks": luks}[
            registry.detect_disk_format(src, src.pread(0, 65536)).name
        ]
        try:
            result = module.open_image(src, Limits())
        except ImageFormatError as err:
            assert case.reason.lower() in str(err).lower()
        else:
            assert_refused_with(result, case.reason)


# -- property-based: mutated real images ------------------------------------------------------
@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory, luks_image: Path) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("other-seeds")
    plain_qed = create(directory / "disk.qed", "qed", 8 * MiB, "cluster_size=4096")
    qemu_io(plain_qed, "qed", "write -P 1 0 8k", f"write -P 2 {4 * MiB} 4k")
    backed = directory / "overlay.qed"
    qemu_img("create", "-q", "-f", "qed", "-u", "-b", "base.raw", "-F", "raw", str(backed), "8M")
    hdd = create(directory / "disk.hdd", "parallels", 8 * MiB, "cluster_size=64k")
    qemu_io(hdd, "parallels", "write -P 3 0 8k", f"write -P 4 {4 * MiB} 4k")
    return {
        "qed": plain_qed.read_bytes(),
        "qed-backed": backed.read_bytes(),
        "parallels": hdd.read_bytes(),
        "luks": luks_image.read_bytes()[: 3 * MiB],  # the header and key material are what matter
    }


MODULES = {"qed": qed, "qed-backed": qed, "parallels": parallels, "luks": luks}
INTERESTING = [0, 1, 2, 16, 512, 4096, 65536, 2**20, 2**26, 2**31, 2**32 - 1, 2**63, 2**64 - 1]


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(sorted(MODULES)),
    fields=st.lists(
        st.tuples(
            st.integers(4, 300),
            st.sampled_from([1, 2, 4, 8]),
            st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1),
        ),
        max_size=3,
    ),
    edits=st.lists(st.tuples(st.integers(0, 70_000), st.integers(0, 255)), max_size=6),
    reads=st.lists(st.tuples(st.integers(0, 10 * MiB), st.integers(1, 2 * MiB)), max_size=3),
)
def test_mutated_real_images_raise_only_imagewright_errors(
    seed_images: dict[str, bytes],
    *,
    seed: str,
    fields: list[tuple[int, int, int]],
    edits: list[tuple[int, int]],
    reads: list[tuple[int, int]],
) -> None:
    data = bytearray(seed_images[seed])
    order = "big" if seed == "luks" else "little"
    for offset, width, value in fields:
        data[offset : offset + width] = (value % (1 << (8 * width))).to_bytes(width, order)
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    module = MODULES[seed]
    open_mutated(module, bytes(data), reads)
