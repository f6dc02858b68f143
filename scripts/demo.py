"""`make demo`: the whole path a user cares about, on the embedded defaults, each step shown
as a user would type it, with its timing.

    rootfs (a tiny real Linux) → build a bootable disk → prepare --agent → a NoCloud seed
    → boot it → the agent's ready line with the seed's hostname → read the result back → inspect
    → publish the prepared disk, boot-tuned, to an ``imagewright serve`` the demo starts
    → ``run`` it from the registry with the metadata service → wait → ps → stop → rm
    → ``verify`` it through the metadata service (IMDSv2 required) → the server stops

Everything lands in ./demo-out (removed and recreated on every run).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
VENV_BIN = Path(sys.executable).parent
HOSTNAME = "demo-web1"
INSTANCE_ID = "i-0demo0001"


def imagewright(*args: str) -> list[str]:
    return [str(VENV_BIN / "imagewright"), *args]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_registry(data_dir: Path, images: Path) -> tuple[subprocess.Popen[bytes], list[str]]:
    """``imagewright serve`` in the background, with the metadata service and an in-place store;
    returns the process and the command line as shown."""
    port, metadata_port = free_port(), free_port()
    shown = ["imagewright", "serve", "--data-dir", data_dir.name, "--listen", f"127.0.0.1:{port}",
             "--metadata-listen", f"127.0.0.1:{metadata_port}",
             "--store", f"local=file-inplace://{images}"]  # fmt: skip
    env = dict(os.environ, IMAGEWRIGHT_ADMIN_PASSWORD=secrets.token_urlsafe(16))
    log = open(OUT / "serve.log", "ab")  # noqa: SIM115 - the server writes it for its whole life
    server = subprocess.Popen(imagewright(*shown[1:]), cwd=OUT, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            print((OUT / "serve.log").read_text()[-3000:], file=sys.stderr)
            sys.exit("imagewright serve ended at once")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/identity/v3", timeout=2) as answer:
                if answer.status == 200:
                    return server, shown
        except OSError:
            time.sleep(0.2)
    server.terminate()
    sys.exit("imagewright serve did not answer within 60 s")


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
        "build a bootable disk: GPT, ext4 root, GRUB 2 — no root, no loop devices",
        imagewright(
            "build",
            "--from",
            "rootfs.tar.gz",
            "-o",
            "disk.qcow2",
            "--size",
            "1G",
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
            "--table",
            "gpt",
        ],
    )
    timed(
        "make it cloud-ready: sysprep + the contextualization agent",
        imagewright("prepare", "disk.qcow2", "--agent"),
        shown=["imagewright", "prepare", "disk.qcow2", "--agent"],
    )
    images = OUT / "images"
    images.mkdir()
    shutil.copyfile(OUT / "disk.qcow2", images / "demo.qcow2")  # the prepared, never booted disk
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
    started_registry = time.monotonic()
    print("\n== publish: a registry with the metadata service, the prepared disk published to it")
    server, shown = start_registry(OUT / "registry", images)
    print("$ " + " ".join(shlex.quote(a) for a in shown) + " &")
    timings.append(
        ("start imagewright serve (registry + metadata service)", time.monotonic() - started_registry)
    )
    registry = ["--data-dir", "registry"]
    try:
        publish = ["publish", "images/demo.qcow2", "--to", "qcow2,registry", "-d", "published", "--name",
                   "demo", "--visibility", "public", "--cloud", "imagewright", "--clouds-file",
                   "registry/clouds.yaml"]  # fmt: skip
        (OUT / "published").mkdir()
        timed(
            "publish the prepared disk to the registry: boot-tuned (GRUB timeout 0) on the way, "
            "the source untouched, the upload's checksum verified",
            imagewright(*publish),
            shown=["imagewright", *publish],
        )
        launched = json.loads(
            timed(
                "run it from the registry: the metadata service at 169.254.169.254, IMDSv2 required",
                imagewright("run", "demo", "--name", "web1", "--key-file", "id_demo.pub",
                            "--tokens", "required", "--detach", "--json", *registry),
                shown=["imagewright", "run", "demo", "--name", "web1", "--key-file", "id_demo.pub",
                       "--tokens", "required", "--detach", "--json", *registry],
            )
        )  # fmt: skip
        instance = launched["id"]
        for title, args in (
            ("wait for the agent's ready line (it asked the metadata service who it is)",
             ["wait", instance, "--timeout", "300"]),
            ("ps: the catalog's state checked against the live QEMU process", ["ps"]),
            ("stop it: ACPI power-off, then QMP quit", ["stop", instance, "--timeout", "5"]),
            ("rm: no process, no overlay, no record left", ["rm", instance]),
            ("verify: a fresh instance, checked from outside (hostname, key, user-data, root growth ...)",
             ["verify", "demo", "--context", "metadata", "--tokens", "required", "--timeout", "300"]),
        ):  # fmt: skip
            timed(title, imagewright(*args, *registry), shown=["imagewright", *args, *registry])
    finally:
        server.terminate()
        server.wait(timeout=30)
    total = time.monotonic() - started
    print("\n== timings")
    for title, elapsed in timings:
        print(f"  {elapsed:6.1f} s  {title}")
    print(f"  {total:6.1f} s  in all")


if __name__ == "__main__":
    main()
