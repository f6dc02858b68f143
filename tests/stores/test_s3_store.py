"""What only the S3 store has: its errors, its read cache, uploads aborted or objects replaced meanwhile.

S3 failures a user causes — wrong or missing credentials, a missing bucket, a dead endpoint —
are one sentence that names the endpoint or bucket, with no botocore exception attached.
Against the real Swift S3 server of the ``s3_server`` fixture; the dead endpoint is a free
port of 127.0.0.1 that nothing listens on.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest
from tests.fixtures.s3_server import S3Server

from imagewright.errors import StoreError
from imagewright.stores import BlobStore, open_store, parse_store_spec
from imagewright.stores.s3 import BLOCK_SIZE, MIN_PART_SIZE, S3BlobReader

MiB = 1 << 20


def _store(spec: str) -> BlobStore:
    return open_store(parse_store_spec(spec))


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_small(store: BlobStore) -> None:
    with store.writer("k") as writer:
        writer.write(b"x" * 100)
        writer.finish()


def _write_multipart(store: BlobStore) -> None:
    with store.writer("k") as writer:
        writer.write(b"x" * (MIN_PART_SIZE + 1))
        writer.finish()


OPERATIONS: dict[str, Callable[[BlobStore], object]] = {
    "check": lambda store: store.check(),
    "write": _write_small,
    "write-multipart": _write_multipart,
    "open": lambda store: store.open(store.location_for("k")),
    "read": lambda store: store.read_chunks(store.location_for("k")),
    "exists": lambda store: store.exists(store.location_for("k")),
    "list": lambda store: list(store.iter_locations()),
    "sweep": lambda store: store.sweep_incomplete(0),
}


def _one_sentence(err: StoreError) -> str:
    message = str(err)
    assert message.endswith(".") and "\n" not in message, message
    assert "Traceback" not in message and "botocore" not in message
    assert err.__cause__ is None and err.__suppress_context__  # raised "from None"
    return message


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.new_bucket()


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize(
    ("access_key", "secret_key"),
    [("test:tester", "wrong-secret"), ("nobody:none", "testing")],
    ids=["wrong-secret", "unknown-key"],
)
def test_refused_credentials(
    s3_server: S3Server,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
    access_key: str,
    secret_key: str,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    store = _store(f"s3://{bucket}?endpoint={s3_server.endpoint}")
    with pytest.raises(StoreError) as info:
        OPERATIONS[operation](store)
    message = _one_sentence(info.value)
    assert message.startswith(
        f"The S3 endpoint {s3_server.endpoint} refused the credentials of the store 'default' ("
    )


@pytest.mark.parametrize("operation", ["check", "write", "open"])
def test_no_credentials(
    s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = _store(f"s3://{bucket}?endpoint={s3_server.endpoint}")
    with pytest.raises(StoreError) as info:
        OPERATIONS[operation](store)
    assert _one_sentence(info.value) == (
        "No usable S3 credentials were found for the store 'default': set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, or configure ~/.aws/credentials."
    )


@pytest.mark.parametrize("operation", ["check", "write", "write-multipart", "list", "sweep"])
def test_missing_bucket(s3_server: S3Server, bucket: str, operation: str) -> None:
    store = _store(f"bulk=s3://no-such-bucket-here/images?endpoint={s3_server.endpoint}")
    with pytest.raises(StoreError) as info:
        OPERATIONS[operation](store)
    assert _one_sentence(info.value) == (
        f"The S3 bucket 'no-such-bucket-here' of the store 'bulk' does not exist at {s3_server.endpoint}."
    )


def test_missing_bucket_read_is_a_missing_blob(s3_server: S3Server, bucket: str) -> None:
    # A HEAD answer has no body: a missing bucket and a missing object look alike there.
    store = _store(f"s3://no-such-bucket-here?endpoint={s3_server.endpoint}")
    with pytest.raises(StoreError) as info:
        store.open(store.location_for("k"))
    assert _one_sentence(info.value) == "There is no blob at s3://no-such-bucket-here/k."


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_dead_endpoint(bucket: str, operation: str) -> None:
    endpoint = f"http://127.0.0.1:{_dead_port()}"
    store = _store(f"s3://{bucket}?endpoint={endpoint}")
    with pytest.raises(StoreError) as info:
        OPERATIONS[operation](store)
    assert _one_sentence(info.value) == (
        f"The S3 endpoint {endpoint} of the store 'default' cannot be reached (Connection refused)."
    )


def test_a_failed_write_leaves_the_writer_aborted(s3_server: S3Server, bucket: str) -> None:
    store = _store(f"s3://no-such-bucket-here?endpoint={s3_server.endpoint}")
    writer = store.writer("k")
    with pytest.raises(StoreError, match="does not exist"):
        writer.write(b"y" * (MIN_PART_SIZE + 1))
    with pytest.raises(StoreError, match="already aborted"):
        writer.finish()
    # and nothing was left in the (real) bucket of the test
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_check_passes_on_a_good_store(s3_server: S3Server, bucket: str) -> None:
    store = _store(f"s3://{bucket}/p?endpoint={s3_server.endpoint}&region={s3_server.region}")
    store.check()
    assert store.info.description == f"S3 bucket {bucket}/p at {s3_server.endpoint}"


def test_an_upload_aborted_by_a_sweep_fails_the_writer_in_one_sentence(
    s3_server: S3Server, bucket: str
) -> None:
    store = _store(f"s3://{bucket}?endpoint={s3_server.endpoint}")
    writer = store.writer("swept")
    writer.write(b"z" * (MIN_PART_SIZE + 1))  # the multipart upload exists, part 1 is on its way
    assert len(store.sweep_incomplete(0)) == 1  # as a sweeper with a too short threshold would
    with pytest.raises(StoreError) as info:
        writer.write(b"z" * MIN_PART_SIZE)
        writer.finish()
    assert _one_sentence(info.value) == (
        f"The multipart upload of s3://{bucket}/swept was aborted by someone else (a sweep of "
        "incomplete uploads?) while it was written; nothing was stored."
    )
    assert not store.exists(store.location_for("swept"))
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_delete_removes_an_unfinished_upload_at_the_location(s3_server: S3Server, bucket: str) -> None:
    """A writer killed mid-upload leaves a multipart upload; deleting its location removes it
    (the registry's sweep deletes the location of an interrupted upload), and nothing else."""
    store = _store(f"s3://{bucket}/p?endpoint={s3_server.endpoint}")
    dead = store.writer("dead")
    dead.write(b"d" * (MIN_PART_SIZE + 1))  # the multipart upload exists
    live = store.writer("dead2")  # another key sharing the first as a prefix: left alone
    live.write(b"l" * (MIN_PART_SIZE + 1))
    client = s3_server.client()
    assert len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 2
    store.delete(store.location_for("dead"))
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [upload["Key"] for upload in left] == ["p/dead2"]
    live.write(b"l" * MIN_PART_SIZE)
    assert live.finish() == store.location_for("dead2")
    assert store.open(store.location_for("dead2")).size == 2 * MIN_PART_SIZE + 1
    store.delete(store.location_for("dead"))  # idempotent


def test_a_blob_replaced_while_read_is_an_error_not_a_mixture(s3_server: S3Server, bucket: str) -> None:
    store = _store(f"s3://{bucket}?endpoint={s3_server.endpoint}")
    with store.writer("moving") as writer:
        writer.write(b"a" * 3_000_000)
        location = writer.finish()
    reader = store.open(location)
    assert reader.pread(0, 4) == b"aaaa"
    s3_server.client().put_object(Bucket=bucket, Key="moving", Body=b"b" * 3_000_000)
    with pytest.raises(StoreError) as info:
        reader.pread(2_000_000, 4)  # not cached: a new ranged GET, If-Match the old ETag
    assert _one_sentence(info.value) == f"The blob at {location} was replaced while it was being read."


def test_repeated_small_reads_come_from_the_cache(s3_server: S3Server, bucket: str) -> None:
    store = _store(f"s3://{bucket}?endpoint={s3_server.endpoint}")
    data = os.urandom(2 * MiB)
    with store.writer("cached") as writer:
        writer.write(data)
        location = writer.finish()
    reader = store.open(location)
    assert isinstance(reader, S3BlobReader)
    assert reader.pread(0, 512) == data[:512]  # a header
    assert reader.pread(512, 4096) == data[512 : 512 + 4096]
    assert reader.pread(0, 72) == data[:72]  # the header again
    assert (reader.requests, reader.bytes_fetched) == (1, BLOCK_SIZE)
    assert reader.pread(BLOCK_SIZE - 2, 4) == data[BLOCK_SIZE - 2 : BLOCK_SIZE + 2]  # one new block
    assert (reader.requests, reader.bytes_fetched) == (2, 2 * BLOCK_SIZE)
    assert reader.pread(0, 2 * MiB) == data  # large: one GET past the cache
    assert reader.requests == 3
    assert reader.pread(100, 10) == data[100:110]
    assert reader.requests == 3
