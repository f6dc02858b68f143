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
    FileSource,
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
