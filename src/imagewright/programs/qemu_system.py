"""qemu-system-x86_64 (Debian ``qemu-system-x86``): the argument list of one virtual machine.

Everything a boot needs is a typed input here and turns into one exact argument list
(``qemu_system_argv``), so tests can compare argument lists and nothing else in imagewright
spells a QEMU option. Choices that matter:

- Every disk's format is given explicitly (``format=``): letting QEMU probe a raw image is the
  classic hole where a guest writes a qcow2 header into its own disk and gets host files read
  on the next boot.
- ``-nodefaults``: no default NIC (no iPXE ROM to wait for), no default CD-ROM, floppy or
  parallel port; the devices are exactly the ones listed here.
- The boot disk carries ``bootindex=0`` so SeaBIOS boots it whatever else is attached.
- Disks are ``-drive if=none`` plus a ``-device`` on the chosen bus: virtio-blk, IDE (PIIX,
  ``ide.0``/``ide.1``, two units each, shared with CD-ROMs) or SCSI (one virtio-scsi controller).
- User networking can sit on the link-local range so 169.254.169.254 is reachable:
  ``net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15`` (ENVIRONMENT.md); a
  ``guestfwd ... -cmd:PROGRAM`` starts PROGRAM once per guest connection with the exchange on
  its stdin/stdout (libslirp splits the command like a shell, without running one).
- QEMU option values are comma separated; a literal comma in a value is written ``,,``.
- ``isa-debug-exit`` at 0xf4: a guest write of V makes QEMU exit with status ``(V << 1) | 1``.
- Every host path is made absolute: a ``file=`` value with a ':' before any '/' would be read
  as a protocol (``json:``, ``nbd:``), and the sandbox binds absolute paths.
- Firmware: SeaBIOS (QEMU's default BIOS) unless a ``UefiFlash`` is given: then OVMF's code
  (read-only) and a per-boot copy of its variable store as the two pflash units
  (``programs/ovmf.py``). Secure Boot needs the q35 machine with SMM and the flash marked
  secure (only SMM code may write the variables): ``-machine q35,smm=on -global
  driver=cfi.pflash01,property=secure,value=on``. On q35 the IDE bus is the ICH9 AHCI
  controller: six ports ``ide.0``..``ide.5`` with one unit each. Without Secure Boot the
  machine is ``pc`` unless ``UefiFlash.chipset`` asks for q35: under OVMF on ``pc``, Linux's
  ata_piix lists the PIIX IDE channels but finds no drive on them (seen here: no
  ``ata1.00: ATAPI`` line, no /dev/sr0; SeaBIOS sets the controller up, OVMF's PlatformPei does
  not), so a guest that must read a CD-ROM under UEFI gets q35 and its AHCI ports — what Nova
  recommends for UEFI guests anyway (``admin/uefi.html``: q35 with ``hw_firmware_type=uefi``).

``machine_sandbox`` says what the QEMU process may see (``programs/runner.py``): its drives
(read-only unless written; a ``snapshot=on`` drive is only read, the overlay goes to the
sandbox's own /tmp), the direct kernel and initrd, the serial log, the files each guest-forward
command declares, OVMF's code (read) and this boot's copy of its variable store (written),
``/dev/kvm`` under KVM, and the host's network only when a ``hostfwd`` or an unrestricted user
network needs it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from imagewright.errors import InvalidArgumentError
from imagewright.programs.runner import Sandbox

QEMU_SYSTEM = "qemu-system-x86_64"

#: I/O port of the ``isa-debug-exit`` device; see ``debug_exit_status``.
DEBUG_EXIT_PORT = 0xF4

DiskBus = Literal["virtio", "ide", "scsi"]
DISK_BUSES: tuple[str, ...] = ("virtio", "ide", "scsi")
Accelerator = Literal["tcg", "kvm"]

#: The drivers QEMU opens images with; ``format=`` must be one of these (never probed).
DISK_FORMATS: tuple[str, ...] = (
    "raw",
    "qcow2",
    "qcow",
    "vmdk",
    "vpc",
    "vhdx",
    "vdi",
    "qed",
    "parallels",
)

#: The four IDE slots of the PIIX controller (bus, unit), in the order they are handed out.
_IDE_SLOTS: tuple[tuple[str, int], ...] = (("ide.0", 0), ("ide.1", 0), ("ide.0", 1), ("ide.1", 1))
#: The six ports of q35's ICH9 AHCI controller, one unit each.
_Q35_IDE_SLOTS: tuple[tuple[str, int], ...] = tuple((f"ide.{port}", 0) for port in range(6))


def debug_exit_status(value: int) -> int:
    """QEMU's exit status after the guest wrote ``value`` to the isa-debug-exit port."""
    return ((value & 0xFF) << 1) | 1


def option_value(value: str | os.PathLike[str]) -> str:
    """``value`` as one QEMU option value: commas doubled; control characters refused."""
    text = os.fspath(value)
    if any(ord(ch) < 0x20 for ch in text):
        raise InvalidArgumentError("A value handed to QEMU cannot contain control characters.")
    return text.replace(",", ",,")


@dataclass(frozen=True)
class BackingImage:
    """The read-only image under an overlay, with its format (never probed)."""

    path: Path
    format: str = "raw"

    def __post_init__(self) -> None:
        if self.format not in DISK_FORMATS:
            raise InvalidArgumentError(
                f"'{self.format}' is not a disk format QEMU opens; use one of {', '.join(DISK_FORMATS)}."
            )


@dataclass(frozen=True)
class Drive:
    """One disk or CD-ROM. ``format`` is QEMU's driver name and is always explicit."""

    path: Path
    format: str = "raw"
    bus: DiskBus = "virtio"
    media: Literal["disk", "cdrom"] = "disk"
    readonly: bool = False
    #: Writes go to a temporary overlay that QEMU drops on exit (the image is unchanged).
    snapshot: bool = False
    #: The image under this one (an instance's base), given to QEMU explicitly as
    #: ``backing.driver=FMT,backing.file.filename=PATH``: whatever backing name the overlay's
    #: header holds is never followed. Read-only to QEMU.
    backing: BackingImage | None = None

    def __post_init__(self) -> None:
        if self.format not in DISK_FORMATS:
            raise InvalidArgumentError(
                f"'{self.format}' is not a disk format QEMU opens; use one of {', '.join(DISK_FORMATS)}."
            )
        if self.bus not in DISK_BUSES:
            raise InvalidArgumentError(f"'{self.bus}' is not a disk bus; use virtio, ide or scsi.")
        if self.media == "cdrom" and self.bus == "virtio":
            raise InvalidArgumentError("A CD-ROM sits on the IDE or SCSI bus, not on virtio.")
        if self.backing is not None and self.format != "qcow2":
            raise InvalidArgumentError("Only a qcow2 overlay can sit on a backing image.")


@dataclass(frozen=True)
class GuestForward:
    """``guestfwd=tcp:ADDR:PORT-cmd:COMMAND``: a guest connection to ADDR:PORT runs COMMAND.

    COMMAND runs inside QEMU's sandbox: it sees its own program (an absolute path), ``/usr``,
    and the host files listed in ``reads`` (read-only) and ``writes``.
    """

    address: str
    port: int
    command: tuple[str, ...]
    reads: tuple[Path, ...] = ()
    writes: tuple[Path, ...] = ()

    def option(self) -> str:
        if not self.command:
            raise InvalidArgumentError("A guest forward needs a command to run.")
        return f"guestfwd=tcp:{self.address}:{self.port}-cmd:{shlex.join(self.command)}"


@dataclass(frozen=True)
class HostForward:
    """``hostfwd=PROTO:HOSTADDR:HOSTPORT-:GUESTPORT``: a host port reaching the guest."""

    host_port: int
    guest_port: int
    protocol: Literal["tcp", "udp"] = "tcp"
    host_address: str = "127.0.0.1"

    def option(self) -> str:
        return f"hostfwd={self.protocol}:{self.host_address}:{self.host_port}-:{self.guest_port}"


#: The user-network layout that makes 169.254.169.254 forwardable (ENVIRONMENT.md).
LINK_LOCAL_NETWORK = "169.254.0.0/16"
LINK_LOCAL_HOST = "169.254.0.2"
LINK_LOCAL_DHCP_START = "169.254.0.15"
METADATA_ADDRESS = "169.254.169.254"


@dataclass(frozen=True)
class NetworkSpec:
    """The guest's network: ``none`` (``-nic none``) or QEMU user networking on one virtio NIC."""

    mode: Literal["none", "user"] = "user"
    #: Put the user network on 169.254.0.0/16 (needed to forward 169.254.169.254).
    link_local: bool = False
    #: ``restrict=on``: the guest reaches nothing but the forwards.
    restrict: bool = False
    guest_forwards: tuple[GuestForward, ...] = ()
    host_forwards: tuple[HostForward, ...] = ()
    mac: str | None = None
    model: str = "virtio-net-pci"

    def args(self) -> list[str]:
        if self.mode == "none":
            return ["-nic", "none"]
        options = ["user", "id=net0"]
        if self.link_local:
            options += [
                f"net={LINK_LOCAL_NETWORK}",
                f"host={LINK_LOCAL_HOST}",
                f"dhcpstart={LINK_LOCAL_DHCP_START}",
            ]
        if self.restrict:
            options.append("restrict=on")
        options += [option_value(fwd.option()) for fwd in self.guest_forwards]
        options += [option_value(fwd.option()) for fwd in self.host_forwards]
        device = [self.model, "netdev=net0"]
        if self.mac:
            device.append(f"mac={option_value(self.mac)}")
        return ["-netdev", ",".join(options), "-device", ",".join(device)]


@dataclass(frozen=True)
class DirectKernel:
    """``-kernel/-initrd/-append``: boot a kernel given on the host (tests; EKI/ERI triplets)."""

    kernel: Path
    initrd: Path | None = None
    append: str = ""


@dataclass(frozen=True)
class UefiFlash:
    """OVMF as the machine's firmware: its code and this boot's own copy of the variable store."""

    code: Path
    variables: Path
    secure_boot: bool = False
    #: "pc" (i440fx) or "q35" without Secure Boot (see the module docstring); q35 with it.
    chipset: str = "pc"

    @property
    def machine(self) -> str:
        return "q35,smm=on" if self.secure_boot else self.chipset

    def args(self) -> list[str]:
        argv: list[str] = []
        if self.secure_boot:
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        code, variables = (option_value(os.path.abspath(path)) for path in (self.code, self.variables))
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={variables}",
        ]  # fmt: skip
        return argv


@dataclass(frozen=True)
class SerialConsole:
    """Where the guest's first serial port (ttyS0) goes.

    ``stdio``: QEMU's stdout (the caller reads it live); ``log_file``, when set, also gets
    every byte, written by QEMU itself (chardev ``logfile=``), so the log is complete even
    if the reader falls behind or dies.
    """

    stdio: bool = True
    log_file: Path | None = None


@dataclass(frozen=True)
class MachineSpec:
    """Everything one QEMU process is started with."""

    accelerator: Accelerator
    drives: tuple[Drive, ...] = ()
    memory_mib: int = 512
    cpus: int = 1
    network: NetworkSpec = field(default_factory=lambda: NetworkSpec(mode="none"))
    #: SMBIOS type 1 (system) fields: manufacturer, product, version, serial, uuid, sku, family.
    smbios_system: Mapping[str, str] = field(default_factory=dict)
    serial: SerialConsole = field(default_factory=SerialConsole)
    debug_exit: bool = True
    no_reboot: bool = True
    direct_kernel: DirectKernel | None = None
    #: ``-name``: shows in ``ps``; a unique one lets a caller find its own process.
    name: str | None = None
    #: UEFI firmware (OVMF); None boots QEMU's default BIOS, SeaBIOS.
    uefi: UefiFlash | None = None
    #: ``-qmp unix:PATH,server=on,wait=off``: the QEMU Machine Protocol on a unix socket (its
    #: directory is shown to QEMU's sandbox writable, so it should hold nothing else).
    qmp_socket: Path | None = None


_SMBIOS_TYPE1_FIELDS = ("manufacturer", "product", "version", "serial", "uuid", "sku", "family")


def qemu_system_argv(spec: MachineSpec, program: str = QEMU_SYSTEM) -> list[str]:
    """The complete argument list (program first) that starts ``spec``."""
    if spec.memory_mib < 16:
        raise InvalidArgumentError("A guest needs at least 16 MiB of memory.")
    if not 1 <= spec.cpus <= 64:
        raise InvalidArgumentError("A guest has between 1 and 64 CPUs.")
    machine = spec.uefi.machine if spec.uefi is not None else "pc"
    argv = [program, "-nodefaults", "-no-user-config", "-machine", machine, "-accel", spec.accelerator]
    if spec.accelerator == "kvm":
        # Only after accel.py proved KVM runs a standard guest; "host" passes the real CPU.
        argv += ["-cpu", "host"]
    argv += ["-m", str(spec.memory_mib), "-smp", str(spec.cpus)]
    argv += ["-display", "none", "-vga", "none", "-monitor", "none", "-parallel", "none"]
    if spec.name:
        argv += ["-name", option_value(spec.name)]
    if spec.no_reboot:
        argv.append("-no-reboot")
    if spec.uefi is not None:
        argv += spec.uefi.args()
    if spec.qmp_socket is not None:
        argv += ["-qmp", f"unix:{option_value(os.path.abspath(spec.qmp_socket))},server=on,wait=off"]
    argv += _serial_args(spec.serial)
    ide_slots = _Q35_IDE_SLOTS if machine.startswith("q35") else _IDE_SLOTS
    argv += _drive_args(spec.drives, boot_from_disk=spec.direct_kernel is None, ide_slots=ide_slots)
    argv += spec.network.args()
    if spec.smbios_system:
        argv += ["-smbios", _smbios_type1(spec.smbios_system)]
    if spec.debug_exit:
        argv += ["-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"]
    if spec.direct_kernel is not None:
        kernel = spec.direct_kernel
        argv += ["-kernel", os.path.abspath(kernel.kernel)]
        if kernel.initrd is not None:
            argv += ["-initrd", os.path.abspath(kernel.initrd)]
        if kernel.append:
            if any(ord(ch) < 0x20 for ch in kernel.append):
                raise InvalidArgumentError("A kernel command line cannot contain control characters.")
            argv += ["-append", kernel.append]
    return argv


#: The device QEMU opens for ``-accel kvm``.
KVM_DEVICE = "/dev/kvm"


def machine_sandbox(spec: MachineSpec) -> Sandbox:
    """What the QEMU process running ``spec`` may see of the host (see the module docstring)."""
    reads: list[str | os.PathLike[str]] = []
    writes: list[str | os.PathLike[str]] = []
    for drive in spec.drives:
        written = not (drive.readonly or drive.media == "cdrom" or drive.snapshot)
        (writes if written else reads).append(drive.path)
        if drive.backing is not None:
            reads.append(drive.backing.path)
    if spec.direct_kernel is not None:
        reads.append(spec.direct_kernel.kernel)
        if spec.direct_kernel.initrd is not None:
            reads.append(spec.direct_kernel.initrd)
    if spec.serial.log_file is not None:
        writes.append(spec.serial.log_file)
    if spec.uefi is not None:
        reads.append(spec.uefi.code)
        writes.append(spec.uefi.variables)
    network = spec.network
    for forward in network.guest_forwards:
        if forward.command and os.path.isabs(forward.command[0]):
            reads.append(forward.command[0])
        reads += forward.reads
        writes += forward.writes
    host_network = network.mode == "user" and (not network.restrict or bool(network.host_forwards))
    devices = [KVM_DEVICE] if spec.accelerator == "kvm" else []
    directories = [spec.qmp_socket.parent] if spec.qmp_socket is not None else []
    return Sandbox.of(
        reads=reads, writes=writes, directories=directories, devices=devices, network=host_network
    )


def _serial_args(serial: SerialConsole) -> list[str]:
    if not serial.stdio and serial.log_file is None:
        return ["-serial", "none"]
    if serial.stdio:
        # signal=off: a Ctrl-C byte from the guest side never stops QEMU; we stop it ourselves.
        options = ["stdio", "id=console0", "signal=off"]
    else:
        options = ["file", "id=console0", f"path={option_value(os.path.abspath(serial.log_file or ''))}"]
    if serial.stdio and serial.log_file is not None:
        options += [f"logfile={option_value(os.path.abspath(serial.log_file))}", "logappend=off"]
    return ["-chardev", ",".join(options), "-serial", "chardev:console0"]


def _drive_args(
    drives: Sequence[Drive], *, boot_from_disk: bool, ide_slots: Sequence[tuple[str, int]] = _IDE_SLOTS
) -> list[str]:
    argv: list[str] = []
    free_slots = list(ide_slots)
    scsi_controller = False
    boot_assigned = False
    for index, drive in enumerate(drives):
        drive_id = f"drive{index}"
        options = [
            f"file={option_value(os.path.abspath(drive.path))}",
            f"format={drive.format}",
            "if=none",
            f"id={drive_id}",
            f"media={drive.media}",
        ]
        if drive.readonly or drive.media == "cdrom":
            options.append("readonly=on")
        elif drive.snapshot:
            options.append("snapshot=on")
        if drive.backing is not None:
            options += [
                f"backing.driver={drive.backing.format}",
                f"backing.file.filename={option_value(os.path.abspath(drive.backing.path))}",
            ]
        argv += ["-drive", ",".join(options)]
        device: list[str]
        if drive.bus == "virtio":
            device = ["virtio-blk-pci", f"drive={drive_id}"]
        elif drive.bus == "ide":
            if not free_slots:
                count = {4: "four", 6: "six"}.get(len(ide_slots), str(len(ide_slots)))
                raise InvalidArgumentError(f"The IDE controller holds at most {count} disks and CD-ROMs.")
            bus, unit = free_slots.pop(0)
            kind = "ide-cd" if drive.media == "cdrom" else "ide-hd"
            device = [kind, f"drive={drive_id}", f"bus={bus}", f"unit={unit}"]
        else:
            if not scsi_controller:
                argv += ["-device", "virtio-scsi-pci,id=scsi0"]
                scsi_controller = True
            kind = "scsi-cd" if drive.media == "cdrom" else "scsi-hd"
            device = [kind, f"drive={drive_id}", "bus=scsi0.0"]
        if boot_from_disk and not boot_assigned and drive.media == "disk":
            device.append("bootindex=0")
            boot_assigned = True
        argv += ["-device", ",".join(device)]
    return argv


def _smbios_type1(values: Mapping[str, str]) -> str:
    parts = ["type=1"]
    for key, value in values.items():
        if key not in _SMBIOS_TYPE1_FIELDS:
            raise InvalidArgumentError(
                f"'{key}' is not an SMBIOS system field; use one of {', '.join(_SMBIOS_TYPE1_FIELDS)}."
            )
        parts.append(f"{key}={option_value(value)}")
    return ",".join(parts)
