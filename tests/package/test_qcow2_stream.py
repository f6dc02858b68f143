"""``qcow2_stream``: the qcow2 publish writes from its grains, read back by qemu-img (check: no
errors, no leaks; compare: identical to the source; info: version 3, compat 1.1) — odd sizes
(a last cluster cut short), an image with no data at all, data in several L2 ranges (512 MiB
each), data in the very last bytes."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest
from tests.fixtures.tools import qemu_img

from imagewright.direct_io import read_digests
from imagewright.formats.base import Limits
from imagewright.ops.convert import possible_data
from imagewright.package import publish as publish_module
from imagewright.package.grains import GrainStream
from imagewright.package.passes import read_source
from imagewright.package.publish import publish
from imagewright.package.qcow2_stream import (
    CLUSTER,
    L2_ENTRIES,
    MAX_HOLE,
    Qcow2StreamWriter,
    planned_clusters,
)

pytestmark = pytest.mark.integration

MiB = 1 << 20
RANGE = L2_ENTRIES * CLUSTER

CASES = {
    "odd-size": (40 * MiB + 3 * 512, [(0, 8192), (33 * MiB, 3 * MiB), (40 * MiB + 3 * 512 - 700, 700)]),
    "empty": (16 * MiB, []),
    "three-l2-ranges": (2 * RANGE + 64 * MiB, [(5, 100), (RANGE - 10, 20), (2 * RANGE + 1, CLUSTER + 2)]),
    "one-short-cluster": (4096, [(0, 4096)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_qemu_img_reads_the_qcow2_as_the_source(case: str, tmp_path: Path) -> None:
    size, writes = CASES[case]
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(size)
        for offset, length in writes:
            f.seek(offset)
            f.write(random.Random(offset).randbytes(length))
    out = tmp_path / "out"
    out.mkdir()
    result = publish(raw, out, ("qcow2",))
    qcow2 = out / "disk.qcow2"
    (published,) = result.files
    assert published.size == qcow2.stat().st_size
    check = json.loads(qemu_img("check", "-f", "qcow2", "--output=json", qcow2))
    assert check.get("leaks", 0) == 0 and check.get("corruptions", 0) == 0 and check["check-errors"] == 0
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "qcow2", raw, qcow2)
    info = json.loads(qemu_img("info", "-f", "qcow2", "--output=json", qcow2))
    assert info["virtual-size"] == size and info["cluster-size"] == CLUSTER
    assert info["format-specific"]["data"]["compat"] == "1.1"
    used = {c for o, n in writes for c in range(o // CLUSTER, -(-(o + n) // CLUSTER))}
    # Header, the data clusters, an L2 per range used, the L1, one refcount block and table.
    ranges = {c // L2_ENTRIES for c in used}
    assert qcow2.stat().st_size == CLUSTER * (1 + len(used) + len(ranges) + 1 + 2)


def _qemu_img_accepts(raw: Path, qcow2: Path) -> None:
    check = json.loads(qemu_img("check", "-f", "qcow2", "--output=json", qcow2))
    assert check.get("leaks", 0) == 0 and check.get("corruptions", 0) == 0 and check["check-errors"] == 0
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "qcow2", raw, qcow2)


def _write_planned(raw: Path, qcow2: Path, possible: list[tuple[int, int]]) -> Qcow2StreamWriter:
    """The qcow2 of ``raw`` written by the writer with ``possible`` as its plan (no publish)."""
    size = raw.stat().st_size
    with qcow2.open("wb") as out:

        def write_at(offset: int, data: bytes) -> None:
            out.seek(offset)
            out.write(data)

        appended = [CLUSTER]

        def write(data: bytes | memoryview) -> None:
            write_at(appended[0], bytes(data))
            appended[0] += len(data)

        writer = Qcow2StreamWriter(write, size, possible_data=possible, write_at=write_at, checksum="sha256")
        stream = GrainStream(size, [writer])
        data = raw.read_bytes()
        stream.write(0, data)
        stream.finish()
        write_at(0, writer.header())
        out.truncate(writer.size)
    return writer


def test_a_raw_source_s_qcow2_is_hashed_as_written_and_zeros_in_its_extents_stay_a_free_hole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Data extents that hold zero grains (written zeros are allocated): the plan counted them,
    # the data did not need them; the tables go where the plan said, behind a hole.
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(RANGE + 32 * MiB)
        f.write(random.Random(1).randbytes(CLUSTER) + bytes(6 * CLUSTER) + random.Random(2).randbytes(100))
        f.seek(RANGE + MiB)
        f.write(bytes(2 * CLUSTER))  # a range whose only extent is zeros: its L2 is never needed
    out = tmp_path / "out"
    out.mkdir()
    possible = possible_data(_raw_source(raw))
    assert possible is not None and planned_clusters(possible) == 1 + (8 + 2) + 2
    read_back: list[Path] = []
    monkeypatch.setattr(
        publish_module,
        "read_digests",
        lambda path, *args: read_back.append(path) or read_digests(path, *args),
    )
    result = publish(raw, out, ("qcow2",))
    assert read_back == []  # hashed as it was written, not read back
    qcow2 = out / "disk.qcow2"
    _qemu_img_accepts(raw, qcow2)
    (published,) = result.files
    assert published.sha256 == hashlib.sha256(qcow2.read_bytes()).hexdigest()
    # Header, 2 data clusters and 1 L2 written; 9 clusters of hole; then L1, refcount block, table.
    assert qcow2.stat().st_size == CLUSTER * (13 + 3)
    assert os.stat(qcow2).st_blocks * 512 <= CLUSTER * (4 + 3)  # the hole takes no disk space


def test_more_data_than_the_plan_allowed_gives_the_plan_up(tmp_path: Path) -> None:
    # The source changed after its extents were read: the layout is tight, the digest is not
    # taken while writing (the caller reads the file back).
    raw = tmp_path / "disk.raw"
    raw.write_bytes(random.Random(3).randbytes(3 * CLUSTER))
    writer = _write_planned(raw, tmp_path / "disk.qcow2", [(0, CLUSTER)])
    assert writer.planned is None and writer.digest() is None
    _qemu_img_accepts(raw, tmp_path / "disk.qcow2")
    assert writer.size == CLUSTER * (1 + 3 + 1 + 1 + 2)


def test_a_plan_that_would_leave_a_large_hole_is_given_up(tmp_path: Path) -> None:
    # Allocated throughout (as dd writes it) but zeros but for one cluster: no 100 MiB hole.
    raw = tmp_path / "disk.raw"
    raw.write_bytes(random.Random(4).randbytes(CLUSTER) + bytes(MAX_HOLE + 36 * MiB))
    writer = _write_planned(raw, tmp_path / "disk.qcow2", [(0, raw.stat().st_size)])
    assert writer.planned is None and writer.digest() is None
    assert writer.size == CLUSTER * (1 + 1 + 1 + 1 + 2)
    _qemu_img_accepts(raw, tmp_path / "disk.qcow2")


def test_a_plan_that_holds_gives_the_file_s_digest(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(2 * RANGE)
        f.write(random.Random(5).randbytes(3 * CLUSTER))
        f.seek(RANGE + 5 * CLUSTER)
        f.write(random.Random(6).randbytes(CLUSTER))
    qcow2 = tmp_path / "disk.qcow2"
    writer = _write_planned(raw, qcow2, [(0, 3 * CLUSTER), (RANGE, 8 * CLUSTER)])
    assert writer.planned == 1 + 3 + 8 + 2
    assert writer.digest() == hashlib.sha256(qcow2.read_bytes()).hexdigest()
    _qemu_img_accepts(raw, qcow2)


def _raw_source(raw: Path) -> object:
    """``raw`` admitted by the gate, as publish opens it."""
    return read_source(raw, lambda name: raw.parent / name, Limits())
