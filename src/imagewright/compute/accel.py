"""Choosing QEMU's accelerator honestly: KVM only when it really runs a standard guest.

``/dev/kvm`` existing proves little. On PVM hosts (``/sys/module/kvm_pvm``; a KVM flavour
for running guests inside a cloud VM without nested virtualisation) a standard Debian kernel
hangs right after "Probing EDD" under ``-accel kvm``, and ``accel=kvm:tcg`` does not fall
back because KVM itself initialises fine. So the decision is, in order:

1. ``IMAGEWRIGHT_ACCEL=tcg|kvm`` wins (the user knows best; nothing is probed).
2. No usable ``/dev/kvm`` (missing, or not readable and writable by us): TCG.
3. ``/sys/module/kvm_pvm`` present: TCG (known to hang standard kernels).
4. Otherwise two probe boots under KVM, each with a short time limit:
   a. a 512-byte boot sector (``PROBE_BOOT_SECTOR_SOURCE``) that switches to long mode with
      paging, prints a line on COM1 and leaves QEMU through ``isa-debug-exit``;
   b. when a Linux kernel is at hand (the test guest's cached one, or the host's
      ``/boot/vmlinuz-*``), that kernel with a tiny busybox initramfs whose /init writes the
      same value to the debug-exit port through ``/dev/port``: this proves that a standard
      kernel reaches user space, which (a) alone does not (the boot sector passes under PVM,
      measured: exit status 99 in 3 s, while the kernel hangs).
   KVM is used only when every probe that could run passed.

A probe's result is cached for the running host: in the process, and in
``<cache>/accel.json`` keyed by the kernel's boot id, so later commands and parallel test
workers do not probe again until the host reboots.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from imagewright.errors import ImagewrightError, InvalidArgumentError, ProgramError
from imagewright.files import default_cache_dir, write_file_atomically
from imagewright.programs.qemu_system import (
    Accelerator,
    DirectKernel,
    Drive,
    MachineSpec,
    NetworkSpec,
    SerialConsole,
    debug_exit_status,
    machine_sandbox,
    qemu_system_argv,
)
from imagewright.programs.runner import run_program

ACCEL_ENV = "IMAGEWRIGHT_ACCEL"

#: The value both probes write to the isa-debug-exit port; QEMU then exits with 99.
PROBE_EXIT_VALUE = 0x31
PROBE_EXIT_STATUS = debug_exit_status(PROBE_EXIT_VALUE)
#: The line the boot-sector probe prints on COM1.
PROBE_MESSAGE = "imagewright-probe: long mode reached"

#: A working KVM boots either probe in well under a second or two; a hung one never ends.
PROBE_TIMEOUT = 20.0

#: GNU as source of the boot-sector probe (``as --64`` then ``objcopy -O binary``; the test
#: suite re-assembles it and compares with ``PROBE_BOOT_SECTOR``). Real mode -> fast A20 ->
#: identity-map the first 2 MiB (PML4 0x1000, PDPT 0x2000, PD 0x3000) -> CR4.PAE, CR3,
#: EFER.LME, CR0.PE|PG at once -> far jump into a 64-bit code segment -> print the message
#: on COM1 -> a 64-bit shift computes 0x31 -> out to port 0xf4.
PROBE_BOOT_SECTOR_SOURCE = r"""
.code16
.globl _start
_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $0x7c00, %sp
    inb $0x92, %al
    orb $2, %al
    andb $0xfe, %al
    outb %al, $0x92
    movw $0x1000, %di
    xorl %eax, %eax
    movw $0x0c00, %cx
    cld
    rep stosl
    movw $0x2003, 0x1000
    movw $0x3003, 0x2000
    movw $0x0083, 0x3000
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $0x1000, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    lgdtl gdtr - _start + 0x7c00
    movl %cr0, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    ljmp $0x08, $(long_mode - _start + 0x7c00)
.code64
long_mode:
    movl $(message - _start + 0x7c00), %esi
    movw $0x3f8, %dx
1:  lodsb
    testb %al, %al
    jz 2f
    outb %al, %dx
    jmp 1b
2:  movabsq $0x3100000000, %rax
    shrq $32, %rax
    outb %al, $0xf4
3:  hlt
    jmp 3b
.balign 8
gdt:
    .quad 0
    .quad 0x00209A0000000000
gdtr:
    .word 15
    .long gdt - _start + 0x7c00
message:
    .asciz "imagewright-probe: long mode reached\r\n"
.org 510
.byte 0x55, 0xaa
"""

_PROBE_CODE = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007ce4920c0224fee692bf00106631c0b9000cfc66f3abc70600100320c706002003"
    "30c706003083000f20e06683c8200f22e066b8001000000f22d866b9800000c00f32660d000100000f30660f"
    "0116a87c0f20c0660d010000800f22c0ea6d7c0800beae7c000066baf803ac84c07403eeebf848b800000000"
    "3100000048c1e820e6f4f4ebfd0f1f8000000000000000000000000000000000009a20000f00987c0000696d"
    "6167657772696768742d70726f62653a206c6f6e67206d6f646520726561636865640d0a"
)
#: The assembled boot sector: code, zero padding, the 0x55 0xAA signature at 510.
PROBE_BOOT_SECTOR = _PROBE_CODE + b"\0" * (510 - len(_PROBE_CODE)) + b"\x55\xaa"

#: /init of the kernel probe's initramfs (busybox ash).
PROBE_INIT = f"""#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox echo "imagewright-probe: user space reached"
/bin/busybox printf '\\{PROBE_EXIT_VALUE:03o}' |
    /bin/busybox dd of=/dev/port bs=1 seek={0xF4} count=1 2>/dev/null
/bin/busybox poweroff -f
"""


@dataclass(frozen=True)
class AccelDecision:
    """Which accelerator to use and why (the reason is shown to users)."""

    accelerator: Accelerator
    reason: str
    probed: bool = False


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    detail: str


Probe = Callable[[], ProbeOutcome]


def decide_accelerator(
    *,
    host_root: Path = Path("/"),
    environ: Mapping[str, str] | None = None,
    probe: Probe | None = None,
) -> AccelDecision:
    """Apply the rules of the module docstring; ``probe`` runs only when the rules allow KVM.

    ``host_root`` lets tests point the checks of ``/dev/kvm`` and ``/sys/module`` at a fake tree.
    """
    env = os.environ if environ is None else environ
    forced = env.get(ACCEL_ENV, "").strip().lower()
    if forced:
        if forced not in ("tcg", "kvm"):
            raise InvalidArgumentError(f"{ACCEL_ENV} must be 'tcg' or 'kvm', not '{forced}'.")
        return AccelDecision("kvm" if forced == "kvm" else "tcg", f"{ACCEL_ENV}={forced} was set")
    dev_kvm = host_root / "dev" / "kvm"
    if not dev_kvm.exists():
        return AccelDecision("tcg", "no /dev/kvm on this host")
    if not os.access(dev_kvm, os.R_OK | os.W_OK):
        return AccelDecision("tcg", "/dev/kvm is not readable and writable by this user")
    if (host_root / "sys" / "module" / "kvm_pvm").exists():
        return AccelDecision(
            "tcg",
            "the host's KVM is PVM (/sys/module/kvm_pvm is loaded), "
            "under which a standard guest kernel hangs",
        )
    outcome = (probe or run_kvm_probes)()
    if outcome.ok:
        return AccelDecision("kvm", f"a probe boot under KVM succeeded ({outcome.detail})", probed=True)
    return AccelDecision("tcg", f"a probe boot under KVM failed ({outcome.detail})", probed=True)


#: This process's decision (one entry: the host does not change under a running process).
_decided: dict[str, AccelDecision] = {}


def choose_accelerator(*, cache_dir: Path | None = None) -> AccelDecision:
    """The decision for this host, probing at most once per host boot (see the module docstring)."""
    if os.environ.get(ACCEL_ENV, "").strip():
        return decide_accelerator()
    if "host" in _decided:
        return _decided["host"]
    cache_file = _cache_file(cache_dir)
    boot_id = _boot_id()
    cached = _read_cached(cache_file, boot_id)
    if cached is not None:
        _decided["host"] = cached
        return cached
    decision = decide_accelerator()
    if decision.probed and boot_id:
        _write_cached(cache_file, boot_id, decision)
    _decided["host"] = decision
    return decision


def _cache_file(cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "accel.json"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _read_cached(path: Path, boot_id: str) -> AccelDecision | None:
    if not boot_id:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("boot_id") != boot_id:
        return None
    accelerator = data.get("accelerator")
    if accelerator not in ("tcg", "kvm"):
        return None
    return AccelDecision(accelerator, str(data.get("reason", "")) + " (cached for this host boot)", True)


def _write_cached(path: Path, boot_id: str, decision: AccelDecision) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(path, json.dumps({"boot_id": boot_id, **asdict(decision)}), force=True)
    except (OSError, ImagewrightError):
        pass  # a cache we cannot write only costs a probe next time


def run_kvm_probes(*, accelerator: Accelerator = "kvm", timeout: float = PROBE_TIMEOUT) -> ProbeOutcome:
    """Boot the boot-sector probe, then (when a kernel is at hand) the kernel probe."""
    with tempfile.TemporaryDirectory(prefix="imagewright-probe-") as scratch:
        disk = write_probe_disk(Path(scratch) / "probe.img")
        spec = MachineSpec(
            accelerator=accelerator,
            drives=(Drive(disk, format="raw", bus="ide", snapshot=True),),
            memory_mib=32,
            network=NetworkSpec(mode="none"),
            serial=SerialConsole(stdio=False),
        )
        first = _run_probe(spec, "boot sector", timeout)
        if not first.ok:
            return first
        kernel = find_probe_kernel()
        if kernel is None:
            return ProbeOutcome(
                True, "boot sector reached long mode; no Linux kernel at hand for a kernel probe"
            )
        initrd = Path(scratch) / "probe-initrd.img"
        write_probe_initramfs(initrd)
        spec = MachineSpec(
            accelerator=accelerator,
            memory_mib=256,
            network=NetworkSpec(mode="none"),
            serial=SerialConsole(stdio=False),
            direct_kernel=DirectKernel(kernel, initrd, "console=ttyS0 quiet panic=-1"),
        )
        second = _run_probe(spec, f"kernel {kernel.name}", timeout)
        if not second.ok:
            return second
        return ProbeOutcome(True, f"boot sector and kernel {kernel.name} both ran")


def write_probe_disk(path: Path) -> Path:
    """A 1 MiB raw disk whose first sector is ``PROBE_BOOT_SECTOR``.

    1 MiB, not 512 bytes: SeaBIOS boots a one-sector disk from IDE but not from virtio-blk.
    """
    with path.open("wb") as out:
        out.write(PROBE_BOOT_SECTOR)
        out.truncate(1 << 20)
    return path


def _run_probe(spec: MachineSpec, what: str, timeout: float) -> ProbeOutcome:
    try:
        result = run_program(
            qemu_system_argv(spec), timeout=timeout, check=False, sandbox=machine_sandbox(spec)
        )
    except ProgramError:
        return ProbeOutcome(False, f"the {what} probe did not finish within {timeout:g} s")
    if result.returncode == PROBE_EXIT_STATUS:
        return ProbeOutcome(True, f"the {what} probe ran")
    detail = result.stderr_text.strip().splitlines()
    last = detail[-1] if detail else "no message"
    return ProbeOutcome(False, f"the {what} probe ended with status {result.returncode}: {last}")


def find_probe_kernel() -> Path | None:
    """A Linux kernel to probe with: the test guest's cached one, else the host's newest."""
    from imagewright.compute.testguest.kernel import cached_bundles

    bundles = cached_bundles()
    if bundles:
        return bundles[-1].vmlinuz
    candidates = sorted(Path("/boot").glob("vmlinuz-*"))
    readable = [c for c in candidates if os.access(c, os.R_OK)]
    return readable[-1] if readable else None


def write_probe_initramfs(path: Path) -> None:
    """An initramfs of busybox and ``PROBE_INIT`` (busybox from the host's busybox-static)."""
    from imagewright.compute.initramfs import InitramfsWriter
    from imagewright.programs.runner import find_program

    busybox = Path(find_program("busybox"))
    with InitramfsWriter(path, compresslevel=1) as archive:
        for name in ("bin", "dev", "proc", "sys"):
            archive.add_directory(name)
        archive.add_char_device("dev/console", 5, 1)
        archive.add_file("bin/busybox", busybox, 0o755)
        archive.add_bytes("init", PROBE_INIT.encode(), 0o755)
