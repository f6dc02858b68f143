"""The pieces of convert's streaming path on their own: the forward window and its NBD export
(read by qemu's own NBD client through qemu-io and qemu-img), zero runs, the stream capture
the survey reads from, and the survey of streamed disks of every table layout."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.fixtures import tools
from tests.ops.resize_fixtures import make_disk

from imagewright.binary import PrefixExhaustedError, data_runs
from imagewright.formats.containers.streams import CAPTURE_BLOCK, StreamCapture
from imagewright.inspection import inspect_image
from imagewright.ops.convert import convert
from imagewright.ops.convert.nbd_source import (
    ForwardWindow,
    NbdStreamSource,
    OutOfWindowError,
    StreamCancelledError,
)
from imagewright.ops.convert.raw_stream import _hand_on

MiB = 1 << 20


@given(st.lists(st.tuples(st.integers(0, 300_000), st.binary(min_size=1, max_size=5000)), max_size=8))
def test_data_runs_cover_exactly_the_blocks_that_are_not_zeros(writes: list[tuple[int, bytes]]) -> None:
    data = bytearray(300_000)
    for offset, chunk in writes:
        data[offset : offset + len(chunk)] = chunk[: len(data) - offset]
    block = 4096
    runs = data_runs(bytes(data), block)
    covered = bytearray(len(data))
    for start, end in runs:
        assert start % block == 0 and (end % block == 0 or end == len(data)) and start < end
        covered[start:end] = data[start:end]
    assert covered == data  # nothing outside the runs is data
    for start, end in runs:  # and every block inside them holds some
        for lo in range(start, end, block):
            assert any(data[lo : min(lo + block, end)])
    assert all(a[1] < b[0] for a, b in itertools.pairwise(runs))  # merged, ordered


def _pattern(offset: int, length: int) -> bytes:
    """Bytes that tell their own offset (every 4 KiB block starts with it), no zero block."""
    out = bytearray()
    for block in range(offset // 4096, (offset + length + 4095) // 4096):
        out += (block * 4096).to_bytes(8, "little") + bytes([block % 251 + 1]) * 4088
    start = offset % 4096
    return bytes(out[start : start + length])


def _produce(window: ForwardWindow, size: int) -> threading.Thread:
    def run() -> None:
        try:
            for offset in range(0, size, MiB):
                piece = _pattern(offset, MiB) if (offset // MiB) % 3 else bytes(MiB)
                _hand_on(window, offset, piece)
        except StreamCancelledError:
            return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_window_serves_forward_and_refuses_what_went_by() -> None:
    window = ForwardWindow(96 * MiB, ahead=8 * MiB, behind=16 * MiB)
    producer = _produce(window, 96 * MiB)
    first = window.read(MiB, 4096)
    assert first[0].data == _pattern(MiB, 4096)
    zeros = window.read(3 * MiB, MiB)
    assert [(s.offset, s.length, s.data) for s in zeros] == [(3 * MiB, MiB, None)]
    window.read(60 * MiB, MiB)  # forward: what lies between is decompressed and let go
    window.read(50 * MiB, MiB)  # a little back: within the reorder window
    with pytest.raises(OutOfWindowError, match="cannot be streamed in this order"):
        window.read(MiB, 4096)
    window.cancel()
    producer.join(10)
    assert not producer.is_alive()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[NbdStreamSource, Path]]:
    """64 MiB of the pattern (every third MiB zeros) served over NBD, and the same as a file."""
    size = 64 * MiB
    reference = tmp_path / "reference.raw"
    with reference.open("wb") as f:
        for offset in range(0, size, MiB):
            f.write(_pattern(offset, MiB) if (offset // MiB) % 3 else bytes(MiB))
    window = ForwardWindow(size, ahead=8 * MiB, behind=16 * MiB)
    with NbdStreamSource(str(tmp_path / "nbd.sock"), window) as source:
        producer = _produce(window, size)
        yield source, reference
    producer.join(10)


@pytest.mark.integration
def test_qemu_img_reads_the_export_as_the_file(served: tuple[NbdStreamSource, Path]) -> None:
    source, reference = served
    result = tools.run("qemu-img", "compare", "-f", "raw", "-F", "raw", reference, source.url)
    assert b"Images are identical" in result.stdout
    source.finish()


@pytest.mark.integration
def test_a_read_back_out_of_the_window_fails_with_a_clear_error(served: tuple[NbdStreamSource, Path]) -> None:
    source, _ = served
    result = tools.run(
        "qemu-io", "-r", "-f", "raw", source.url,
        "-c", f"read -P {MiB // 4096 % 251 + 1} {MiB + 8} 4088",  # the second MiB's first block
        "-c", f"read {40 * MiB} {MiB}",
        "-c", f"read {MiB} 4096",
        check=False,
    )  # fmt: skip
    output = result.stdout.decode() + result.stderr.decode()
    assert "Pattern verification failed" not in output
    assert output.count("read ") >= 2 and "Input/output error" in output, output
    with pytest.raises(OutOfWindowError, match="cannot be streamed"):
        source.finish()


def test_the_capture_keeps_what_was_wanted_and_says_what_went_by() -> None:
    size = 8 * MiB
    capture = StreamCapture(size, budget=MiB)
    capture.want(0, 4096)
    looks: list[int] = []
    capture.on_pending = lambda: looks.append(capture.position)
    capture.feed(0, _pattern(0, MiB))
    assert capture.pread(0, 16) == _pattern(0, 16)
    # Ahead of the stream, while speculative: zeros, and wanted from now on.
    assert capture.pread(3 * MiB + 100, 50) == bytes(50) and capture.pending
    with pytest.raises(PrefixExhaustedError, match="could not be examined"):
        capture.pread(MiB // 2, 16)  # went by, never asked for
    for offset in range(MiB, size, MiB):
        capture.feed(offset, _pattern(offset, MiB))
    assert looks == [3 * MiB + CAPTURE_BLOCK]  # looked again right after the block went by
    capture.speculative = False
    assert capture.pread(3 * MiB + 100, 50) == _pattern(3 * MiB + 100, 50)
    with pytest.raises(PrefixExhaustedError):
        capture.pread(6 * MiB, 16)


@pytest.mark.integration
@pytest.mark.parametrize("layout", ["mbr", "mbr-logical", "gpt", "gpt-sgdisk"])
def test_a_streamed_disk_is_surveyed_like_the_file(tmp_path: Path, layout: str) -> None:
    disk = make_disk(tmp_path, layout, 96 * MiB).path
    packed = tmp_path / (disk.name + ".gz")
    packed.write_bytes(tools.run("gzip", "-1", "-c", disk).stdout)
    result = convert(packed, tmp_path / "out.qcow2")
    assert result.source_access == "streamed"
    report = result.source_report
    assert report is not None and report.verdict.safe
    plain = inspect_image(disk)
    assert report.disk == plain.disk
    assert report.partition_table is not None
    assert any(part.filesystem is not None for part in report.partition_table.partitions)
    assert os.path.exists(tmp_path / "out.qcow2")
