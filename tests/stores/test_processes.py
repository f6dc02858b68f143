"""Stores used from other processes: memory stays flat for a 256 MiB blob, and a writer killed
with SIGKILL mid-write leaves nothing at the location and only what ``sweep_incomplete`` removes.

The client runs in a child (``child_writer.py``) so that its peak RSS is its own and so that it
can be killed. What came back is checked against an independent reader: ``cmp`` with the same
bytes made here (file store), a plain boto3 GET (S3).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.fixtures.tools import run
from tests.stores.child_writer import stream_chunks
from tests.stores.conftest import StoreUnderTest, file_path_of
from tests.stores.test_contract import leftovers

MiB = 1 << 20
BIG = 256 * MiB + 12345  # not a multiple of a part or a chunk
RSS_LIMIT_KIB = 150 * 1024
RSS_GROWTH_LIMIT_KIB = 48 * 1024  # S3: one 8 MiB part buffered, its copy in flight, boto3's own
REPO = Path(__file__).resolve().parents[2]


def child(sut: StoreUnderTest, key: str, size: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.stores.child_writer", sut.spec, key, str(size), mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),  # the S3 credentials the fixture put there
    )


@pytest.mark.slow  # 256 MiB through Swift and back, twice read: ~30 s on a busy machine
def test_a_256_mib_blob_streams_in_and_out_with_flat_memory(
    sut: StoreUnderTest, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    proc = child(sut, "big-image", BIG, "stream")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    report = json.loads(out)
    print(f"\n{sut.kind} store, 256 MiB: {report}")
    record_property(f"{sut.kind}_stream_report", report)
    assert report["sha256_out"] == report["sha256_in"]
    assert report["peak_rss_kib"] < RSS_LIMIT_KIB, report
    assert report["peak_rss_kib"] - report["baseline_rss_kib"] < RSS_GROWTH_LIMIT_KIB, report
    location = report["location"]
    assert location == sut.store.location_for("big-image")
    assert sut.raw_sha256(location) == report["sha256_in"]  # independent reader
    if sut.kind == "file":
        reference = tmp_path / "reference"
        with reference.open("wb") as f:
            for chunk in stream_chunks(BIG):
                f.write(chunk)
        run("cmp", reference, file_path_of(location))  # fails the test on any difference
    with sut.store.open(location) as reader:
        assert reader.size == BIG
    assert leftovers(sut) == []


def test_a_writer_killed_mid_write_leaves_nothing_after_the_sweep(sut: StoreUnderTest) -> None:
    store = sut.store
    location = store.location_for("killed")
    proc = child(sut, "killed", 20 * MiB + 5, "hang")  # S3: two 8 MiB parts uploaded, 4 MiB buffered
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "WRITTEN\n", proc.stderr.read() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    assert not store.exists(location)
    assert list(store.iter_locations()) == []
    left = leftovers(sut)  # found without the store's code: a temp file / a multipart upload
    assert len(left) == 1, left

    if sut.kind == "s3":
        # The upload just received a part: a sweep for uploads idle an hour leaves it.
        assert store.sweep_incomplete(3600) == []
        assert len(leftovers(sut)) == 1
        removed = store.sweep_incomplete(0)
    else:
        # The writer's pid is dead: its temp goes whatever its age.
        removed = store.sweep_incomplete(3600)
    assert len(removed) == 1 and "killed" in removed[0], removed
    assert leftovers(sut) == []
    assert store.sweep_incomplete(0) == []
    assert not store.exists(location)
    if sut.kind == "s3":
        assert sut.s3 is not None and sut.bucket is not None
        client = sut.s3.client()
        assert client.list_multipart_uploads(Bucket=sut.bucket).get("Uploads", []) == []
        assert client.list_objects_v2(Bucket=sut.bucket).get("KeyCount") == 0
    else:
        assert sut.root is not None
        assert [p for p in sut.root.rglob("*") if not p.is_dir()] == []
