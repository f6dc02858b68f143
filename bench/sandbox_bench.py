"""bench/sandbox: what the bubblewrap sandbox costs per program run.

Ours: 100 × ``qemu_img.info`` through imagewright's runner, sandboxed (the default).
Theirs: the same 100 calls with the sandbox switched off (``IMAGEWRIGHT_NO_SANDBOX=1``), so
the difference is bwrap alone: new namespaces, the bind mounts, a fresh /proc and /tmp.
The two sides alternate in rounds so a machine that gets busier penalises both alike; the
best round of each is reported. Also reported: one ``run_debugfs`` batch (a read of 20 paths),
which is what ``prepare`` repeats a few dozen times. Goal: ours ≤ 3× theirs; the number that
matters is the overhead in milliseconds per call.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.common import Comparison, report, run, timed
from imagewright.programs import e2fs, qemu_img
from imagewright.programs.runner import NO_SANDBOX_ENV

CALLS = 100
DEBUGFS_CALLS = 20
ROUNDS = 3


def _timed_with(func: Callable[[], None], sandboxed: bool) -> float:
    if sandboxed:
        os.environ.pop(NO_SANDBOX_ENV, None)
    else:
        os.environ[NO_SANDBOX_ENV] = "1"
    try:
        return timed(func)
    finally:
        os.environ.pop(NO_SANDBOX_ENV, None)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="iw-bench-sandbox-") as tmp:
        image = Path(tmp) / "disk.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", image, "20G"])
        ext4 = Path(tmp) / "root.ext4"
        with ext4.open("wb") as f:
            f.truncate(64 << 20)
        run(["mke2fs", "-q", "-F", "-t", "ext4", ext4])
        reads = [e2fs.command("stat", f"/path{i}") for i in range(20)]

        def infos() -> None:
            for _ in range(CALLS):
                qemu_img.info(image, "qcow2")

        def debugfs_batches() -> None:
            for _ in range(DEBUGFS_CALLS):
                e2fs.run_debugfs(str(ext4), reads)

        infos()  # warm the page cache and the one-time bwrap probe
        rounds = [(_timed_with(infos, True), _timed_with(infos, False)) for _ in range(ROUNDS)]
        batches = [
            (_timed_with(debugfs_batches, True), _timed_with(debugfs_batches, False)) for _ in range(ROUNDS)
        ]
    ours = min(r[0] for r in rounds)
    theirs = min(r[1] for r in rounds)
    debugfs_ours = min(b[0] for b in batches) / DEBUGFS_CALLS
    debugfs_theirs = min(b[1] for b in batches) / DEBUGFS_CALLS
    report(
        Comparison(
            name="sandbox",
            ours_label=f"{CALLS} x qemu_img.info, sandboxed",
            theirs_label=f"{CALLS} x qemu_img.info, {NO_SANDBOX_ENV}=1",
            ours_seconds=ours,
            theirs_seconds=theirs,
            goal_ratio=3.0,
            extra={
                "ms_per_call_sandboxed": round(ours / CALLS * 1000, 2),
                "ms_per_call_direct": round(theirs / CALLS * 1000, 2),
                "overhead_ms_per_call": round((ours - theirs) / CALLS * 1000, 2),
                "debugfs_batch_ms_sandboxed": round(debugfs_ours * 1000, 2),
                "debugfs_batch_ms_direct": round(debugfs_theirs * 1000, 2),
                "load_average_at_end": round(os.getloadavg()[0], 2),
            },
        )
    )


if __name__ == "__main__":
    main()
