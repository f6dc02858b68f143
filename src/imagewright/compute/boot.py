"""Booting an image under QEMU and watching its serial console: the boot harness.

``boot`` starts qemu-system-x86_64 on the image's own disk (no ``-kernel``, unless a test
asks for a direct kernel boot), reads the guest's first serial port live from QEMU's stdout
and returns as soon as the expected text appears, the guest powers off, or time runs out.
Before that, the safety gate (``imagewright.gate.admit``) admits the disk and every extra
drive and CD-ROM: a library caller gets the same check as the CLI, and QEMU is told each
file's format, never left to probe it.
QEMU is always stopped and reaped before ``boot`` returns or raises (Ctrl-C included): it runs
in its own process group, inside a ``with`` block whose exit terminates it (SIGTERM, then
SIGKILL). The complete console goes to ``console_log`` (written by QEMU itself); only the last
lines are kept in memory.

Firmware: SeaBIOS by default (QEMU's BIOS), or OVMF (``firmware="uefi"``, ``programs/ovmf.py``)
with a copy of its variable store made for this boot and removed after it; ``secure_boot``
starts OVMF with Microsoft's keys enrolled and Secure Boot on. What the console says about
the boot is kept in the result:

- ``secureboot: Secure boot enabled`` (or ``disabled``): the kernel's own report
  (``arch/x86/kernel/setup.c``, from the firmware's SecureBoot variable) — under Secure Boot
  it means the firmware verified shim, shim GRUB, and GRUB the kernel, or it would not run;
- ``efi: EFI v2.70 by EDK II``: the kernel found UEFI firmware (it is absent under BIOS);
- OVMF's ``BdsDxe: failed to load Boot0001 ...: Access Denied``: the firmware refused a boot
  loader (Secure Boot: not signed by a key in db); once OVMF says ``No bootable option or
  device was found`` it waits forever in its setup screen, so the boot stops there with
  ``FirmwareRefusedError`` instead of running into the time limit.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from imagewright.compute.accel import AccelDecision, choose_accelerator
from imagewright.compute.console import ConsoleWatcher
from imagewright.errors import BootError, ImagewrightError, InvalidArgumentError
from imagewright.formats.base import Limits
from imagewright.gate import admit
from imagewright.programs.ovmf import find_ovmf
from imagewright.programs.qemu_system import (
    DirectKernel,
    DiskBus,
    Drive,
    MachineSpec,
    NetworkSpec,
    SerialConsole,
    UefiFlash,
    machine_sandbox,
    qemu_system_argv,
)
from imagewright.programs.runner import Sandbox, start_program, stop_program

__all__ = [
    "BootError",
    "BootFirmware",
    "BootResult",
    "BootTimeoutError",
    "DirectKernel",
    "Drive",
    "FirmwareFacts",
    "FirmwareRefusedError",
    "NetworkSpec",
    "admitted_format",
    "boot",
    "running_qemu",
]

#: How many console lines a result (and an error) carries.
TAIL_LINES = 40
_READ_SIZE = 64 * 1024
#: After QEMU's stdout closes, how long it may take to exit by itself.
_EXIT_GRACE = 10.0
#: When ``expect`` shows up in a line still being printed, how long to wait for its end.
_LINE_GRACE = 1.0


BootFirmware = Literal["bios", "uefi"]
FIRMWARES: tuple[BootFirmware, ...] = ("bios", "uefi")
SEABIOS_DESCRIPTION = "SeaBIOS (BIOS)"

_KERNEL_SECURE_BOOT = re.compile(r"secureboot: Secure boot (enabled|disabled)")
_KERNEL_EFI = re.compile(r"efi: EFI v[0-9.]+ by (.+?)\s*$")
_FIRMWARE_REFUSED = re.compile(r"BdsDxe: failed to (?:load|start) (.*)$")
_FIRMWARE_GAVE_UP = "No bootable option or device was found"


@dataclass
class FirmwareFacts:
    """What the console said about firmware and Secure Boot (see the module docstring): fed
    line by line during a boot, or read from a saved console log (``of``)."""

    kernel_secure_boot: str | None = None
    kernel_efi: str | None = None
    refusals: list[str] = field(default_factory=list)
    gave_up: bool = False

    def see(self, line: str) -> None:
        if self.kernel_secure_boot is None and (found := _KERNEL_SECURE_BOOT.search(line)):
            self.kernel_secure_boot = found.group(1)
        elif self.kernel_efi is None and (found := _KERNEL_EFI.search(line)):
            self.kernel_efi = found.group(1)
        elif (found := _FIRMWARE_REFUSED.search(line)) and len(self.refusals) < 8:
            self.refusals.append(found.group(1).strip())
        elif _FIRMWARE_GAVE_UP in line:
            self.gave_up = True

    @classmethod
    def of(cls, text: str) -> FirmwareFacts:
        facts = cls()
        for line in text.splitlines():
            facts.see(line)
        return facts


@dataclass(frozen=True)
class BootResult:
    """What happened during one boot."""

    #: ``expect`` was seen on the console.
    matched: bool
    #: Seconds from starting QEMU until the match, the guest's power-off, or the time limit.
    elapsed: float
    accelerator: str
    accelerator_reason: str
    #: QEMU's exit status when it stopped by itself (power-off: 0; isa-debug-exit: (v<<1)|1);
    #: None when the harness stopped it (after a match, or at the time limit).
    exit_status: int | None
    console_log: Path | None
    last_lines: tuple[str, ...]
    matched_line: str | None = None
    timed_out: bool = False
    argv: tuple[str, ...] = field(default=(), repr=False)
    #: "bios" or "uefi", and what exactly ("SeaBIOS (BIOS)", "OVMF UEFI with Secure Boot ...").
    firmware: BootFirmware = "bios"
    firmware_description: str = SEABIOS_DESCRIPTION
    secure_boot: bool = False
    #: The kernel's own word: "enabled" / "disabled" (its "secureboot:" line), None if unsaid.
    kernel_secure_boot: str | None = None
    #: The firmware the kernel found ("EDK II"), None under BIOS.
    kernel_efi: str | None = None
    #: OVMF's "failed to load" lines ("Boot0001 ... : Access Denied").
    firmware_refusals: tuple[str, ...] = ()

    @property
    def secure_boot_verified(self) -> bool:
        """Secure Boot was on and the kernel says so: every stage was verified to get there."""
        return self.secure_boot and self.kernel_secure_boot == "enabled"

    @property
    def powered_off(self) -> bool:
        """The guest ended QEMU itself (power-off, reboot under -no-reboot, debug exit)."""
        return self.exit_status is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "matched_line": self.matched_line,
            "elapsed_seconds": round(self.elapsed, 3),
            "accelerator": self.accelerator,
            "accelerator_reason": self.accelerator_reason,
            "exit_status": self.exit_status,
            "timed_out": self.timed_out,
            "console_log": str(self.console_log) if self.console_log else None,
            "firmware": self.firmware,
            "firmware_description": self.firmware_description,
            "secure_boot": self.secure_boot,
            "kernel_secure_boot": self.kernel_secure_boot,
            "secure_boot_verified": self.secure_boot_verified,
            "kernel_efi": self.kernel_efi,
            "firmware_refusals": list(self.firmware_refusals),
            "last_lines": list(self.last_lines),
        }


class BootTimeoutError(BootError):
    """The expected text did not appear in time; ``result`` holds the last console lines."""

    def __init__(self, message: str, result: BootResult) -> None:
        super().__init__(message)
        self.result = result


class FirmwareRefusedError(BootTimeoutError):
    """UEFI firmware refused every boot loader and gave up; ``result`` says which and why."""


@contextmanager
def _termination_signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into SystemExit while QEMU runs, so its ``finally`` still runs.

    QEMU sits in its own session (a terminal's Ctrl-C reaches us, not it), so a harness that
    died of a signal would leave it running. Only default dispositions are replaced (a
    caller's own handler stays), and only in the main thread, where Python delivers signals.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    replaced: dict[signal.Signals, Any] = {}
    for which in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(which) == signal.SIG_DFL:
            replaced[which] = signal.signal(which, raise_exit)
    try:
        yield
    finally:
        for which, previous in replaced.items():
            signal.signal(which, previous)


@contextmanager
def running_qemu(
    argv: Sequence[str], *, stderr: IO[bytes], sandbox: Sandbox
) -> Iterator[subprocess.Popen[bytes]]:
    """Start QEMU (own process group; console on its stdout; ``sandbox`` from
    ``machine_sandbox``) and always stop and reap it."""
    with _termination_signals_raise():
        proc = start_program(
            argv,
            stdin=subprocess.PIPE,  # kept open and silent: the stdio chardev never sees EOF
            stdout=subprocess.PIPE,
            stderr=stderr.fileno(),
            new_session=True,
            sandbox=sandbox,
        )
        try:
            yield proc
        finally:
            stop_program(proc)


Role = Literal["image", "drive", "CD-ROM"]


def admitted_format(
    path: Path, requested: str | None = None, *, role: Role = "image", limits: Limits | None = None
) -> str:
    """Admit ``path`` through the safety gate and return the QEMU driver to name for it.

    ``requested``: the format the caller names (it must be the one inspection found, or raw).
    A CD-ROM must be a raw image (an ISO 9660 filesystem is raw to QEMU).
    """
    admitted = admit(path, limits=limits)
    if role == "CD-ROM":
        if admitted.format != "raw":
            raise ImagewrightError(
                f"The CD-ROM {path} is a {admitted.format} image; a CD-ROM must be a raw ISO."
            )
        return "raw"
    return admitted.qemu_format(requested, role=role)


def boot(
    image: Path,
    *,
    format: str | None = None,
    timeout: float,
    expect: str | None = None,
    cdroms: Sequence[Path] = (),
    drives: Sequence[Path | Drive] = (),
    snapshot: bool = False,
    network: NetworkSpec | None = None,
    memory_mib: int = 512,
    cpus: int = 1,
    console_log: Path | None = None,
    disk_bus: DiskBus = "virtio",
    smbios_system: Mapping[str, str] | None = None,
    direct_kernel: DirectKernel | None = None,
    accelerator: AccelDecision | None = None,
    on_line: Callable[[str], None] | None = None,
    limits: Limits | None = None,
    firmware: BootFirmware = "bios",
    secure_boot: bool = False,
) -> BootResult:
    """Boot ``image`` and watch its serial console.

    ``image``, every drive and every CD-ROM pass the safety gate first (UnsafeImageError);
    ``format`` is the QEMU driver the caller names for ``image`` (default: the format the
    inspection found; it must be that one, or raw), never probed by QEMU.

    Returns when ``expect`` appears (``matched``), when the guest ends QEMU (power-off), or
    at ``timeout`` seconds. Raises ``BootTimeoutError`` (a ``BootError``) when ``expect`` was
    given and did not appear in time, and ``BootError`` when QEMU itself refuses to start.
    ``drives`` are extra disks (a bare path is a raw virtio disk, e.g. a VFAT metadata disk);
    ``cdroms`` are ISO images on the IDE bus. ``snapshot`` leaves every disk unchanged.
    ``on_line`` sees each console line as it arrives. ``firmware``: "bios" (SeaBIOS) or "uefi"
    (OVMF), ``secure_boot`` with it; raises ``FirmwareRefusedError`` when OVMF refuses every
    boot loader (see the module docstring).
    """
    if timeout <= 0:
        raise InvalidArgumentError("A boot time limit must be a positive number of seconds.")
    if firmware not in FIRMWARES:
        raise InvalidArgumentError(f"'{firmware}' is not a firmware; choose bios or uefi.")
    if secure_boot and firmware != "uefi":
        raise InvalidArgumentError("Secure Boot needs UEFI firmware (--firmware uefi).")
    if not image.is_file():
        raise InvalidArgumentError(f"{image} is not a file.")
    ovmf = find_ovmf(secure_boot=secure_boot) if firmware == "uefi" else None
    disk_format = admitted_format(image, format, limits=limits)
    machine_drives = [Drive(image, format=disk_format, bus=disk_bus, snapshot=snapshot)]
    for extra in drives:
        if isinstance(extra, Drive):
            role: Role = "CD-ROM" if extra.media == "cdrom" else "drive"
            drive_format = admitted_format(extra.path, extra.format, role=role, limits=limits)
            machine_drives.append(dataclasses.replace(extra, format=drive_format))
        else:
            drive_format = admitted_format(Path(extra), "raw", role="drive", limits=limits)
            machine_drives.append(Drive(Path(extra), format=drive_format, bus="virtio", snapshot=snapshot))
    for iso in cdroms:
        admitted_format(Path(iso), role="CD-ROM", limits=limits)
        machine_drives.append(Drive(Path(iso), format="raw", bus="ide", media="cdrom"))
    decision = accelerator or choose_accelerator()
    if console_log is not None:
        console_log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imagewright-uefi-vars-") as vars_directory:
        uefi: UefiFlash | None = None
        if ovmf is not None:
            variables = Path(vars_directory) / "OVMF_VARS.fd"
            shutil.copyfile(ovmf.variables_template, variables)
            uefi = UefiFlash(ovmf.code, variables, secure_boot, chipset=uefi_chipset(machine_drives))
        return _boot(
            timeout=timeout, expect=expect, drives=machine_drives, network=network,
            memory_mib=memory_mib, cpus=cpus, console_log=console_log, smbios_system=smbios_system,
            direct_kernel=direct_kernel, decision=decision, on_line=on_line, uefi=uefi,
            firmware_description=ovmf.description if ovmf is not None else SEABIOS_DESCRIPTION,
        )  # fmt: skip


def uefi_chipset(drives: list[Drive]) -> str:
    """The machine a UEFI boot gets: q35 when a CD-ROM is attached (under OVMF on ``pc``, Linux's
    ata_piix finds no drive on PIIX's IDE, so a NoCloud or config-drive CD-ROM goes unseen;
    q35's AHCI is seen, see programs/qemu_system.py), else ``pc`` as for BIOS."""
    return "q35" if any(drive.media == "cdrom" for drive in drives) else "pc"


def _boot(
    *,
    timeout: float,
    expect: str | None,
    drives: list[Drive],
    network: NetworkSpec | None,
    memory_mib: int,
    cpus: int,
    console_log: Path | None,
    smbios_system: Mapping[str, str] | None,
    direct_kernel: DirectKernel | None,
    decision: AccelDecision,
    on_line: Callable[[str], None] | None,
    uefi: UefiFlash | None,
    firmware_description: str,
) -> BootResult:
    machine_drives = drives
    spec = MachineSpec(
        accelerator=decision.accelerator,
        drives=tuple(machine_drives),
        memory_mib=memory_mib,
        cpus=cpus,
        network=network or NetworkSpec(mode="none"),
        smbios_system=dict(smbios_system or {}),
        serial=SerialConsole(stdio=True, log_file=console_log),
        direct_kernel=direct_kernel,
        name=f"imagewright-boot-{secrets.token_hex(6)}",
        uefi=uefi,
    )
    argv = qemu_system_argv(spec)
    facts = FirmwareFacts()

    def each_line(line: str) -> None:
        facts.see(line)
        if on_line is not None:
            on_line(line)

    watcher = ConsoleWatcher(expect, tail_lines=TAIL_LINES, on_line=each_line)

    with tempfile.TemporaryFile(prefix="imagewright-qemu-stderr-") as stderr:
        started = time.monotonic()
        exit_status: int | None = None
        timed_out = False
        with running_qemu(argv, stderr=stderr, sandbox=machine_sandbox(spec)) as proc:
            assert proc.stdout is not None
            exit_status, timed_out = _watch(
                proc, proc.stdout, watcher, started + timeout, stop=lambda: facts.gave_up
            )
            elapsed = time.monotonic() - started
        watcher.finish()
        qemu_error = _qemu_error(stderr) if exit_status not in (None, 0) else None

    result = BootResult(
        matched=watcher.matched,
        elapsed=elapsed,
        accelerator=decision.accelerator,
        accelerator_reason=decision.reason,
        exit_status=exit_status,
        console_log=console_log,
        last_lines=tuple(watcher.last_lines()),
        matched_line=watcher.matched_line,
        timed_out=timed_out,
        argv=tuple(argv),
        firmware="uefi" if uefi is not None else "bios",
        firmware_description=firmware_description,
        secure_boot=uefi is not None and uefi.secure_boot,
        kernel_secure_boot=facts.kernel_secure_boot,
        kernel_efi=facts.kernel_efi,
        firmware_refusals=tuple(facts.refusals),
    )
    if qemu_error is not None and watcher.bytes_seen == 0:
        raise BootError(f"QEMU could not start the guest: {qemu_error}")
    if facts.gave_up and not watcher.matched:
        why = f" (it refused {facts.refusals[0]})" if facts.refusals else ""
        raise FirmwareRefusedError(f"The UEFI firmware found nothing it would boot{why}.", result)
    if timed_out and expect is not None:
        last = next((line for line in reversed(result.last_lines) if line.strip()), "")
        said = f"; the last console line was '{last.strip()}'" if last else "; the console stayed silent"
        raise BootTimeoutError(f"The guest did not print '{expect}' within {timeout:g} s{said}.", result)
    return result


def _watch(
    proc: subprocess.Popen[bytes],
    stream: IO[bytes],
    watcher: ConsoleWatcher,
    deadline: float,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[int | None, bool]:
    """Read the console until a match, EOF (QEMU exiting), ``stop()`` or the deadline.

    Returns (QEMU's exit status if it ended by itself, whether the deadline passed).
    """
    fd = stream.fileno()
    os.set_blocking(fd, False)
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # A match whose line never ended (a prompt) is still a match.
                return None, not watcher.matched
            if not selector.select(timeout=min(remaining, 0.5)):
                continue
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                continue
            if not data:
                # stdout closed: QEMU is exiting (guest power-off, debug exit, or an error).
                try:
                    return proc.wait(timeout=_EXIT_GRACE), False
                except subprocess.TimeoutExpired:
                    return None, False
            if watcher.feed(data) is not None:
                # Seen: return once its line is complete, or after a short grace for the rest.
                deadline = min(deadline, time.monotonic() + _LINE_GRACE)
            if watcher.match_complete or stop():
                return None, False


def _qemu_error(stderr: IO[bytes]) -> str | None:
    """QEMU's own error line (not a warning) from its stderr, if it printed one."""
    stderr.seek(0, os.SEEK_END)
    size = stderr.tell()
    stderr.seek(max(0, size - 8192))
    text = stderr.read().decode("utf-8", "replace")
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if (
            stripped.startswith("qemu-system")
            and "warning:" not in stripped
            and "terminating on signal" not in stripped
        ):
            return stripped.split(":", 1)[1].strip() if ":" in stripped else stripped
    return None
