"""`make demo`: the whole path a user cares about, on the embedded defaults, each step shown
as a user would type it, with its timing.

    rootfs (a tiny real Linux) → build a bootable disk → prepare --agent → a NoCloud seed
    → boot it → the agent's ready line with the seed's hostname → read the result back → inspect

Everything lands in ./demo-out (removed and recreated on every run).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
VENV_BIN = Path(sys.executable).parent
HOSTNAME = "demo-web1"
INSTANCE_ID = "i-0demo0001"


def imagewright(*args: str) -> list[str]:
    return [str(VENV_BIN / "imagewright"), *args]


def step(title: str, argv: list[str], *, shown: list[str] | None = None) -> tuple[float, str]:
    """Run one step, echo it like a shell transcript, stop the demo if it fails."""
    print(f"\n== {title}")
    print("$ " + " ".join(shlex.quote(a) for a in (shown or argv)))
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=OUT, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    print(output.rstrip())
    print(f"   [{elapsed:.1f} s]")
    if proc.returncode != 0:
        print(f"demo step failed (exit {proc.returncode}): {title}", file=sys.stderr)
        sys.exit(1)
    return elapsed, output


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    started = time.monotonic()
    timings: list[tuple[str, float]] = []

    def timed(title: str, argv: list[str], *, shown: list[str] | None = None) -> str:
        elapsed, output = step(title, argv, shown=shown)
        timings.append((title, elapsed))
        return output

    timed(
        "a tiny real Linux root filesystem (Debian kernel + busybox), as a rootfs tarball",
        [
            sys.executable,
            "-m",
            "imagewright.compute.testguest",
            "--output",
            "rootfs",
            "--tar",
            "rootfs.tar.gz",
        ],
        shown=[
            "python",
            "-m",
            "imagewright.compute.testguest",
            "--output",
            "rootfs",
            "--tar",
            "rootfs.tar.gz",
        ],
    )
    timed(
        "build a bootable disk: GPT, ext4 root, swap, GRUB 2 — no root, no loop devices",
        imagewright(
            "build",
            "--from",
            "rootfs.tar.gz",
            "-o",
            "disk.qcow2",
            "--size",
            "1G",
            "--swap",
            "128M",
            "--table",
            "gpt",
        ),
        shown=[
            "imagewright",
            "build",
            "--from",
            "rootfs.tar.gz",
            "-o",
            "disk.qcow2",
            "--size",
            "1G",
            "--swap",
            "128M",
            "--table",
            "gpt",
        ],
    )
    timed(
        "make it cloud-ready: sysprep + the contextualization agent",
        imagewright("prepare", "disk.qcow2", "--agent"),
        shown=["imagewright", "prepare", "disk.qcow2", "--agent"],
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demo@imagewright", "-f", str(OUT / "id_demo")],
        check=True,
    )
    timed(
        "a NoCloud seed with a hostname and an SSH key",
        imagewright(
            "context",
            "build",
            "--kind",
            "nocloud",
            "--instance-id",
            INSTANCE_ID,
            "--hostname",
            HOSTNAME,
            "--ssh-key",
            "id_demo.pub",
            "-o",
            "seed.iso",
        ),
        shown=[
            "imagewright",
            "context",
            "build",
            "--kind",
            "nocloud",
            "--instance-id",
            INSTANCE_ID,
            "--hostname",
            HOSTNAME,
            "--ssh-key",
            "id_demo.pub",
            "-o",
            "seed.iso",
        ],
    )
    expect = f"imagewright-agent: ready instance-id={INSTANCE_ID} hostname={HOSTNAME}"
    timed(
        "boot it under QEMU with the seed; wait for the agent's ready line",
        imagewright("boot", "disk.qcow2", "--cdrom", "seed.iso", "--expect", expect, "--timeout", "240"),
        shown=[
            "imagewright",
            "boot",
            "disk.qcow2",
            "--cdrom",
            "seed.iso",
            "--expect",
            expect,
            "--timeout",
            "240",
        ],
    )
    hostname = timed(
        "what the agent wrote into the image, read back without mounting",
        imagewright("cat", "disk.qcow2:/etc/hostname"),
        shown=["imagewright", "cat", "disk.qcow2:/etc/hostname"],
    )
    if HOSTNAME not in hostname:
        print(f"the image's /etc/hostname does not say {HOSTNAME}", file=sys.stderr)
        sys.exit(1)
    timed(
        "inspect the final image",
        imagewright("inspect", "disk.qcow2"),
        shown=["imagewright", "inspect", "disk.qcow2"],
    )
    total = time.monotonic() - started
    print("\n== timings")
    for title, elapsed in timings:
        print(f"  {elapsed:6.1f} s  {title}")
    print(f"  {total:6.1f} s  in all")


if __name__ == "__main__":
    main()
