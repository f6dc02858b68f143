"""The S3 store: blobs as objects ``PREFIX/KEY`` of one bucket, through boto3.

Works with any S3 (AWS, Ceph RGW, MinIO, OpenStack Swift's s3api — the last is what the tests
start). Sources: the Amazon S3 API reference (CreateMultipartUpload, UploadPart,
CompleteMultipartUpload, AbortMultipartUpload, ListMultipartUploads, ListParts, GetObject with
``Range`` and ``If-Match``), glance_store's ``_drivers/s3.py`` (what a Glance S3 store does), and
s3transfer's part sizing (8 MiB, grown to keep under 10 000 parts).

Writes stream: bytes are buffered up to one part (>= 8 MiB) and sent as an UploadPart with its
Content-MD5, which the server checks; a blob smaller than one part is one PutObject. Nothing is
visible under the key before CompleteMultipartUpload; a failure aborts the upload, and an upload
whose writer died (kill -9) is aborted by ``sweep_incomplete`` once it has been idle (no part
uploaded) for longer than the caller's threshold. Part sizes: from ``size_hint`` when the caller
knows the size (the smallest size >= 8 MiB that fits in 9 000 parts), else 8 MiB doubled every
2 000 parts, so an unknown-size stream can reach ~500 GiB with memory bounded by one part.

Reads: ``open()`` is a ByteSource doing ranged GETs with ``If-Match`` on the ETag seen at open
(an object replaced mid-read is an error, not a mixture), through a small LRU cache of aligned
256 KiB blocks — inspection reads headers and tables, often the same ones twice.
``read_chunks`` streams one GET's body.

NOTE: credentials come only from boto3's standard chain (environment, ~/.aws, instance role);
a URL never carries them (``spec.py`` refuses it). Every botocore failure is translated into
one StoreError sentence that names the endpoint, the bucket or the location; no traceback.
Request checksums are sent only when an operation requires them (``when_required``): many
S3-compatible servers do not implement the CRC trailers newer boto3 sends by default.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from imagewright.errors import StoreError
from imagewright.stores.base import (
    DEFAULT_CHUNK_SIZE,
    KEY_PATTERN,
    BlobReader,
    BlobStore,
    BlobWriter,
    StoreInfo,
    StoreUsage,
    check_key,
    check_range,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MiB = 1 << 20
#: Smallest part we send (S3's minimum is 5 MiB; 8 MiB is s3transfer's default).
MIN_PART_SIZE = 8 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
#: Parts planned from a size hint, leaving room for a stream longer than announced.
HINT_PARTS = 9_000
#: Without a size hint the part size doubles every this many parts.
PARTS_PER_SIZE_STEP = 2_000
#: Parts uploading at once while the next one is buffered (s3transfer uses 10 threads).
PARTS_IN_FLIGHT = 1
#: Reader cache: aligned blocks, at most this many kept (4 MiB in all).
BLOCK_SIZE = 256 * 1024
CACHE_BLOCKS = 16

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthFailure",
}
_MISSING_BUCKET_CODES = {"NoSuchBucket"}
_MISSING_KEY_CODES = {"NoSuchKey", "HTTP 404", "404", "NotFound"}
_ERRNO_REASON = re.compile(r"\[Errno -?\d+\] ([^\]\)]+)")


def part_size_for(part_number: int, size_hint: int | None) -> int:
    """The size of part ``part_number`` (1-based) of an upload of ``size_hint`` bytes, or unknown."""
    if size_hint is not None and size_hint > 0:
        wanted = -(-size_hint // HINT_PARTS)
        return min(MAX_PART_SIZE, max(MIN_PART_SIZE, -(-wanted // MiB) * MiB))
    step = (part_number - 1) // PARTS_PER_SIZE_STEP
    return min(MAX_PART_SIZE, MIN_PART_SIZE << step)


def _content_md5(data: bytes | bytearray) -> str:
    # MD5 is what S3's Content-MD5 header is defined with (RFC 1864); not used for security here.
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class S3Store(BlobStore):
    """Blobs as objects of one bucket under a prefix."""

    def __init__(
        self,
        store_id: str,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        addressing: str = "path",
        is_default: bool = False,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self.addressing = addressing
        where = endpoint or "AWS"
        self.info = StoreInfo(
            id=store_id,
            scheme="s3",
            description=f"S3 bucket {bucket}{'/' + self.prefix if self.prefix else ''} at {where}",
            is_default=is_default,
        )
        self._client: S3Client | None = None
        self._client_pid = -1
        self._lock = threading.Lock()

    # -- names ------------------------------------------------------------------------------

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _location_prefix(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/" if self.prefix else f"s3://{self.bucket}/"

    def location_for(self, key: str) -> str:
        return self._location_prefix() + check_key(key)

    def key_of(self, location: str) -> str:
        head = self._location_prefix()
        if not location.startswith(head) or not KEY_PATTERN.fullmatch(location[len(head) :]):
            raise StoreError(f"The location {location!r} is not a blob of the store {self.info.id!r}.")
        return location[len(head) :]

    # -- the client and its errors ----------------------------------------------------------

    @property
    def client(self) -> S3Client:
        """One client per process (a client does not survive fork; registry workers fork)."""
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                session = boto3.session.Session()
                region = self.region or session.region_name or "us-east-1"
                config = Config(
                    region_name=region,
                    s3={"addressing_style": "virtual" if self.addressing == "virtual" else "path"},
                    connect_timeout=10,
                    read_timeout=120,
                    retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=32,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    user_agent_extra="imagewright",
                )
                self._client = session.client("s3", endpoint_url=self.endpoint, config=config)
                self._client_pid = os.getpid()
            return self._client

    @property
    def endpoint_url(self) -> str:
        return self.endpoint or f"the AWS S3 endpoint of region {self.region or 'us-east-1'}"

    def _missing_bucket(self) -> StoreError:
        return StoreError(
            f"The S3 bucket {self.bucket!r} of the store {self.info.id!r} does not exist at "
            f"{self.endpoint_url}."
        )

    def error(self, err: Exception, doing: str, location: str | None = None) -> StoreError:
        """One sentence for a botocore failure while ``doing`` (a phrase: "writing s3://b/k")."""
        store = self.info.id
        if isinstance(err, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            return StoreError(
                f"No usable S3 credentials were found for the store {store!r}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or configure ~/.aws/credentials."
            )
        if isinstance(err, BotoConnectionError):
            return StoreError(
                f"The S3 endpoint {self.endpoint_url} of the store {store!r} cannot be reached "
                f"({_connection_reason(err)})."
            )
        if isinstance(err, ClientError):
            error = err.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = _one_line(str(error.get("Message", ""))).split(". ")[0].rstrip(".")
            if code in _MISSING_BUCKET_CODES:
                return self._missing_bucket()
            if code.isdigit():  # a HEAD answer has no body, hence no error code: the HTTP status
                code = f"HTTP {code}"
            if code in _CREDENTIAL_CODES or (status == 403 and code in ("HTTP 403", "Forbidden")):
                return StoreError(
                    f"The S3 endpoint {self.endpoint_url} refused the credentials of the store {store!r} "
                    f"({code})."
                )
            if code == "AccessDenied":
                return StoreError(
                    f"The S3 endpoint {self.endpoint_url} denied the store {store!r} access to the bucket "
                    f"{self.bucket!r} while {doing} (AccessDenied)."
                )
            if code == "NoSuchUpload" and location is not None:
                return StoreError(
                    f"The multipart upload of {location} was aborted by someone else (a sweep of "
                    "incomplete uploads?) while it was written; nothing was stored."
                )
            if location is not None and (code in _MISSING_KEY_CODES or status == 404):
                return StoreError(f"There is no blob at {location}.")
            if code in ("PreconditionFailed", "HTTP 412") and location is not None:
                return StoreError(f"The blob at {location} was replaced while it was being read.")
            detail = f": {message}" if message else ""
            return StoreError(
                f"The S3 endpoint {self.endpoint_url} answered {code or status} while {doing}{detail}."
            )
        if isinstance(err, BotoCoreError):
            return StoreError(
                f"S3 failed while {doing} at {self.endpoint_url}: {_one_line(str(err)).rstrip('.')}."
            )
        return StoreError(f"S3 failed while {doing}: {_one_line(str(err)).rstrip('.')}.")

    # -- the interface ----------------------------------------------------------------------

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status == 404:
                raise self._missing_bucket() from None
            raise self.error(err, f"checking the bucket {self.bucket!r}") from None
        except BotoCoreError as err:
            raise self.error(err, f"checking the bucket {self.bucket!r}") from None

    def writer(self, key: str, size_hint: int | None = None) -> S3BlobWriter:
        return S3BlobWriter(self, check_key(key), size_hint)

    def open(self, location: str) -> S3BlobReader:
        return S3BlobReader(self, location)

    def read_chunks(
        self, location: str, start: int = 0, end: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Iterator[bytes]:
        """One GET for the range, issued now (a missing blob fails here); its body streamed."""
        key = self._object_key(self.key_of(location))
        check_range(start, end)
        if chunk_size <= 0:
            raise StoreError(f"The chunk size {chunk_size} is not positive.")
        if end == start:
            return iter(())
        byte_range = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, Range=byte_range)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "InvalidRange":
                # Starting at or past the end: an empty slice. (A missing blob is NoSuchKey.)
                return iter(())
            raise self.error(err, f"reading {location}", location) from None
        except BotoCoreError as err:
            raise self.error(err, f"reading {location}", location) from None
        return self._stream(response["Body"], location, chunk_size)

    def _stream(self, body: Any, location: str, chunk_size: int) -> Iterator[bytes]:
        try:
            while True:
                try:
                    chunk = body.read(chunk_size)
                except (BotoCoreError, OSError) as err:
                    raise self.error(err, f"reading {location}", location) from None
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def delete(self, location: str) -> None:
        """Remove the blob at ``location``, finished or not: the object, and any multipart upload
        still open at its key (a writer killed mid-upload leaves one; keys are never reused, so
        no live writer of another upload can be at this key)."""
        key = self._object_key(self.key_of(location))
        try:
            uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for upload in uploads.get("Uploads", []):
                if upload.get("Key") == key and upload.get("UploadId"):
                    with contextlib.suppress(ClientError):  # aborted meanwhile
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                        )
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _MISSING_KEY_CODES:
                return
            raise self.error(err, f"deleting {location}", location) from None
        except BotoCoreError as err:
            raise self.error(err, f"deleting {location}", location) from None

    def exists(self, location: str) -> bool:
        key = self._object_key(self.key_of(location))
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise self.error(err, f"looking for {location}", location) from None
        except BotoCoreError as err:
            raise self.error(err, f"looking for {location}", location) from None
        return True

    def _list_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def iter_locations(self) -> Iterator[str]:
        head = self._list_prefix()
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=head, Delimiter="/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item.get("Key", "")[len(head) :]
                    if KEY_PATTERN.fullmatch(name):
                        yield self.location_for(name)
        except (ClientError, BotoCoreError) as err:
            raise self.error(err, f"listing the bucket {self.bucket!r}") from None

    def sweep_incomplete(self, older_than_seconds: float) -> list[str]:
        """Abort multipart uploads under our prefix with no part uploaded for ``older_than_seconds``.

        Idle time is measured against the server's clock readings (Swift rounds them up to the
        second): 0 or less aborts every incomplete upload under the prefix, live or not.
        """
        head = self._list_prefix()
        removed: list[str] = []
        now = datetime.now(UTC)
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=head
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    key, upload_id = upload.get("Key", ""), upload.get("UploadId", "")
                    name = key[len(head) :]
                    if not key.startswith(head) or not KEY_PATTERN.fullmatch(name) or not upload_id:
                        continue
                    if older_than_seconds > 0:
                        last = self._last_activity(key, upload_id, upload.get("Initiated"))
                        if last is not None and (now - last).total_seconds() < older_than_seconds:
                            continue
                    with contextlib.suppress(ClientError):  # aborted meanwhile by another sweeper
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                    removed.append(f"{self.location_for(name)} (multipart upload {upload_id})")
        except (ClientError, BotoCoreError) as err:
            raise self.error(err, f"sweeping incomplete uploads of the bucket {self.bucket!r}") from None
        return removed

    def _last_activity(self, key: str, upload_id: str, initiated: datetime | None) -> datetime | None:
        """The newest of the upload's start and its parts' times (a live writer keeps it recent)."""
        times = [initiated] if initiated is not None else []
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
            for page in pages:
                times.extend(p["LastModified"] for p in page.get("Parts", []) if "LastModified" in p)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return datetime.now(UTC)  # finished or aborted meanwhile: nothing to do
            raise
        return max(times) if times else None

    def usage(self) -> StoreUsage | None:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _connection_reason(err: BotoConnectionError) -> str:
    """ "Connection refused", "Name or service not known", "timed out" — not urllib3's repr."""
    cause = _one_line(str(getattr(err, "kwargs", {}).get("error", "")))
    text = _one_line(str(err))
    match = _ERRNO_REASON.search(cause) or _ERRNO_REASON.search(text)
    if match:
        return match.group(1).strip().rstrip(".")
    if "timeout" in f"{cause} {text}".lower():
        return "timed out"
    return text.rstrip(".")


class S3BlobWriter(BlobWriter):
    """Fills one part while the previous one uploads in a thread (``PARTS_IN_FLIGHT``).

    A blob smaller than one part is a single PutObject (no multipart upload, no thread).
    Memory: the part being filled plus the part in flight, two parts (16 MiB at first).
    """

    def __init__(self, store: S3Store, key: str, size_hint: int | None) -> None:
        self._store = store
        self._key = store._object_key(key)
        self._size_hint = size_hint
        self.location = store.location_for(key)
        self.bytes_written = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._next_part = 1
        self._in_flight: set[Future[CompletedPartTypeDef]] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._state = "open"  # open | finished | aborted

    @property
    def finished(self) -> bool:
        return self._state == "finished"

    @property
    def upload_id(self) -> str | None:
        return self._upload_id

    def _require_open(self) -> None:
        if self._state != "open":
            raise StoreError(f"The writer of {self.location} was already {self._state}.")

    def _fail(self, err: Exception, doing: str) -> StoreError:
        self.abort()
        if isinstance(err, StoreError):
            return err
        return self._store.error(err, doing, self.location)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._require_open()
        self._buffer += data
        self.bytes_written += len(data)
        while len(self._buffer) >= (size := part_size_for(self._next_part, self._size_hint)):
            # The full buffer itself becomes the part (no copy of a part); only the tail beyond
            # it, less than one write, is copied into the next buffer.
            part, self._buffer = self._buffer, self._buffer[size:]
            del part[size:]
            self._submit_part(part)

    def _submit_part(self, part: bytearray) -> None:
        number = self._next_part
        if number > MAX_PARTS:
            self.abort()
            raise StoreError(
                f"The blob for {self.location} outgrew the {MAX_PARTS} parts of an S3 multipart upload; "
                "give its size in advance."
            )
        try:
            if self._upload_id is None:
                created = self._store.client.create_multipart_upload(Bucket=self._store.bucket, Key=self._key)
                self._upload_id = created["UploadId"]
                self._pool = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="s3-part")
            self._collect(keep=PARTS_IN_FLIGHT - 1)
        except (ClientError, BotoCoreError) as err:
            raise self._fail(err, f"writing {self.location}") from None
        assert self._pool is not None
        self._in_flight.add(self._pool.submit(self._send_part, number, part))
        self._next_part += 1

    def _send_part(self, number: int, part: bytearray) -> CompletedPartTypeDef:
        response = self._store.client.upload_part(
            Bucket=self._store.bucket,
            Key=self._key,
            UploadId=str(self._upload_id),
            PartNumber=number,
            Body=part,  # type: ignore[arg-type]  # botocore takes bytearray (validate.py), the stubs say bytes
            ContentMD5=_content_md5(part),
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _collect(self, keep: int) -> None:
        """Wait until at most ``keep`` parts are in flight; a failed part raises its error here."""
        while len(self._in_flight) > keep:
            done, self._in_flight = wait(self._in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                self._parts.append(future.result())

    def finish(self) -> str:
        self._require_open()
        try:
            client = self._store.client
            if self._upload_id is None:
                body = bytes(self._buffer)
                client.put_object(
                    Bucket=self._store.bucket, Key=self._key, Body=body, ContentMD5=_content_md5(body)
                )
            else:
                if self._buffer:
                    self._submit_part(self._buffer)
                    self._buffer = bytearray()
                self._collect(keep=0)
                client.complete_multipart_upload(
                    Bucket=self._store.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])},
                )
        except (ClientError, BotoCoreError) as err:
            raise self._fail(err, f"finishing {self.location}") from None
        self._shutdown_pool()
        self._buffer = bytearray()
        self._state = "finished"
        return self.location

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._in_flight = set()

    def abort(self) -> None:
        """Abort the multipart upload; best effort: if S3 cannot be reached, the sweep aborts it later."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._buffer = bytearray()
        self._shutdown_pool()  # parts still uploading finish first: an abort must come after them
        if self._upload_id is not None:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._store.client.abort_multipart_upload(
                    Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id
                )


class S3BlobReader(BlobReader):
    """Ranged GETs (``If-Match`` the ETag seen at open) through an LRU cache of aligned blocks."""

    def __init__(
        self, store: S3Store, location: str, block_size: int = BLOCK_SIZE, cache_blocks: int = CACHE_BLOCKS
    ) -> None:
        self._store = store
        self.location = location
        self._key = store._object_key(store.key_of(location))
        try:
            head = store.client.head_object(Bucket=store.bucket, Key=self._key)
        except (ClientError, BotoCoreError) as err:
            raise store.error(err, f"opening {location}", location) from None
        self._size = int(head["ContentLength"])
        self._etag = head.get("ETag")
        self._block_size = block_size
        self._cache_blocks = cache_blocks
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        #: GET requests made so far (the cache's effect is visible in tests).
        self.requests = 0
        self.bytes_fetched = 0

    @property
    def size(self) -> int:
        return self._size

    def _get(self, start: int, end: int) -> bytes:
        """Bytes [start, end) in one ranged GET; exactly that many or StoreError."""
        kwargs: dict[str, Any] = {
            "Bucket": self._store.bucket,
            "Key": self._key,
            "Range": f"bytes={start}-{end - 1}",
        }
        if self._etag:
            kwargs["IfMatch"] = self._etag
        try:
            response = self._store.client.get_object(**kwargs)
            data = response["Body"].read()
        except (ClientError, BotoCoreError, OSError) as err:
            raise self._store.error(err, f"reading {self.location}", self.location) from None
        self.requests += 1
        self.bytes_fetched += len(data)
        if len(data) != end - start:
            raise StoreError(
                f"Reading bytes {start}..{end} of {self.location} returned {len(data)} bytes; "
                "the blob is shorter than it was when opened."
            )
        return data

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self._size:
            return b""
        end = min(self._size, offset + length)
        bs = self._block_size
        first, last = offset // bs, (end - 1) // bs
        if last - first + 1 > self._cache_blocks // 2:
            return self._get(offset, end)  # a large read would only flush the cache: bypass it
        with self._lock:
            blocks: dict[int, bytes] = {}
            missing: list[int] = []
            for index in range(first, last + 1):
                cached = self._cache.get(index)
                if cached is None:
                    missing.append(index)
                else:
                    self._cache.move_to_end(index)
                    blocks[index] = cached
            for run_first, run_last in _runs(missing):
                start, stop = run_first * bs, min(self._size, (run_last + 1) * bs)
                data = self._get(start, stop)
                for index in range(run_first, run_last + 1):
                    block = data[(index - run_first) * bs : (index - run_first + 1) * bs]
                    blocks[index] = block
                    self._cache[index] = block
                    self._cache.move_to_end(index)
            while len(self._cache) > self._cache_blocks:
                self._cache.popitem(last=False)
        joined = b"".join(blocks[i] for i in range(first, last + 1))
        return joined[offset - first * bs : end - first * bs]

    def close(self) -> None:
        self._cache.clear()


def _runs(indexes: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive runs of sorted integers: [1, 2, 3, 7, 8] → (1, 3), (7, 8)."""
    if not indexes:
        return
    run_first = prev = indexes[0]
    for index in indexes[1:]:
        if index != prev + 1:
            yield run_first, prev
            run_first = index
        prev = index
    yield run_first, prev
