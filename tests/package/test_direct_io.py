"""Outputs written and read back around the page cache (``direct_io``): the same bytes and
digests as through the cache, whatever the start, the pieces, the flushes in between and the
bytes written out of order; and grains cut from ``bytes`` sources as views (no copies)."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.ops.test_convert_guest import refuse_second_direct_write

from imagewright import direct_io
from imagewright.direct_io import read_digests
from imagewright.package.deflate import FINAL_BLOCK, GRAIN
from imagewright.package.grains import Grain, GrainBatch, GrainStream
from imagewright.package.passes import SequentialFile


@pytest.mark.parametrize("released", [True, False], ids=["gil-released-copies", "slice-copies"])
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "page-cache"])
@pytest.mark.parametrize("start", [0, 512, 4096, 70_000])
def test_a_sequential_file_holds_what_was_written_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool, start: int, released: bool
) -> None:
    monkeypatch.setattr(direct_io, "ENABLED", direct)
    monkeypatch.setattr(direct_io, "STAGE", 3 * direct_io.ALIGN)  # many turns of the two buffers
    # Every staging copy made without the GIL (from 1 byte), or none.
    monkeypatch.setattr(direct_io, "RELEASED_COPY", 1 if released else 1 << 62)
    path = tmp_path / "out.bin"
    shared = os.urandom(300_000)
    pieces: list[bytes | bytearray | memoryview] = [
        os.urandom(n) for n in (1, 4095, 4096, 10_000, 7, 70_000, 3, 4096 * 5, 100_000)
    ]
    # Views into a larger buffer (as the grains of a source read are), and a mutable one.
    pieces += [memoryview(shared)[12_345:200_000], bytearray(os.urandom(9_999)), memoryview(shared)[5:6]]
    file = SequentialFile(path, ("sha256",), start=start)
    try:
        for index, piece in enumerate(pieces):
            file.write(piece)
            if index % 3 == 1:
                file.digests()  # a flush between appends: the partial block is written again later
        body = b"".join(pieces)
        assert file.digests() == {"sha256": hashlib.sha256(body).hexdigest()}
        # Out of order, as the OVA and the qcow2 do at the end: a header in front, a tail after.
        header, tail = b"H" * start, b"T" * 700
        if start:
            file.write_at(0, header)
        end = start + len(body)
        file.write_at(end, tail)
        size = end + len(tail)
        expected = header + body + tail
        # Read back before the file is cut to its length (a direct write pads its last block).
        assert read_digests(path, ("sha256", "sha1"), size) == {
            "sha256": hashlib.sha256(expected).hexdigest(),
            "sha1": hashlib.sha1(expected).hexdigest(),
        }
        file.finish(size)
    finally:
        file.close()
    assert path.read_bytes() == expected
    assert read_digests(path, ("sha256",)) == {"sha256": hashlib.sha256(expected).hexdigest()}


def test_a_transfer_refused_after_the_open_goes_on_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct_io, "STAGE", 3 * direct_io.ALIGN)
    direct_writes = refuse_second_direct_write(monkeypatch)
    path = tmp_path / "out.bin"
    body = os.urandom(100_000)
    file = SequentialFile(path, ("sha256",))
    try:
        for start in range(0, len(body), 7_000):
            file.write(body[start : start + 7_000])
        file.finish(len(body))
    finally:
        file.close()
    assert len(direct_writes) == 2  # one went out directly, the refused one, then none
    assert path.read_bytes() == body


def test_a_released_copy_takes_one_block_of_memory_only(tmp_path: Path) -> None:
    target = bytearray(16)
    address = direct_io.ctypes.addressof(direct_io.ctypes.c_char.from_buffer(target))
    direct_io.copy_released(address + 3, memoryview(b"0123456789")[2:7], 5)
    assert target == b"\x00" * 3 + b"23456" + b"\x00" * 8
    with pytest.raises(BufferError):
        direct_io.copy_released(address, memoryview(b"0123456789")[::2], 5)  # not one block
    with pytest.raises(BufferError):
        direct_io.copy_released(address, memoryview(b"0123"), 5)  # shorter than the copy
    assert target == b"\x00" * 3 + b"23456" + b"\x00" * 8


def test_a_sequential_file_is_cut_where_its_bytes_end(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    file = SequentialFile(path, ())
    try:
        file.write(b"x" * 5000)
        file.finish()
    finally:
        file.close()
    assert path.read_bytes() == b"x" * 5000


def test_a_read_back_of_a_short_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(b"y" * 10_000)
    with pytest.raises(AssertionError, match="holds 10000 bytes, not the 20000"):
        read_digests(path, ("sha256",), 20_000)
    assert read_digests(path, ("sha256",), 4000) == {"sha256": hashlib.sha256(b"y" * 4000).hexdigest()}


class Collect:
    def __init__(self) -> None:
        self.grains: list[Grain] = []
        self.batches: list[GrainBatch] = []

    def batch(self, batch: GrainBatch) -> None:
        self.batches.append(batch)
        self.grains.extend(batch.grains)

    def finish(self) -> None:
        pass


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5 * GRAIN), st.booleans()), min_size=1, max_size=8))
def test_grains_of_bytes_sources_are_views_and_the_same_grains(chunks: list[tuple[int, bool]]) -> None:
    image = bytearray()
    sources: list[bytes] = []
    for index, (length, zero) in enumerate(chunks):
        data = bytes(length) if zero else bytes([index % 250 + 1]) * (length - 1) + b"\0"
        sources.append(data)
        image += data
    collect = Collect()
    stream = GrainStream(len(image), [collect], workers=2)
    try:
        offset = 0
        for data in sources:
            stream.write(offset, data)  # bytes: kept, not copied
            offset += len(data)
        stream.finish()
    finally:
        stream.close()
    assert b"".join(bytes(g.bytes()) for g in collect.grains) == bytes(image)
    if chunks[0][0] >= GRAIN and not chunks[0][1]:
        assert collect.grains[0].source is sources[0]  # the first grain: a view of the first source
    for grain in collect.grains:
        assert (grain.data is None) == (not any(grain.bytes()))
        if grain.source is not None:
            assert isinstance(grain.data, memoryview) and grain.data.obj is grain.source
    position = 0
    for batch in collect.batches:
        expected = bytes(image[position : position + batch.length])
        joined = b"".join(
            bytes(run.data) if run.data is not None else bytes(run.length) for run in batch.runs
        )
        assert joined == expected
        assert zlib.decompress(batch.deflated + FINAL_BLOCK, -15) == expected
        assert batch.crc32 == zlib.crc32(expected)
        position += batch.length
    assert position == len(image)
