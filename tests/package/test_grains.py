"""The grain stream (any split of writes and zero runs gives the same grains, in order, zero
grains flagged), the background targets (order kept, errors raised in the feeding thread)
and the USTAR header writer (read back by Python's tarfile, GNU tar and our own reader)."""

from __future__ import annotations

import io
import tarfile
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import run

from imagewright.errors import InvalidArgumentError
from imagewright.formats.containers.tar import parse_header
from imagewright.package.deflate import GRAIN
from imagewright.package.grains import BackgroundTarget, Grain, GrainStream
from imagewright.package.tar_writer import end_of_archive, padding, ustar_header


class Collect:
    def __init__(self) -> None:
        self.grains: list[Grain] = []
        self.finished = False

    def grain(self, grain: Grain) -> None:
        self.grains.append(grain)

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


def test_a_background_target_raises_its_error_in_the_feeding_thread() -> None:
    class Failing:
        def grain(self, grain: Grain) -> None:
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
