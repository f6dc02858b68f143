"""bench/registry: a 2 GiB image up and down through ``imagewright serve``, the real Glance, and ``cp``.

Ours: ``imagewright serve`` (SQLite + file store, ``--workers 1``), started as the tests start
it (``tests.fixtures.registry.RegistryServer``). Theirs: the real OpenStack Glance 33 from PyPI
(SQLite + file store, its WSGI app under gunicorn with 1 worker, no Keystone: the caller comes
from the headers keystonemiddleware would set; ``tests.fixtures.glance``). Both get the same
requests from this process over loopback with httpx: ``POST /v2/images`` (raw/bare), then
``PUT /v2/images/{id}/file`` streamed in 1 MiB chunks with a Content-Length, then
``GET /v2/images/{id}/file`` streamed into a file. Both compute md5 + sha512 while receiving
(Glance's ``checksum``/``os_hash_value``); ours also judges the stored blob with imagewright's
inspection before the image turns active, and fsyncs it. The plain way: ``cp SRC DST && sync
DST`` for the upload, ``cp BLOB OUT`` for the download.

The image is a raw disk: 1 MiB of zeros (where a partition table would be), then random data
(no zeros for a sparse writer to skip). Every download is checked byte for byte (sha256sum)
against the source; both services' reported md5 must be the source's. Best of ``RUNS`` runs,
alternating (Glance, ours, cp); a new image each run, the previous one deleted.

Memory: while each transfer runs, a sampler reads VmRSS of every process in the server's
process group (uvicorn, or gunicorn master + worker) every 50 ms; the peak of the sum is
reported. Goal (issue 8): our server stays under 150 MiB during the 2 GiB transfer.

Goals for time: ours no slower than Glance (ratio <= 1.0); against ``cp``, the upload pays for
two hashes, the inspection and an fsync (goal <= 2.5), the download only for HTTP (<= 1.5).

``IMAGEWRIGHT_BENCH_REGISTRY_MIB`` (default 2048) and ``IMAGEWRIGHT_BENCH_REGISTRY_RUNS``
(default 2) shrink it for a quick look; results are written only at the full size.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.fixtures.glance import GlanceServer, glance_server
from tests.fixtures.registry import RegistryServer

from bench.common import Comparison, group_usage, report, run, sha256_of

MiB = 1 << 20
SIZE = int(os.environ.get("IMAGEWRIGHT_BENCH_REGISTRY_MIB", "2048")) * MiB
RUNS = int(os.environ.get("IMAGEWRIGHT_BENCH_REGISTRY_RUNS", "2"))
RSS_GOAL_MIB = 150
GLANCE_PROJECT = "b" * 32


def make_source(path: Path) -> tuple[str, str]:
    """The raw disk; its (sha256, md5)."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    block = os.urandom(MiB)
    with path.open("wb") as f:
        for index in range(SIZE // MiB):
            chunk = bytes(MiB) if index == 0 else index.to_bytes(8, "little") + block[8:]
            sha256.update(chunk)
            md5.update(chunk)
            f.write(chunk)
    return sha256.hexdigest(), md5.hexdigest()


# --- memory ------------------------------------------------------------------------------------


@dataclass
class RssPeak:
    """Samples a process group's RSS in a thread while the ``with`` block runs."""

    pgid: int
    interval: float = 0.05
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, group_usage(self.pgid).rss_bytes)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssPeak:
        self.peak = group_usage(self.pgid).rss_bytes
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, group_usage(self.pgid).rss_bytes)


# --- one service through the Image API -----------------------------------------------------------


@dataclass
class Service:
    label: str
    base: str  # the Image API root (…/v2 is below it)
    headers: dict[str, str]
    pgid: int
    upload_seconds: list[float] = field(default_factory=list)
    download_seconds: list[float] = field(default_factory=list)
    peak_rss: int = 0
    idle_rss: int = 0
    checks: list[str] = field(default_factory=list)


def chunks_of(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            yield chunk


def round_trip(service: Service, source: Path, out: Path, md5: str) -> None:
    """Create, upload (timed), download (timed), check, delete — one run against one service."""
    with httpx.Client(base_url=service.base, headers=service.headers, timeout=1800) as client:
        service.idle_rss = group_usage(service.pgid).rss_bytes
        created = client.post(
            "/v2/images", json={"name": "bench", "disk_format": "raw", "container_format": "bare"}
        )
        created.raise_for_status()
        image_id = created.json()["id"]
        with RssPeak(service.pgid) as rss:
            start = time.perf_counter()
            sent = client.put(
                f"/v2/images/{image_id}/file",
                content=chunks_of(source),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(SIZE)},
            )
            service.upload_seconds.append(time.perf_counter() - start)
        if sent.status_code != 204:
            raise SystemExit(f"{service.label}: upload answered {sent.status_code}: {sent.text[:500]}")
        shown = client.get(f"/v2/images/{image_id}").json()
        if (shown["status"], shown["checksum"], shown["size"]) != ("active", md5, SIZE):
            raise SystemExit(f"{service.label}: after the upload the image is {shown}")
        with RssPeak(service.pgid) as rss_down:
            start = time.perf_counter()
            with client.stream("GET", f"/v2/images/{image_id}/file") as response, out.open("wb") as f:
                response.raise_for_status()
                for chunk in response.iter_raw(MiB):
                    f.write(chunk)
            service.download_seconds.append(time.perf_counter() - start)
        service.peak_rss = max(service.peak_rss, rss.peak, rss_down.peak)
        client.delete(f"/v2/images/{image_id}").raise_for_status()


def ours(workdir: Path) -> tuple[RegistryServer, Service]:
    server = RegistryServer(workdir / "ours-data").start()
    assert server.process is not None
    service = Service(
        "imagewright serve (SQLite + file store, 1 worker)",
        f"{server.url}/image",
        {"X-Auth-Token": server.token()},
        server.process.pid,
    )
    return server, service


def theirs(glance: GlanceServer) -> Service:
    return Service(
        "Glance 33 (SQLite + file store, gunicorn, 1 worker)",
        glance.url,
        glance.headers(GLANCE_PROJECT),
        glance.pid,
    )


def plain_copy(source: Path, workdir: Path) -> tuple[Callable[[], float], Callable[[], float]]:
    copy, out = workdir / "cp-copy", workdir / "cp-out"

    def upload() -> float:
        copy.unlink(missing_ok=True)
        start = time.perf_counter()
        run(["cp", source, copy])
        run(["sync", copy])
        return time.perf_counter() - start

    def download() -> float:
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        run(["cp", copy, out])
        return time.perf_counter() - start

    return upload, download


def compare(name: str, ours_label: str, theirs_label: str, mine: list[float], other: list[float],
            goal: float, **extra: Any) -> None:  # fmt: skip
    report(
        Comparison(
            name=name,
            ours_label=ours_label,
            theirs_label=theirs_label,
            ours_seconds=min(mine),
            theirs_seconds=min(other),
            goal_ratio=goal,
            extra={
                "size_gib": round(SIZE / (1 << 30), 3),
                "ours_mib_per_s": round(SIZE / MiB / min(mine), 1),
                "theirs_mib_per_s": round(SIZE / MiB / min(other), 1),
                "runs_ours_s": [round(t, 2) for t in mine],
                "runs_theirs_s": [round(t, 2) for t in other],
            }
            | extra,
        )
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="iw-bench-registry-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        source = workdir / "source.raw"
        sha256, md5 = make_source(source)
        out = workdir / "downloaded.raw"
        cp_up, cp_down = plain_copy(source, workdir)
        copy_up: list[float] = []
        copy_down: list[float] = []
        server, mine = ours(workdir)
        try:
            with glance_server(workdir / "glance") as glance:
                other = theirs(glance)
                for _ in range(RUNS):
                    for service in (other, mine):
                        round_trip(service, source, out, md5)
                        if sha256_of(out) != sha256:
                            raise SystemExit(f"{service.label}: the downloaded bytes differ from the source")
                        service.checks.append("same bytes")
                        out.unlink()
                    copy_up.append(cp_up())
                    copy_down.append(cp_down())
                    if sha256_of(workdir / "cp-out") != sha256:
                        raise SystemExit("cp: the copy differs from the source")
        finally:
            server.stop()
        full = 2048 * MiB == SIZE
        memory = {
            "ours_peak_rss_mib": round(mine.peak_rss / MiB, 1),
            "ours_idle_rss_mib": round(mine.idle_rss / MiB, 1),
            "glance_peak_rss_mib": round(other.peak_rss / MiB, 1),
            "glance_idle_rss_mib": round(other.idle_rss / MiB, 1),
            "rss_goal_mib": RSS_GOAL_MIB,
            "ours_rss_meets_goal": mine.peak_rss < RSS_GOAL_MIB * MiB,
            "same_bytes": all(c == "same bytes" for c in mine.checks + other.checks),
        }
        if not full:
            print(f"(a {SIZE // MiB} MiB trial run: no results written)")
            for service in (mine, other):
                print(f"  {service.label}: up {service.upload_seconds}, down {service.download_seconds}")
            print(f"  cp: up {copy_up}, down {copy_down}\n  {memory}")
            return
        compare("registry-upload", mine.label, other.label, mine.upload_seconds, other.upload_seconds,
                1.0, **memory)  # fmt: skip
        compare("registry-download", mine.label, other.label, mine.download_seconds,
                other.download_seconds, 1.0, **memory)  # fmt: skip
        compare("registry-upload-vs-copy", mine.label, "cp SRC DST && sync DST", mine.upload_seconds,
                copy_up, 2.5)  # fmt: skip
        compare("registry-download-vs-copy", mine.label, "cp BLOB OUT", mine.download_seconds,
                copy_down, 1.5)  # fmt: skip


if __name__ == "__main__":
    main()
