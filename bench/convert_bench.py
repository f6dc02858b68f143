"""bench/convert: a raw.gz (4 GiB virtual, 1 GiB data) → qcow2 with a sha256 of the result.

Ours: ``imagewright.ops.convert.convert`` (one call: stream-decompress into a sparse
scratch, qemu-img, checksum). Theirs, the shell way a user types today::

    gunzip -c disk.raw.gz > disk.raw && qemu-img convert -f raw -O qcow2 disk.raw disk.qcow2 \
        && sha256sum disk.qcow2

Both run in the same process tree on the same machine, alternately, best of three.
The data is real machine code and text (shared libraries from /usr/lib), which compresses
about as well as an OS image does. Goal: ours ≤ 0.6× theirs.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from bench.common import Comparison, report, run, timed
from imagewright.ops.convert import convert

MiB = 1 << 20
VIRTUAL = 4 << 30
DATA = 1 << 30
RUN = 64 * MiB


def corpus(limit: int) -> bytes:
    """Up to ``limit`` bytes of real binaries and text from the host's /usr/lib."""
    parts: list[bytes] = []
    total = 0
    for path in sorted(Path("/usr/lib/x86_64-linux-gnu").rglob("*.so*")):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        parts.append(data)
        total += len(data)
        if total >= limit:
            break
    return b"".join(parts)[:limit]


def make_source(workdir: Path) -> Path:
    """4 GiB raw with 1 GiB of data in 16 runs of 64 MiB spread over the disk, gzipped."""
    raw = workdir / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(VIRTUAL)
        block = corpus(RUN)
        runs = DATA // RUN
        for index in range(runs):
            f.seek(index * (VIRTUAL // runs))
            f.write(block[index % 7 :] + block[: index % 7])  # not byte-identical runs
    packed = workdir / "disk.raw.gz"
    with raw.open("rb") as src, packed.open("wb") as dst:
        subprocess.run(["gzip", "-6", "-c"], stdin=src, stdout=dst, check=True)
    raw.unlink()
    return packed


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="iw-bench-convert-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        source = make_source(workdir)
        ours_out = workdir / "ours.qcow2"
        theirs_raw = workdir / "theirs.raw"
        theirs_out = workdir / "theirs.qcow2"
        digests: dict[str, str] = {}

        def ours() -> None:
            ours_out.unlink(missing_ok=True)
            digests["ours"] = convert(source, ours_out).checksums["sha256"]

        def theirs() -> None:
            theirs_out.unlink(missing_ok=True)
            with theirs_raw.open("wb") as out:
                subprocess.run(["gunzip", "-c", str(source)], stdout=out, check=True)
            run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", theirs_raw, theirs_out])
            digests["theirs"] = run(["sha256sum", theirs_out]).stdout.split()[0].decode()
            theirs_raw.unlink()

        times_ours, times_theirs = [], []
        for _ in range(3):
            times_theirs.append(timed(theirs))
            times_ours.append(timed(ours))
        identical = (
            b"identical"
            in run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", ours_out, theirs_out]).stdout
        )
        report(
            Comparison(
                name="convert",
                ours_label="imagewright convert disk.raw.gz disk.qcow2",
                theirs_label="gunzip > raw; qemu-img convert; sha256sum",
                ours_seconds=min(times_ours),
                theirs_seconds=min(times_theirs),
                goal_ratio=0.6,
                extra={
                    "source_gz_mib": source.stat().st_size // MiB,
                    "virtual_gib": VIRTUAL >> 30,
                    "data_gib": DATA >> 30,
                    "runs_ours_s": [round(t, 2) for t in times_ours],
                    "runs_theirs_s": [round(t, 2) for t in times_theirs],
                    "outputs_identical": identical,
                    "sha256_matches_sha256sum": digests["ours"]
                    == run(["sha256sum", ours_out]).stdout.split()[0].decode(),
                },
            )
        )


if __name__ == "__main__":
    main()
