"""bench/prepare: the default prepare operations on a 1 GiB qcow2 guest vs virt-sysprep.

The guest: an MBR disk of 1 GiB with an ext4 root that looks used (host keys, persistent-net
rules, MAC addresses in ifcfg/netplan/NetworkManager files, logs and rotated logs, histories,
leases, package caches, a machine-id — the tree the prepare tests use) plus a few host
programs in /bin and 200 MiB of real binaries under /usr/lib, converted to qcow2.

Ours: ``imagewright.ops.prepare.prepare`` with its default operations, in one process (inspect,
raw working copy, debugfs edits, e2fsck, qcow2 written back). Theirs: ``virt-sysprep -a
COPY --format qcow2`` with its default operations (Debian ``libguestfs-tools``; it boots a
small appliance VM, under TCG here: ``LIBGUESTFS_BACKEND=direct``,
``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``). Each side works on its own copy of the same image,
in the same run. Goal: ours ≤ 0.1× theirs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tests.guest.images import sysprep_tree

from bench.common import Comparison, report, run, timed
from imagewright.ops.prepare import prepare

MiB = 1 << 20
DISK = 1 << 30
BULK = 200 * MiB
ROOT_START = 1 * MiB


def bulk_files(root: Path, limit: int) -> int:
    """Copy up to ``limit`` bytes of the host's shared libraries into ``root``/usr/lib."""
    target = root / "usr" / "lib"
    target.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in sorted(Path("/usr/lib/x86_64-linux-gnu").rglob("*.so*")):
        if not path.is_file() or path.is_symlink():
            continue
        shutil.copyfile(path, target / f"{total:012d}-{path.name}")
        total += path.stat().st_size
        if total >= limit:
            break
    return total


def host_binaries(root: Path) -> None:
    """A few real programs: libguestfs inspection (and so virt-sysprep) only accepts a root
    filesystem with binaries it can read the architecture from."""
    for directory, names in (("bin", ("ls", "dash")), ("usr/bin", ("env",))):
        (root / directory).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy2(
                Path("/") / ("usr/bin" if directory == "usr/bin" else "bin") / name, root / directory / name
            )
    (root / "bin" / "sh").symlink_to("dash")


def make_image(workdir: Path) -> Path:
    root = sysprep_tree(workdir / "root")
    host_binaries(root)
    bulk_files(root, BULK)
    raw = workdir / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(DISK)
    run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", raw], input=b"label: dos\nstart=2048, type=83\n")
    size_kib = (DISK - ROOT_START) // 1024
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-E", f"offset={ROOT_START}", "-d", root, raw, f"{size_kib}k"])
    image = workdir / "disk.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image])
    raw.unlink()
    return image


def main() -> None:
    environment = dict(os.environ, LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    with tempfile.TemporaryDirectory(prefix="iw-bench-prepare-") as tmp:
        workdir = Path(tmp)
        template = make_image(workdir)
        ours_copy = workdir / "ours.qcow2"
        theirs_copy = workdir / "theirs.qcow2"
        shutil.copyfile(template, ours_copy)
        shutil.copyfile(template, theirs_copy)
        changes: list[int] = []

        def ours() -> None:
            changes.append(prepare(ours_copy).change_count)

        def theirs() -> None:
            run(["virt-sysprep", "-q", "--format", "qcow2", "-a", theirs_copy], env=environment)

        ours_seconds = timed(ours)
        theirs_seconds = timed(theirs)
        for image in (ours_copy, theirs_copy):
            run(["qemu-img", "check", "-q", "-f", "qcow2", image])
        report(
            Comparison(
                name="prepare",
                ours_label="imagewright prepare (default operations)",
                theirs_label="virt-sysprep (default operations, TCG appliance)",
                ours_seconds=ours_seconds,
                theirs_seconds=theirs_seconds,
                goal_ratio=0.1,
                extra={
                    "image": "1 GiB qcow2, MBR, ext4 root with 200 MiB of files",
                    "changes_reported_by_imagewright": changes[0],
                },
            )
        )


if __name__ == "__main__":
    main()
