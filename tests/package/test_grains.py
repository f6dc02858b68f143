"""The grain stream (any split of writes and zero runs gives the same grains, in order, zero
grains flagged), the background targets (order kept, errors raised in the feeding thread)
and the USTAR header writer (read back by Python's tarfile, GNU tar and our own reader)."""

from __future__ import annotations

import io
import itertools
import tarfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import run

from imagewright.errors import InvalidArgumentError
from imagewright.formats.containers.tar import parse_header
from imagewright.package.deflate import FINAL_BLOCK, GRAIN
from imagewright.package.grains import BackgroundTarget, Grain, GrainBatch, GrainStream
from imagewright.package.passes import SequentialFile
from imagewright.package.tar_writer import end_of_archive, padding, ustar_header


class Collect:
    def __init__(self) -> None:
        self.grains: list[Grain] = []
        self.batches: list[GrainBatch] = []
        self.finished = False

    def batch(self, batch: GrainBatch) -> None:
        self.batches.append(batch)
        self.grains.extend(batch.grains)

    def finish(self) -> None:
        self.finished = True


# A disk as runs: (kind, length) with kind "data" (non-zero bytes), "zero-write" (zeros
# written as data) or "gap" (a zero run the producer skips).
runs = st.lists(
    st.tuples(st.sampled_from(["data", "zero-write", "gap"]), st.integers(1, 3 * GRAIN)), max_size=12
)


@settings(max_examples=60, deadline=None)
@given(runs, st.integers(1, 3), st.booleans())
def test_any_split_of_writes_and_zero_runs_gives_the_same_grains(
    layout: list[tuple[str, int]], workers: int, background: bool
) -> None:
    image = bytearray()
    calls: list[tuple[str, int, bytes | int]] = []
    for index, (kind, length) in enumerate(layout):
        if kind == "data":
            chunk = bytes([index % 250 + 1]) * length
            calls.append(("write", len(image), chunk))
        elif kind == "zero-write":
            chunk = bytes(length)
            calls.append(("write", len(image), chunk))
        else:
            chunk = bytes(length)
            if index % 2:
                calls.append(("zeros", len(image), length))  # told; else left as a gap
        image += chunk
    size = len(image) + 100  # a trailing gap the stream fills at finish
    image += bytes(100)
    collect = Collect()
    target = BackgroundTarget(collect) if background else collect
    stream = GrainStream(size, [target], workers=workers)
    try:
        for call, offset, value in calls:
            if call == "write":
                assert isinstance(value, bytes)
                stream.write(offset, memoryview(value))
            else:
                assert isinstance(value, int)
                stream.zeros(offset, value)
        stream.finish()
    finally:
        stream.close()
    assert collect.finished
    assert b"".join(bytes(g.bytes()) for g in collect.grains) == bytes(image)
    # A zero run stands for `count` whole grains in a row; expanded, the grains are every grain.
    starts = [g.offset + i * GRAIN for g in collect.grains for i in range(g.count)]
    assert starts == list(range(0, size, GRAIN))
    for grain in collect.grains:
        assert (grain.data is None) == (not any(grain.bytes()))
        assert grain.block is not None
        if grain.count > 1:
            assert grain.data is None and grain.length == grain.count * GRAIN
        one = bytes(grain.bytes())[: grain.length // grain.count]
        assert zlib.decompress(grain.block.zlib_stream()) == one
    # What a batch shares, checked against the bytes it stands for by independent readers:
    # the runs and pieces are its guest bytes, its blocks one raw deflate stream of them
    # (zlib's inflater), its CRC-32 zlib's.
    position = 0
    for batch in collect.batches:
        assert batch.offset == position and batch.grains[0].offset == position
        expected = bytes(image[position : position + batch.length])
        assert b"".join(bytes(piece) for piece in batch.pieces()) == expected
        joined = b"".join(
            bytes(run.data) if run.data is not None else bytes(run.length) for run in batch.runs
        )
        assert joined == expected
        kinds = [run.data is None for run in batch.runs]
        assert all(a != b for a, b in itertools.pairwise(kinds))  # runs alternate
        assert all(run.data is None or any(run.data[:GRAIN]) for run in batch.runs)
        assert zlib.decompress(batch.deflated + FINAL_BLOCK, -15) == expected
        assert batch.crc32 == zlib.crc32(expected)
        position += batch.length
    assert position == size


def test_a_background_target_raises_its_error_in_the_feeding_thread() -> None:
    class Failing:
        def batch(self, batch: GrainBatch) -> None:
            raise OSError(28, "No space left on device")

        def finish(self) -> None:
            raise AssertionError("never reached")

    stream = GrainStream(4 * GRAIN, [BackgroundTarget(Failing())])
    with pytest.raises(OSError, match="No space left"):
        try:
            stream.write(0, b"x" * (4 * GRAIN))
            stream.finish()
        finally:
            stream.close()


@pytest.mark.parametrize("size", [0, 1, 511, 512, 100_000, 0o77777777777, 0o77777777777 + 1, 1 << 40])
def test_ustar_headers_read_back_by_tarfile_and_by_our_reader(size: int) -> None:
    header = ustar_header("disk1.vmdk", size, mtime=1_700_000_000)
    parsed = parse_header(header)
    assert (parsed.name, parsed.size, parsed.format, parsed.typeflag) == (b"disk1.vmdk", size, "ustar", b"0")
    info = tarfile.TarInfo.frombuf(header, "utf-8", "strict")
    assert (info.name, info.size, info.mtime, info.mode) == ("disk1.vmdk", size, 1_700_000_000, 0o644)


def test_gnu_tar_lists_an_archive_made_of_our_headers() -> None:
    data = b"hello\n"
    archive = ustar_header("a.ovf", len(data)) + data + padding(len(data))
    archive += end_of_archive(len(archive))
    assert len(archive) % 10240 == 0
    listing = run("tar", "tvf", "-", input=archive).stdout.decode()
    assert listing.split()[2:3] == ["6"] and listing.split()[-1] == "a.ovf"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("a.ovf")
        assert member is not None and member.read() == data


@pytest.mark.parametrize("name", ["", "a/b.vmdk", "x" * 101, "caf\u00e9.ovf", "..", "new\nline"])
def test_names_a_flat_ustar_member_cannot_hold_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot be a tar member name"):
        ustar_header(name, 1)


def test_background_targets_finish_on_their_own_threads_and_raise_in_the_feeding_thread() -> None:
    import threading

    finished_on: list[str] = []

    class Finishing:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def batch(self, batch: GrainBatch) -> None:
            pass

        def finish(self) -> None:
            finished_on.append(threading.current_thread().name)
            if self.fail:
                raise OSError(5, "Input/output error")

    good = GrainStream(2 * GRAIN, [BackgroundTarget(Finishing(False)), BackgroundTarget(Finishing(False))])
    try:
        good.write(0, b"y" * GRAIN)
        good.finish()
    finally:
        good.close()
    assert finished_on == ["grain-target", "grain-target"]
    bad = GrainStream(2 * GRAIN, [BackgroundTarget(Finishing(True))])
    with pytest.raises(OSError, match="Input/output error"):
        try:
            bad.write(0, b"y" * GRAIN)
            bad.finish()
        finally:
            bad.close()


@pytest.mark.parametrize("writeback", [False, True])
def test_a_sequential_file_holds_and_hashes_every_byte_written_with_or_without_writeback(
    tmp_path: Path, writeback: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import os

    # A writeback every 3 small buffers: many fdatasyncs while the file grows.
    monkeypatch.setattr(SequentialFile, "BUFFER", 4096)
    monkeypatch.setattr(SequentialFile, "WRITEBACK", 3 * 4096)
    path = tmp_path / "out.bin"
    pieces = [os.urandom(n) for n in (1, 4095, 4096, 10_000, 7, 50_000, 3, 4096 * 5)]
    file = SequentialFile(path, ("sha256", "sha1"), start=512, writeback=writeback)
    try:
        for piece in pieces:
            file.write(piece)
        file.write_at(0, b"H" * 512)
        digests = file.digests()
        file.finish()
    finally:
        file.close()
    body = b"".join(pieces)
    assert path.read_bytes() == b"H" * 512 + body
    assert file.size == len(body)
    assert digests == {"sha256": hashlib.sha256(body).hexdigest(), "sha1": hashlib.sha1(body).hexdigest()}
