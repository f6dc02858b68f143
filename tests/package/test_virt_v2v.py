"""An OVA of a real Debian guest, imported by an importer that is not ours: virt-v2v.

``virt-v2v -i ova`` parses the descriptor and the manifest (it checks the digests itself),
opens the streamOptimized disk through qemu, inspects the guest operating system inside
(it must find Debian 12: /etc/os-release, the kernel packages, GRUB's grub.cfg and tools,
fstab), converts it — it rebuilds the initramfs with the guest's own ``update-initramfs`` and
lists the virtio modules in /etc/initramfs-tools/modules — and writes a local qcow2 plus a
libvirt domain. That qcow2 then boots under our harness until the agent's ready line is on
the serial console (the agent runs from its systemd unit and, with no metadata source
attached, reports ``source=none``).

The guest is ``build --from debian:bookworm --agent`` (tests/fixtures/debian_guest.py, built
once per session from the local package and root filesystem caches): the product's own image,
with grub-pc installed, which is what virt-v2v needs to find a boot loader it can manage.

Where the time goes (measured here, 2 cores, virt-v2v 2.2.0, libguestfs 1.48 appliance under
TCG): the appliance boots and inspects in ~3-4 min; the conversion's one heavy step is the
guest's ``update-initramfs -c`` inside the appliance, which virt-v2v runs for every Linux guest
whatever its initramfs holds (~3,100 processes — readlink/realpath/cp per module of
``MODULES=most`` — 6.4 CPU-seconds natively, 11 min in the appliance at load ~20, 28 min at load
~30); then nbdcopy copies the used blocks (~15 s). virt-v2v took 1,074 s at load ~20 (up to the
missing nbdkit, below) and 2,038 s at load ~30 with five appliances running; the converted disk
booted to the ready line in 487 s at load ~27. So the test is ``long`` (``make test-long``),
outside the 30-minute suite.

virt-v2v 2.x writes every output through nbdkit and copies with nbdcopy, neither of which
Debian's virt-v2v package depends on: without them it converts for 18 minutes and then stops
with "nbdkit is not installed or not working" (the Makefile installs ``nbdkit libnbd-bin``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import Result
from tests.fixtures.debian_guest import DebianGuest
from tests.fixtures.tools import DIE_WITH_TESTS, qemu_img_info, which

from imagewright.agent import find_ready_line

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.long, pytest.mark.timeout(7200)]
#: virt-v2v's whole run: 18 min at load ~20, 34 min at load ~30 (five appliances at once) on the
#: 2-core machine; room for a heavier load. The boot gets 1,500 s (487 s at load ~27).
V2V_TIMEOUT = 5400
LIBOSINFO = "http://libosinfo.org/xmlns/libvirt/domain/1.0"


def run_virt_v2v(argv: list[str], env: dict[str, str], log: Path) -> int:
    """Run virt-v2v in a session of its own, its (verbose) output in ``log``: on a timeout the
    whole group goes (virt-v2v's qemu-nbd, nbdkit and appliance outlive a virt-v2v killed alone)."""
    with log.open("w") as output:
        # setpriv: virt-v2v gets SIGTERM should this test process die without its finally
        # (a killed pytest left three virt-v2v appliances spinning for an hour).
        process = subprocess.Popen(
            [*DIE_WITH_TESTS, *argv], env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            returncode = process.wait(timeout=V2V_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError(f"virt-v2v did not finish in {V2V_TIMEOUT} s:\n{tail(log)}") from None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # anything it left behind
    return returncode


def tail(log: Path, size: int = 8000) -> str:
    return log.read_text(errors="replace")[-size:]


def test_virt_v2v_imports_our_ova_of_a_debian_guest_and_the_result_boots(
    debian_agent_guest: DebianGuest, tmp_path: Path, run_cli: object
) -> None:
    ova = tmp_path / "debian.ova"
    packaged: Result = run_cli(  # type: ignore[operator]
        ["package", "ova", debian_agent_guest.disk, "-o", ova, "--os", "debian64", "--memory", "1024",
         "--cpus", "1"]
    )  # fmt: skip
    assert packaged.exit_code == 0, packaged.output

    converted = tmp_path / "v2v"
    converted.mkdir()
    log = tmp_path / "virt-v2v.log"
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    returncode = run_virt_v2v(
        [which("virt-v2v"), "-v", "-x", "-i", "ova", str(ova), "-o", "local", "-os", str(converted),
         "-of", "qcow2", "-on", "imported"],
        env,
        log,
    )  # fmt: skip
    assert returncode == 0, tail(log)

    # What virt-v2v's inspection found, in the domain it wrote: Debian 12 (libosinfo's id), one
    # virtio disk, BIOS (virt-v2v writes no firmware attribute for BIOS).
    domain = ElementTree.parse(converted / "imported.xml").getroot()
    assert [entry.get("id") for entry in domain.iter(f"{{{LIBOSINFO}}}os")] == ["http://debian.org/debian/12"]
    targets = [disk.find("target") for disk in domain.iter("disk")]
    assert [(t.get("dev"), t.get("bus")) for t in targets if t is not None] == [("vda", "virtio")]
    boot = domain.find("os")
    assert boot is not None and boot.get("firmware") is None, ElementTree.tostring(domain)
    imported = converted / "imported-sda"
    assert qemu_img_info(imported)["format"] == "qcow2"
    # What its conversion changed inside the guest, read back without virt-v2v: the virtio
    # modules are listed for the guest's initramfs-tools (and the initramfs was rebuilt).
    modules: Result = run_cli(["cat", f"{imported}:/etc/initramfs-tools/modules"])  # type: ignore[operator]
    assert modules.exit_code == 0, modules.output
    assert "added by virt-v2v" in modules.output and "virtio_blk" in modules.output, modules.output
    assert "update-initramfs: Generating /boot/initrd.img-" in log.read_text(errors="replace")

    console = tmp_path / "console.log"
    booted: Result = run_cli(  # type: ignore[operator]
        ["boot", imported, "--expect", "imagewright-agent: ready", "--timeout", "1500", "--snapshot",
         "--memory", "1024", "--console-log", console]
    )  # fmt: skip
    assert booted.exit_code == 0, booted.output
    ready = find_ready_line(console.read_text(errors="replace"))
    assert ready is not None and ready.source == "none", console.read_text(errors="replace")[-4000:]
