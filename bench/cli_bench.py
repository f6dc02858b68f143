"""bench/cli: how fast a command starts. ``imagewright inspect one.qcow2`` as a whole process.

Ours: the installed ``imagewright`` console script inspecting one 20 GiB qcow2 (GPT, ext4 root),
output to /dev/null, start to exit: interpreter start, imports, reading the headers, the
report. Theirs: ``qemu-img info one.qcow2``, the same way. Runs alternate, hyperfine-style
(warm-up runs first, then ``RUNS`` of each); the ratio is of the medians, the minimums and
the CPU time (user + system, less sensitive to a busy machine) are recorded too. Goal:
ours ≤ 10× theirs.

On a shared machine wall times move with the load, so the instructions each command runs
(valgrind's callgrind, the same on a busy machine as on an idle one) are recorded as well:
they are what to compare between two versions of imagewright. They are not the goal's
measure: qemu-img's start-up is mostly the kernel mapping its libraries, which no
instruction count sees.

A Python program starts from its bytecode cache; pip writes it when it installs a package.
This machine sets ``PYTHONDONTWRITEBYTECODE``, so the checkout's modules are compiled once
here first (``compileall``), as an installation would have them. The same command without any
bytecode cache (every module compiled from source at every start) is recorded as an extra.
"""

from __future__ import annotations

import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import imagewright
from bench.common import Comparison, gpt_ext4_disk, report, run

RUNS = 40
WARMUP = 5


def make_image(workdir: Path) -> Path:
    """A 20 GiB qcow2 holding a GPT disk with a BIOS boot partition and an ext4 root."""
    raw = gpt_ext4_disk(workdir / "one.raw", "64M")
    image = workdir / "one.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image])
    raw.unlink()
    return image


def timed_run(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of ``argv``, output to /dev/null."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    walls = [wall for wall, _ in samples]
    cpus = [cpu for _, cpu in samples]
    return {
        "median_ms": round(statistics.median(walls) * 1000, 2),
        "min_ms": round(min(walls) * 1000, 2),
        "mean_ms": round(statistics.fmean(walls) * 1000, 2),
        "stdev_ms": round(statistics.stdev(walls) * 1000, 2) if len(walls) > 1 else 0.0,
        "cpu_median_ms": round(statistics.median(cpus) * 1000, 2),
        "cpu_min_ms": round(min(cpus) * 1000, 2),
    }


def measure(
    commands: dict[str, list[str]], runs: int, env: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """Each command ``WARMUP`` times, then ``runs`` times each in turn (a busy moment hits all alike)."""
    for argv in commands.values():
        for _ in range(WARMUP):
            timed_run(argv, env)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            samples[name].append(timed_run(argv, env))
    return {name: summary(found) for name, found in samples.items()}


def instructions(argv: Sequence[str]) -> int:
    """User-space instructions of one run of ``argv`` (valgrind --tool=callgrind)."""
    proc = run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv])
    for line in proc.stderr.decode("utf-8", "replace").splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise SystemExit("valgrind printed no instruction count")


def main() -> None:
    script = shutil.which("imagewright", path=str(Path(sys.executable).parent))
    qemu_img = shutil.which("qemu-img")
    if script is None or qemu_img is None:
        raise SystemExit("imagewright or qemu-img is not installed; run `make deps` first")
    package = Path(imagewright.__file__).resolve().parent
    compileall.compile_dir(package, quiet=1)
    with tempfile.TemporaryDirectory(prefix="iw-bench-cli-") as tmp:
        workdir = Path(tmp)
        image = str(make_image(workdir))
        ours_argv = [script, "inspect", image]
        results = measure({"ours": ours_argv, "theirs": [qemu_img, "info", image]}, RUNS)
        # Every module compiled from source at every start: no bytecode cache to read.
        cold_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(workdir / "none"))
        cold = measure({"ours": ours_argv}, RUNS // 4, cold_env)["ours"]
        counted = {"ours": instructions(ours_argv), "theirs": instructions([qemu_img, "info", image])}
    ours, theirs = results["ours"], results["theirs"]
    report(
        Comparison(
            name="cli",
            ours_label="imagewright inspect one.qcow2 (whole process)",
            theirs_label="qemu-img info one.qcow2",
            ours_seconds=ours["median_ms"] / 1000,
            theirs_seconds=theirs["median_ms"] / 1000,
            goal_ratio=10,
            extra={
                "runs": RUNS,
                "ours": ours,
                "theirs": theirs,
                "ratio_of_minimums": round(ours["min_ms"] / theirs["min_ms"], 2),
                "ratio_of_cpu_medians": round(ours["cpu_median_ms"] / theirs["cpu_median_ms"], 2),
                "ours_without_bytecode_cache": cold,
                "instructions": counted,
                "load_average": [round(x, 2) for x in os.getloadavg()],
            },
        )
    )


if __name__ == "__main__":
    main()
