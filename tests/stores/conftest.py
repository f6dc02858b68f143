"""Stores under test: each contract test runs once per kind of store, each time on a fresh one.

``StoreUnderTest`` carries the store, the ``--store`` value that opens the same store in a
child process, and an *independent* way to read a blob back (a plain boto3 ``get_object`` for
S3, the file itself for the file store), so a test never checks a store only against itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from tests.fixtures.s3_server import S3Server

from imagewright.stores import BlobStore, open_store, parse_store_spec

STORE_KINDS = ("file", "s3")


@dataclass
class StoreUnderTest:
    kind: str
    store: BlobStore
    spec: str  # the --store value of this very store, for child processes
    raw_read: Callable[[str], bytes]  # independent of the store's own code
    raw_sha256: Callable[[str], str]
    s3: S3Server | None = None
    bucket: str | None = None
    root: Path | None = None

    def object_key(self, location: str) -> str:
        """The S3 key of a location (for boto3 calls made directly)."""
        assert self.bucket is not None
        return urlsplit(location).path.lstrip("/")


def file_path_of(location: str) -> Path:
    parts = urlsplit(location)
    assert parts.scheme == "file"
    return Path(unquote(parts.path))


def _file_store(tmp_path: Path) -> StoreUnderTest:
    root = tmp_path / "blob store"  # a space, to prove locations are quoted and unquoted
    spec = f"default={root.as_uri()}"
    store = open_store(parse_store_spec(spec))

    def raw_read(location: str) -> bytes:
        return file_path_of(location).read_bytes()

    def raw_sha256(location: str) -> str:
        digest = hashlib.sha256()
        with open(file_path_of(location), "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    return StoreUnderTest("file", store, spec, raw_read, raw_sha256, root=root)


def _s3_store(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> StoreUnderTest:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3.new_bucket()
    spec = f"default=s3://{bucket}/images/v2?endpoint={s3.endpoint}&region={s3.region}"
    store = open_store(parse_store_spec(spec))
    client = s3.client()

    def key_of(location: str) -> str:
        return urlsplit(location).path.lstrip("/")

    def raw_read(location: str) -> bytes:
        return client.get_object(Bucket=bucket, Key=key_of(location))["Body"].read()

    def raw_sha256(location: str) -> str:
        digest = hashlib.sha256()
        body = client.get_object(Bucket=bucket, Key=key_of(location))["Body"]
        for chunk in body.iter_chunks(1 << 20):
            digest.update(chunk)
        return digest.hexdigest()

    return StoreUnderTest("s3", store, spec, raw_read, raw_sha256, s3=s3, bucket=bucket)


@pytest.fixture(params=STORE_KINDS)
def sut(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoreUnderTest]:
    if request.param == "file":
        yield _file_store(tmp_path)
    else:
        yield _s3_store(request.getfixturevalue("s3_server"), monkeypatch)
