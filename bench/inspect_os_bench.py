"""bench/inspect_os: ``inspect --os`` on a Debian 12 qcow2 guest vs ``virt-inspector``.

The guest: a GPT disk with an ext4 root written by ``tests.ops.os_trees.debian_tree`` (this
machine's own os-release, dpkg status database, systemd and busybox; kernels in /boot, GRUB,
cloud-init, OpenSSH), converted to qcow2.

Ours: ``imagewright.ops.inspect_os.inspect_os`` in one process (inspect, raw working copy by
qemu-img, debugfs reads). Theirs: ``virt-inspector --format=qcow2 -a IMAGE`` (Debian
``libguestfs-tools``; it boots an appliance VM, under TCG here). Both read the same image in
the same run; the fields both report are compared and the result says whether they agree.
Goal: ours ≤ 0.05× theirs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.ops.os_trees import debian_tree, virt_inspector

from bench.common import Comparison, report, run, timed
from imagewright.ops.inspect_os import OsInspection, inspect_os

MiB = 1 << 20
DISK = 256 * MiB
ROOT_START = 1 * MiB


def make_image(workdir: Path) -> Path:
    root = debian_tree(workdir / "root")
    raw = workdir / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(DISK)
    run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", raw],
        input=b"label: gpt\nstart=2048, type=linux\n",
    )
    size_kib = (DISK - ROOT_START - MiB) // 1024
    run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "root",
            "-E",
            f"offset={ROOT_START}",
            "-d",
            root,
            raw,
            f"{size_kib}k",
        ]
    )
    image = workdir / "disk.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image])
    raw.unlink()
    return image


def main() -> None:
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    with tempfile.TemporaryDirectory(prefix="iw-bench-inspect-os-") as tmp:
        image = make_image(Path(tmp))
        found: list[OsInspection] = []
        theirs_found: list[dict[str, object]] = []
        ours_seconds = timed(lambda: found.append(inspect_os(image)))
        theirs_seconds = timed(lambda: theirs_found.append(virt_inspector(image, "qcow2")))
        [facts] = found[0].roots
        theirs = theirs_found[0]
        [database] = facts.packages
        fields = {
            "distro": (facts.distribution.os_distro, theirs["distro"]),
            "major_version": (facts.distribution.version_id, theirs["major_version"]),
            "arch": (facts.architecture, theirs["arch"]),
            "hostname": (facts.hostname, theirs["hostname"]),
            "package_format": (database.format, theirs["package_format"]),
            "packages": (len(database.packages), len(theirs["applications"])),  # type: ignore[arg-type]
        }
        report(
            Comparison(
                name="inspect_os",
                ours_label="imagewright inspect_os (debugfs, read-only)",
                theirs_label="virt-inspector (TCG appliance)",
                ours_seconds=ours_seconds,
                theirs_seconds=theirs_seconds,
                goal_ratio=0.05,
                extra={
                    "image": "256 MiB qcow2, GPT, ext4 Debian 12 root written by tests.ops.os_trees",
                    "fields": {name: {"ours": a, "theirs": b} for name, (a, b) in fields.items()},
                    "fields_agree": all(str(a) == str(b) for a, b in fields.values()),
                    "package_names_agree": sorted(p.name for p in database.packages)
                    == theirs["applications"],
                },
            )
        )


if __name__ == "__main__":
    main()
