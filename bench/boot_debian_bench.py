"""bench/boot, the Debian half: time to login of Debian 12 + cloud-init, ours vs by hand.

The root filesystem: ``build --from debian:bookworm --cloud-init --kernel generic`` (cloud-init,
openssh-server, linux-image-amd64; the tarball from build's rootfs cache, as
tests/launch/test_verify_debian.py builds it), made into one 2 GiB hybrid GPT qcow2. Both sides
boot that same disk, copied:

- ours: ``imagewright prepare --boot-tuning --datasource nocloud`` on the copy, then
  ``imagewright verify DISK --context nocloud`` (launch on an overlay 128 MiB bigger, NoCloud
  seed, wait for the login prompt, SSH login with the run's key, ACPI stop, read back, checks).
  Timed: verify's own "console" check (launch to the login prompt), and verify end to end.
- theirs, by hand: the copy set back to the settings a disk built by hand has — GRUB's default
  menu timeout (Debian's ``GRUB_TIMEOUT=5``), cloud-init's packaged datasource list (build's
  ``99-imagewright.cfg`` removed), systemd's default wait-online (build's 30 s drop-in
  removed) and initramfs-tools' default initrd (``MODULES=most``: build's initramfs
  customisation removed from the same root filesystem, ``mkinitramfs`` run inside it with
  ``chroot``, as the kernel package's postinst makes it in a tree built by hand) — edited with
  ``debugfs -w`` on a raw copy, NOT rebuilt by hand with debootstrap (bench/build measures
  that); a NoCloud seed made with genisoimage (``-V cidata``, meta-data,
  a user-data script and a cloud-config with an SSH key); ``qemu-system-x86_64`` started by hand
  (SeaBIOS, virtio disk with ``snapshot=on``, the seed on IDE, user networking, serial on
  stdout), timed until the serial console shows ``login:``, then killed.

Alternating theirs/ours for ``ROUNDS`` rounds; the medians are compared. Goal (issue 12): ours
(to the login prompt) ≤ 0.7× theirs. The load average is recorded with each run: the machine
is shared and TCG boots stretch with load.

vCPUs: verify gives an instance of a systemd guest under TCG two vCPUs by default
(``compute.instance.default_cpus``), a person's ``qemu-system-x86_64`` without ``-smp`` gets
one. The headline compares those two defaults; each round also boots theirs with ``-smp`` equal
to ours (``theirs_equal_vcpus``), and ``extra`` holds both counts and the ratio at equal vCPUs,
so what the vCPU default buys and what the image's tuning buys are told apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.fixtures.debian_guest import RELEASE, SOURCE_DATE_EPOCH
from tests.fixtures.metadata_service import start_stack

from bench.boot_bench import seed_by_hand
from bench.common import Comparison, cpu_seconds, report, run
from imagewright.ops.build.distro import build_distribution
from imagewright.ops.build.distro.customizations import initramfs
from imagewright.ops.build.distro.release import parse_release
from imagewright.ops.build.distro.sources import host_mirror
from imagewright.ops.prepare import PrepareOptions, prepare

ROUNDS = int(os.environ.get("BENCH_BOOT_DEBIAN_ROUNDS", "2"))
LOGIN_TIMEOUT = 900.0
LOGIN_PROMPT = re.compile(rb"(?m)\blogin: *\r?$")
DEBIAN_GRUB_TIMEOUT = 5
#: What build adds that a disk built by hand does not have (removed from theirs).
INITRAMFS_FILES = (initramfs.CONF_FILE, initramfs.HOOK_FILE)
BUILD_ONLY_FILES = (
    "/etc/cloud/cloud.cfg.d/99-imagewright.cfg",
    "/etc/systemd/system/systemd-networkd-wait-online.service.d/50-imagewright.conf",
    *INITRAMFS_FILES,
)


def make_disk(workdir: Path) -> tuple[Path, Path, str]:
    """The built disk, the root filesystem tarball it was made from, and the cache's answer."""
    mirror = host_mirror(parse_release(RELEASE))
    disk = workdir / "debian.qcow2"
    rootfs = workdir / "rootfs.tar"
    built = build_distribution(
        RELEASE, disk, context="cloud-init", kernel="generic", mirror=mirror,
        source_date_epoch=SOURCE_DATE_EPOCH, size=2 << 30, force=True, keep_rootfs=rootfs,
    )  # fmt: skip
    return disk, rootfs, built.rootfs_cache


def default_initrd(rootfs: Path, workdir: Path) -> tuple[Path, str]:
    """The initrd initramfs-tools' defaults make from this root filesystem, and its kernel version.

    build's initramfs customisation (``MODULES=list`` and its hook) is taken out of an unpacked
    copy and the tree's own ``mkinitramfs`` runs inside it (``chroot``; in a user namespace
    for a user who is not root), as the kernel package's postinst does in a tree built by hand.
    """
    tree = workdir / "rootfs"
    tree.mkdir()
    run(["tar", "-xf", rootfs, "-C", tree])
    for path in INITRAMFS_FILES:
        (tree / path.lstrip("/")).unlink()
    versions = sorted(p.name.removeprefix("vmlinuz-") for p in (tree / "boot").glob("vmlinuz-*"))
    if len(versions) != 1:
        raise SystemExit(f"expected one kernel in the root filesystem, found {versions}")
    chroot = ["chroot"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "chroot"]
    run([*chroot, tree, "mkinitramfs", "-o", "/tmp/initrd.default", versions[0]])
    initrd = workdir / "initrd.default"
    os.replace(tree / "tmp/initrd.default", initrd)
    shutil.rmtree(tree)
    return initrd, versions[0]


def root_offset(raw: Path) -> int:
    table = json.loads(run(["sfdisk", "--json", raw]).stdout)["partitiontable"]
    root = max(table["partitions"], key=lambda p: p["size"])
    return int(root["start"]) * 512


def file_bytes(device: str, path: str) -> int:
    found = re.search(rb"Size: (\d+)", run(["debugfs", "-R", f"stat {path}", device]).stdout)
    if found is None:
        raise SystemExit(f"debugfs gives no size for {path}")
    return int(found.group(1))


def disk_by_hand(built: Path, rootfs: Path, workdir: Path) -> tuple[Path, dict[str, int]]:
    """The built disk with a hand-built disk's defaults (module docstring), as raw; the bytes of
    both sides' initrds."""
    initrd, version = default_initrd(rootfs, workdir)
    raw = workdir / "by-hand.raw"
    run(["qemu-img", "convert", "-O", "raw", built, raw])
    device = f"{raw}?offset={root_offset(raw)}"
    initrd_path = f"/boot/initrd.img-{version}"
    sizes = {"ours": file_bytes(device, initrd_path)}
    grub_cfg = run(["debugfs", "-R", "cat /boot/grub/grub.cfg", device]).stdout.decode()
    defaults, count = re.subn(
        r"(?m)^(\s*set\s+timeout\s*=\s*)\d+\s*$", rf"\g<1>{DEBIAN_GRUB_TIMEOUT}", grub_cfg
    )
    if not count:
        raise SystemExit("the built grub.cfg sets no timeout; nothing to set back")
    local = workdir / "grub.cfg"
    local.write_text(defaults)
    requests = ["rm /boot/grub/grub.cfg", f"write {local} /boot/grub/grub.cfg"]
    requests += [f"rm {initrd_path}", f"write {initrd} {initrd_path}"]
    requests += [f"rm {path}" for path in BUILD_ONLY_FILES]
    script = workdir / "debugfs.cmds"
    script.write_text("\n".join(requests) + "\n")
    run(["debugfs", "-w", "-f", script, device])
    for path in BUILD_ONLY_FILES:
        listed = subprocess.run(["debugfs", "-R", f"stat {path}", device], capture_output=True, check=False)
        if b"File not found" not in listed.stderr:
            raise SystemExit(f"{path} is still in the disk by hand")
    sizes["theirs"] = file_bytes(device, initrd_path)
    if sizes["theirs"] != initrd.stat().st_size:
        raise SystemExit("the default initrd was not written whole into the disk by hand")
    return raw, sizes


def debian_seed_by_hand(workdir: Path) -> Path:
    """The NoCloud seed of bench/boot, with a cloud-config: an SSH key and a marker command."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", workdir / "id_hand"])
    key = (workdir / "id_hand.pub").read_text().strip()
    user_data = (
        f"#cloud-config\nssh_authorized_keys:\n  - {key}\nruncmd:\n  - echo bench >> /var/lib/bench.marker\n"
    )
    return seed_by_hand(workdir, user_data, "i-0000000000bench02")


#: Console lines that mark a boot's phases: GRUB starts the menu entry (then reads the kernel
#: and initrd through the BIOS), the kernel's first line, the initramfs's /init, systemd.
PHASE_MARKERS = {
    "grub entry": b"Booting `",
    "kernel": b"Linux version",
    "initramfs /init": b"Run /init as init process",
    "systemd": b"systemd[1]: systemd ",
    "cloud-init local": b"running 'init-local'",
    "cloud-init init": b"running 'init' at",
}


def boot_by_hand(disk: Path, iso: Path, console: Path, phases: dict[str, float], cpus: int = 1) -> float:
    """Start QEMU as a person would and time it to the login prompt; when each of
    ``PHASE_MARKERS`` first showed goes into ``phases``. ``cpus`` > 1 adds ``-smp``."""
    argv = [
        "qemu-system-x86_64", "-nodefaults", "-machine", "pc", "-accel", "tcg", "-m", "512",
        "-display", "none", "-serial", "stdio",
        "-drive", f"file={disk},format=raw,if=virtio,snapshot=on",
        "-drive", f"file={iso},format=raw,media=cdrom,if=ide",
        "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    if cpus > 1:
        argv += ["-smp", str(cpus)]
    seen = b""
    started = time.perf_counter()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as qemu:
        assert qemu.stdout is not None
        try:
            while time.perf_counter() - started < LOGIN_TIMEOUT:
                chunk = os.read(qemu.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
                for name, marker in PHASE_MARKERS.items():
                    if name not in phases and marker in seen[-len(chunk) - len(marker) :]:
                        phases[name] = round(time.perf_counter() - started, 1)
                if LOGIN_PROMPT.search(seen[-4096:]):
                    return time.perf_counter() - started
            raise SystemExit("the hand-started guest never showed a login prompt")
        finally:
            qemu.kill()
            console.write_bytes(seen)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="iw-bench-boot-debian-") as tmp:
        workdir = Path(tmp)
        built, rootfs, rootfs_cache = make_disk(workdir)
        ours_disk = workdir / "ours.qcow2"
        shutil.copyfile(built, ours_disk)
        tuned = prepare(ours_disk, options=PrepareOptions(boot_tuning=True, boot_datasource="nocloud"))
        tuning = [
            f"{change.path} ({change.detail})" if change.detail else change.path
            for op in tuned.operations if op.name == "boot-tuning" for change in op.changes
        ]  # fmt: skip
        theirs_disk, initrd_sizes = disk_by_hand(built, rootfs, workdir)
        rootfs.unlink()
        iso = debian_seed_by_hand(workdir)
        stack = start_stack(workdir / "data")
        ours_login: list[float] = []
        ours_total: list[float] = []
        theirs: list[float] = []
        theirs_equal: list[float] = []
        ours_cpus: set[int] = set()
        loads: list[dict[str, object]] = []
        try:
            for round_number in range(ROUNDS):
                load, cpu = os.getloadavg()[0], cpu_seconds()
                phases: dict[str, float] = {}
                theirs.append(boot_by_hand(theirs_disk, iso, workdir / f"by-hand-{round_number}.log", phases))
                loads.append(
                    {"side": "theirs", "vcpus": 1, "seconds": round(theirs[-1], 1), "load1": load,
                     "cpu_seconds": round(cpu_seconds() - cpu, 1), "phases": phases}
                )  # fmt: skip
                load, cpu = os.getloadavg()[0], cpu_seconds()
                started = time.perf_counter()
                result = stack.server.imagewright(
                    "verify", str(ours_disk), "--context", "nocloud", "--timeout", str(LOGIN_TIMEOUT),
                    "--json", check=False, timeout=LOGIN_TIMEOUT + 300,
                )  # fmt: skip
                ours_total.append(time.perf_counter() - started)
                ours_cpu = cpu_seconds() - cpu
                verified = json.loads(result.stdout)
                if not verified["ok"]:
                    raise SystemExit(f"verify failed:\n{result.stdout}")
                checks = {c["name"]: c["seconds"] for c in verified["checks"]}
                ours_login.append(checks["console"])
                cpus = int(verified["cpus"])
                ours_cpus.add(cpus)
                loads.append(
                    {"side": "ours", "vcpus": cpus, "seconds": round(ours_login[-1], 1),
                     "total": round(ours_total[-1], 1), "load1": load,
                     "cpu_seconds_whole_verify": round(ours_cpu, 1), "checks": checks}
                )  # fmt: skip
                if cpus > 1:
                    load, cpu = os.getloadavg()[0], cpu_seconds()
                    phases = {}
                    log = workdir / f"by-hand-smp{cpus}-{round_number}.log"
                    theirs_equal.append(boot_by_hand(theirs_disk, iso, log, phases, cpus=cpus))
                    loads.append(
                        {"side": "theirs_equal_vcpus", "vcpus": cpus, "seconds": round(theirs_equal[-1], 1),
                         "load1": load, "cpu_seconds": round(cpu_seconds() - cpu, 1), "phases": phases}
                    )  # fmt: skip
        finally:
            stack.server.stop()
        equal = statistics.median(theirs_equal) if theirs_equal else statistics.median(theirs)
        report(
            Comparison(
                name="boot-debian",
                ours_label="prepare --boot-tuning + verify: launch to login prompt",
                theirs_label="qemu-system-x86_64 by hand to the login prompt",
                ours_seconds=statistics.median(ours_login),
                theirs_seconds=statistics.median(theirs),
                goal_ratio=0.7,
                extra={
                    "image": "debian:bookworm minbase + cloud-init, openssh-server, linux-image-amd64; "
                    "2 GiB hybrid GPT qcow2 (build --from, rootfs cache " + rootfs_cache + ")",
                    "theirs_disk": "the same build set back to GRUB timeout 5, cloud-init's packaged "
                    "datasource list, systemd's default wait-online and initramfs-tools' default initrd "
                    "(MODULES=most, mkinitramfs in the same root filesystem; debugfs -w); NoCloud seed: "
                    "genisoimage",
                    "initrd_bytes": initrd_sizes,
                    "cpu_seconds": "theirs: QEMU to the login prompt; ours: the whole verify (QEMU to "
                    "the login prompt, SSH login, ACPI stop, checks)",
                    "boot_tuning": tuning,
                    "vcpus": {
                        "ours": sorted(ours_cpus),
                        "theirs": 1,
                        "theirs_equal_vcpus": sorted(ours_cpus),
                    },
                    "theirs_equal_vcpus_seconds_median": round(equal, 1),
                    "ratio_at_equal_vcpus": round(statistics.median(ours_login) / equal, 3),
                    "rounds": ROUNDS,
                    "verify_end_to_end_seconds_median": round(statistics.median(ours_total), 1),
                    "runs": loads,
                    "load_average_end": os.getloadavg(),
                },
            )
        )


if __name__ == "__main__":
    main()
