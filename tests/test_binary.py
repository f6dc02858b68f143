from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagewright.binary import (
    MAX_SINGLE_READ,
    BytesSource,
    ConcatSource,
    FileSource,
    HeldBytes,
    Layout,
    PrefixExhaustedError,
    PrefixSource,
    SliceSource,
    read_exact,
)
from imagewright.errors import ImageFormatError, ImageIOError


def test_read_exact_refuses_reads_past_the_end() -> None:
    src = BytesSource(b"abcdef")
    assert read_exact(src, 2, 3, "thing") == b"cde"
    with pytest.raises(ImageFormatError, match="beyond the end"):
        read_exact(src, 4, 3, "thing")


def test_read_exact_refuses_huge_and_negative_requests() -> None:
    src = BytesSource(b"x")
    with pytest.raises(ImageFormatError, match="MiB"):
        read_exact(src, 0, MAX_SINGLE_READ + 1, "table")
    with pytest.raises(ImageFormatError, match="negative"):
        read_exact(src, -1, 1, "table")


def test_slice_source_never_reaches_past_its_parent() -> None:
    parent = BytesSource(bytes(range(10)))
    window = SliceSource(parent, 8, 100)
    assert window.size == 2
    assert window.pread(0, 10) == bytes([8, 9])
    assert window.pread(5, 1) == b""


def test_prefix_source_signals_reads_beyond_the_prefix() -> None:
    src = PrefixSource(b"abcd", total_size=None, unknown_size=1 << 40)
    assert src.size == 1 << 40
    assert src.pread(1, 2) == b"bc"
    with pytest.raises(PrefixExhaustedError):
        src.pread(3, 2)


def test_file_source_reads_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with FileSource(path) as src:
        assert src.size == 10
        assert src.pread(8, 10) == b"89"
        assert src.bytes_read == 2


def test_file_source_refuses_fifos_and_directories(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ImageIOError, match="not a regular file"):
        FileSource(fifo)
    with pytest.raises(ImageIOError, match="directory"):
        FileSource(tmp_path)
    with pytest.raises(ImageIOError, match="no such file"):
        FileSource(tmp_path / "missing")


LAYOUT = Layout("test header", ">", [("magic", "4s"), ("version", "I"), ("_pad", "4x"), ("size", "Q")])


def test_layout_round_trip_and_padding() -> None:
    packed = LAYOUT.pack({"magic": b"TEST", "version": 3, "size": 1 << 40})
    assert len(packed) == LAYOUT.size == 20
    assert LAYOUT.unpack(packed) == {"magic": b"TEST", "version": 3, "size": 1 << 40}


@given(st.binary(max_size=40), st.integers(min_value=-5, max_value=50))
def test_layout_unpack_only_raises_format_errors(data: bytes, offset: int) -> None:
    with contextlib.suppress(ImageFormatError):
        LAYOUT.unpack(data, offset)


_PIECES = st.lists(
    st.one_of(st.binary(max_size=9000), st.integers(0, 20_000).map(bytes)),  # data, or a run of zeros
    max_size=12,
)


@given(_PIECES, st.integers(0, 60_000), st.integers(0, 20_000))
def test_held_bytes_read_back_what_was_appended_and_store_no_zero_block(
    pieces: list[bytes], offset: int, length: int
) -> None:
    held = HeldBytes()
    for piece in pieces:
        held.append(piece)
    whole = b"".join(pieces)
    assert held.length == len(whole)
    assert held.read(offset, length) == whole[offset : offset + length]
    # Only data is stored: never more than the bytes outside 4 KiB blocks of zeros.
    blocks = [whole[i : i + 4096] for i in range(0, len(whole), 4096)]
    assert held.held <= sum(len(block) for block in blocks if any(block))
    source = PrefixSource(held, len(whole), 0)
    assert source.complete
    assert source.pread(0, len(whole)) == whole


def test_a_prefix_source_is_complete_only_when_every_byte_was_held() -> None:
    held = HeldBytes()
    held.append(b"abc")
    held.extend_zeros(5)
    assert PrefixSource(held, 8, 0).complete
    assert PrefixSource(held, 8, 0).pread(0, 8) == b"abc" + bytes(5)
    partial = PrefixSource(held, 100, 0)
    assert not partial.complete
    with pytest.raises(PrefixExhaustedError, match="could not be examined within the limit"):
        partial.pread(6, 10)
    assert not PrefixSource(held, None, 1 << 40).complete


@given(st.lists(st.binary(max_size=50), max_size=6), st.integers(0, 400), st.integers(0, 400))
def test_concat_source_reads_like_the_joined_bytes(parts: list[bytes], offset: int, length: int) -> None:
    source = ConcatSource([BytesSource(part) for part in parts])
    joined = b"".join(parts)
    assert source.size == len(joined)
    assert source.pread(offset, length) == joined[offset : offset + length]
