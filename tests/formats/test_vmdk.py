"""The VMDK reader against qemu-img 7.2: sparse extents, descriptors, deltas, every guest byte."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures import hostile_vmdk
from tests.fixtures.hostile import CASES, HostileCase
from tests.fixtures.tools import qemu_img, qemu_img_info, write_at
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
from tests.formats.vmdk_stream_writer import write_stream_optimized

from imagewright.binary import BytesSource, FileSource
from imagewright.errors import ImageFormatError
from imagewright.formats import vmdk
from imagewright.formats.base import Limits
from imagewright.formats.probes import vmdk_descriptor as probe_descriptor
from imagewright.formats.safety import judge
from imagewright.formats.vmdk_descriptor import parse_descriptor

pytestmark = pytest.mark.integration

KiB = 1024
GRAIN = 64 * KiB


def create(path: Path, size: int, *options: str) -> Path:
    args = ["create", "-q", "-f", "vmdk"]
    if options:
        args += ["-o", ",".join(options)]
    qemu_img(*args, str(path), str(size))
    return path


def guest_source(path: Path, size: int) -> Path:
    """A raw disk with data at grain edges, noise, text, zeros and the last sector."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset, block in [
            (0, b"vmdk first grain " * 4000),
            (GRAIN * 3 - 19, os.urandom(2 * GRAIN + 100)),
            (size // 2, b"\x00\x01" * 9000),
            (size - 512, b"L" * 512),
        ]:
            f.seek(offset)
            f.write(block)
    return path


@pytest.mark.parametrize("options", [(), ("zeroed_grain=on",), ("adapter_type=lsilogic", "hwversion=7")])
def test_monolithic_sparse_reads_exactly_what_qemu_reads(tmp_path: Path, options: tuple[str, ...]) -> None:
    size = 64 * MiB
    image = create(tmp_path / "disk.vmdk", size, *options)
    qemu_io(image, "vmdk", *pattern_commands(GRAIN, size))
    raw = raw_copy(image, "vmdk", tmp_path / "disk.raw")
    with opened(vmdk, image) as result:
        info = assert_matches_qemu_info(result, image, "vmdk")
        details = result.details
        assert isinstance(details, vmdk.VmdkDetails)
        assert details.kind == "sparse"
        assert result.subformat == info["format-specific"]["data"]["create-type"] == "monolithicSparse"  # type: ignore[index]
        header = details.sparse_header
        assert header is not None and header.grain_sectors == 128 and header.num_gtes_per_gt == 512
        assert ("zeroed-grain entries" in header.flag_names) == ("zeroed_grain=on" in options)
        descriptor = details.descriptor
        assert descriptor is not None
        assert int(descriptor.cid or "", 16) == info["format-specific"]["data"]["cid"]  # type: ignore[index]
        assert [(e.access, e.sectors, e.type, e.filename) for e in descriptor.extents] == [
            ("RW", size // 512, "SPARSE", "disk.vmdk")
        ]
        if "adapter_type=lsilogic" in options:
            assert (descriptor.adapter_type, descriptor.virtual_hw_version) == ("lsilogic", "7")
            assert descriptor.geometry_heads == "255"
        else:
            assert (descriptor.adapter_type, descriptor.virtual_hw_version) == ("ide", "4")
        assert result.problems == [] and result.references == []
        assert judge(result, Limits()).safe
        assert result.guest is not None
        assert_guest_matches_raw(result.guest, raw, pattern_ranges(GRAIN, size))
        assert_guest_equals_raw_fully(result.guest, raw)


@pytest.mark.parametrize("size", [32 * MiB, 32 * MiB + 3 * 512])
def test_qemu_stream_optimized_reads_exactly_what_qemu_reads(tmp_path: Path, size: int) -> None:
    source = guest_source(tmp_path / "source.raw", size)
    image = tmp_path / "stream.vmdk"
    qemu_img(
        "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(source), str(image)
    )
    raw = raw_copy(image, "vmdk", tmp_path / "back.raw")
    assert raw.read_bytes() == source.read_bytes()
    with opened(vmdk, image) as result:
        assert_matches_qemu_info(result, image, "vmdk")
        assert result.subformat == "streamOptimized"
        header = result.details.sparse_header
        assert header.compress_algorithm == 1 and not header.gd_at_end
        assert {"compressed grains", "markers"} <= set(header.flag_names)
        assert result.problems == [] and result.references == []
        assert result.guest is not None
        assert_guest_equals_raw_fully(result.guest, raw, chunk=MiB + 512)
        assert_guest_matches_raw(result.guest, raw, [(GRAIN * 3 - 30, GRAIN * 2), (size - 700, 700)])


@pytest.mark.parametrize("size", [16 * MiB, 16 * MiB + 5 * 512])
def test_vmware_stream_optimized_with_footer_reads_like_qemu(tmp_path: Path, size: int) -> None:
    source = guest_source(tmp_path / "source.raw", size)
    image = write_stream_optimized(tmp_path / "vmware.vmdk", source.read_bytes())
    raw = raw_copy(image, "vmdk", tmp_path / "back.raw")
    assert raw.read_bytes() == source.read_bytes()
    with opened(vmdk, image) as result:
        assert_matches_qemu_info(result, image, "vmdk")
        header = result.details.sparse_header
        assert header.gd_at_end and header.footer_used and header.gd_offset_sectors != vmdk.GD_AT_END
        descriptor = result.details.descriptor
        assert descriptor.extents[0].access == "RDONLY"
        assert descriptor.uuid == "60 00 C2 9a 5a 2d 59 2d-56 9a 3d a0 96 d8 4f 64"
        assert result.problems == [] and result.references == []
        assert result.guest is not None
        assert_guest_equals_raw_fully(result.guest, raw, chunk=3 * MiB)


def test_stream_grain_marker_for_the_wrong_sector_is_a_format_error(tmp_path: Path) -> None:
    image = write_stream_optimized(tmp_path / "vmware.vmdk", b"data" * (256 * KiB))
    with opened(vmdk, image) as result:
        assert result.guest is not None
        first_grain = result.details.sparse_header.overhead_sectors * 512
    write_at(image, first_grain, struct.pack("<Q", 128))
    with opened(vmdk, image) as result:
        assert result.guest is not None
        with pytest.raises(ImageFormatError, match="marked for sector 128"):
            result.guest.pread(0, 512)


def test_zeroed_grains_read_as_zeros(tmp_path: Path) -> None:
    image = create(tmp_path / "zero.vmdk", 8 * MiB, "zeroed_grain=on")
    qemu_io(image, "vmdk", "write -P 0x77 0 1M", "write -z 64k 128k")
    raw = raw_copy(image, "vmdk", tmp_path / "zero.raw")
    with opened(vmdk, image) as result:
        assert result.guest is not None
        assert result.guest.pread(64 * KiB, 128 * KiB) == bytes(128 * KiB)
        assert_guest_equals_raw_fully(result.guest, raw)


@pytest.mark.parametrize(
    ("subformat", "suffixes", "kind"),
    [
        ("monolithicFlat", ["-flat.vmdk"], "FLAT"),
        ("twoGbMaxExtentFlat", ["-f001.vmdk", "-f002.vmdk"], "FLAT"),
        ("twoGbMaxExtentSparse", ["-s001.vmdk", "-s002.vmdk"], "SPARSE"),
    ],
)
def test_descriptor_files_name_their_extents(
    tmp_path: Path, subformat: str, suffixes: list[str], kind: str
) -> None:
    image = create(tmp_path / "split.vmdk", 3 * 1024 * MiB, f"subformat={subformat}")
    with opened(vmdk, image) as result:
        info = assert_matches_qemu_info(result, image, "vmdk")
        assert result.subformat == subformat == info["format-specific"]["data"]["create-type"]  # type: ignore[index]
        assert result.details.kind == "descriptor"
        extents = result.details.descriptor.extents
        assert [e.filename for e in extents] == [f"split{suffix}" for suffix in suffixes]
        assert {e.type for e in extents} == {kind}
        assert sum(e.sectors for e in extents) * 512 == result.virtual_size
        assert [(ref.kind, ref.target) for ref in result.references] == [
            ("extent", f"split{suffix}") for suffix in suffixes
        ]
        assert all(ref.detail.startswith("another file next to the image") for ref in result.references)
        assert result.guest is None
        assert_refused_with(result, "an extent in another file 'split")


def test_split_sparse_extent_alone_is_refused_but_readable(tmp_path: Path) -> None:
    create(tmp_path / "split.vmdk", 3 * 1024 * MiB, "subformat=twoGbMaxExtentSparse")
    with opened(vmdk, tmp_path / "split-s002.vmdk") as result:
        assert result.virtual_size == 1024 * MiB
        assert_refused_with(result, "one extent of a split VMDK")
        assert result.guest is not None and result.guest.pread(0, 512) == bytes(512)


def test_virtual_size_of_a_descriptor_counts_what_qemu_counts(tmp_path: Path) -> None:
    """RW extents of the types QEMU opens count; ZERO and RDONLY lines do not (for QEMU)."""
    for name, size in [("a-flat.vmdk", MiB), ("b-flat.vmdk", 2 * MiB)]:
        (tmp_path / name).write_bytes(bytes(size))
    descriptor = hostile_vmdk.descriptor_text(
        [
            'RW 2048 FLAT "a-flat.vmdk" 0',
            "RW 1024 ZERO",
            'RW 4096 FLAT "b-flat.vmdk" 0',
            'RDONLY 2048 FLAT "a-flat.vmdk" 0',
        ],
        extra='encoding="UTF-8"\nisNativeSnapshot="no"\r\n',
    ).replace("\n", "\r\n")
    image = tmp_path / "mixed.vmdk"
    image.write_text(descriptor, newline="")
    with opened(vmdk, image) as result:
        assert_matches_qemu_info(result, image, "vmdk")
        assert result.virtual_size == 6144 * 512
        parsed = result.details.descriptor
        assert (parsed.encoding, parsed.is_native_snapshot, parsed.cid, parsed.parent_cid) == (
            "UTF-8", "no", "12345678", "ffffffff",
        )  # fmt: skip
        assert [e.type for e in parsed.extents] == ["FLAT", "ZERO", "FLAT", "FLAT"]
        assert [e.offset for e in parsed.extents] == [0, None, 0, 0]
        assert [ref.target for ref in result.references] == ["a-flat.vmdk", "b-flat.vmdk", "a-flat.vmdk"]


def test_delta_disk_names_its_parent_like_qemu(tmp_path: Path) -> None:
    base = create(tmp_path / "base.vmdk", 64 * MiB)
    delta = tmp_path / "delta.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-b", base.name, "-F", "vmdk", str(delta))
    with opened(vmdk, delta) as result:
        info = assert_matches_qemu_info(result, delta, "vmdk")
        assert result.backing_file == "base.vmdk" and result.backing_format == "vmdk"
        descriptor = result.details.descriptor
        assert int(descriptor.parent_cid, 16) == info["format-specific"]["data"]["parent-cid"]  # type: ignore[index]
        assert [(ref.kind, ref.target) for ref in result.references] == [("parent", "base.vmdk")]
        assert result.guest is None
        assert_refused_with(result, "a parent image 'base.vmdk'")


def test_cowd_delta_is_parsed_and_refused(tmp_path: Path) -> None:
    image = hostile_vmdk.cowd_delta(tmp_path / "disk-delta.vmdk", capacity_sectors=20480, parent="disk.vmdk")
    with opened(vmdk, image) as result:
        assert result.virtual_size == 20480 * 512
        header = result.details.cowd_header
        assert (header.version, header.grain_sectors, header.gd_offset_sectors, header.num_gd_entries) == (
            1,
            1,
            4,
            5,
        )
        assert header.parent_file_name == "disk.vmdk"
        assert result.subformat == "vmfsSparse"
        assert result.guest is None
        assert [(ref.kind, ref.target) for ref in result.references] == [("parent", "disk.vmdk")]
        assert result.problems == []


@pytest.mark.parametrize(
    ("text", "qemu_format"),
    [
        ("# Disk DescriptorFile\nversion=1\n", "vmdk"),
        ("# comment\n   \nversion=2\r\n", "vmdk"),
        ("\nversion=1\n", "raw"),
        ("# Disk DescriptorFile\nversion=4\n", "raw"),
    ],
)
def test_descriptor_probe_agrees_with_qemu(tmp_path: Path, text: str, qemu_format: str) -> None:
    path = tmp_path / "probe.vmdk"
    (tmp_path / "probe-flat.vmdk").write_bytes(bytes(512))
    body = b'CID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 1 FLAT "probe-flat.vmdk" 0\n'
    path.write_bytes(text.encode() + body + bytes(2048))
    assert qemu_img_info(path)["format"] == qemu_format
    assert vmdk.probe(BytesSource(path.read_bytes()), path.read_bytes()) == (qemu_format == "vmdk")


def test_opening_a_20_gib_image_reads_only_headers(tmp_path: Path) -> None:
    image = create(tmp_path / "big.vmdk", 20 * 1024 * MiB)
    qemu_io(image, "vmdk", "write -P 7 0 1M", f"write -P 9 {20 * 1024 * MiB - MiB} 1M")
    with FileSource(image) as src:
        start = time.perf_counter()
        result = vmdk.open_image(src, Limits())
        elapsed = time.perf_counter() - start
        assert src.bytes_read < 64 * KiB
        assert elapsed < 0.5
        assert result.guest is not None
        assert result.guest.pread(20 * 1024 * MiB - 1, 1) == b"\x09"


@pytest.mark.parametrize(
    "case",
    [case for case in CASES if case.build.__module__ == hostile_vmdk.__name__],
    ids=lambda case: case.name,
)
def test_hostile_cases_are_refused_by_the_reader(tmp_path: Path, case: HostileCase) -> None:
    path = case.build(tmp_path)
    with FileSource(path) as src:
        assert vmdk.probe(src, src.pread(0, 65536))
        assert_refused_with(vmdk.open_image(src, Limits()), case.reason)


# -- property-based --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("vmdk-seeds")
    sparse = create(directory / "sparse.vmdk", 4 * MiB, "zeroed_grain=on")
    qemu_io(sparse, "vmdk", *pattern_commands(GRAIN, 4 * MiB))
    source = guest_source(directory / "source.raw", 4 * MiB)
    stream = directory / "stream.vmdk"
    qemu_img(
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        str(source),
        str(stream),
    )
    vmware = write_stream_optimized(directory / "vmware.vmdk", source.read_bytes())
    cowd = hostile_vmdk.cowd_delta(directory / "delta.vmdk")
    return {
        "sparse": sparse.read_bytes(),
        "stream": stream.read_bytes(),
        "vmware": vmware.read_bytes(),
        "cowd": cowd.read_bytes(),
    }


#: (offset, width) of every hosted sparse header field.
SPARSE_FIELDS = [(4, 4), (8, 4), (12, 8), (20, 8), (28, 8), (36, 8), (44, 4), (48, 8), (56, 8), (64, 8),
                 (72, 1), (73, 4), (77, 2)]  # fmt: skip
INTERESTING = [0, 1, 2, 3, 4, 7, 8, 16, 20, 21, 128, 511, 512, 513, 4096, 2**20, 2**31, 2**32 - 1, 2**40,
               2**63, 2**64 - 1]  # fmt: skip


def _metadata_offsets(data: bytes) -> list[int]:
    """Grain directory, first grain table and first grain of a sparse seed (or the footer)."""
    if data[:4] != b"KDMV":
        return [2048, 2048 + 512, 0]
    gd = int.from_bytes(data[56:64], "little")
    if gd == vmdk.GD_AT_END:
        gd = int.from_bytes(data[len(data) - 1024 + 56 : len(data) - 1024 + 64], "little")
    gd *= 512
    gt = int.from_bytes(data[gd : gd + 4], "little") * 512 if gd + 4 <= len(data) else 0
    grain = int.from_bytes(data[gt : gt + 4], "little") * 512 if gt + 4 <= len(data) else 0
    return [gd, gt, grain, len(data) - 1536]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(["sparse", "stream", "vmware", "cowd"]),
    fields=st.lists(
        st.tuples(st.sampled_from(SPARSE_FIELDS), st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1)),
        max_size=3,
    ),
    header_edits=st.lists(st.tuples(st.integers(0, 2047), st.integers(0, 255)), max_size=6),
    metadata_edits=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2047), st.integers(0, 255)), max_size=6
    ),
    descriptor_edit=st.none() | st.tuples(st.integers(512, 1024), st.text(max_size=40)),
    reads=st.lists(st.tuples(st.integers(0, 4 * MiB), st.integers(1, 256 * KiB)), max_size=3),
)
def test_mutated_real_images_raise_only_imagewright_errors(
    seed_images: dict[str, bytes],
    *,
    seed: str,
    fields: list[tuple[tuple[int, int], int]],
    header_edits: list[tuple[int, int]],
    metadata_edits: list[tuple[int, int, int]],
    descriptor_edit: tuple[int, str] | None,
    reads: list[tuple[int, int]],
) -> None:
    data = bytearray(seed_images[seed])
    offsets = _metadata_offsets(bytes(data))
    if seed == "cowd":
        fields = []
    for (offset, width), value in fields:
        data[offset : offset + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
    for offset, value in header_edits:
        data[offset] = value
    for which, offset, value in metadata_edits:
        position = offsets[which % len(offsets)] + offset
        if 0 <= position < len(data):
            data[position] = value
    if descriptor_edit is not None:
        position, text = descriptor_edit
        encoded = text.encode()
        data[position : position + len(encoded)] = encoded
    open_mutated(vmdk, bytes(data), reads)


EXTENT_LINE = st.builds(
    "{} {} {} {}".format,
    st.sampled_from(["RW", "RDONLY", "NOACCESS", "rw", "RW\t", "  RW"]),
    st.sampled_from(["0", "1", "2048", "-5", "99999999999999999999", "x"]),
    st.sampled_from(["FLAT", "SPARSE", "ZERO", "VMFS", "VMFSSPARSE", "SESPARSE", "VMFSRDM", "flat", "BOGUS"]),
    st.sampled_from(['"x.vmdk" 0', '"/dev/sda"', '"../up" 12', '"nbd://h/e"', "", "unquoted 0", '"a"b" 1']),
)
HEADER_LINES = ["version=1", "CID=abc", "parentCID=ffffffff", "parentCID=1234", 'createType="vmfs"',
                'parentFileNameHint="/p.vmdk"', "# comment", "", 'ddb.uuid = "1 2"', "=", '"']  # fmt: skip
DESCRIPTOR_LINE = st.one_of(EXTENT_LINE, st.sampled_from(HEADER_LINES), st.text(max_size=60))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(DESCRIPTOR_LINE, max_size=25), line_ending=st.sampled_from(["\n", "\r\n"]))
def test_every_quoted_extent_line_becomes_a_reference(lines: list[str], line_ending: str) -> None:
    text = line_ending.join(["# Disk DescriptorFile", "version=1", *lines]) + line_ending
    result = vmdk.open_image(BytesSource(text.encode()), Limits())
    visible, _, after_nul = text.partition("\0")
    if after_nul.strip("\0"):
        assert "the VMDK descriptor contains a NUL byte followed by more text" in result.problems
    named = [
        line
        for line in visible.split("\n")
        if re.match(r"^\s*(RW|RDONLY|NOACCESS)\s", line, re.IGNORECASE) and '"' in line
    ]
    extent_references = [ref for ref in result.references if ref.kind == "extent"]
    assert len(extent_references) == len(named)
    assert result.guest is None
    visible_lines = visible.split(line_ending)
    if any(line.startswith(("parentFileNameHint", "parentCID=1234")) for line in visible_lines):
        assert any(ref.kind == "parent" for ref in result.references) or any(
            "more than once" in problem for problem in result.problems
        )


@settings(max_examples=200, deadline=None)
@given(magic=st.sampled_from([b"KDMV", b"COWD"]), body=st.binary(max_size=4096))
def test_random_bytes_after_the_magic_raise_only_imagewright_errors(magic: bytes, body: bytes) -> None:
    open_mutated(vmdk, magic + body)


def test_descriptor_line_and_size_bounds() -> None:
    problems: list[str] = []
    parse_descriptor(b"version=1\n" + b"#\n" * 20000, problems)
    assert any("more than the 10000 allowed" in p for p in problems)
    problems = []
    descriptor = parse_descriptor(b'RW 1 FLAT "' + b"a" * 5000 + b'" 0\n', problems)
    assert any("longer than 4096" in p for p in problems)
    assert len(descriptor.extents) == 1
    assert probe_descriptor(b"# Disk DescriptorFile\nversion=1\n")


def _descriptor_area(path: Path) -> bytes:
    with path.open("rb") as f:
        f.seek(512)
        return f.read(20 * 512)


@pytest.mark.integration
def test_qemus_own_cid_rewrite_residue_is_not_hidden_text(tmp_path: Path) -> None:
    # QEMU rewrites the CID on the first write (vmdk_write_cid); when the new CID is shorter the
    # end of the old text stays behind the new NUL (about 1 in 100 qemu-img convert outputs).
    # A ten-digit CID makes the shrink certain: QEMU writes at most eight digits.
    path = create(tmp_path / "disk.vmdk", 1 << 20)
    text = _descriptor_area(path).split(b"\0", 1)[0]
    long_cid = re.sub(rb"\nCID=[0-9a-f]+\n", b"\nCID=0000000001\n", text)
    write_at(path, 512, long_cid.ljust(20 * 512, b"\0"))
    subprocess.run(
        ["qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 0 4096", str(path)], check=True, capture_output=True
    )
    area = _descriptor_area(path)
    visible, _, after = area.partition(b"\0")
    assert after.strip(b"\0"), "QEMU left no residue; the test no longer shows what it claims"
    assert vmdk.is_cid_rewrite_residue(visible, b"\0" + after)
    result = vmdk.open_image(FileSource(path), Limits())
    assert not [p for p in result.problems if "terminating NUL" in p], result.problems
    assert judge(result, Limits()).safe


@pytest.mark.parametrize(
    ("after", "residue"),
    [
        (b"\0\n", True),
        (b'\0"\n', True),
        (b'\0"\n\0\n', True),  # two rewrites, each leaving the end of its text
        (b"\0x\n", False),  # not the end of the text
        (b'\0parentFileNameHint="p"\n', False),  # hidden key
        (b'\0e"\n' + b"\0" * 100 + b"\n", False),  # a byte far away is not a shifted tail
    ],
)
def test_only_ends_of_the_text_pass_as_rewrite_residue(after: bytes, residue: bool) -> None:
    assert vmdk.is_cid_rewrite_residue(b'ddb.adapterType = "ide"\n', after) is residue
