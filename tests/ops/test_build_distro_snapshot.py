"""``build --from debian:bookworm --snapshot STAMP --mirror URL`` through a snapshot-shaped archive.

snapshot.debian.org is not reachable from this machine, so the archive here is a small HTTP
server that answers snapshot.debian.org's URL layout (``/archive/debian/STAMP/…`` and
``/archive/debian-security/STAMP/…``) with today's deb.debian.org. What is proven is everything
on our side of the wire: the sources lines mmdebstrap gets (every suite under the stamp,
``check-valid-until=no`` because a snapshot's Release files are long expired), that every
request went under the stamp, and that the snapshot's time becomes SOURCE_DATE_EPOCH (every
mtime in the root filesystem clamped to it). What is NOT proven here: the package versions of a
real past snapshot (the content is today's archive). Long: one cold mmdebstrap run (~3 min quiet).
"""

from __future__ import annotations

import http.server
import shutil
import tarfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.debian_guest import RELEASE

from imagewright.ops.build.distro import build_distribution
from imagewright.ops.build.distro.sources import parse_snapshot

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(3600)]

STAMP = "20250520T000000Z"
UPSTREAM = {
    "debian": "http://deb.debian.org/debian",
    "debian-security": "http://deb.debian.org/debian-security",
}


class SnapshotShapedArchive(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.paths: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: SnapshotShapedArchive

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.paths.append(self.path)
        parts = self.path.split("/", 4)  # '', 'archive', archive, stamp, rest
        if len(parts) < 5 or parts[1] != "archive" or parts[2] not in UPSTREAM:
            self.send_error(404)
            return
        upstream = f"{UPSTREAM[parts[2]]}/{parts[4]}"
        try:
            with urllib.request.urlopen(upstream, timeout=60) as answer:
                self.send_response(200)
                self.send_header("Content-Length", answer.headers.get("Content-Length", "0"))
                self.end_headers()
                shutil.copyfileobj(answer, self.wfile, 1 << 20)
        except urllib.error.HTTPError as err:
            self.send_error(err.code)


@pytest.fixture()
def archive() -> Iterator[SnapshotShapedArchive]:
    server = SnapshotShapedArchive()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_snapshot_build_asks_only_under_the_stamp_and_takes_its_time(
    archive: SnapshotShapedArchive, tmp_path: Path
) -> None:
    tarball = tmp_path / "rootfs.tar"
    report = build_distribution(
        RELEASE, tarball, variant="minbase", context="none", mirror=archive.url, snapshot=STAMP,
        use_cache=False, force=True,
    )  # fmt: skip
    _, when = parse_snapshot(STAMP)
    facts = report.to_dict()
    assert facts["sources"] == f"{archive.url}/archive/debian/{STAMP} (snapshot {STAMP})"
    assert facts["source_date_epoch"] == when
    lines = facts["source_lines"]
    assert {line.split()[-2] for line in lines} == {"bookworm", "bookworm-updates", "bookworm-security"}
    assert all("check-valid-until=no" in line and f"/{STAMP} " in line for line in lines), lines
    # every request mmdebstrap's apt made went under the stamp, and packages came that way
    assert archive.paths and all(
        p.startswith(("/archive/debian/", "/archive/debian-security/")) for p in archive.paths
    )
    assert all(p.split("/")[3] == STAMP for p in archive.paths)
    assert any(p.endswith(".deb") for p in archive.paths)
    with tarfile.open(tarball) as tar:
        mtimes = {member.mtime for member in tar}
    assert max(mtimes) <= when, max(mtimes)
