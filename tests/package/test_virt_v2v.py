"""An OVA of a real Debian guest, imported by an importer that is not ours: virt-v2v.

``virt-v2v -i ova`` parses the descriptor and the manifest (it checks the digests itself),
opens the streamOptimized disk through qemu, inspects the guest operating system inside
(it must find Debian: its /etc/os-release, kernel, initramfs and fstab) and converts it to a
local qcow2 — which then boots under our harness until the agent's ready line is on the serial
console (the disk was made cloud-ready by ``prepare --agent`` before it was packaged: the agent
runs from its systemd unit and, with no metadata source attached, reports ``source=none``).

The guest: Debian bookworm (kernel, systemd, initramfs-tools) made by ``mmdebstrap`` into a
tarball (cached under ``${IMAGEWRIGHT_CACHE:-~/.cache/imagewright}/debian-bookworm-<recipe>/``, it
downloads ~200 MiB of packages once), made a bootable disk by ``imagewright build``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import qemu_img_info, which

from imagewright.agent import find_ready_line

#: mmdebstrap (first run only), build, virt-v2v's appliance and a TCG boot take their time: on the
#: shared 2-core machine under a load of ~20, virt-v2v alone was still converting after 30 minutes.
#: So it is not part of ``make test`` (30 minutes on 2 cores) but of ``make test-long``.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.long, pytest.mark.timeout(7200)]
#: virt-v2v's whole run (its appliance runs the guest's grub-mkconfig and update-initramfs under TCG).
V2V_TIMEOUT = 5400

#: A real Debian's boot pieces: virt-v2v regenerates the GRUB configuration with the guest's own
#: grub-mkconfig, so GRUB's tools are part of it as they are of any installed Debian.
PACKAGES = "linux-image-amd64,systemd-sysv,initramfs-tools,udev,kmod,e2fsprogs,grub-pc"
#: Written into the guest so that whatever rewrites its boot configuration keeps the serial console.
GRUB_DEFAULTS = 'GRUB_CMDLINE_LINUX="console=ttyS0,115200"\nGRUB_TERMINAL=serial\nGRUB_TIMEOUT=1\n'


def cache_root() -> Path:
    configured = os.environ.get("IMAGEWRIGHT_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "imagewright"


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def debian_tarball() -> Path:
    """A Debian bookworm root filesystem with a kernel, as a tarball (made once, cached)."""
    recipe = hashlib.sha256((PACKAGES + GRUB_DEFAULTS).encode()).hexdigest()[:12]
    directory = cache_root() / f"debian-bookworm-{recipe}"
    tarball = directory / "rootfs.tar.gz"
    with locked(directory):
        if not tarball.exists():
            partial = directory / "rootfs.partial.tar.gz"
            hook = (
                'chroot "$1" sh -c "echo root:root | chpasswd && echo debian-ova > /etc/hostname" && '
                f"printf '{GRUB_DEFAULTS}' > \"$1/etc/default/grub\""
            )
            subprocess.run(
                [which("mmdebstrap"), "--mode=root", "--variant=minbase", f"--include={PACKAGES}",
                 f"--customize-hook={hook}", "bookworm", str(partial), "http://deb.debian.org/debian"],
                check=True, capture_output=True,
            )  # fmt: skip
            partial.rename(tarball)
    return tarball


def run_virt_v2v(argv: list[str], env: dict[str, str]) -> tuple[str, int]:
    """Run virt-v2v in a session of its own: on a timeout the whole group goes (virt-v2v's
    qemu-nbd and appliance outlive a virt-v2v killed alone)."""
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        stdout, _ = process.communicate(timeout=V2V_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, _ = process.communicate()
        raise AssertionError(f"virt-v2v did not finish in {V2V_TIMEOUT} s:\n{stdout[-8000:]}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything it left behind
    return stdout, process.returncode


def test_virt_v2v_imports_our_ova_of_a_debian_guest_and_the_result_boots(
    debian_tarball: Path, tmp_path: Path, run_cli: object
) -> None:
    disk = tmp_path / "debian.qcow2"
    built: Result = run_cli(["build", "--from", debian_tarball, "-o", disk, "--size", "3G"])  # type: ignore[operator]
    assert built.exit_code == 0, built.output
    prepared: Result = run_cli(["prepare", disk, "--agent"])  # type: ignore[operator]
    assert prepared.exit_code == 0, prepared.output
    assert "imagewright-agent.service (systemd unit)" in prepared.output
    ova = tmp_path / "debian.ova"
    packaged: Result = run_cli(  # type: ignore[operator]
        ["package", "ova", disk, "-o", ova, "--os", "debian64", "--memory", "1024", "--cpus", "1"]
    )
    assert packaged.exit_code == 0, packaged.output

    converted = tmp_path / "v2v"
    converted.mkdir()
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    stdout, returncode = run_virt_v2v(
        [which("virt-v2v"), "-i", "ova", str(ova), "-o", "local", "-os", str(converted), "-of", "qcow2",
         "-on", "imported"],
        env,
    )  # fmt: skip
    assert returncode == 0, stdout[-8000:]
    # virt-v2v inspected the guest it found inside: a Debian with its own kernel.
    assert "debian" in stdout.lower()
    imported = converted / "imported-sda"
    assert qemu_img_info(imported)["format"] == "qcow2"
    assert (converted / "imported.xml").read_text().count("<disk") == 1

    console = tmp_path / "console.log"
    booted: Result = run_cli(  # type: ignore[operator]
        ["boot", imported, "--expect", "imagewright-agent: ready", "--timeout", "900", "--snapshot",
         "--memory", "1024", "--console-log", console]
    )  # fmt: skip
    assert booted.exit_code == 0, booted.output
    ready = find_ready_line(console.read_text(errors="replace"))
    assert ready is not None and ready.source == "none", console.read_text(errors="replace")[-4000:]
