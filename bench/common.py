"""Shared pieces of the benchmarks: timing, running peers, writing results as JSON + a table."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Comparison:
    """One benchmark: our time next to the peer's, and the ratio (ours / theirs)."""

    name: str
    ours_label: str
    theirs_label: str
    ours_seconds: float
    theirs_seconds: float
    goal_ratio: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours_seconds / self.theirs_seconds if self.theirs_seconds else float("inf")

    @property
    def meets_goal(self) -> bool:
        return self.ratio <= self.goal_ratio


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and every child it waited for, so far: what a
    run costs whatever else the machine is doing (wall time on a shared machine is not)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class ProcessUsage:
    """CPU seconds (user + system, all threads) and resident bytes of some processes, summed."""

    cpu_seconds: float
    rss_bytes: int


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _process_table() -> dict[int, tuple[int, int, float, int]]:
    """pid → (ppid, pgid, CPU seconds, RSS bytes) of every process now, from ``/proc/PID/stat``
    (proc(5): after ``(comm)``, which may hold spaces and parentheses, field 4 is ppid, 5 pgrp,
    14/15 utime/stime in clock ticks, 24 rss in pages)."""
    table: dict[int, tuple[int, int, float, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), cpu, int(fields[21]) * _PAGE_SIZE)
        except (OSError, ValueError, IndexError):
            continue  # the process ended between the listing and the read
    return table


def group_usage(pgid: int) -> ProcessUsage:
    """Every process of the process group ``pgid`` (a server started with ``start_new_session``)."""
    rows = [row for row in _process_table().values() if row[1] == pgid]
    return ProcessUsage(sum(row[2] for row in rows), sum(row[3] for row in rows))


def tree_usage(root: int) -> ProcessUsage:
    """``root`` and every process below it (a server whose workers are its children)."""
    table = _process_table()
    tree, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        for pid, row in table.items():
            if row[0] == parent and pid not in tree:
                tree.add(pid)
                todo.append(pid)
    rows = [table[pid] for pid in tree if pid in table]
    return ProcessUsage(sum(row[2] for row in rows), sum(row[3] for row in rows))


def run(argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    args = [str(a) for a in argv]
    found = shutil.which(args[0]) or shutil.which(args[0], path="/usr/sbin:/sbin")
    if found is None:
        raise SystemExit(f"{args[0]} is not installed; run `make deps` first")
    args[0] = found
    try:
        return subprocess.run(args, check=True, capture_output=True, **kwargs)
    except subprocess.CalledProcessError as err:
        tail = (err.stderr or b"").decode("utf-8", "replace")[-2000:] or (err.stdout or b"").decode()[-2000:]
        raise SystemExit(f"{' '.join(args)} failed (exit {err.returncode}):\n{tail}") from None


@contextlib.contextmanager
def nginx_static(
    work: Path, root: Path, host: str, port: int, prefix: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """nginx, one worker, serving the files under ``root`` at ``host:port`` (``sendfile on``: the
    kernel sends a file to the socket, no copy through the server): the peer for what an HTTP
    server costs at its best. ``prefix``: a command to run it under (``taskset -c 0``)."""
    conf = work / "nginx.conf"
    conf.write_text(
        f"""user root;
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {work}/nginx-tmp;
    server {{ listen {host}:{port}; root {root}; }}
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen(
        [*prefix, nginx, "-c", str(conf), "-e", str(work / "nginx-error.log")], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as sock:
                if sock.connect_ex((host, port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"nginx did not listen on {host}:{port}; see {work}/nginx-error.log")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def report(comparison: Comparison) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    payload = asdict(comparison) | {
        "ratio": comparison.ratio,
        "meets_goal": comparison.meets_goal,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS_DIR / f"{comparison.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    verdict = "meets" if comparison.meets_goal else "MISSES"
    print(f"\n== {comparison.name} ==")
    print(f"  {comparison.ours_label:<52} {comparison.ours_seconds:9.3f} s")
    print(f"  {comparison.theirs_label:<52} {comparison.theirs_seconds:9.3f} s")
    print(f"  ratio ours/theirs: {comparison.ratio:.3f}  (goal <= {comparison.goal_ratio}: {verdict})")
    for key, value in comparison.extra.items():
        print(f"  {key}: {value}")


def gpt_ext4_disk(raw: Path, root_size: str) -> Path:
    """A sparse 20 GiB raw disk: GPT with a 1 MiB BIOS boot partition and an ext4 root of
    ``root_size`` (mke2fs's size argument) at 2 MiB, the layout the inspect benchmarks read."""
    with raw.open("wb") as f:
        f.truncate(20 << 30)
    run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", raw],
        input=b"label: gpt\n,1M,21686148-6449-6E6F-744E-656564454649\n,,L\n",
    )
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-E", f"offset={2 << 20}", raw, root_size])
    return raw


def sha256_of(path: Path) -> str:
    """The file's SHA-256 by ``sha256sum``: an independent reader of what both sides wrote."""
    return run(["sha256sum", path]).stdout.split()[0].decode()
