"""The VHD ("vpc") reader against qemu-img and qemu-io 7.2."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures import hostile_vhd
from tests.fixtures.hostile import CASES, HostileCase
from tests.fixtures.hostile_vhd import create_vhd, make_differencing, patch_dynamic_header, patch_footer
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

from imagewright.binary import BytesSource, FileSource, PrefixSource
from imagewright.errors import ImageFormatError
from imagewright.formats import registry, vhd
from imagewright.formats.base import Limits

pytestmark = pytest.mark.integration

GiB = 1024 * MiB
#: qemu-img always makes dynamic VHDs with 2 MiB blocks.
BLOCK = 2 * MiB


def details_of(path: Path) -> vhd.VhdDetails:
    with opened(vhd, path) as result:
        assert isinstance(result.details, vhd.VhdDetails)
        return result.details


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
@pytest.mark.parametrize("force_size", [False, True])
@pytest.mark.parametrize("size", [10_000_001, 127 * MiB, 1 * GiB, 2 * GiB, 1_000_000 * 512 + 7 * 512])
def test_virtual_size_and_format_match_qemu_img(
    tmp_path: Path, subformat: str, force_size: bool, size: int
) -> None:
    options = [f"subformat={subformat}"] + (["force_size=on"] if force_size else [])
    image = create_vhd(tmp_path, "disk.vhd", str(size), *options)
    with opened(vhd, image) as result:
        assert_matches_qemu_info(result, image, "vpc")
        assert result.subformat == subformat
        assert result.problems == [] and result.references == []
        details = result.details
        assert isinstance(details, vhd.VhdDetails)
        assert details.creator_application == ("qem2" if force_size else "qemu")
        assert details.size_source == ("current_size" if force_size else "chs")
        assert details.checksum_valid
        if subformat == "dynamic":
            assert details.footer_copy_matches is True
            assert details.dynamic is not None and details.dynamic.block_size == BLOCK
            assert details.dynamic.allocated_blocks == 0
        else:
            assert details.footer_offset == image.stat().st_size - 512
            assert details.dynamic is None


@pytest.mark.parametrize(
    ("creator", "source"),
    [
        (b"win ", "current_size"),
        (b"d2v ", "current_size"),
        (b"CTXS", "current_size"),
        (b"tap\0", "current_size"),
        (b"qem2", "current_size"),
        (b"vpc ", "chs"),
        (b"qemu", "chs"),
        (b"vs  ", "chs"),
        (b"d2v\0", "chs"),  # QEMU compares four bytes: "d2v\0" is not "d2v "
        (b"tap ", "chs"),
    ],
)
@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_creator_decides_chs_or_current_size_like_qemu(
    tmp_path: Path, creator: bytes, source: str, subformat: str
) -> None:
    image = create_vhd(tmp_path, "disk.vhd", "64M", f"subformat={subformat}")
    chs = details_of(image).chs_size
    # A current_size below the CHS product, so the two rules give different answers.
    patch_footer(image, creator_application=creator, current_size=chs - 3 * 512)
    with opened(vhd, image) as result:
        assert_matches_qemu_info(result, image, "vpc")
        assert isinstance(result.details, vhd.VhdDetails)
        assert result.details.size_source == source
        assert result.virtual_size == (chs if source == "chs" else chs - 3 * 512)


def test_maximal_geometry_means_current_size_whatever_the_creator(tmp_path: Path) -> None:
    image = create_vhd(tmp_path, "disk.vhd", str(5 * MiB + 512), "force_size=on")
    patch_footer(image, creator_application=b"vpc ")
    details = details_of(image)
    assert (details.cylinders, details.heads, details.sectors_per_track) == (65535, 16, 255)
    with opened(vhd, image) as result:
        assert_matches_qemu_info(result, image, "vpc")
        assert result.virtual_size == 5 * MiB + 512


def test_registry_detects_dynamic_and_fixed_vhd(tmp_path: Path) -> None:
    dynamic = create_vhd(tmp_path, "dynamic.vhd", "64M")
    fixed = create_vhd(tmp_path, "fixed.vhd", "64M", "subformat=fixed")
    raw = tmp_path / "disk.raw"
    raw.write_bytes(
        b"conectix" + bytes(1016)
    )  # a raw disk whose data starts like a VHD, but no footer at the end
    for path, expected in ((dynamic, "vpc"), (fixed, "vpc")):
        with FileSource(path) as src:
            assert registry.detect_disk_format(src, src.pread(0, 65536)).name == expected
    # QEMU's own probe only looks at offset 0: it calls the fixed disk raw.
    assert qemu_img_info(dynamic)["format"] == "vpc"
    assert qemu_img_info(fixed)["format"] == "raw"
    with FileSource(raw) as src:
        assert vhd.probe(src, src.pread(0, 65536))
        with pytest.raises(ImageFormatError):
            vhd.open_image(src, Limits())
    plain = tmp_path / "plain.raw"
    plain.write_bytes(bytes(4096))
    with FileSource(plain) as src:
        assert not vhd.probe(src, src.pread(0, 65536))


def test_probe_of_a_compressed_prefix_does_not_reach_for_the_end() -> None:
    prefix = PrefixSource(bytes(4096), total_size=None, unknown_size=1 << 40)
    assert not vhd.probe(prefix, prefix.pread(0, 4096))


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
@pytest.mark.parametrize("size", [64 * MiB, 67_000_000])
def test_guest_view_reads_exactly_what_qemu_reads(tmp_path: Path, subformat: str, size: int) -> None:
    image = create_vhd(tmp_path, "disk.vhd", str(size), f"subformat={subformat}")
    with opened(vhd, image) as result:
        virtual = result.virtual_size
    qemu_io(
        image,
        "vpc",
        *pattern_commands(BLOCK, virtual - virtual % BLOCK),
        f"write -P 0x77 {virtual - 1000} 1000",  # the (partial) last block
        f"write -P 0x88 {BLOCK - 512} 1024",  # across a block boundary
    )
    raw = raw_copy(image, "vpc", tmp_path / "disk.raw")
    with opened(vhd, image) as result:
        assert_matches_qemu_info(result, image, "vpc")
        assert result.guest is not None
        ranges = [
            *pattern_ranges(BLOCK, virtual - virtual % BLOCK),
            (virtual - 4096, 4096),
            (BLOCK - 4096, 8192),
        ]
        assert_guest_matches_raw(result.guest, raw, ranges)
        assert_guest_equals_raw_fully(result.guest, raw)
        if subformat == "dynamic":
            assert isinstance(result.details, vhd.VhdDetails) and result.details.dynamic is not None
            assert result.details.dynamic.allocated_blocks and result.details.dynamic.allocated_blocks >= 6


def test_guest_view_of_a_converted_image_matches_its_source(tmp_path: Path) -> None:
    source = tmp_path / "source.raw"
    with source.open("wb") as f:
        f.truncate(40 * MiB)
        for offset in (0, 3 * MiB + 17, 21 * MiB, 40 * MiB - 700):
            f.seek(offset)
            f.write(bytes([offset % 251 + 1]) * 700)
    image = tmp_path / "converted.vhd"
    qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", "force_size=on", str(source), str(image))
    with opened(vhd, image) as result:
        assert result.virtual_size == 40 * MiB
        assert result.guest is not None
        assert_guest_equals_raw_fully(result.guest, source)


def test_differencing_disk_names_its_parent_and_offers_no_guest(tmp_path: Path) -> None:
    image = create_vhd(tmp_path, "child.vhd", "64M")
    make_differencing(
        image,
        "base.vhd",
        [(b"W2ru", ".\\base.vhd"), (b"W2ku", "C:\\vms\\base.vhd"), (b"MacX", "file:///Volumes/vms/base.vhd")],
    )
    with opened(vhd, image) as result:
        assert result.subformat == "differencing"
        assert result.guest is None
        # QEMU opens a differencing VHD like a dynamic one and shows no backing file.
        assert_matches_qemu_info(result, image, "vpc")
        details = result.details
        assert isinstance(details, vhd.VhdDetails) and details.dynamic is not None
        assert details.dynamic.parent_unicode_name == "base.vhd"
        assert details.dynamic.parent_unique_id == "00010203-0405-0607-0809-0a0b0c0d0e0f"
        locators = {loc.platform_code: loc.path for loc in details.dynamic.parent_locators}
        assert locators == {
            "W2ru": ".\\base.vhd",
            "W2ku": "C:\\vms\\base.vhd",
            "MacX": "file:///Volumes/vms/base.vhd",
        }
        assert [ref.kind for ref in result.references] == ["parent"]
        assert result.references[0].target == ".\\base.vhd"
        assert_refused_with(result, "names a parent image")


def test_differencing_disk_with_only_a_name_and_hostile_locators(tmp_path: Path) -> None:
    image = create_vhd(tmp_path, "child.vhd", "64M")
    make_differencing(image, "/etc/shadow", [])
    data = bytearray(image.read_bytes())
    # A locator whose data lies far beyond the file, and one with an unknown platform code.
    struct.pack_into(">4sIIIQ", data, 512 + 576, b"W2ku", 1, 400, 0, 1 << 40)
    struct.pack_into(">4sIIIQ", data, 512 + 600, b"Mac ", 1, 16, 0, 1536)
    struct.pack_into(">I", data, 512 + 36, hostile_vhd.checksum(data[512:1536], 36))
    image.write_bytes(bytes(data))
    with opened(vhd, image) as result:
        assert result.references[0].target == "/etc/shadow"
        assert isinstance(result.details, vhd.VhdDetails) and result.details.dynamic is not None
        problems = [loc.problem for loc in result.details.dynamic.parent_locators]
        assert problems == [
            "its data lies beyond the end of the file",
            "platform code 'Mac ' is not a path this reader decodes",
        ]
        assert_refused_with(result, "'/etc/shadow'")


def test_footer_copies_that_disagree_are_a_problem(tmp_path: Path) -> None:
    image = create_vhd(tmp_path, "disk.vhd", "64M")
    data = bytearray(image.read_bytes())
    data[-512 + 68] ^= 0xFF  # the unique id of the trailing copy only
    struct.pack_into(">I", data, len(data) - 512 + 64, hostile_vhd.checksum(data[-512:], 64))
    image.write_bytes(bytes(data))
    with opened(vhd, image) as result:
        assert isinstance(result.details, vhd.VhdDetails)
        assert result.details.footer_copy_matches is False
        assert_refused_with(result, "differs from the footer at its end")


def test_missing_trailing_footer_is_a_problem(tmp_path: Path) -> None:
    image = create_vhd(tmp_path, "disk.vhd", "64M")
    image.write_bytes(image.read_bytes()[:-512] + bytes(512))
    with opened(vhd, image) as result:
        assert_refused_with(result, "no footer at its end")


def test_dynamic_header_checksum_and_block_size_are_checked(tmp_path: Path) -> None:
    image = create_vhd(tmp_path, "disk.vhd", "64M")
    patch_dynamic_header(image, fix_checksum=False, parent_timestamp=1)
    with opened(vhd, image) as result:
        assert_refused_with(result, "dynamic disk header checksum is wrong")
    patch_dynamic_header(image, block_size=3 * MiB)
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="power of two"):
        vhd.open_image(src, Limits())
    patch_dynamic_header(image, block_size=1 << 30, max_table_entries=1)
    with opened(vhd, image) as result:
        assert_refused_with(result, "larger than the 256 MiB")


def test_bat_too_small_for_the_disk_is_an_error(tmp_path: Path) -> None:
    image = create_vhd(tmp_path, "disk.vhd", "64M")
    patch_dynamic_header(image, max_table_entries=3)
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="too few to cover"):
        vhd.open_image(src, Limits())


def test_bat_entry_overlapping_the_metadata_is_a_problem(tmp_path: Path) -> None:
    image = create_vhd(tmp_path, "disk.vhd", "8M")
    qemu_io(image, "vpc", "write -P 1 0 4096")
    hostile_vhd.set_bat_entry(image, 1, 1)  # block 1 "starts" inside the dynamic header
    with opened(vhd, image) as result:
        assert_refused_with(result, "overlaps the footer, the dynamic header or the BAT")


def test_unknown_disk_type_is_an_error(tmp_path: Path) -> None:
    image = create_vhd(tmp_path, "disk.vhd", "8M")
    patch_footer(image, disk_type=5)
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="disk type 5"):
        vhd.open_image(src, Limits())


def test_opening_a_20_gib_image_reads_only_headers(tmp_path: Path) -> None:
    image = create_vhd(tmp_path, "big.vhd", "20G")
    with opened(vhd, image) as result:
        virtual = result.virtual_size
    qemu_io(image, "vpc", "write -P 7 0 1M", f"write -P 9 {virtual - MiB} 1M")
    with FileSource(image) as src:
        start = time.perf_counter()
        result = vhd.open_image(src, Limits())
        elapsed = time.perf_counter() - start
        assert src.bytes_read < 256 * 1024
        assert elapsed < 0.2
        assert result.guest is not None
        assert result.guest.pread(virtual - 1, 1) == b"\x09"
        assert result.guest.pread(virtual // 2, 4096) == bytes(4096)


@pytest.mark.parametrize(
    "case",
    [case for case in CASES if case.build.__module__ == hostile_vhd.__name__],
    ids=lambda case: case.name,
)
def test_hostile_cases_are_refused_by_the_reader(tmp_path: Path, case: HostileCase) -> None:
    path = case.build(tmp_path)
    with FileSource(path) as src:
        assert vhd.probe(src, src.pread(0, 65536))
        try:
            result = vhd.open_image(src, Limits())
        except ImageFormatError as err:
            assert case.reason.lower() in str(err).lower()
        else:
            assert_refused_with(result, case.reason)


def test_qemu_refuses_what_we_refuse_for_its_own_reasons(tmp_path: Path) -> None:
    for case in (
        "vhd-bad-footer-checksum",
        "vhd-bat-entry-beyond-eof",
        "vhd-dynamic-header-offset-beyond-eof",
    ):
        build = next(c.build for c in CASES if c.name == case)
        directory = tmp_path / case
        directory.mkdir()
        path = build(directory)
        proc = run("qemu-img", "info", "-f", "vpc", path, check=False)
        assert proc.returncode != 0, case


# -- property-based: mutated real images ------------------------------------------------------
@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("vhd-seeds")
    seeds: dict[str, bytes] = {}
    dynamic = create_vhd(directory, "dynamic.vhd", "24M")
    qemu_io(dynamic, "vpc", "write -P 1 0 4k", f"write -P 2 {BLOCK - 512} 1k", f"write -P 3 {22 * MiB} 4k")
    seeds["dynamic"] = dynamic.read_bytes()
    fixed = create_vhd(directory, "fixed.vhd", "3M", "subformat=fixed")
    qemu_io(fixed, "vpc", "write -P 5 0 64k")
    seeds["fixed"] = fixed.read_bytes()
    child = create_vhd(directory, "child.vhd", "24M")
    make_differencing(child, "base.vhd", [(b"W2ru", "base.vhd"), (b"MacX", "file:///base.vhd")])
    seeds["differencing"] = child.read_bytes()
    return seeds


FOOTER_FIELDS = [(8, 4), (16, 8), (28, 4), (40, 8), (48, 8), (56, 2), (58, 1), (59, 1), (60, 4), (64, 4)]
HEADER_FIELDS = [
    (16, 8),
    (24, 4),
    (28, 4),
    (32, 4),
    (36, 4),
    *[(576 + 24 * i + f, w) for i in (0, 1) for f, w in ((0, 4), (8, 4), (16, 8))],
]
INTERESTING = [0, 1, 2, 3, 4, 511, 512, 513, 1536, 2**20, 2**21, 2**31, 2**32 - 1, 2**63, 2**64 - 1]


def _set(data: bytearray, offset: int, width: int, value: int) -> None:
    if offset >= 0 and offset + width <= len(data):
        data[offset : offset + width] = (value % (1 << (8 * width))).to_bytes(width, "big")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(["dynamic", "fixed", "differencing"]),
    footer=st.lists(
        st.tuples(st.sampled_from(FOOTER_FIELDS), st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1)),
        max_size=3,
    ),
    header=st.lists(
        st.tuples(st.sampled_from(HEADER_FIELDS), st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1)),
        max_size=3,
    ),
    bat=st.lists(
        st.tuples(
            st.integers(0, 15), st.sampled_from([0, 3, 4, 0xFFFFFFFF, 0xFFFFFFFE]) | st.integers(0, 2**32 - 1)
        ),
        max_size=3,
    ),
    fix_checksums=st.booleans(),
    anywhere=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=3),
    reads=st.lists(st.tuples(st.integers(0, 32 * MiB), st.integers(1, 3 * MiB)), max_size=3),
)
def test_mutated_real_images_raise_only_imagewright_errors(
    seed_images: dict[str, bytes],
    *,
    seed: str,
    footer: list[tuple[tuple[int, int], int]],
    header: list[tuple[tuple[int, int], int]],
    bat: list[tuple[int, int]],
    fix_checksums: bool,
    anywhere: list[tuple[float, int]],
    reads: list[tuple[int, int]],
) -> None:
    data = bytearray(seed_images[seed])
    footers = [len(data) - 512] + ([0] if seed != "fixed" else [])
    for (offset, width), value in footer:
        for base in footers:
            _set(data, base + offset, width, value)
    if seed != "fixed":
        for (offset, width), value in header:
            _set(data, 512 + offset, width, value)
        for index, value in bat:
            _set(data, 1536 + 4 * index, 4, value)
        if fix_checksums:
            _set(data, 512 + 36, 4, hostile_vhd.checksum(data[512:1536], 36))
    if fix_checksums:
        for base in footers:
            _set(data, base + 64, 4, hostile_vhd.checksum(data[base : base + 512], 64))
    for fraction, value in anywhere:
        data[int(fraction * len(data))] = value
    open_mutated(vhd, bytes(data), reads)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=3000), tail=st.booleans())
def test_random_bytes_after_the_cookie_raise_only_imagewright_errors(body: bytes, tail: bool) -> None:
    data = vhd.COOKIE + body
    if tail:
        data = body + vhd.COOKIE + body[:504].ljust(504, b"\0")
    src = BytesSource(data)
    vhd.probe(src, data[:65536])
    open_mutated(vhd, data)
