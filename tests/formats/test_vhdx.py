"""The VHDX reader against qemu-img and qemu-io 7.2."""

from __future__ import annotations

import json
import struct
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures import hostile_vhdx
from tests.fixtures.hostile import CASES, HostileCase
from tests.fixtures.hostile_vhdx import (
    BAT,
    HEADERS,
    METADATA,
    REGION_TABLES,
    VIRTUAL_DISK_SIZE_ITEM,
    create_vhdx,
    make_differencing,
    patch_headers,
    patch_metadata_item,
    patch_region_tables,
    set_bat_entry,
)
from tests.fixtures.tools import run
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
from imagewright.formats import registry, vhdx
from imagewright.formats.base import Limits
from imagewright.formats.crc32c import crc32c_with_field_zeroed
from imagewright.inspection import inspect_image

pytestmark = pytest.mark.integration

GiB = 1024 * MiB


@pytest.mark.parametrize(
    ("size", "options", "block_size"),
    [
        (64 * MiB, ["subformat=dynamic", "block_size=1M"], MiB),
        (64 * MiB, ["subformat=fixed", "block_size=1M", "block_state_zero=off"], MiB),
        (64 * MiB, ["subformat=fixed", "block_size=1M"], MiB),
        (1 * GiB, ["subformat=dynamic", "block_size=8M"], 8 * MiB),
        (1 * GiB, ["subformat=dynamic", "block_size=32M", "log_size=8M"], 32 * MiB),
        (1 * GiB, ["subformat=fixed", "block_size=256M"], 256 * MiB),
        (2 * GiB, ["subformat=dynamic", "block_size=256M", "log_size=4M"], 256 * MiB),
        (127 * MiB, ["subformat=dynamic"], 8 * MiB),
        (10_000_001, ["subformat=dynamic"], 8 * MiB),
        (20 * GiB, ["subformat=dynamic"], 16 * MiB),
        (3 * GiB + 512 * 5, ["subformat=fixed", "block_size=32M"], 32 * MiB),
    ],
)
def test_virtual_size_and_format_match_qemu_img(
    tmp_path: Path, size: int, options: list[str], block_size: int
) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", str(size), *options)
    with opened(vhdx, image) as result:
        assert_matches_qemu_info(result, image, "vhdx")
        assert result.problems == [] and result.references == []
        fixed = "subformat=fixed" in options
        assert result.subformat == ("fixed" if fixed else "dynamic")
        details = result.details
        assert isinstance(details, vhdx.VhdxDetails)
        assert details.block_size == block_size
        assert details.leave_blocks_allocated is fixed
        assert details.creator.startswith("QEMU v7.2")
        assert details.logical_sector_size == 512
        assert details.chunk_ratio == (1 << 23) * 512 // block_size
        assert details.second_region_table_matches
        assert {region.name for region in details.regions} == {"BAT", "metadata"}
        assert details.log_guid == "00000000-0000-0000-0000-000000000000"
        log_size = next((int(o[9:-1]) * MiB for o in options if o.startswith("log_size=")), MiB)
        assert details.log_length == log_size
        states = details.payload_block_states or {}
        assert sum(states.values()) == -(-result.virtual_size // block_size)
        # qemu-img marks even a fixed disk's blocks ZERO unless block_state_zero=off.
        assert set(states) == ({"fully present"} if "block_state_zero=off" in options else {"zero"})
    with FileSource(image) as src:
        assert registry.detect_disk_format(src, src.pread(0, 65536)).name == "vhdx"


@pytest.mark.parametrize(
    ("subformat", "block_size", "size"),
    [
        ("dynamic", MiB, 64 * MiB),
        ("dynamic", 8 * MiB, 96 * MiB + 4096),
        ("fixed", MiB, 40 * MiB),
        ("fixed,block_state_zero=off", 2 * MiB, 40 * MiB),
    ],
)
def test_guest_view_reads_exactly_what_qemu_reads(
    tmp_path: Path, subformat: str, block_size: int, size: int
) -> None:
    image = create_vhdx(
        tmp_path, "disk.vhdx", str(size), f"subformat={subformat}", f"block_size={block_size}"
    )
    qemu_io(
        image,
        "vhdx",
        *pattern_commands(block_size, size - size % block_size),
        f"write -P 0x77 {size - 1000} 1000",
        f"write -P 0x88 {block_size - 512} 1024",
    )
    raw = raw_copy(image, "vhdx", tmp_path / "disk.raw")
    with opened(vhdx, image) as result:
        assert_matches_qemu_info(result, image, "vhdx")
        assert result.problems == []
        assert result.guest is not None
        ranges = [*pattern_ranges(block_size, size - size % block_size), (size - 4096, 4096)]
        assert_guest_matches_raw(result.guest, raw, ranges)
        assert_guest_equals_raw_fully(result.guest, raw)
        assert isinstance(result.details, vhdx.VhdxDetails)
        assert (result.details.payload_block_states or {}).get("fully present", 0) >= 5


def test_zero_and_unmapped_states_read_as_zeros_like_qemu(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "16M", "block_size=1M", "block_state_zero=off")
    qemu_io(image, "vhdx", "write -P 0x42 0 4M")
    # Blocks 0..3 are fully present; turn 1 into ZERO, 2 into UNMAPPED and 3 into the draft UNMAPPED.
    for index, state in ((1, 2), (2, 3), (3, 5)):
        data = image.read_bytes()
        entry = struct.unpack_from("<Q", data, BAT + 8 * index)[0]
        set_bat_entry(image, index, (entry & ~7) | state)
    raw = raw_copy(image, "vhdx", tmp_path / "disk.raw")
    with opened(vhdx, image) as result:
        assert result.guest is not None
        assert_guest_equals_raw_fully(result.guest, raw)
        assert result.guest.pread(0, 4) == b"\x42" * 4
        assert result.guest.pread(MiB, 3 * MiB) == bytes(3 * MiB)


def test_invalid_and_partially_present_states_are_problems(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "16M", "block_size=1M")
    set_bat_entry(image, 0, 4)
    with opened(vhdx, image) as result:
        assert_refused_with(result, "invalid payload block state 4")
        assert result.guest is not None
        with pytest.raises(ImageFormatError, match="unreadable state 4"):
            result.guest.pread(0, 512)
    set_bat_entry(image, 0, (8 << 20) | 7)
    with opened(vhdx, image) as result:
        assert_refused_with(result, "only a differencing disk may use")


def test_bat_entry_inside_the_metadata_region_is_a_problem(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "16M", "block_size=1M")
    set_bat_entry(image, 0, METADATA | 6)
    with opened(vhdx, image) as result:
        assert_refused_with(result, "inside the metadata region")


def test_differencing_disk_names_its_parent_and_offers_no_guest(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "child.vhdx", "64M")
    pairs = [
        ("parent_linkage", "{11111111-2222-3333-4444-555555555555}"),
        ("relative_path", "base.vhdx"),
        ("volume_path", "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\vms\\base.vhdx"),
        ("absolute_win32_path", "\\\\?\\C:\\vms\\base.vhdx"),
    ]
    make_differencing(image, pairs)
    with opened(vhdx, image) as result:
        assert result.subformat == "differencing"
        assert result.guest is None
        details = result.details
        assert isinstance(details, vhdx.VhdxDetails)
        assert details.has_parent
        assert details.parent_locator is not None
        assert details.parent_locator.locator_type == "b04aefb7-d19e-4a81-b789-25b8e9445913"
        assert list(details.parent_locator.entries) == pairs
        assert [(ref.kind, ref.target) for ref in result.references] == [("parent", "base.vhdx")]
        assert "parent_linkage {11111111-2222-3333-4444-555555555555}" in result.references[0].detail
        # A differencing disk has one sector bitmap entry per chunk in its BAT.
        assert details.bat_entries == details.chunk_ratio + 1
        assert_refused_with(result, "names a parent image 'base.vhdx'")
    # QEMU cannot open differencing VHDX files at all.
    assert run("qemu-img", "info", "-f", "vhdx", image, check=False).returncode != 0


def test_parent_flag_without_locator_is_an_error(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "child.vhdx", "64M")
    data = bytearray(image.read_bytes())
    file_parameters = hostile_vhdx.metadata_entries(bytes(data))[0][1]
    struct.pack_into("<I", data, METADATA + file_parameters + 4, 2)
    image.write_bytes(bytes(data))
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="no parent locator"):
        vhdx.open_image(src, Limits())


def test_the_valid_header_with_the_higher_sequence_wins(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "64M")
    with opened(vhdx, image) as result:
        assert isinstance(result.details, vhdx.VhdxDetails)
        assert result.details.current_header == 2  # qemu-img writes header 2 last
    # Damage header 2: header 1 takes over.
    data = bytearray(image.read_bytes())
    data[HEADERS[1] + 100] ^= 0xFF
    image.write_bytes(bytes(data))
    with opened(vhdx, image) as result:
        assert isinstance(result.details, vhdx.VhdxDetails)
        assert result.details.current_header == 1
        assert [h.valid for h in result.details.headers] == [True, False]
        assert result.problems == []
    data[HEADERS[0] + 100] ^= 0xFF
    image.write_bytes(bytes(data))
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="Neither VHDX header is valid"):
        vhdx.open_image(src, Limits())


def test_equal_sequence_numbers_with_different_headers_are_an_error(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "64M")
    data = bytearray(image.read_bytes())
    struct.pack_into("<Q", data, HEADERS[0] + 8, 7)
    struct.pack_into("<Q", data, HEADERS[1] + 8, 7)
    data[HEADERS[1] + 16] ^= 1  # the file-write GUID of header 2 only
    for base in HEADERS:
        struct.pack_into("<I", data, base + 4, crc32c_with_field_zeroed(bytes(data[base : base + 4096]), 4))
    image.write_bytes(bytes(data))
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="same sequence number"):
        vhdx.open_image(src, Limits())


def test_second_region_table_that_differs_is_a_problem(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "64M")
    unknown = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef").bytes_le + struct.pack(
        "<QII", 6 * MiB, MiB, 0
    )
    patch_region_tables(image, entry_count=3, entry=(2, unknown), tables=(1,))
    with opened(vhdx, image) as result:
        assert_refused_with(result, "two VHDX region tables differ")
    data = bytearray(image.read_bytes())
    data[REGION_TABLES[1] + 40] ^= 1
    image.write_bytes(bytes(data))
    with opened(vhdx, image) as result:
        assert_refused_with(result, "second VHDX region table is unusable")


def test_unknown_required_region_and_item_are_problems(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "64M")
    unknown = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
    patch_region_tables(
        image, entry_count=3, entry=(2, unknown.bytes_le + struct.pack("<QII", 6 * MiB, MiB, 1))
    )
    with opened(vhdx, image) as result:
        assert_refused_with(result, f"requires region {unknown}")
    image = create_vhdx(tmp_path, "disk2.vhdx", "64M")
    data = bytearray(image.read_bytes())
    count = struct.unpack_from("<H", data, METADATA + 10)[0]
    entry = unknown.bytes_le + struct.pack("<IIII", 2 * 65536, 8, 4, 0)
    data[METADATA + 32 + 32 * count : METADATA + 64 + 32 * count] = entry
    struct.pack_into("<H", data, METADATA + 10, count + 1)
    image.write_bytes(bytes(data))
    with opened(vhdx, image) as result:
        assert_refused_with(result, f"requires metadata item {unknown}")


def test_overlapping_regions_are_a_problem(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "64M")
    # The BAT region grows to 2 MiB and so swallows the metadata region at 3 MiB.
    patch_region_tables(image, entry=(0, vhdx.REGION_BAT.bytes_le + struct.pack("<QII", 2 * MiB, 2 * MiB, 0)))
    with opened(vhdx, image) as result:
        assert_refused_with(result, "metadata region (bytes 3145728..4194304) overlaps the BAT region")


def test_block_size_and_sector_size_are_checked(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "64M")
    file_parameters = hostile_vhdx.metadata_entries(image.read_bytes())[0][0]
    patch_metadata_item(image, file_parameters, struct.pack("<I", 3 * MiB))
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="block size"):
        vhdx.open_image(src, Limits())
    image = create_vhdx(tmp_path, "disk2.vhdx", "64M")
    patch_metadata_item(image, uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F"), struct.pack("<I", 1024))
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="logical sector size 1024"):
        vhdx.open_image(src, Limits())


def test_4096_byte_logical_sectors_change_the_chunk_ratio(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "64M", "block_size=1M")
    patch_metadata_item(image, uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F"), struct.pack("<I", 4096))
    with opened(vhdx, image) as result:
        assert isinstance(result.details, vhdx.VhdxDetails)
        assert result.details.chunk_ratio == (1 << 23) * 4096 // MiB
        assert result.virtual_size == 64 * MiB
        assert result.problems == []


def test_log_offset_and_version_are_checked(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "64M")
    patch_headers(image, log_offset=4096)
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="log offset"):
        vhdx.open_image(src, Limits())
    image = create_vhdx(tmp_path, "disk2.vhdx", "64M")
    patch_headers(image, log_version=1)
    with FileSource(image) as src, pytest.raises(ImageFormatError, match="log version"):
        vhdx.open_image(src, Limits())


def test_log_guid_needs_replay_but_an_empty_log_length_does_not(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "64M")
    patch_headers(image, log_guid=uuid.uuid4())
    with opened(vhdx, image) as result:
        assert_refused_with(result, "must be replayed")
    patch_headers(image, log_length=0)
    with opened(vhdx, image) as result:
        assert result.problems == []


def test_virtual_size_that_is_not_a_sector_multiple(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "disk.vhdx", "64M")
    patch_metadata_item(image, VIRTUAL_DISK_SIZE_ITEM, struct.pack("<Q", 64 * MiB - 100))
    with opened(vhdx, image) as result:
        assert result.virtual_size == 64 * MiB - 512
        assert_refused_with(result, "not a multiple of the 512-byte logical sector")


def test_opening_a_20_gib_image_reads_only_headers(tmp_path: Path) -> None:
    image = create_vhdx(tmp_path, "big.vhdx", "20G", "block_size=1M")
    qemu_io(image, "vhdx", "write -P 7 0 1M", f"write -P 9 {20 * GiB - MiB} 1M")
    with FileSource(image) as src:
        result = vhdx.open_image(src, Limits())
        # File id, two headers, two region tables, the metadata table and items, a 160 KiB BAT.
        # (What it costs is counted in bytes read, not in seconds: no timed assertions.)
        assert src.bytes_read < 512 * 1024
        assert result.guest is not None
        assert result.guest.pread(20 * GiB - 1, 1) == b"\x09"
        assert result.guest.pread(10 * GiB, 4096) == bytes(4096)


@pytest.mark.parametrize("options", [["subformat=dynamic"], ["subformat=fixed", "block_state_zero=off"]])
def test_a_four_million_entry_bat_is_checked_in_one_read_of_it(tmp_path: Path, options: list[str]) -> None:
    image = create_vhdx(tmp_path, "huge.vhdx", "3900G", "block_size=1M", *options)
    with FileSource(image) as src:
        result = vhdx.open_image(src, Limits())
        assert isinstance(result.details, vhdx.VhdxDetails)
        # Every BAT byte is read once (in pages), plus the headers and metadata: the cost is
        # bounded by the table, not by what the guest holds (no timed assertion: load decides time).
        assert src.bytes_read <= result.details.bat_entries * 8 + 1024 * 1024
        assert result.problems == []
        assert isinstance(result.details, vhdx.VhdxDetails)
        assert sum((result.details.payload_block_states or {}).values()) == 3900 * 1024
    # A bad entry at the very end of such a BAT is still found and named.
    entries = result.details.bat_entries
    set_bat_entry(image, entries - 1, (1 << 50) | 6)
    with opened(vhdx, image) as result:
        assert_refused_with(result, f"VHDX BAT entry {entries - 1} points to offset {1 << 50}")


@pytest.mark.parametrize(
    "case",
    [case for case in CASES if case.build.__module__ == hostile_vhdx.__name__],
    ids=lambda case: case.name,
)
def test_hostile_cases_are_refused_by_the_reader(tmp_path: Path, case: HostileCase) -> None:
    path = case.build(tmp_path)
    with FileSource(path) as src:
        assert vhdx.probe(src, src.pread(0, 65536))
        try:
            result = vhdx.open_image(src, Limits())
        except ImageFormatError as err:
            assert case.reason.lower() in str(err).lower()
        else:
            assert_refused_with(result, case.reason)


# -- property-based: mutated real images ------------------------------------------------------
@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("vhdx-seeds")
    seeds: dict[str, bytes] = {}
    dynamic = create_vhdx(directory, "dynamic.vhdx", "16M", "block_size=1M")
    qemu_io(dynamic, "vhdx", "write -P 1 0 4k", f"write -P 2 {MiB - 512} 1k", f"write -P 3 {15 * MiB} 4k")
    seeds["dynamic"] = dynamic.read_bytes()
    child = create_vhdx(directory, "child.vhdx", "16M", "block_size=1M")
    make_differencing(child, [("parent_linkage", "{x}"), ("relative_path", "base.vhdx")])
    seeds["differencing"] = child.read_bytes()
    return seeds


HEADER_FIELDS = [(8, 8), (48, 16), (64, 2), (66, 2), (68, 4), (72, 8)]
REGION_FIELDS = [(8, 4), (16, 16), (32, 8), (40, 4), (44, 4), (48, 16), (64, 8), (72, 4), (76, 4)]
METADATA_FIELDS = [
    (10, 2),
    *[(32 + 32 * i + f, w) for i in range(6) for f, w in ((0, 16), (16, 4), (20, 4), (24, 4))],
]
INTERESTING = [
    0,
    1,
    2,
    6,
    7,
    2047,
    2048,
    65536,
    2**20,
    2**20 + 6,
    2**21,
    2**28,
    2**31,
    2**32 - 1,
    2**63,
    2**64 - 1,
]


def _set(data: bytearray, offset: int, width: int, value: int) -> None:
    if offset >= 0 and offset + width <= len(data):
        data[offset : offset + width] = (value % (1 << (8 * width))).to_bytes(width, "little")


def _fix_crcs(data: bytearray) -> None:
    for base, size in (
        (HEADERS[0], 4096),
        (HEADERS[1], 4096),
        (REGION_TABLES[0], 65536),
        (REGION_TABLES[1], 65536),
    ):
        _set(data, base + 4, 4, crc32c_with_field_zeroed(bytes(data[base : base + size]), 4))


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(["dynamic", "differencing"]),
    header=st.lists(
        st.tuples(st.sampled_from(HEADER_FIELDS), st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1)),
        max_size=2,
    ),
    region=st.lists(
        st.tuples(st.sampled_from(REGION_FIELDS), st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1)),
        max_size=2,
    ),
    metadata=st.lists(
        st.tuples(st.sampled_from(METADATA_FIELDS), st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1)),
        max_size=3,
    ),
    items=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
    bat=st.lists(
        st.tuples(st.integers(0, 17), st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1)), max_size=3
    ),
    fix_crcs=st.booleans(),
    anywhere=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=3),
    reads=st.lists(st.tuples(st.integers(0, 20 * MiB), st.integers(1, 3 * MiB)), max_size=3),
)
def test_mutated_real_images_raise_only_imagewright_errors(
    seed_images: dict[str, bytes],
    *,
    seed: str,
    header: list[tuple[tuple[int, int], int]],
    region: list[tuple[tuple[int, int], int]],
    metadata: list[tuple[tuple[int, int], int]],
    items: list[tuple[int, int]],
    bat: list[tuple[int, int]],
    fix_crcs: bool,
    anywhere: list[tuple[float, int]],
    reads: list[tuple[int, int]],
) -> None:
    data = bytearray(seed_images[seed])
    for (offset, width), value in header:
        _set(data, HEADERS[value % 2] + offset, width, value)
    for (offset, width), value in region:
        _set(data, REGION_TABLES[value % 2] + offset, width, value)
    for (offset, width), value in metadata:
        _set(data, METADATA + offset, width, value)
    for offset, value in items:
        _set(data, METADATA + 65536 + offset, 1, value)
    for index, value in bat:
        _set(data, BAT + 8 * index, 8, value)
    if fix_crcs:
        _fix_crcs(data)
    for fraction, value in anywhere:
        data[int(fraction * len(data))] = value
    open_mutated(vhdx, bytes(data), reads)


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=512),
    headers=st.lists(st.binary(min_size=80, max_size=80), min_size=2, max_size=2),
    table=st.binary(max_size=256),
)
def test_random_structures_with_valid_crcs_raise_only_imagewright_errors(
    body: bytes, headers: list[bytes], table: bytes
) -> None:
    data = bytearray(3 * MiB)
    data[:8] = vhdx.SIGNATURE
    data[8 : 8 + len(body)] = body
    for base, raw in zip(HEADERS, headers, strict=True):
        data[base : base + 80] = b"head" + raw[4:]
    for base in REGION_TABLES:
        data[base : base + 4] = b"regi"
        data[base + 8 : base + 8 + len(table)] = table
    _fix_crcs(data)
    open_mutated(vhdx, bytes(data))


# --- BATs larger than any table read whole ---------------------------------------------------

TiB = 1024 * GiB
#: With 1 MiB blocks and 512-byte sectors a chunk (4096 payload blocks, then a bitmap entry) is 4 GiB.
CHUNK = 4 * GiB


def _windows(size: int) -> list[tuple[int, int, int]]:
    """(guest offset, length, pattern) written with qemu-io: the first block, two blocks across
    the first chunk boundary (where a sector bitmap entry sits between them in the BAT), the
    middle of the disk and its very last block."""
    return [
        (0, MiB, 0x5A),
        (CHUNK - MiB // 2, MiB, 0xA5),
        (size // 2 + 4096, 64 * 1024, 0x3C),
        (size - MiB, MiB, 0x11),
    ]


@pytest.mark.parametrize("size", [16 * TiB, 64 * TiB], ids=["16T", "64T"])
def test_a_bat_of_hundreds_of_mib_is_read_in_pages_not_refused(tmp_path: Path, size: int) -> None:
    image = create_vhdx(tmp_path, "big.vhdx", str(size), "block_size=1M", "subformat=dynamic")
    windows = _windows(size)
    qemu_io(image, "vhdx", *(f"write -P {pattern} {offset} {length}" for offset, length, pattern in windows))
    run("fallocate", "--dig-holes", image)  # qemu-img writes the 128/512 MiB BAT out as zeros
    blocks = size // MiB
    bat_bytes = (blocks + (blocks - 1) // 4096) * 8  # a bitmap entry after every 4096 blocks but the last
    assert bat_bytes > Limits().max_table_bytes  # what used to be refused
    limits = Limits(max_virtual_size=64 * TiB)
    tracemalloc.start()
    try:
        with opened(vhdx, image, limits) as result:
            assert result.problems == []
            assert isinstance(result.details, vhdx.VhdxDetails)
            assert result.details.bat_entries * 8 == bat_bytes
            # Blocks 0, 4095, 4096, one in the middle, the last: five present, the rest zero or absent.
            states = result.details.payload_block_states
            assert states["fully present"] == 5 and sum(states.values()) == blocks
            guest = result.guest
            assert guest is not None
            for offset, length, _ in windows:
                # qemu's own reading of the window: its raw driver over a byte range of the vhdx.
                start, end = offset // MiB * MiB, -(-(offset + length) // MiB) * MiB
                theirs = tmp_path / f"window-{start}.raw"
                window = f"driver=raw,offset={start},size={end - start},file.driver=vhdx"
                window += f",file.file.filename={image}"
                run("qemu-img", "convert", "-O", "raw", "--image-opts", window, theirs)
                assert guest.pread(start, end - start) == theirs.read_bytes()
            assert guest.pread(size // 4, 4096) == bytes(4096)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The BAT is 128 or 512 MiB; opening, checking and reading kept a few pages of it.
    assert peak < 24 * MiB, peak
    report = inspect_image(image, limits=limits)  # the whole inspection: format, table, verdict
    assert report.format == "vhdx" and report.virtual_size == size
    assert report.safe, report.verdict.reasons


def test_sector_bitmap_entries_are_told_apart_in_every_bat_page(tmp_path: Path) -> None:
    """Pages of the BAT do not start on chunk boundaries: the bitmap entries' places in a later
    page follow from the entry's index in the whole table, in the quick check and in the walk."""
    fixed = create_vhdx(
        tmp_path, "fixed.vhdx", "3900G", "block_size=1M", "subformat=fixed", "block_state_zero=off"
    )
    with opened(vhdx, fixed) as result:  # every payload entry present, every bitmap entry not
        assert isinstance(result.details, vhdx.VhdxDetails)
        assert result.details.payload_block_states == {"fully present": 3900 * 1024}
    fixed.unlink()
    image = create_vhdx(tmp_path, "paged.vhdx", "3900G", "block_size=1M", "subformat=dynamic")
    period = 4096 + 1
    later = 4096 + 200 * period  # a sector bitmap entry in the BAT's seventh page
    assert later // vhdx.BAT_PAGE_ENTRIES == 6 and later % vhdx.BAT_PAGE_ENTRIES % period != 4096
    set_bat_entry(image, later, 2 * MiB | 6)  # a present sector bitmap: not a payload block
    with opened(vhdx, image) as result:
        assert result.problems == []
        assert isinstance(result.details, vhdx.VhdxDetails)
        assert "fully present" not in result.details.payload_block_states
        assert sum(result.details.payload_block_states.values()) == 3900 * 1024
    bad = later + 40 * period  # another bitmap entry, a page on, in a state bitmaps cannot have
    assert bad // vhdx.BAT_PAGE_ENTRIES == 7
    set_bat_entry(image, bad, 3)
    set_bat_entry(image, bad - 1, 1 << 50 | 6)  # and the payload entry before it, far beyond the file
    with opened(vhdx, image) as result:
        assert_refused_with(result, f"VHDX sector bitmap entry {bad} has the invalid state 3")
        assert_refused_with(result, f"VHDX BAT entry {bad - 1} points to offset {1 << 50}")


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_convert_reads_a_vhdx_whose_bat_is_over_the_table_limit_and_qemu_agrees(
    tmp_path: Path, run_cli: Callable[..., Result]
) -> None:
    """End to end: ``imagewright convert`` (inspect, then qemu-img) to qcow2, and ``qemu-img
    compare`` on the result. 5 TiB is the smallest size here whose BAT (40 MiB) was refused;
    QEMU 7.2's vhdx driver reports no allocation, so qemu-img's convert reads every byte of it:
    about 5 minutes on 2 busy cores, hence ``long``."""
    size = 5 * TiB
    image = create_vhdx(tmp_path, "five.vhdx", str(size), "block_size=1M", "subformat=dynamic")
    qemu_io(
        image,
        "vhdx",
        *(f"write -P {pattern} {offset} {length}" for offset, length, pattern in _windows(size)),
    )
    run("fallocate", "--dig-holes", image)
    out = tmp_path / "five.qcow2"
    result = run_cli(["convert", "--json", image, "-O", "qcow2", out])
    assert result.exit_code == 0, result.stderr
    assert run("qemu-img", "check", "-f", "qcow2", out).returncode == 0
    # Not ``qemu-img compare``: QEMU 7.2's vhdx driver reports no allocation, so a compare reads
    # all 5 TiB again (it had not ended after 26 minutes on a busy machine). The qcow2's own
    # map says where data is — only in the written windows — and qemu-io reads every window
    # back with its pattern, and the zeros on either side of each.
    mapped = json.loads(run("qemu-img", "map", "--output=json", "-f", "qcow2", out).stdout)
    data = [(extent["start"], extent["length"]) for extent in mapped if extent["data"]]
    windows = _windows(size)
    assert sum(length for _, length in data) >= sum(length for _, length, _ in windows)
    for start, length in data:
        assert any(start < offset + window and offset < start + length for offset, window, _ in windows), (
            f"data at {start}+{length} outside every written window"
        )
    reads = [f"read -P {pattern} {offset} {length}" for offset, length, pattern in windows]
    reads += [f"read -P 0 {offset + length} 4096" for offset, length, _ in windows if offset + length < size]
    checked = run("qemu-io", "-f", "qcow2", *(arg for read in reads for arg in ("-c", read)), out)
    assert b"Pattern verification failed" not in checked.stdout, checked.stdout.decode()
    assert checked.stdout.count(b"read ") == len(reads), checked.stdout.decode()
