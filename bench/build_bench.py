"""bench/build: ``debian:bookworm`` minbase + cloud-init to a bootable qcow2, vs debootstrap by hand.

Ours: ``imagewright.ops.build.distro.build_distribution("debian:bookworm", context="cloud-init")``
into a 2 GiB qcow2 that boots under BIOS from an MBR disk (``--firmware bios``: what the hand-made
side makes), first with empty caches (every package downloaded, mmdebstrap run), then again with
the caches the first run filled: the package cache and the root filesystem cache, so the warm
build runs only the image step (``cache.py``).

Theirs, as root, the steps people script today (same mirror, same package set, cold):
``debootstrap --variant=minbase --include=<the same packages>`` into a directory; in a chroot
(with /proc, /sys, /dev bound) the configuration files written by hand (fstab, GRUB defaults,
cloud-init datasources, networkd, hostname, machine-id); a raw disk: ``sfdisk``, a loop device
on the partition (``losetup -o``; ``losetup -P`` makes no partition devices here),
``mkfs.ext4``, ``mount``, ``cp -a``, ``grub-mkconfig`` in a chroot of the mounted disk,
``grub-mkimage`` and ``dd`` of boot.img/core.img (``grub-install`` cannot map a loop partition
to its disk here, see ENVIRONMENT.md), ``umount``, then ``qemu-img convert -O qcow2``.

Goals (issue 15): ours ≤ 0.7× theirs; our warm-cache build ≤ 0.3× our cold one. Both sides use
the Debian archive this machine's apt uses, so network speed counts on both.

Ours keeps its scratch trees (mmdebstrap's chroot, the staging tree of the image step) on tmpfs
when memory allows (``files.memory_scratch_directory``); ``IMAGEWRIGHT_MEMORY_SCRATCH=0`` measures
it with them on disk, as before. Theirs keeps debootstrap's tree on disk, as people do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Comparison, report, run
from imagewright.ops.build.distro import build_distribution
from imagewright.ops.build.distro.customizations import CUSTOMIZATIONS
from imagewright.ops.build.distro.plan import DistroPlan
from imagewright.ops.build.distro.release import parse_release
from imagewright.ops.build.distro.sources import choose_sources, host_mirror

RELEASE = "debian:bookworm"
DISK = 2 << 30
ROOT_START = 1 << 20
EPOCH = 1_700_000_000


def package_set(mirror: str) -> list[str]:
    """The packages our build installs beyond minbase (the same list for debootstrap)."""
    release = parse_release(RELEASE)
    plan = DistroPlan(
        release=release, variant="minbase", packages=(), context="cloud-init", kernel_flavour="cloud",
        sources=choose_sources(release, mirror=mirror), source_date_epoch=EPOCH,
    )  # fmt: skip
    return list(dict.fromkeys(p for c in CUSTOMIZATIONS if c.applies(plan) for p in c.packages(plan)))


def by_hand(work: Path, mirror: str, packages: list[str]) -> dict[str, float]:
    """The hand-made image in ``work``; the seconds each step took."""
    steps: dict[str, float] = {}
    mark = time.perf_counter()

    def step(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        steps[name] = round(now - mark, 1)
        mark = now

    tree = work / "tree"
    # debootstrap configures its --include packages in its base stage, where grub-pc (no
    # install device) and cloud-init's python3-cryptography fail: people install those
    # afterwards with apt in a chroot (/proc mounted, debconf preseeded), as here.
    later = {"grub-pc", "cloud-init", "cloud-guest-utils"}
    first = [p for p in packages if p not in later]
    run(["debootstrap", "--variant=minbase", f"--include={','.join(first)}", "bookworm", tree, mirror])
    step("debootstrap")
    run(
        ["chroot", tree, "debconf-set-selections"],
        input=b"grub-pc grub-pc/install_devices multiselect\n"
        b"grub-pc grub-pc/install_devices_empty boolean true\n",
    )
    # systemd-resolved made /etc/resolv.conf a link into /run: the chroot needs the host's to resolve.
    run(["cp", "--remove-destination", "/etc/resolv.conf", tree / "etc/resolv.conf"])
    run(["mount", "-t", "proc", "proc", tree / "proc"])
    try:
        run(
            ["chroot", tree, "apt-get", "install", "-y", "-q", "--no-install-recommends", *sorted(later)],
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
    finally:
        subprocess.run(["umount", str(tree / "proc")], check=False)
    step("apt_in_chroot")
    (tree / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    (tree / "etc/default/grub.d").mkdir(parents=True, exist_ok=True)
    (tree / "etc/default/grub.d/50-cloud.cfg").write_text(
        'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"\n'
        'GRUB_TERMINAL="serial console"\nGRUB_TIMEOUT=1\n'
    )
    (tree / "etc/cloud/cloud.cfg.d/90-datasources.cfg").write_text("datasource_list: [NoCloud, None]\n")
    (tree / "etc/systemd/network").mkdir(parents=True, exist_ok=True)
    (tree / "etc/systemd/network/90-dhcp.network").write_text("[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n")
    (tree / "etc/hostname").write_text("localhost\n")
    (tree / "etc/machine-id").write_text("")
    run(["chroot", tree, "systemctl", "enable", "systemd-networkd"])
    step("configure")
    raw = work / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(DISK)
    run(["sfdisk", "-q", raw], input=b"label: dos\nstart=2048, type=83, bootable\n")
    loop = (
        run(
            [
                "losetup",
                "--find",
                "--show",
                "--offset",
                str(ROOT_START),
                "--sizelimit",
                str(DISK - ROOT_START),
                raw,
            ]
        )
        .stdout.decode()
        .strip()
    )
    mnt = work / "mnt"
    mnt.mkdir()
    try:
        run(["mkfs.ext4", "-q", "-L", "root", loop])
        run(["mount", loop, mnt])
        try:
            run(["cp", "-a", f"{tree}/.", str(mnt)])
            for name in ("proc", "sys", "dev"):
                run(["mount", "--bind", f"/{name}", mnt / name])
            try:
                run(["chroot", mnt, "grub-mkconfig", "-o", "/boot/grub/grub.cfg"])
            finally:
                for name in ("dev", "sys", "proc"):
                    subprocess.run(["umount", str(mnt / name)], check=False)
            core = work / "core.img"
            run([
                "grub-mkimage", "-O", "i386-pc", "-o", core, "-p", "(hd0,msdos1)/boot/grub",
                "biosdisk", "part_msdos", "ext2", "normal", "linux", "serial", "terminal", "search",
                "search_label", "configfile", "echo", "test", "gzio",
            ])  # fmt: skip
            run(["dd", "if=/usr/lib/grub/i386-pc/boot.img", f"of={raw}", "bs=440", "count=1", "conv=notrunc"])
            run(["dd", f"if={core}", f"of={raw}", "bs=512", "seek=1", "conv=notrunc"])
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    step("disk")
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, work / "theirs.qcow2"])
    step("convert")
    return steps


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench/build runs debootstrap, mount and losetup for the other side: run it as root")
    mirror = host_mirror(parse_release(RELEASE))
    if mirror is None:
        raise SystemExit("this machine's apt names no Debian archive")
    with tempfile.TemporaryDirectory(prefix="iw-bench-build-") as tmp:
        work = Path(tmp)
        # The hand-made side first: it is the one that can fail half-way.
        theirs_work = work / "theirs"
        theirs_work.mkdir()
        start = time.perf_counter()
        steps = by_hand(theirs_work, mirror, package_set(mirror))
        theirs = time.perf_counter() - start
        # Ours removes its scratch trees (mmdebstrap's chroot, build's staging tree) before it
        # returns; theirs leaves the debootstrap tree behind. Removing it is timed apart.
        start = time.perf_counter()
        shutil.rmtree(theirs_work, ignore_errors=True)
        theirs_cleanup = time.perf_counter() - start
        cache = work / "cache"
        timings: dict[str, float] = {}
        downloads: dict[str, int] = {}
        rootfs: dict[str, str] = {}
        phases: dict[str, dict[str, float]] = {}
        for label in ("cold", "warm"):
            start = time.perf_counter()
            result = build_distribution(
                RELEASE, work / f"ours-{label}.qcow2", context="cloud-init", mirror=mirror,
                source_date_epoch=EPOCH, size=DISK, cache_dir=cache, firmware="bios",
            )  # fmt: skip
            timings[label] = time.perf_counter() - start
            downloads[label] = result.packages_downloaded
            rootfs[label] = result.rootfs_cache
            phases[label] = {k: round(v, 1) for k, v in result.phase_seconds.items()}
            (work / f"ours-{label}.qcow2").unlink()
        report(
            Comparison(
                name="build",
                ours_label="imagewright build --from debian:bookworm --cloud-init (cold cache)",
                theirs_label="debootstrap + chroot config + loop/mount/cp + grub + qemu-img (root)",
                ours_seconds=timings["cold"],
                theirs_seconds=theirs,
                goal_ratio=0.7,
                extra={
                    "warm_cache_seconds": round(timings["warm"], 1),
                    "warm_over_cold": round(timings["warm"] / timings["cold"], 3),
                    "warm_over_cold_goal": 0.3,
                    "packages_downloaded_cold": downloads["cold"],
                    "packages_downloaded_warm": downloads["warm"],
                    "rootfs_cache": rootfs,
                    "phase_seconds_cold": phases["cold"],
                    "phase_seconds_warm": phases["warm"],
                    "theirs_step_seconds": steps,
                    "theirs_tree_removal_seconds": round(theirs_cleanup, 1),
                    "ratio_with_their_tree_removed": round(timings["cold"] / (theirs + theirs_cleanup), 3),
                },
            )
        )


if __name__ == "__main__":
    main()
