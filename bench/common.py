"""Shared pieces of the benchmarks: timing, running peers, writing results as JSON + a table."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
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
