"""bench/stores: 1 GiB into and out of each blob store, next to the plain way of moving the same bytes.

File store — ours: ``FileStore.writer`` fed 1 MiB chunks, ``finish`` (fsync, rename, fsync dir);
``read_chunks`` written to a file. Theirs: ``cp SRC DST && sync DST``; ``cp BLOB OUT``.
S3 store (a throwaway Swift + s3api on this machine, as the tests start it) — ours: the same
writer and ``read_chunks``; theirs: plain boto3 ``upload_file`` / ``download_file`` (s3transfer:
8 MiB parts, up to 10 threads). The data is random (no zeros for the sparse writer to skip);
reads come from the page cache on both sides. Best of two runs, alternating. Goal: ours ≤ 1.5×.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.common import Comparison, report, run, sha256_of, timed
from imagewright.stores.base import BlobStore
from imagewright.stores.file import FileStore
from imagewright.stores.s3 import S3Store

MiB = 1 << 20
SIZE = 1 << 30
GOAL = 1.5


def make_source(path: Path) -> str:
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with path.open("wb") as f:
        for index in range(SIZE // MiB):
            chunk = index.to_bytes(8, "little") + block[8:]
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def store_upload(store: BlobStore, source: Path, key: str) -> Callable[[], object]:
    def upload() -> None:
        with store.writer(key, size_hint=SIZE) as writer, source.open("rb") as f:
            while chunk := f.read(MiB):
                writer.write(chunk)
            writer.finish()

    return upload


def store_download(store: BlobStore, key: str, out: Path) -> Callable[[], object]:
    def download() -> None:
        with out.open("wb") as f:
            for chunk in store.read_chunks(store.location_for(key)):
                f.write(chunk)

    return download


def best(ours: Callable[[], object], theirs: Callable[[], object]) -> tuple[list[float], list[float]]:
    times_ours, times_theirs = [], []
    for _ in range(2):
        times_theirs.append(timed(theirs))
        times_ours.append(timed(ours))
    return times_ours, times_theirs


def compare(
    name: str, ours_label: str, theirs_label: str, times: tuple[list[float], list[float]], **extra: object
) -> None:
    ours, theirs = times
    report(
        Comparison(
            name=name,
            ours_label=ours_label,
            theirs_label=theirs_label,
            ours_seconds=min(ours),
            theirs_seconds=min(theirs),
            goal_ratio=GOAL,
            extra={
                "size_gib": SIZE >> 30,
                "ours_mib_per_s": round(SIZE / MiB / min(ours), 1),
                "theirs_mib_per_s": round(SIZE / MiB / min(theirs), 1),
                "runs_ours_s": [round(t, 2) for t in ours],
                "runs_theirs_s": [round(t, 2) for t in theirs],
            }
            | extra,
        )
    )


def file_bench(workdir: Path, source: Path, digest: str) -> None:
    store = FileStore("bench", workdir / "store")
    store.check()
    copy, out_ours, out_theirs = workdir / "copy", workdir / "out-ours", workdir / "out-theirs"
    blob = workdir / "store" / "im" / "image"

    def cp_sync() -> None:
        run(["cp", source, copy])
        run(["sync", copy])

    times = best(store_upload(store, source, "image"), cp_sync)
    compare(
        "stores-file-write",
        "FileStore writer, 1 MiB chunks, finish (fsync)",
        "cp SRC DST && sync DST",
        times,
        same_bytes=sha256_of(blob) == digest == sha256_of(copy),
    )
    times = best(store_download(store, "image", out_ours), lambda: run(["cp", blob, out_theirs]))
    compare(
        "stores-file-read",
        "FileStore read_chunks -> file",
        "cp BLOB OUT",
        times,
        same_bytes=sha256_of(out_ours) == digest == sha256_of(out_theirs),
    )


def s3_bench(workdir: Path, source: Path, digest: str) -> None:
    from tests.fixtures.s3_server import swift_s3_server

    with swift_s3_server(workdir / "swift") as server:
        os.environ.update(server.env())
        bucket = server.new_bucket("bench")
        store = S3Store("bench", bucket, endpoint=server.endpoint, region=server.region)
        client = server.client()
        out_ours, out_theirs = workdir / "out-ours", workdir / "out-theirs"
        times = best(
            store_upload(store, source, "image"),
            lambda: client.upload_file(str(source), bucket, "plain-image"),
        )
        compare(
            "stores-s3-write",
            "S3Store writer, 1 MiB chunks (8 MiB parts, 1 in flight)",
            "boto3 upload_file (s3transfer, threads)",
            times,
            server="Swift 2.30 s3api, single node, 127.0.0.1",
        )
        times = best(
            store_download(store, "image", out_ours),
            lambda: client.download_file(bucket, "plain-image", str(out_theirs)),
        )
        compare(
            "stores-s3-read",
            "S3Store read_chunks -> file (one GET)",
            "boto3 download_file (s3transfer, threads)",
            times,
            same_bytes=sha256_of(out_ours) == digest == sha256_of(out_theirs),
        )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="iw-bench-stores-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        source = workdir / "source"
        digest = make_source(source)
        file_bench(workdir, source, digest)
        for name in ("copy", "out-ours", "out-theirs"):
            (workdir / name).unlink(missing_ok=True)
        s3_bench(workdir, source, digest)


if __name__ == "__main__":
    main()
