"""bench/registry_download: the download path alone — ``imagewright serve`` (uvicorn, granian) vs ``cp``.

Issue 8's goal: a download through the registry costs at most 1.5× a plain ``cp BLOB OUT``. The
full ``bench/registry`` (vs Glance) measured 2.1× with a Python (httpx) client. This one looks
at the server's side: the same image (raw, 1 MiB of zeros then random data; default 1 GiB,
``IMAGEWRIGHT_BENCH_REGISTRY_DOWNLOAD_MIB``) is uploaded once to each server, then downloaded
``RUNS`` times, alternating with ``cp``:

- ``cp BLOB OUT`` — the blob file of the store to a new file (page cache warm after the first run);
- ``curl -o OUT`` (a C client) from ``imagewright serve --server uvicorn`` (Starlette streaming
  4 MiB chunks read in the thread pool: ``service.http.DOWNLOAD_CHUNK_SIZE``) and
  ``--server granian`` (a whole file leaves as ASGI ``http.response.pathsend``: granian reads
  the file itself);
- the same from each server with httpx in Python (what ``bench/registry`` measures);
- ``curl -o OUT`` from nginx serving the same blob file with ``sendfile`` — the HTTP floor: what
  any HTTP server plus this client costs here. Each result also gives its ratio to it, which
  says how much of the distance to ``cp`` is ours and how much is HTTP over loopback plus the
  client's writes.

Every download is compared with the source (sha256). For each, the best wall time of the runs
and the CPU seconds the server's process group spent (utime + stime from /proc, summed over the
group, before/after) are reported, and for ``cp`` its own CPU time; the load average is recorded
with each result, since the machine is shared (2 cores).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.fixtures.registry import RegistryServer, free_port

from bench.common import Comparison, group_usage, nginx_static, report, run, sha256_of

MiB = 1 << 20
SIZE = int(os.environ.get("IMAGEWRIGHT_BENCH_REGISTRY_DOWNLOAD_MIB", "1024")) * MiB
RUNS = int(os.environ.get("IMAGEWRIGHT_BENCH_REGISTRY_DOWNLOAD_RUNS", "3"))


def make_source(path: Path) -> str:
    sha256 = hashlib.sha256()
    block = os.urandom(MiB)
    with path.open("wb") as f:
        for index in range(SIZE // MiB):
            chunk = bytes(MiB) if index == 0 else index.to_bytes(8, "little") + block[8:]
            sha256.update(chunk)
            f.write(chunk)
    return sha256.hexdigest()


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Series:
    label: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)

    def best(self) -> tuple[float, float, float]:
        index = min(range(len(self.seconds)), key=self.seconds.__getitem__)
        return self.seconds[index], self.cpu[index], self.client_cpu[index]


def timed(
    series: Series,
    action: Callable[[], object],
    cpu_of: Callable[[], float],
    client_cpu_of: Callable[[], float] = lambda: 0.0,
) -> None:
    cpu_before, client_before = cpu_of(), client_cpu_of()
    start = time.perf_counter()
    action()
    series.seconds.append(time.perf_counter() - start)
    series.cpu.append(cpu_of() - cpu_before)
    series.client_cpu.append(client_cpu_of() - client_before)
    series.load.append(os.getloadavg()[0])


def group_cpu_of(pgid: int) -> Callable[[], float]:
    return lambda: group_usage(pgid).cpu_seconds


def curl_to(out: Path, url: str, token: str | None = None) -> Callable[[], None]:
    headers = ["-H", f"X-Auth-Token: {token}"] if token else []

    def fetch() -> None:
        run(["curl", "-sf", "-o", out, *headers, url])

    return fetch


def httpx_to(out: Path, url: str, token: str) -> Callable[[], None]:
    def fetch() -> None:
        with (
            httpx.stream("GET", url, headers={"X-Auth-Token": token}, timeout=1800) as got,
            out.open("wb") as f,
        ):
            got.raise_for_status()
            for chunk in got.iter_raw(MiB):
                f.write(chunk)

    return fetch


def upload(server: RegistryServer, token: str, source: Path) -> str:
    with httpx.Client(
        base_url=f"{server.url}/image", headers={"X-Auth-Token": token}, timeout=1800
    ) as client:
        made = client.post(
            "/v2/images", json={"name": "bench", "disk_format": "raw", "container_format": "bare"}
        )
        image_id = str(made.json()["id"])
        with source.open("rb") as f:
            sent = client.put(
                f"/v2/images/{image_id}/file", content=f, headers={"Content-Type": "application/octet-stream"}
            )
        if sent.status_code != 204:
            raise SystemExit(f"upload answered {sent.status_code}: {sent.text[:300]}")
    return image_id


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="iw-bench-download-", dir="/var/tmp") as tmp,
        contextlib.ExitStack() as running,
    ):
        workdir = Path(tmp)
        source = workdir / "source.raw"
        digest = make_source(source)
        out = workdir / "out.raw"
        results: dict[str, Series] = {}
        # (key, label, fetch, server CPU, client CPU) in the order each round runs them.
        contenders: list[tuple[str, str, Callable[[], None], Callable[[], float], Callable[[], float]]] = []
        shows: list[tuple[str, str, str]] = []
        blob: Path | None = None
        for kind in ("uvicorn", "granian"):
            (workdir / kind).mkdir()
            server = running.enter_context(
                RegistryServer(workdir / kind / "data", extra_args=["--server", kind])
            )
            token = server.token()
            image_id = upload(server, token, source)
            blob = blob or next(server.images_dir.rglob(f"{image_id}.*"))
            assert server.process is not None
            url = f"{server.url}/image/v2/images/{image_id}/file"
            label = f"imagewright serve --server {kind}"
            server_cpu_of = group_cpu_of(server.process.pid)
            contenders.append(
                (
                    f"{kind}-curl",
                    f"{label}, curl",
                    curl_to(out, url, token),
                    server_cpu_of,
                    children_cpu_seconds,
                )
            )
            contenders.append(
                (
                    f"{kind}-httpx",
                    f"{label}, httpx",
                    httpx_to(out, url, token),
                    server_cpu_of,
                    self_cpu_seconds,
                )
            )
            shows.append((kind, f"{server.url}/image/v2/images/{image_id}", token))
        assert blob is not None
        (workdir / "nginx").mkdir()
        port = free_port()
        nginx = running.enter_context(nginx_static(workdir / "nginx", blob.parent, "127.0.0.1", port))
        nginx_url = f"http://127.0.0.1:{port}/{blob.name}"
        contenders.append(
            (
                "nginx-curl",
                "nginx sendfile, curl",
                curl_to(out, nginx_url),
                group_cpu_of(nginx.pid),
                children_cpu_seconds,
            )
        )
        copy = results.setdefault("cp", Series("cp BLOB OUT"))
        for _ in range(RUNS):
            out.unlink(missing_ok=True)
            timed(copy, lambda: run(["cp", blob, out]), children_cpu_seconds)
            if sha256_of(out) != digest:
                raise SystemExit("cp: the copy differs from the source")
            for key, label, fetch, server_cpu_of, client_cpu_of in contenders:
                series = results.setdefault(key, Series(label))
                out.unlink(missing_ok=True)
                timed(series, fetch, server_cpu_of, client_cpu_of)
                if sha256_of(out) != digest:
                    raise SystemExit(f"{label}: the downloaded bytes differ from the source")
        # Small requests: GET /v2/images/{id} (token check + catalog read + JSON) with wrk.
        show_rates: dict[str, float] = {}
        for kind, url, token in shows:
            argv = ["wrk", "-t1", "-c16", "-d5s", "-H", f"X-Auth-Token: {token}", url]
            lines = run(argv).stdout.decode().splitlines()
            show_rates[kind] = float(
                next(line.split()[1] for line in lines if line.startswith("Requests/sec:"))
            )
        print(f"GET /v2/images/ID requests/s (wrk -c16, 5 s): {show_rates}, load {os.getloadavg()[0]:.1f}")
    cp_seconds, cp_cpu, _ = results["cp"].best()
    floor_seconds, floor_cpu, _ = results["nginx-curl"].best()
    full = 1024 * MiB == SIZE
    for key, series in results.items():
        if key == "cp":
            continue
        seconds, cpu, client_cpu = series.best()
        comparison = Comparison(
            name=f"registry-download-{key}",
            ours_label=series.label,
            theirs_label="cp BLOB OUT",
            ours_seconds=seconds,
            theirs_seconds=cp_seconds,
            goal_ratio=1.5,
            extra={
                "size_mib": SIZE // MiB,
                "ours_mib_per_s": round(SIZE / MiB / seconds, 1),
                "cp_mib_per_s": round(SIZE / MiB / cp_seconds, 1),
                "ratio_to_nginx_sendfile_curl": round(seconds / floor_seconds, 2),
                "server_cpu_s": round(cpu, 2),
                "cp_cpu_s": round(cp_cpu, 2),
                "nginx_cpu_s": round(floor_cpu, 2),
                "cpu_ratio_server_vs_cp": round(cpu / cp_cpu, 2) if cp_cpu else None,
                "cpu_ratio_server_vs_nginx": round(cpu / floor_cpu, 2) if floor_cpu else None,
                "client_cpu_s": round(client_cpu, 2),
                "cpu_ratio_server_and_client_vs_cp": round((cpu + client_cpu) / cp_cpu, 2)
                if cp_cpu
                else None,
                "runs_s": [round(t, 2) for t in series.seconds],
                "runs_cpu_s": [round(t, 2) for t in series.cpu],
                "runs_client_cpu_s": [round(t, 2) for t in series.client_cpu],
                "runs_cp_s": [round(t, 2) for t in results["cp"].seconds],
                "runs_nginx_s": [round(t, 2) for t in results["nginx-curl"].seconds],
                "load_1min": [round(x, 1) for x in series.load],
                "show_requests_per_s_wrk_c16": show_rates,
            },
        )
        if full:
            report(comparison)
        else:
            runs = [round(t, 2) for t in series.seconds]
            print(f"{key}: {seconds:.2f} s (cp {cp_seconds:.2f} s, ratio {seconds / cp_seconds:.2f}; "
                  f"nginx {floor_seconds:.2f} s, ratio {seconds / floor_seconds:.2f}), "
                  f"server CPU {cpu:.2f} s (cp {cp_cpu:.2f} s, nginx {floor_cpu:.2f} s), client CPU "
                  f"{client_cpu:.2f} s, runs {runs}, load {series.load}")  # fmt: skip


if __name__ == "__main__":
    main()
