"""The qcow (version 1) reader against qemu-img 7.2."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import qemu_img, write_at
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

from imagewright.formats import qcow, qcow2
from imagewright.formats.base import Limits
from imagewright.formats.safety import judge

pytestmark = pytest.mark.integration

#: qemu-img always makes qcow images with 4 KiB clusters and 512-entry L2 tables.
CLUSTER = 4096


def create(path: Path, size: int) -> Path:
    qemu_img("create", "-q", "-f", "qcow", str(path), str(size))
    return path


def test_probe_tells_qcow_from_qcow2(tmp_path: Path) -> None:
    old = create(tmp_path / "old.qcow", MiB)
    head = old.read_bytes()[:512]
    assert qcow.probe(None, head)  # type: ignore[arg-type]
    assert not qcow2.probe(None, head)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [64 * MiB, 64 * MiB + 512 * 3])
def test_guest_view_reads_exactly_what_qemu_reads(tmp_path: Path, size: int) -> None:
    image = create(tmp_path / "disk.qcow", size)
    qemu_io(image, "qcow", *pattern_commands(CLUSTER, size - size % CLUSTER))
    raw = raw_copy(image, "qcow", tmp_path / "disk.raw")
    with opened(qcow, image) as result:
        assert_matches_qemu_info(result, image, "qcow")
        details = result.details
        assert isinstance(details, qcow.QcowDetails)
        assert (details.cluster_size, details.l2_entries) == (CLUSTER, 512)
        assert details.encryption == "none"
        assert result.problems == [] and result.references == []
        assert result.guest is not None
        assert_guest_matches_raw(result.guest, raw, pattern_ranges(CLUSTER, size - size % CLUSTER))
        assert_guest_equals_raw_fully(result.guest, raw)


def test_compressed_clusters_read_like_qemu(tmp_path: Path) -> None:
    size = 8 * MiB
    image = create(tmp_path / "compressed.qcow", size)
    text = tmp_path / "text.bin"
    text.write_bytes((b"old qcow format " * 300)[:CLUSTER])
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(CLUSTER))
    # qemu writes compressed clusters one whole cluster at a time; noise does not compress
    # and is stored plainly, which exercises both kinds of L2 entry side by side.
    commands = [f"write -c -P {index % 250 + 1} {index * 7 * CLUSTER} {CLUSTER}" for index in range(200)]
    commands += [f"write -c -s {text} {CLUSTER} {CLUSTER}", f"write -c -s {noise} {2 * CLUSTER} {CLUSTER}"]
    commands.append(f"write -c -P 0x5a {size - CLUSTER} {CLUSTER}")
    qemu_io(image, "qcow", *commands)
    assert image.stat().st_size < 200 * CLUSTER
    raw = raw_copy(image, "qcow", tmp_path / "back.raw")
    with opened(qcow, image) as result:
        assert result.guest is not None
        assert_guest_equals_raw_fully(result.guest, raw, chunk=MiB - 7)
        assert_guest_matches_raw(result.guest, raw, [(CLUSTER - 5, 3 * CLUSTER), (size - CLUSTER, CLUSTER)])


def test_backing_file_is_a_reference(tmp_path: Path) -> None:
    base = create(tmp_path / "base.qcow", 16 * MiB)
    overlay = tmp_path / "overlay.qcow"
    qemu_img("create", "-q", "-f", "qcow", "-b", base.name, "-F", "qcow", str(overlay))
    with opened(qcow, overlay) as result:
        assert_matches_qemu_info(result, overlay, "qcow")
        assert result.backing_file == "base.qcow"
        assert result.guest is None
        assert_refused_with(result, "backing file 'base.qcow'")


def test_aes_encryption_is_reported_not_read(tmp_path: Path) -> None:
    image = tmp_path / "aes.qcow"
    qemu_img(
        "create", "-q", "-f", "qcow", "--object", "secret,id=sec0,data=abc",
        "-o", "encrypt.format=aes,encrypt.key-secret=sec0", str(image), "16M",
    )  # fmt: skip
    with opened(qcow, image) as result:
        assert_matches_qemu_info(result, image, "qcow")
        assert result.details.encryption == "aes"
        assert result.guest is None
        assert judge(result, Limits()).safe


def test_virtual_size_is_rounded_down_like_qemu(tmp_path: Path) -> None:
    image = create(tmp_path / "odd.qcow", MiB)
    write_at(image, 24, struct.pack(">Q", MiB + 300))
    with opened(qcow, image) as result:
        assert_matches_qemu_info(result, image, "qcow")
        assert result.virtual_size == MiB


@pytest.mark.parametrize(
    ("offset", "value", "fragment"),
    [
        (32, b"\x08", "cluster size 2^8"),
        (33, b"\x20", "L2 table size 2^32"),
        (36, struct.pack(">I", 7), "encryption method 7"),
        (24, struct.pack(">Q", 1), "smaller than 2 bytes"),
    ],
)
def test_header_fields_out_of_bounds_are_refused(
    tmp_path: Path, offset: int, value: bytes, fragment: str
) -> None:
    image = create(tmp_path / "bent.qcow", MiB)
    write_at(image, offset, value)
    with opened(qcow, image) as result:
        assert result.guest is None
        assert_refused_with(result, fragment)


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("qcow-seeds")
    plain = create(directory / "plain.qcow", 2 * MiB)
    qemu_io(plain, "qcow", *pattern_commands(CLUSTER, 2 * MiB))
    compressed = create(directory / "compressed.qcow", 2 * MiB)
    qemu_io(compressed, "qcow", *[f"write -c -P {n + 1} {n * 3 * CLUSTER} {CLUSTER}" for n in range(100)])
    return {"plain": plain.read_bytes(), "compressed": compressed.read_bytes()}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(["plain", "compressed"]),
    edits=st.lists(st.tuples(st.integers(0, 2047), st.integers(0, 255)), min_size=1, max_size=8),
    anywhere=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4),
)
def test_mutated_real_images_raise_only_imagewright_errors(
    seed_images: dict[str, bytes],
    *,
    seed: str,
    edits: list[tuple[int, int]],
    anywhere: list[tuple[float, int]],
) -> None:
    data = bytearray(seed_images[seed])
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    for fraction, value in anywhere:
        data[int(fraction * len(data))] = value
    open_mutated(qcow, bytes(data), [(0, 2 * MiB)])


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=1024))
def test_random_bytes_after_the_magic_raise_only_imagewright_errors(body: bytes) -> None:
    open_mutated(qcow, qcow.MAGIC + struct.pack(">I", 1) + body)
