"""bench/boot: ``imagewright verify`` of the test guest end to end vs booting it by hand.

The disk: the test guest built as a 1 GiB GPT hybrid disk and prepared with the agent (as
``tests/launch`` does). Ours: ``imagewright verify DISK --context nocloud`` as a user runs it,
against a data dir a registry made (``tests.fixtures.registry``): it launches an instance
(overlay on a 128 MiB bigger disk, NoCloud seed, supervisor, QMP), waits for the agent's ready
line, stops the instance, reads the disk back and checks hostname, key, user-data, root growth
and host keys. Theirs, by hand: a NoCloud seed made with genisoimage (``-V cidata``, meta-data
and a user-data script), ``qemu-system-x86_64`` started with the same disk (``snapshot=on``),
the seed on IDE and the same serial console, timed until the same ready line, then killed.
In one run, one after the other. Goal (issue 12): ours ≤ 1.1× theirs — orchestration, overlay,
context and checks cost almost nothing next to the boot.

The other half of issue 12's bench/boot, the Debian 12 + cloud-init image with ``prepare
--boot-tuning`` vs the hand-run way (0.7× goal), is bench/boot_debian_bench.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tests.fixtures.metadata_service import start_stack

from bench.common import Comparison, report, run, timed
from imagewright.agent import READY_PREFIX
from imagewright.compute.testguest import build_testguest_rootfs
from imagewright.ops.build import build
from imagewright.ops.prepare import PrepareOptions, prepare

READY_TIMEOUT = 600.0


def make_disk(workdir: Path) -> Path:
    guest = build_testguest_rootfs(workdir / "rootfs")
    disk = workdir / "disk.qcow2"
    build(guest.root, disk, size=1 << 30)
    prepare(disk, options=PrepareOptions(agent=True))
    return disk


def seed_by_hand(
    workdir: Path,
    user_data: str = "#!/bin/sh\necho bench >> /var/lib/bench.marker\n",
    instance_id: str = "i-0000000000bench01",
) -> Path:
    """A NoCloud seed as a person makes one: genisoimage, volume label ``cidata``."""
    seed = workdir / "seed"
    seed.mkdir()
    (seed / "meta-data").write_text(f"instance-id: {instance_id}\nlocal-hostname: bench-by-hand\n")
    (seed / "user-data").write_text(user_data)
    iso = workdir / "seed.iso"
    run(
        [
            "genisoimage",
            "-quiet",
            "-o",
            iso,
            "-V",
            "cidata",
            "-J",
            "-r",
            seed / "meta-data",
            seed / "user-data",
        ]
    )
    return iso


def boot_by_hand(disk: Path, iso: Path) -> float:
    """Start QEMU as a person would and time it to the agent's ready line."""
    argv = [
        "qemu-system-x86_64", "-nodefaults", "-machine", "pc", "-accel", "tcg", "-m", "512",
        "-display", "none", "-serial", "stdio",
        "-drive", f"file={disk},format=qcow2,if=virtio,snapshot=on",
        "-drive", f"file={iso},format=raw,media=cdrom,if=ide",
        "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    started = time.perf_counter()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as qemu:
        assert qemu.stdout is not None
        try:
            for line in qemu.stdout:
                if line.startswith(READY_PREFIX.encode()):
                    return time.perf_counter() - started
                if time.perf_counter() - started > READY_TIMEOUT:
                    break
            raise SystemExit("the hand-started guest never printed the agent's ready line")
        finally:
            qemu.kill()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="iw-bench-boot-") as tmp:
        workdir = Path(tmp)
        disk = make_disk(workdir)
        iso = seed_by_hand(workdir)
        stack = start_stack(workdir / "data")
        verified: dict[str, object] = {}
        try:

            def ours() -> None:
                result = stack.server.imagewright(
                    "verify", str(disk), "--context", "nocloud", "--timeout", str(READY_TIMEOUT), "--json"
                )
                verified.update(json.loads(result.stdout))

            ours_seconds = timed(ours)
        finally:
            stack.server.stop()
        theirs_seconds = boot_by_hand(disk, iso)
        checks = verified.get("checks", [])
        assert isinstance(checks, list)
        report(
            Comparison(
                name="boot",
                ours_label="imagewright verify (launch, ready, stop, read back, checks)",
                theirs_label="qemu-system-x86_64 by hand to the agent's ready line",
                ours_seconds=ours_seconds,
                theirs_seconds=theirs_seconds,
                goal_ratio=1.1,
                extra={
                    "image": "test guest, 1 GiB GPT hybrid qcow2, prepared with the agent",
                    "verify_ok": verified.get("ok"),
                    "verify_checks_seconds": {c["name"]: c["seconds"] for c in checks},
                    "load_average": os.getloadavg(),
                },
            )
        )


if __name__ == "__main__":
    main()
