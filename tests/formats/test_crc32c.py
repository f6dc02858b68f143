"""CRC-32C against published vectors, a bitwise reference, and real VHDX checksums."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import qemu_img

from imagewright.formats.crc32c import POLYNOMIAL_REFLECTED, crc32c, crc32c_with_field_zeroed


def bitwise_crc32c(data: bytes) -> int:
    """The definition, one bit at a time: slow, obviously right."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ POLYNOMIAL_REFLECTED if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x00000000),
        (b"a", 0xC1D04330),
        (b"123456789", 0xE3069283),  # the CRC catalogue's check value for CRC-32/ISCSI
        # RFC 3720 appendix B.4
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_known_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert bitwise_crc32c(data) == expected


def test_long_zero_runs_take_the_fast_path_and_agree() -> None:
    data = b"head" + bytes(70_000) + b"tail" + bytes(100) + b"x"
    assert crc32c(data) == bitwise_crc32c(data)
    assert crc32c(bytes(65536)) == bitwise_crc32c(bytes(65536))


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.integers(0, 3000).map(bytes),
            st.integers(0, 300).map(lambda n: b"\1" * n),
        ),
        max_size=6,
    ),
    split=st.integers(0, 10_000),
)
def test_agrees_with_the_bitwise_definition_and_chains(parts: list[bytes], split: int) -> None:
    data = b"".join(parts)
    assert crc32c(data) == bitwise_crc32c(data)
    cut = min(split, len(data))
    assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)


def test_field_zeroed_checksum_validates_real_vhdx_structures(tmp_path: Path) -> None:
    image = tmp_path / "disk.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", str(image), "1G")
    data = image.read_bytes()
    for offset, size in ((64 * 1024, 4096), (128 * 1024, 4096), (192 * 1024, 65536), (256 * 1024, 65536)):
        block = data[offset : offset + size]
        stored = struct.unpack_from("<I", block, 4)[0]
        assert crc32c_with_field_zeroed(block, 4) == stored
        assert crc32c_with_field_zeroed(block[:-1] + bytes([block[-1] ^ 1]), 4) != stored


def test_field_outside_the_data_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        crc32c_with_field_zeroed(b"abc", 0)
