"""bench/publish_tuning: what boot-tuning costs ``publish`` (issue 12: on by default).

Two guests, each published to qcow2, raw.gz and ova:

- ``publish-tuning-testguest``: the test guest built as the demo builds it (``build --from``
  its rootfs tarball, GPT, GRUB 2, a 1 GiB qcow2);
- ``publish-tuning-1g``: the 1 GiB qcow2 of ``bench/prepare`` (an ext4 root with 200 MiB of
  files and a used guest's leftovers);
- ``publish-tuning-1g-gz``: the same disk as ``disk.raw.gz`` (gzip -1), which publish without
  tuning streams as it decompresses and with tuning decompresses into the scratch copy first.

Ours: ``publish`` with boot-tuning (the default: a raw scratch copy of the source, tuned in
place, read by the pass). Theirs: the way without it — a copy of the image, ``prepare
--boot-tuning`` on the copy, then ``publish --no-boot-tuning`` of the copy. Also measured:
``publish --no-boot-tuning`` of the source (what publishing cost before tuning existed), so
the overhead of tuning is ``with / without``. Runs alternate ours / theirs / untuned, three
rounds, the median of each reported with CPU seconds (user + system, children included) and
the load average. Goal: ours ≤ 0.8× theirs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Comparison, cpu_seconds, report, run
from bench.prepare_bench import make_image
from imagewright.compute.testguest import build_testguest_rootfs, rootfs_tarball
from imagewright.ops.build import build
from imagewright.ops.prepare import PrepareOptions, prepare
from imagewright.ops.prepare.model import ANY_DATASOURCE
from imagewright.package.ova import OvaOptions
from imagewright.package.ovf_descriptor import MachineSpec
from imagewright.package.publish import publish
from imagewright.package.tuned_source import BootTuning

TARGETS = ("qcow2", "raw.gz", "ova")
ROUNDS = 3


def testguest_disk(workdir: Path) -> Path:
    guest = build_testguest_rootfs(workdir / "rootfs")
    tarball = rootfs_tarball(guest.root, workdir / "rootfs.tar.gz")
    disk = workdir / "testguest.qcow2"
    build(tarball, disk, size=1 << 30, table="gpt")
    return disk


def measure(work: Callable[[], object]) -> tuple[float, float]:
    cpu, started = cpu_seconds(), time.perf_counter()
    work()
    return time.perf_counter() - started, cpu_seconds() - cpu


def compare(name: str, image: Path, workdir: Path, label: str) -> None:
    suffix = ".raw.gz" if image.name.endswith(".raw.gz") else ".qcow2"
    ova = OvaOptions(MachineSpec(name="bench", cpus=1, memory_mib=512, os="debian64"))

    def out(kind: str) -> Path:
        directory = workdir / f"{name}-{kind}"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        return directory

    def ours() -> None:
        publish(image, out("ours"), TARGETS, name="disk", ova=ova, boot_tuning=BootTuning())

    def theirs() -> None:
        copy = workdir / f"{name}-copy{suffix}"
        if suffix == ".raw.gz":  # prepare edits a disk, not a compressed stream: unpack, then prepare
            copy = workdir / f"{name}-copy.raw"
            run(["bash", "-c", f"gzip -dc {image} > {copy}"])
        else:
            shutil.copyfile(image, copy)
        prepare(
            copy,
            operations=["boot-tuning"],
            options=PrepareOptions(boot_tuning=True, boot_datasource=ANY_DATASOURCE),
        )
        publish(copy, out("theirs"), TARGETS, name="disk", ova=ova)
        copy.unlink()

    def untuned() -> None:
        publish(image, out("untuned"), TARGETS, name="disk", ova=ova)

    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "theirs": [], "untuned": []}
    loads: list[float] = []
    for _ in range(ROUNDS):
        for kind, work in (("ours", ours), ("theirs", theirs), ("untuned", untuned)):
            runs[kind].append(measure(work))
            loads.append(os.getloadavg()[0])

    def median(kind: str, index: int) -> float:
        return statistics.median(run[index] for run in runs[kind])

    report(
        Comparison(
            name=name,
            ours_label="imagewright publish (boot-tuning on, the default)",
            theirs_label="cp + prepare --boot-tuning + publish --no-boot-tuning",
            ours_seconds=median("ours", 0),
            theirs_seconds=median("theirs", 0),
            goal_ratio=0.8,
            extra={
                "image": label,
                "targets": ",".join(TARGETS),
                "untuned_publish_seconds": round(median("untuned", 0), 3),
                "tuning_overhead_wall": round(median("ours", 0) / median("untuned", 0), 3),
                "cpu_seconds_ours": round(median("ours", 1), 3),
                "cpu_seconds_theirs": round(median("theirs", 1), 3),
                "cpu_seconds_untuned": round(median("untuned", 1), 3),
                "tuning_overhead_cpu": round(median("ours", 1) / median("untuned", 1), 3),
                "load_average_1min": [round(load, 2) for load in loads],
                "rounds": ROUNDS,
            },
        )
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="iw-bench-publish-tuning-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        only = set(filter(None, os.environ.get("BENCH_PUBLISH_TUNING", "testguest,1g,1g-gz").split(",")))
        if "testguest" in only:
            disk = testguest_disk(workdir)
            compare(
                "publish-tuning-testguest",
                disk,
                workdir,
                "the test guest, build --from (GPT, GRUB), 1 GiB qcow2",
            )
            disk.unlink()
        if "1g" in only:
            image = make_image(workdir)
            compare("publish-tuning-1g", image, workdir, "1 GiB qcow2, MBR, ext4 root with 200 MiB of files")
        if "1g-gz" in only:
            image = workdir / "disk.qcow2"
            if not image.exists():
                image = make_image(workdir)
            packed = workdir / "disk.raw.gz"
            run(["bash", "-c", f"qemu-img convert -f qcow2 -O raw {image} {workdir / 'disk.raw'} && "
                 f"gzip -1 -c {workdir / 'disk.raw'} > {packed} && rm {workdir / 'disk.raw'}"])  # fmt: skip
            compare("publish-tuning-1g-gz", packed, workdir, "the same 1 GiB disk as raw.gz (gzip -1)")


if __name__ == "__main__":
    main()
