"""Deflate blocks: sync-flushed, byte aligned, joined into one gzip member or one zlib stream
per grain; the parallel deflater keeps order. Read back by gzip(1), zlib and Python's gzip."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from imagewright.package.deflate import (
    FINAL_BLOCK,
    GRAIN,
    DeflateBlock,
    GzipMember,
    ParallelDeflater,
    deflate_block,
    zero_block,
)


def test_a_block_ends_on_a_byte_boundary_with_a_sync_flush_and_is_not_final() -> None:
    block = deflate_block(b"imagewright " * 5000)
    assert block.data.endswith(b"\x00\x00\xff\xff")
    # Inflating the block alone consumes everything and does not reach the end of a stream.
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(block.data) == b"imagewright " * 5000
    assert not inflater.eof
    assert inflater.decompress(FINAL_BLOCK) == b""
    assert inflater.eof


def test_zlib_stream_of_a_grain_is_what_zlib_and_its_checksum_accept() -> None:
    data = os.urandom(GRAIN // 2) + bytes(GRAIN // 2)
    stream = deflate_block(data).zlib_stream()
    assert stream[:2] == b"\x78\x01"
    assert zlib.decompress(stream) == data
    corrupted = stream[:-1] + bytes([stream[-1] ^ 1])
    try:
        zlib.decompress(corrupted)
    except zlib.error as err:
        assert "incorrect data check" in str(err)
    else:
        raise AssertionError("a wrong Adler-32 was accepted")


def test_blocks_join_into_one_gzip_member_that_gunzip_reads() -> None:
    pieces = [os.urandom(1000), bytes(GRAIN), b"text " * 20000, b"", os.urandom(GRAIN)]
    out = io.BytesIO()
    member = GzipMember(out.write)
    for piece in pieces:
        member.add(zero_block(len(piece)) if not any(piece) else deflate_block(piece))
    member.finish()
    expected = b"".join(pieces)
    assert gzip.decompress(out.getvalue()) == expected
    gunzip = subprocess.run(["gzip", "-dc"], input=out.getvalue(), capture_output=True, check=True)
    assert gunzip.stdout == expected
    # One member: no second gzip header anywhere after the first.
    assert subprocess.run(["gzip", "-t"], input=out.getvalue(), check=False).returncode == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=3 * GRAIN), max_size=40), st.integers(1, 4))
def test_the_parallel_deflater_delivers_in_submission_order(chunks: list[bytes], workers: int) -> None:
    delivered: list[tuple[object, int]] = []
    out = io.BytesIO()
    member = GzipMember(out.write)

    def deliver(batch: list[tuple[object, DeflateBlock]]) -> None:
        for tag, block in batch:
            delivered.append((tag, 0))
            member.add(block)

    deflater = ParallelDeflater(
        lambda tags, blocks: list(zip(tags, blocks, strict=True)), deliver, workers=workers
    )
    try:
        for index, chunk in enumerate(chunks):
            if chunk and not any(chunk):
                deflater.submit(index, None, zero_block(len(chunk)))
            else:
                deflater.submit(index, chunk)
        deflater.flush()
    finally:
        deflater.close()
    member.finish()
    assert [tag for tag, _ in delivered] == list(range(len(chunks)))
    assert gzip.decompress(out.getvalue()) == b"".join(chunks)
