"""One long-lived instance under QEMU: its files, its machine, and finding its process.

``imagewright run`` (``service/launch``) keeps each instance in its own directory,
``DATA_DIR/instances/<instance-id>/`` (0700)::

    disk.qcow2       the overlay the instance writes: a qcow2 with no backing name in its
                     header; QEMU is given the base explicitly (``Drive.backing``), so the
                     cached base is only ever read and no header name is ever followed
    console.log      every byte of the serial console (ttyS0), written by QEMU itself
    qmp/qmp.sock     the QEMU Machine Protocol socket (its directory holds nothing else: it is
                     shown to QEMU's sandbox writable)
    context.iso|img  the context medium, when the instance gets one instead of the metadata service
    known_hosts      the instance's SSH host keys as ``imagewright ssh`` first met them
    OVMF_VARS.fd     the instance's own UEFI variable store (its NVRAM: boot entries the guest
                     writes survive a restart), when it runs under OVMF
    plan.json        what the supervisor starts (argument list and sandbox)
    supervisor.log   the supervisor's own output; qemu.log QEMU's stderr

The QEMU process is named ``imagewright-instance-<id>`` (``-name``), which is how ``ps`` tells
an instance's process from any other QEMU and finds the orphans: processes with such a name that
the catalog does not know as running.

vCPUs (``default_cpus``): without ``--cpus``, an instance under TCG whose guest boots systemd
gets two (one on a one-core host); any other guest, and any guest under KVM, one. QEMU 7.2 runs
an x86-64 guest on an x86-64 host with multi-threaded TCG by default, one host thread per vCPU
(qemu-system-x86_64(1), ``-accel tcg,thread=``: on unless icount or ``thread=single``; seen
here as threads ``CPU 0/TCG`` and ``CPU 1/TCG`` with ``-smp 2``, one ``CPU 0/TCG`` with ``-smp
1``), so a second vCPU is a second host core for the guest's own parallel work: systemd starts
udev's coldplug, journald, resolved, networkd and the first boot's bookkeeping beside
cloud-init, which on one vCPU all took turns on the critical chain. Measured on the 2-core build
machine, each pair booted at the same time (same host load): Debian 12 + cloud-init (``prepare
--boot-tuning``) reached its login prompt in 144 s with two vCPUs, 185 s with one (host load 8;
``systemd-analyze critical-chain``: serial-getty at 86 s vs 123 s of user space; QEMU's CPU
time 127 s vs 105 s); the busybox test guest with our agent (one process after another) showed
its ready line in 61 s with two, 47 s with one (host load 12): with two vCPUs the guest kernel
brings up a second CPU, marks the TSC unstable (qemu64 is an AMD model without an invariant
TSC, a CPUID bit TCG does not offer) and keeps time with the HPET, which only a parallel boot
pays back. Whether the guest boots systemd is read from its ``/sbin/init`` (a link to
``systemd``; ``service.launch.images.boots_systemd``). Under KVM a vCPU runs at the host's
speed and one stays the default (not measured here: KVM does not run a standard kernel on this
machine, see ``compute/accel.py``).

The CPU model stays QEMU's default (qemu64) under TCG. ``-cpu max`` was measured inside the
Debian guest (one vCPU, after boot): ``python3 -c 'import cloudinit.cmd.main'`` took 8.5 and
12.2 s against 4.0 and 5.5 s with qemu64 (host load 9 vs 5.5) — glibc then picks its AVX2 string
functions, which TCG runs as helper calls — and ``ssh-keygen -t rsa -b 3072`` was no faster
(6.6-27 s vs 15-29 s; a prime search varies more than that). ``-cpu qemu64,vendor=GenuineIntel``
keeps a two-vCPU guest on the TSC (Linux trusts an Intel family-15 TSC to be constant), but then
counts the CPU as open to Meltdown and turns on page-table isolation: side by side with qemu64,
login prompt 168 s vs 141 s, QEMU's CPU time 178 s vs 128 s (host load 8). TCG's translation buffer
(``-accel tcg,tb-size=``) stays at QEMU's default, 1 GiB on a host with memory to spare (QEMU 5.1
and later; less on a small host), far more than one guest's boot translates.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from imagewright.compute.accel import AccelDecision
from imagewright.programs.qemu_system import (
    BackingImage,
    Drive,
    MachineSpec,
    NetworkSpec,
    SerialConsole,
    UefiFlash,
)

#: ``-name`` of an instance's QEMU: this prefix, then the instance id.
PROCESS_NAME_PREFIX = "imagewright-instance-"
_NAME_RE = re.compile(rb"^" + re.escape(PROCESS_NAME_PREFIX.encode()) + rb"(i-[0-9a-f]{8,17})$")


#: vCPUs of an instance under TCG whose guest boots systemd, without ``--cpus`` (see the module
#: docstring), at most the host's cores; else ``ONE_CPU``.
TCG_SYSTEMD_CPUS = 2
ONE_CPU = 1


def default_cpus(accelerator: str, *, systemd: bool, host_cpus: int | None = None) -> tuple[int, str]:
    """The vCPUs an instance gets without ``--cpus`` (module docstring), and why."""
    if accelerator != "tcg":
        return ONE_CPU, f"{accelerator}: one vCPU"
    if not systemd:
        return ONE_CPU, "TCG, the guest does not boot systemd: one vCPU"
    cores = host_cpus if host_cpus is not None else len(os.sched_getaffinity(0))
    cpus = max(1, min(TCG_SYSTEMD_CPUS, cores))
    return cpus, f"TCG, the guest boots systemd: {cpus} vCPU(s), one host thread each"


def process_name(instance_id: str) -> str:
    return PROCESS_NAME_PREFIX + instance_id


@dataclass(frozen=True)
class InstanceFiles:
    """The paths of one instance's directory (see the module docstring)."""

    directory: Path

    @classmethod
    def under(cls, instances_root: Path, instance_id: str) -> InstanceFiles:
        return cls(instances_root / instance_id)

    @property
    def overlay(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    @property
    def qmp_socket(self) -> Path:
        return self.directory / "qmp" / "qmp.sock"

    @property
    def plan(self) -> Path:
        return self.directory / "plan.json"

    @property
    def supervisor_log(self) -> Path:
        return self.directory / "supervisor.log"

    @property
    def qemu_log(self) -> Path:
        return self.directory / "qemu.log"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def uefi_variables(self) -> Path:
        return self.directory / "OVMF_VARS.fd"

    def medium(self, kind: str) -> Path:
        return self.directory / ("context.img" if kind == "wakame" else "context.iso")

    def create(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True)
        self.qmp_socket.parent.mkdir(mode=0o700)


def instance_machine(
    instance_id: str,
    files: InstanceFiles,
    base: BackingImage,
    *,
    accelerator: AccelDecision,
    network: NetworkSpec,
    extra_drives: tuple[Drive, ...] = (),
    cpus: int = 1,
    memory_mib: int = 512,
    smbios_system: dict[str, str] | None = None,
    uefi: UefiFlash | None = None,
) -> MachineSpec:
    """The machine of an instance: its overlay on ``base`` (virtio, boots from its own loader),
    its context medium if any, the console to ``console.log`` only, QMP, and ``network``;
    SeaBIOS, or OVMF when ``uefi`` is given (its variables in the instance's directory).

    A reboot inside the guest stays a reboot (no ``-no-reboot``): an instance lives until it is
    powered off or stopped.
    """
    disk = Drive(files.overlay, format="qcow2", bus="virtio", backing=base)
    return MachineSpec(
        accelerator=accelerator.accelerator,
        drives=(disk, *extra_drives),
        memory_mib=memory_mib,
        cpus=cpus,
        network=network,
        smbios_system=dict(smbios_system or {}),
        serial=SerialConsole(stdio=False, log_file=files.console_log),
        debug_exit=False,
        no_reboot=False,
        name=process_name(instance_id),
        qmp_socket=files.qmp_socket,
        uefi=uefi,
    )


def _qemu_argv(pid: int) -> list[bytes] | None:
    """Process ``pid``'s command line when it is a QEMU system emulator, else None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read(1 << 20).split(b"\0")
    except OSError:
        return None
    if not argv or b"qemu-system" not in os.path.basename(argv[0]):
        return None
    return argv


def _option(argv: list[bytes], flag: bytes) -> bytes | None:
    for index, value in enumerate(argv[:-1]):
        if value == flag:
            return argv[index + 1]
    return None


def instance_process_alive(pid: int | None, instance_id: str) -> bool:
    """Process ``pid`` exists on this host and is this instance's QEMU (not a reused pid)."""
    if pid is None or pid <= 0:
        return False
    argv = _qemu_argv(pid)
    return argv is not None and _option(argv, b"-name") == process_name(instance_id).encode()


def running_instance_processes(instances_root: Path) -> dict[str, list[int]]:
    """The QEMU processes on this host named as instances whose disk lies under ``instances_root``
    (other data dirs' instances are theirs): instance id -> pids."""
    found: dict[str, list[int]] = {}
    prefix = f"file={os.path.abspath(instances_root)}/".replace(",", ",,").encode()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        argv = _qemu_argv(int(entry))
        if argv is None:
            continue
        name = _option(argv, b"-name")
        match = _NAME_RE.match(name) if name is not None else None
        if match is None:
            continue
        instance_id = match.group(1).decode()
        if any(arg.startswith(prefix + instance_id.encode() + b"/") for arg in argv):
            found.setdefault(instance_id, []).append(int(entry))
    return found
