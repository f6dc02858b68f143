"""bench/convert: a compressed raw disk → qcow2 with a sha256 of the result, two workloads.

- ``convert-random`` (issue 18): 1 GiB raw holding 256 MiB of random data in 16 runs,
  ``gzip -1``.
- ``convert``: 4 GiB raw holding 1 GiB of real machine code and text (shared libraries from
  /usr/lib, which compress about as well as an OS image does) in 16 runs, ``gzip -6``.

Ours: ``imagewright.ops.convert.convert`` (one call: the gzip stream checked once, then
decompressed again straight into qemu-img through the in-process NBD server, no scratch
copy; the sha256 of the qcow2). Theirs, the shell way a user types today::

    gunzip -c disk.raw.gz > disk.raw && qemu-img convert -f raw -O qcow2 disk.raw disk.qcow2 \\
        && sha256sum disk.qcow2

Both run alternately in this process tree, ``runs`` times each (5 for the 1 GiB workload, 3 for
the 4 GiB one); the best wall time of each is compared. The machine is shared: the load average
before and after is recorded, every run's wall time, and the CPU seconds each way used
(user + system, of this process and of the programs it ran, ``getrusage``): the CPU ratio is
much less sensitive to the load than the wall-time ratio, which a loaded machine's disk
contention skews against the way that writes more (the shell way writes the whole
decompressed disk, zeros included, and reads it again).
Goal: ours ≤ 0.35× theirs, and ours needs at most 64 MiB of disk beyond its output: the
files each way makes besides its output are sampled while it runs (``peak_extra_mib``).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from bench.common import Comparison, report, run, timed
from imagewright.ops.convert import convert

MiB = 1 << 20
GOAL = 0.35


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


#: Each compression: (how it is written, the file suffix, how the shell way reads it).
COMPRESSORS = {
    "gzip": (("gzip",), "gz", ("gunzip", "-c")),
    "xz": (("xz",), "xz", ("xz", "-dc")),
    "zstd": (("zstd", "-q"), "zst", ("zstd", "-dc", "-q")),
    "bzip2": (("bzip2",), "bz2", ("bzip2", "-dc")),
}


def make_source(
    workdir: Path,
    virtual: int,
    data: int,
    level: str,
    block: Callable[[int], bytes],
    compressor: str = "gzip",
) -> Path:
    """A raw disk of ``virtual`` bytes with ``data`` bytes in 16 runs spread over it, compressed."""
    raw = workdir / "disk.raw"
    runs = 16
    with raw.open("wb") as f:
        f.truncate(virtual)
        for index in range(runs):
            f.seek(index * (virtual // runs))
            f.write(block(index))
    tool, suffix, _ = COMPRESSORS[compressor]
    packed = workdir / f"disk.raw.{suffix}"
    with raw.open("rb") as src, packed.open("wb") as dst:
        subprocess.run([*tool, level, "-c"], stdin=src, stdout=dst, check=True)
    raw.unlink()
    return packed


class ExtraDisk:
    """Samples the space taken by the files in ``directory`` other than ``outputs``, and
    by ``tmpdir`` (the NBD socket directory), while a conversion runs: the peak is the disk a
    way needs beyond its output."""

    def __init__(self, directory: Path, outputs: tuple[str, ...]) -> None:
        self._directory = directory
        self._outputs = outputs
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _taken(self) -> int:
        total = 0
        for folder in (self._directory, Path(tempfile.gettempdir())):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                if folder == self._directory and (name in self._outputs or name.endswith(".part")):
                    continue  # the output (".part": ours, under its temporary name)
                if folder != self._directory and "imagewright-nbd" not in name:
                    continue
                try:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    continue
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._taken())

    def __enter__(self) -> ExtraDisk:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def load() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its waited-for children so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def timed_cpu(func: Callable[[], object], cpu: list[float]) -> float:
    """``timed(func)``, appending the CPU seconds it used to ``cpu``."""
    before = cpu_seconds()
    wall = timed(func)
    cpu.append(cpu_seconds() - before)
    return wall


def bench(
    name: str,
    virtual: int,
    data: int,
    level: str,
    block: Callable[[int], bytes],
    runs: int,
    compressor: str = "gzip",
) -> None:
    with tempfile.TemporaryDirectory(prefix="iw-bench-convert-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        source = make_source(workdir, virtual, data, level, block, compressor)
        decompress = COMPRESSORS[compressor][2]
        ours_out = workdir / "ours.qcow2"
        theirs_raw = workdir / "theirs.raw"
        theirs_out = workdir / "theirs.qcow2"
        digests: dict[str, str] = {}
        peaks = {"ours": 0, "theirs": 0}
        keep = (source.name, "ours.qcow2", "theirs.qcow2")

        def ours() -> None:
            ours_out.unlink(missing_ok=True)
            with ExtraDisk(workdir, keep) as extra:
                digests["ours"] = convert(source, ours_out).checksums["sha256"]
            peaks["ours"] = max(peaks["ours"], extra.peak)

        def theirs() -> None:
            theirs_out.unlink(missing_ok=True)
            with ExtraDisk(workdir, keep) as extra:
                with theirs_raw.open("wb") as out:
                    subprocess.run([*decompress, str(source)], stdout=out, check=True)
                run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", theirs_raw, theirs_out])
                digests["theirs"] = run(["sha256sum", theirs_out]).stdout.split()[0].decode()
                theirs_raw.unlink()
            peaks["theirs"] = max(peaks["theirs"], extra.peak)

        load_before = load()
        times_ours: list[float] = []
        times_theirs: list[float] = []
        cpu_ours: list[float] = []
        cpu_theirs: list[float] = []
        for _ in range(runs):
            times_theirs.append(timed_cpu(theirs, cpu_theirs))
            times_ours.append(timed_cpu(ours, cpu_ours))
        identical = (
            b"identical"
            in run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", ours_out, theirs_out]).stdout
        )
        report(
            Comparison(
                name=name,
                ours_label=f"imagewright convert {source.name} disk.qcow2",
                theirs_label=f"{' '.join(decompress)} > raw; qemu-img convert; sha256sum",
                ours_seconds=min(times_ours),
                theirs_seconds=min(times_theirs),
                goal_ratio=GOAL,
                extra={
                    "source_mib": source.stat().st_size // MiB,
                    "compression": compressor,
                    "virtual_mib": virtual // MiB,
                    "data_mib": data // MiB,
                    "level": level,
                    "runs_ours_s": [round(t, 2) for t in times_ours],
                    "runs_theirs_s": [round(t, 2) for t in times_theirs],
                    "cpu_ours_s": [round(t, 2) for t in cpu_ours],
                    "cpu_theirs_s": [round(t, 2) for t in cpu_theirs],
                    "cpu_ratio_best": round(min(cpu_ours) / min(cpu_theirs), 3),
                    "peak_extra_mib_ours": round(peaks["ours"] / MiB, 1),
                    "peak_extra_mib_theirs": round(peaks["theirs"] / MiB, 1),
                    "output_mib": ours_out.stat().st_blocks * 512 // MiB,
                    "load_average_before_after": [load_before, load()],
                    "outputs_identical": identical,
                    "sha256_matches_sha256sum": digests["ours"]
                    == run(["sha256sum", ours_out]).stdout.split()[0].decode(),
                },
            )
        )


def main(argv: list[str] | None = None) -> None:
    """Every workload; ``--compressed`` only the xz, zstd and bzip2 ones."""
    args = sys.argv[1:] if argv is None else argv
    if "--compressed" not in args:
        gzip_workloads()
    compressed_workloads()


def compressed_workloads() -> None:
    """``convert-xz``, ``convert-zstd``, ``convert-bzip2``: 1 GiB raw holding 256 MiB of real
    binaries in 16 runs, each compressor's fast level, against ``xz -dc``/``zstd -dc``/
    ``bzip2 -dc`` > raw; qemu-img convert; sha256sum. Our decoders: liblzma, libzstd, libbz2
    (``formats.containers.decompress``: the fastest ones this machine has from Python)."""
    text = corpus(16 * MiB)
    for compressor, level in (("xz", "-1"), ("zstd", "-3"), ("bzip2", "-1")):
        bench(
            f"convert-{compressor}",
            1 << 30,
            256 * MiB,
            level,
            lambda index: text[index % 7 :] + text[: index % 7],
            runs=3,
            compressor=compressor,
        )


def gzip_workloads() -> None:
    run_size = 16 * MiB
    bench("convert-random", 1 << 30, 256 * MiB, "-1", lambda index: os.urandom(run_size), runs=5)
    text = corpus(64 * MiB)
    bench(
        "convert",
        4 << 30,
        1 << 30,
        "-6",
        lambda index: text[index % 7 :] + text[: index % 7],  # not byte-identical runs
        runs=3,
    )


if __name__ == "__main__":
    main()
