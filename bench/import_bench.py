"""bench/import: web-download + conversion to raw of a 1 GiB qcow2, through the registry.

Ours: ``imagewright serve --convert-to raw`` (embedded task runner, file store), one
``POST /v2/images/{id}/import`` (web-download) timed until the image is ``active`` — download,
inspection, conversion (md5 + sha512 of the output as it is written), store, activation.
Theirs, by hand on the same machine (qemu-img cannot read a qcow2 from a pipe, so the pipe of
the issue is three steps)::

    curl -o disk.qcow2 URL && qemu-img convert -f qcow2 -O raw disk.qcow2 disk.raw && sha256sum disk.raw

Both fetch from the same local static server (``python -m http.server``), alternately, best of
three. The image: 1 GiB virtual, 768 MiB of real binaries from /usr/lib in 12 runs. Goal: ours
≤ 0.7× theirs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import Comparison, report, run, timed
from bench.convert_bench import corpus

MiB = 1 << 20
VIRTUAL = 1 << 30
DATA = 768 * MiB
RUN = 64 * MiB
PASSWORD = "bench-admin-password-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_source(workdir: Path) -> Path:
    raw = workdir / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(VIRTUAL)
        block = corpus(RUN)
        runs = DATA // RUN
        for index in range(runs):
            f.seek(index * (VIRTUAL // runs))
            f.write(block[index % 7 :] + block[: index % 7])
    qcow2 = workdir / "www" / "disk.qcow2"
    qcow2.parent.mkdir()
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2])
    raw.unlink()
    return qcow2


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="iw-bench-import-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        source = make_source(workdir)
        web_port, registry_port = _free_port(), _free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(web_port), "--bind", "127.0.0.1"],
            cwd=source.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{web_port}/{source.name}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["IMAGEWRIGHT_ADMIN_PASSWORD"] = PASSWORD
        registry = subprocess.Popen(
            [
                "imagewright",
                "serve",
                "--data-dir",
                str(workdir / "data"),
                "--listen",
                f"127.0.0.1:{registry_port}",
                "--convert-to",
                "raw",
                "--web-download-allow",
                f"http://127.0.0.1:{web_port}/",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{registry_port}"
        try:
            _wait_http(url)
            _wait_http(f"{base}/identity/v3")
            token = _token(base)
            api = httpx.Client(base_url=base, headers={"X-Auth-Token": token}, timeout=600)
            theirs_raw = workdir / "theirs.raw"
            theirs_qcow2 = workdir / "theirs.qcow2"
            results: dict[str, str] = {}

            def ours() -> None:
                image = api.post(
                    "/image/v2/images",
                    json={"name": "bench", "disk_format": "qcow2", "container_format": "bare"},
                ).json()
                body = {"method": {"name": "web-download", "uri": url}}
                assert api.post(f"/image/v2/images/{image['id']}/import", json=body).status_code == 202
                while True:
                    shown = api.get(f"/image/v2/images/{image['id']}").json()
                    if shown["status"] == "active":
                        results["ours"] = shown["os_hash_value"]
                        break
                    if shown["status"] == "queued":
                        tasks = api.get(f"/image/v2/images/{image['id']}/tasks").json()["tasks"]
                        raise SystemExit(f"the import failed: {tasks[-1]['message']}")
                    time.sleep(0.05)
                api.delete(f"/image/v2/images/{image['id']}")

            def theirs() -> None:
                theirs_qcow2.unlink(missing_ok=True)
                theirs_raw.unlink(missing_ok=True)
                run(["curl", "-s", "-f", "-o", theirs_qcow2, url])
                run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", theirs_qcow2, theirs_raw])
                results["theirs"] = run(["sha256sum", theirs_raw]).stdout.split()[0].decode()

            ours_times, theirs_times = [], []
            for _ in range(3):
                theirs_times.append(timed(theirs))
                ours_times.append(timed(ours))
            theirs_raw.unlink(missing_ok=True)
            theirs_qcow2.unlink(missing_ok=True)
            rss = _rss_mib(registry.pid)
        finally:
            registry.terminate()
            registry.wait(30)
            web.terminate()
            web.wait(30)
        report(
            Comparison(
                name="import",
                ours_label="registry web-download + convert to raw (md5+sha512)",
                theirs_label="curl; qemu-img convert -O raw; sha256sum",
                ours_seconds=min(ours_times),
                theirs_seconds=min(theirs_times),
                goal_ratio=0.7,
                extra={
                    "image": f"qcow2, {VIRTUAL >> 20} MiB virtual, {DATA >> 20} MiB data, "
                    f"{source.stat().st_size >> 20} MiB file",
                    "ours_runs_s": [round(t, 3) for t in ours_times],
                    "theirs_runs_s": [round(t, 3) for t in theirs_times],
                    "registry_rss_mib_after": rss,
                },
            )
        )


def _token(base: str) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": PASSWORD}},
            },
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
        }
    }
    response = httpx.post(f"{base}/identity/v3/auth/tokens", json=body, timeout=30)
    return response.headers["X-Subject-Token"]


def _rss_mib(pid: int) -> int:
    """Resident memory of the registry process tree (its largest process), MiB."""
    best = 0
    for entry in [str(pid), *os.listdir("/proc")]:
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rfind(")") + 2 :].split()[1])
        if entry != str(pid) and parent != pid:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                best = max(best, int(line.split()[1]) // 1024)
    return best
