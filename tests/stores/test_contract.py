"""The store contract, the same for every kind of store (file, S3): see ``imagewright.stores``.

Each test runs on a fresh store of each kind (``sut`` in conftest.py); what a store returns is
cross-checked with an independent read of the same blob (the file itself, or plain boto3).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from tests.stores.conftest import StoreUnderTest, file_path_of

from imagewright.errors import StoreError
from imagewright.stores import BlobStore
from imagewright.stores.s3 import MIN_PART_SIZE

MiB = 1 << 20


def pattern(size: int, seed: int = 1) -> bytes:
    """Deterministic, incompressible-looking, never all zeros in any 4 KiB."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha512(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def put(store: BlobStore, key: str, data: bytes, piece: int = 100_000) -> str:
    with store.writer(key) as writer:
        for i in range(0, len(data), piece):
            writer.write(data[i : i + piece])
        location = writer.finish()
    return location


def leftovers(sut: StoreUnderTest) -> list[str]:
    """What is under the store besides finished blobs: temp files, or multipart uploads."""
    if sut.kind == "file":
        assert sut.root is not None
        if not sut.root.exists():
            return []
        blobs = {file_path_of(location) for location in sut.store.iter_locations()}
        return sorted(str(p) for p in sut.root.rglob("*") if p.is_file() and p not in blobs)
    assert sut.s3 is not None and sut.bucket is not None
    uploads = sut.s3.client().list_multipart_uploads(Bucket=sut.bucket).get("Uploads", [])
    return [f"{u['Key']} {u['UploadId']}" for u in uploads]


def independently_present(sut: StoreUnderTest, location: str) -> bool:
    """Is there a blob at the location, asked without the store's code?"""
    if sut.kind == "file":
        return file_path_of(location).exists()
    assert sut.s3 is not None and sut.bucket is not None
    listing = sut.s3.client().list_objects_v2(Bucket=sut.bucket, Prefix=sut.object_key(location))
    return any(item["Key"] == sut.object_key(location) for item in listing.get("Contents", []))


def test_round_trip(sut: StoreUnderTest) -> None:
    store = sut.store
    data = pattern(3 * MiB + 12345)
    location = put(store, "image-1", data)
    assert location == store.location_for("image-1")
    assert store.key_of(location) == "image-1"
    assert store.owns(location)
    assert store.exists(location)
    assert b"".join(store.read_chunks(location)) == data
    assert sut.raw_read(location) == data
    with store.open(location) as reader:
        assert reader.size == len(data)
        assert reader.pread(0, 512) == data[:512]
        assert reader.pread(len(data) - 10, 100) == data[-10:]
    assert list(store.iter_locations()) == [location]
    assert leftovers(sut) == []


def test_location_is_deterministic_and_named_by_scheme(sut: StoreUnderTest) -> None:
    location = sut.store.location_for("abc-123")
    assert location == sut.store.location_for("abc-123")
    assert location.startswith(f"{sut.kind}://")
    assert location.endswith("/abc-123")
    assert sut.store.info.scheme == sut.kind
    assert sut.store.info.id == "default"


def test_multipart_sized_blob_checksums_match_an_independent_read(sut: StoreUnderTest) -> None:
    data = pattern(2 * MIN_PART_SIZE + 5 * MiB + 7, seed=2)  # 3 parts in S3, the last one short
    location = put(sut.store, "multi", data, piece=1_000_003)
    expected = hashlib.sha256(data).hexdigest()
    assert sut.raw_sha256(location) == expected
    streamed = hashlib.sha256()
    for chunk in sut.store.read_chunks(location, chunk_size=3 * MiB):
        assert 0 < len(chunk) <= 3 * MiB
        streamed.update(chunk)
    assert streamed.hexdigest() == expected
    assert leftovers(sut) == []


def test_nothing_is_visible_before_finish(sut: StoreUnderTest) -> None:
    store = sut.store
    location = store.location_for("pending")
    with store.writer("pending") as writer:
        assert writer.location == location
        writer.write(pattern(MIN_PART_SIZE + MiB))  # S3: a part is already uploaded
        assert writer.bytes_written == MIN_PART_SIZE + MiB
        assert not store.exists(location)
        assert list(store.iter_locations()) == []
        with pytest.raises(StoreError, match="no blob"):
            store.open(location)
        assert leftovers(sut) != []  # the temp file / the multipart upload
        writer.finish()
    assert store.exists(location)
    assert leftovers(sut) == []


def test_abort_leaves_nothing_and_is_idempotent(sut: StoreUnderTest) -> None:
    store = sut.store
    writer = store.writer("gone")
    writer.write(pattern(MIN_PART_SIZE + 2 * MiB))
    writer.abort()
    writer.abort()
    assert not store.exists(writer.location)
    assert list(store.iter_locations()) == []
    assert leftovers(sut) == []
    with pytest.raises(StoreError, match="already aborted"):
        writer.write(b"more")
    with pytest.raises(StoreError, match="already aborted"):
        writer.finish()
    assert store.sweep_incomplete(0) == []


def test_an_exception_inside_the_writer_aborts(sut: StoreUnderTest) -> None:
    store = sut.store

    class BoomError(Exception):
        pass

    with pytest.raises(BoomError), store.writer("boom") as writer:
        writer.write(pattern(MIN_PART_SIZE + 1))
        raise BoomError
    assert writer.finished is False
    assert not store.exists(store.location_for("boom"))
    assert leftovers(sut) == []


def test_leaving_the_writer_without_finish_aborts(sut: StoreUnderTest) -> None:
    with sut.store.writer("unfinished") as writer:
        writer.write(b"some bytes")
    assert not sut.store.exists(writer.location)
    assert leftovers(sut) == []


def test_finish_is_final(sut: StoreUnderTest) -> None:
    store = sut.store
    with store.writer("once") as writer:
        writer.write(b"x" * 1000)
        writer.finish()
        with pytest.raises(StoreError, match="already finished"):
            writer.write(b"y")
        with pytest.raises(StoreError, match="already finished"):
            writer.finish()
        writer.abort()  # no-op after finish: the blob stays
    assert sut.raw_read(writer.location) == b"x" * 1000


def test_finish_replaces_an_existing_blob(sut: StoreUnderTest) -> None:
    first = put(sut.store, "same", pattern(5000, seed=1))
    second = put(sut.store, "same", pattern(7000, seed=2))
    assert first == second
    assert sut.raw_read(second) == pattern(7000, seed=2)
    assert list(sut.store.iter_locations()) == [second]


def test_adopt_makes_a_local_file_the_blob_and_consumes_it(sut: StoreUnderTest, tmp_path: Path) -> None:
    store = sut.store
    data = pattern(MIN_PART_SIZE + 3 * MiB + 77)  # S3: more than one part
    scratch = tmp_path / "converted.raw"
    scratch.write_bytes(data)
    reported: list[int] = []
    location = store.adopt("adopted", scratch, reported.append)
    assert location == store.location_for("adopted")
    assert not scratch.exists()
    assert sut.raw_read(location) == data
    assert list(store.iter_locations()) == [location]
    assert leftovers(sut) == []
    if sut.kind == "file":
        assert reported == []  # renamed in: nothing was copied
    else:
        assert reported == sorted(reported) and reported[-1] == len(data)


def test_adopt_of_what_is_not_there_is_one_sentence_and_leaves_nothing(
    sut: StoreUnderTest, tmp_path: Path
) -> None:
    with pytest.raises(StoreError) as info:
        sut.store.adopt("nothing", tmp_path / "missing")
    assert str(info.value).endswith(".") and "\n" not in str(info.value)
    assert "missing" in str(info.value)
    assert info.value.__cause__ is None
    assert list(sut.store.iter_locations()) == []
    assert leftovers(sut) == []


def test_empty_blob(sut: StoreUnderTest) -> None:
    store = sut.store
    with store.writer("empty") as writer:
        location = writer.finish()
    assert store.exists(location)
    assert sut.raw_read(location) == b""
    assert list(store.read_chunks(location)) == []
    with store.open(location) as reader:
        assert reader.size == 0
        assert reader.pread(0, 10) == b""


PREAD_CASES = [
    (0, 0),
    (0, 1),
    (0, 4096),
    (1, 511),
    (262_143, 2),  # across the S3 reader's 256 KiB block boundary
    (262_144 * 3 - 5, 262_144 + 10),  # three blocks
    (999_990, 100),  # the tail, cut at the end
    (1_000_000, 1),  # exactly at the end
    (2_000_000, 10),  # far past it
    (-1, 10),  # negative: nothing
    (0, 1_000_000),  # everything (bypasses the S3 cache)
    (5, -3),
]


def test_pread_edges(sut: StoreUnderTest) -> None:
    data = pattern(1_000_000, seed=3)
    location = put(sut.store, "preads", data)
    with sut.store.open(location) as reader:
        assert reader.size == len(data)
        for offset, length in PREAD_CASES:
            expected = data[offset : offset + length] if offset >= 0 and length > 0 else b""
            assert reader.pread(offset, length) == expected, (offset, length)


READ_RANGES = [
    (0, None),
    (0, 0),
    (7, 7),
    (1, 999_999),
    (999_999, None),
    (1_000_000, None),
    (1_000_010, None),
    (1_000_010, 1_000_020),
    (3, 5_000_000),
    (123_456, 654_321),
]


def test_read_chunks_ranges(sut: StoreUnderTest) -> None:
    data = pattern(1_000_000, seed=5)
    location = put(sut.store, "ranges", data)
    for start, end in READ_RANGES:
        assert b"".join(sut.store.read_chunks(location, start, end)) == data[start:end], (start, end)
    chunks = list(sut.store.read_chunks(location, 10, 100_010, chunk_size=7_000))
    assert all(0 < len(c) <= 7_000 for c in chunks)
    assert b"".join(chunks) == data[10:100_010]


@pytest.mark.parametrize(("start", "end"), [(-1, None), (10, 5), (-5, -1)])
def test_read_chunks_refuses_bad_ranges(sut: StoreUnderTest, start: int, end: int | None) -> None:
    location = put(sut.store, "bad-range", b"0123456789abcdef")
    with pytest.raises(StoreError, match="is not a range"):
        list(sut.store.read_chunks(location, start, end))


def test_missing_blob(sut: StoreUnderTest) -> None:
    store = sut.store
    location = store.location_for("never-written")
    assert not store.exists(location)
    with pytest.raises(StoreError, match=r"There is no blob at .*never-written\.$"):
        store.read_chunks(location)  # raised at the call, before any byte is sent anywhere
    with pytest.raises(StoreError, match="There is no blob at"):
        store.open(location)
    store.delete(location)  # idempotent


def test_delete(sut: StoreUnderTest) -> None:
    store = sut.store
    keep = put(store, "keep", b"k" * 100)
    drop = put(store, "drop", b"d" * 100)
    store.delete(drop)
    store.delete(drop)
    assert not store.exists(drop)
    assert store.exists(keep)
    assert list(store.iter_locations()) == [keep]
    assert not independently_present(sut, drop)
    assert independently_present(sut, keep)


def test_iter_locations_lists_exactly_the_finished_blobs(sut: StoreUnderTest) -> None:
    store = sut.store
    keys = ["b-2", "a-1", "c.3", "A_4", "0aa"]
    for key in keys:
        put(store, key, key.encode())
    pending = store.writer("not-yet")
    pending.write(b"partial")
    assert sorted(store.iter_locations()) == sorted(store.location_for(k) for k in keys)
    pending.abort()


@pytest.mark.parametrize("key", ["", ".hidden", "../escape", "a/b", "a\\b", "a b", "é", "x" * 201, "-dash"])
def test_bad_keys_are_refused(sut: StoreUnderTest, key: str) -> None:
    with pytest.raises(StoreError, match="cannot name a blob"):
        sut.store.writer(key)
    with pytest.raises(StoreError, match="cannot name a blob"):
        sut.store.location_for(key)


def test_foreign_locations_are_refused(sut: StoreUnderTest) -> None:
    store = sut.store
    own = store.location_for("mine")
    foreign = [
        "file:///etc/passwd",
        "s3://other-bucket/mine",
        own + "/more",
        own.rsplit("/", 1)[0] + "/../mine",
        own.rsplit("/", 1)[0] + "/.mine.tmp",
        own.replace("mine", "mi%2Fne"),
        "",
    ]
    for location in foreign:
        assert not store.owns(location), location
        with pytest.raises(StoreError, match="is not a blob of the store 'default'"):
            store.open(location)
        with pytest.raises(StoreError, match="is not a blob of the store 'default'"):
            store.delete(location)
        with pytest.raises(StoreError, match="is not a blob of the store 'default'"):
            store.read_chunks(location)


def test_sweep_leaves_a_live_writer_alone(sut: StoreUnderTest) -> None:
    store = sut.store
    with store.writer("live") as writer:
        writer.write(pattern(MIN_PART_SIZE + 1))
        assert store.sweep_incomplete(3600) == []
        writer.write(b"tail")
        location = writer.finish()
    assert sut.raw_read(location) == pattern(MIN_PART_SIZE + 1) + b"tail"


def test_check_and_usage(sut: StoreUnderTest) -> None:
    sut.store.check()
    usage = sut.store.usage()
    if sut.kind == "file":
        assert usage is not None
        assert usage.capacity_bytes > 0
        assert 0 <= usage.free_bytes <= usage.capacity_bytes
        stat = os.statvfs(sut.root)  # type: ignore[arg-type]
        assert usage.capacity_bytes == stat.f_blocks * stat.f_frsize
    else:
        assert usage is None


def test_two_writers_of_one_key_never_mix(sut: StoreUnderTest) -> None:
    first, second = sut.store.writer("twice"), sut.store.writer("twice")
    data_a, data_b = pattern(MIN_PART_SIZE + 100, seed=6), pattern(MIN_PART_SIZE + 200, seed=7)
    for offset in range(0, len(data_b), MiB):
        first.write(data_a[offset : offset + MiB])
        second.write(data_b[offset : offset + MiB])
    location = first.finish()
    assert sut.raw_read(location) == data_a
    assert second.finish() == location
    assert sut.raw_read(location) == data_b
    assert leftovers(sut) == []
