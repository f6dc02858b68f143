"""The qemu-system-x86_64 argument lists, option by option, and the checks on typed inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagewright.errors import InvalidArgumentError
from imagewright.programs.qemu_system import (
    BackingImage,
    DirectKernel,
    Drive,
    GuestForward,
    HostForward,
    MachineSpec,
    NetworkSpec,
    SerialConsole,
    debug_exit_status,
    machine_sandbox,
    option_value,
    qemu_system_argv,
)


def _after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_minimal_machine_is_explicit_about_everything() -> None:
    argv = qemu_system_argv(MachineSpec(accelerator="tcg"))
    assert argv[0] == "qemu-system-x86_64"
    assert argv[1:9] == ["-nodefaults", "-no-user-config", "-machine", "pc", "-accel", "tcg", "-m", "512"]
    assert "-cpu" not in argv  # TCG keeps QEMU's default model
    assert _after(argv, "-nic") == ["none"]
    assert "-no-reboot" in argv
    assert _after(argv, "-display") == ["none"]
    assert _after(argv, "-device") == ["isa-debug-exit,iobase=0xf4,iosize=0x04"]
    assert _after(argv, "-chardev") == ["stdio,id=console0,signal=off"]
    assert _after(argv, "-serial") == ["chardev:console0"]


def test_kvm_passes_the_host_cpu() -> None:
    argv = qemu_system_argv(MachineSpec(accelerator="kvm"))
    assert _after(argv, "-accel") == ["kvm"]
    assert _after(argv, "-cpu") == ["host"]


def test_boot_disk_and_extra_drives_on_each_bus() -> None:
    spec = MachineSpec(
        accelerator="tcg",
        drives=(
            Drive(Path("/img/disk.qcow2"), format="qcow2", bus="virtio", snapshot=True),
            Drive(Path("/img/meta.raw"), format="raw", bus="virtio"),
            Drive(Path("/img/seed.iso"), format="raw", bus="ide", media="cdrom"),
            Drive(Path("/img/data.vmdk"), format="vmdk", bus="scsi"),
        ),
    )
    argv = qemu_system_argv(spec)
    assert _after(argv, "-drive") == [
        "file=/img/disk.qcow2,format=qcow2,if=none,id=drive0,media=disk,snapshot=on",
        "file=/img/meta.raw,format=raw,if=none,id=drive1,media=disk",
        "file=/img/seed.iso,format=raw,if=none,id=drive2,media=cdrom,readonly=on",
        "file=/img/data.vmdk,format=vmdk,if=none,id=drive3,media=disk",
    ]
    assert _after(argv, "-device")[:5] == [
        "virtio-blk-pci,drive=drive0,bootindex=0",
        "virtio-blk-pci,drive=drive1",
        "ide-cd,drive=drive2,bus=ide.0,unit=0",
        "virtio-scsi-pci,id=scsi0",
        "scsi-hd,drive=drive3,bus=scsi0.0",
    ]


def test_ide_disk_and_cdroms_share_the_four_ide_slots() -> None:
    drives = [Drive(Path("/d.raw"), bus="ide")] + [
        Drive(Path(f"/c{i}.iso"), bus="ide", media="cdrom") for i in range(3)
    ]
    devices = _after(qemu_system_argv(MachineSpec(accelerator="tcg", drives=tuple(drives))), "-device")
    assert devices[:4] == [
        "ide-hd,drive=drive0,bus=ide.0,unit=0,bootindex=0",
        "ide-cd,drive=drive1,bus=ide.1,unit=0",
        "ide-cd,drive=drive2,bus=ide.0,unit=1",
        "ide-cd,drive=drive3,bus=ide.1,unit=1",
    ]
    with pytest.raises(InvalidArgumentError, match="at most four"):
        qemu_system_argv(
            MachineSpec(accelerator="tcg", drives=(*drives, Drive(Path("/x.iso"), bus="ide", media="cdrom")))
        )


def test_format_is_never_left_to_probing() -> None:
    with pytest.raises(InvalidArgumentError, match="not a disk format"):
        Drive(Path("/d"), format="auto")
    with pytest.raises(InvalidArgumentError, match="CD-ROM"):
        Drive(Path("/c.iso"), bus="virtio", media="cdrom")


def test_commas_in_paths_are_doubled_and_control_characters_refused() -> None:
    argv = qemu_system_argv(MachineSpec(accelerator="tcg", drives=(Drive(Path("/a,b/disk,format=qcow2")),)))
    assert _after(argv, "-drive")[0].startswith("file=/a,,b/disk,,format=qcow2,format=raw,")
    assert option_value("x,y") == "x,,y"
    with pytest.raises(InvalidArgumentError):
        option_value("bad\nname")


def test_link_local_user_network_with_forwards() -> None:
    network = NetworkSpec(
        mode="user",
        link_local=True,
        restrict=True,
        guest_forwards=(GuestForward("169.254.169.254", 80, ("/usr/bin/python3", "-m", "responder", "a b")),),
        host_forwards=(HostForward(2222, 22),),
        mac="52:54:00:12:34:56",
    )
    argv = qemu_system_argv(MachineSpec(accelerator="tcg", network=network))
    assert "-nic" not in argv
    assert _after(argv, "-netdev") == [
        "user,id=net0,net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15,restrict=on,"
        "guestfwd=tcp:169.254.169.254:80-cmd:/usr/bin/python3 -m responder 'a b',"
        "hostfwd=tcp:127.0.0.1:2222-:22"
    ]
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56" in _after(argv, "-device")


def test_smbios_serial_log_and_direct_kernel() -> None:
    spec = MachineSpec(
        accelerator="tcg",
        smbios_system={"manufacturer": "Amazon EC2", "serial": "ec2abc", "uuid": "ec2abc"},
        serial=SerialConsole(stdio=True, log_file=Path("/logs/console,1.log")),
        direct_kernel=DirectKernel(Path("/k/vmlinuz"), Path("/k/initrd"), "console=ttyS0 root=UUID=x rw"),
        name="imagewright-boot-1",
    )
    argv = qemu_system_argv(spec)
    assert _after(argv, "-smbios") == ["type=1,manufacturer=Amazon EC2,serial=ec2abc,uuid=ec2abc"]
    assert _after(argv, "-chardev") == [
        "stdio,id=console0,signal=off,logfile=/logs/console,,1.log,logappend=off"
    ]
    assert _after(argv, "-kernel") == ["/k/vmlinuz"]
    assert _after(argv, "-initrd") == ["/k/initrd"]
    assert _after(argv, "-append") == ["console=ttyS0 root=UUID=x rw"]
    assert _after(argv, "-name") == ["imagewright-boot-1"]
    with pytest.raises(InvalidArgumentError, match="SMBIOS"):
        qemu_system_argv(MachineSpec(accelerator="tcg", smbios_system={"colour": "red"}))


def test_direct_kernel_boot_gives_no_disk_a_boot_index() -> None:
    spec = MachineSpec(
        accelerator="tcg",
        drives=(Drive(Path("/root.ext4")),),
        direct_kernel=DirectKernel(Path("/k")),
    )
    assert _after(qemu_system_argv(spec), "-device")[0] == "virtio-blk-pci,drive=drive0"


def test_debug_exit_status_matches_qemu() -> None:
    assert debug_exit_status(0x31) == 99
    assert debug_exit_status(0) == 1
    assert debug_exit_status(0x1FF) == 0x1FF  # only the low byte counts: (0xff << 1) | 1


def test_qemu_accepts_the_argument_list(tmp_path: Path) -> None:
    """QEMU itself parses a full argument list (stopped at once: -S and no time to run)."""
    from tests.fixtures.tools import run

    disk = tmp_path / "d,isk.raw"
    disk.write_bytes(b"\0" * 1024 * 1024)
    spec = MachineSpec(
        accelerator="tcg",
        drives=(
            Drive(disk, snapshot=True),
            Drive(disk, bus="scsi", readonly=True),
            Drive(disk, bus="ide", media="cdrom"),
        ),
        network=NetworkSpec(mode="user", link_local=True, host_forwards=(HostForward(0, 22),)),
        smbios_system={"manufacturer": "Amazon EC2"},
        serial=SerialConsole(stdio=False),
    )
    argv = qemu_system_argv(spec)
    # -S: do not start the CPU; the monitor-less QEMU is stopped by timeout after parsing.
    proc = run("timeout", "3", *argv, "-S", check=False)
    assert proc.returncode == 124, proc.stderr.decode()  # still running when timeout stopped it


def test_uefi_flash_without_secure_boot() -> None:
    from imagewright.programs.qemu_system import UefiFlash, machine_sandbox

    flash = UefiFlash(Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/run/vars,1.fd"))
    spec = MachineSpec(accelerator="tcg", uefi=flash, drives=(Drive(Path("/img/d.raw")),))
    argv = qemu_system_argv(spec)
    assert _after(argv, "-machine") == ["pc"] and "-global" not in argv
    assert _after(argv, "-drive")[:2] == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "if=pflash,format=raw,unit=1,file=/run/vars,,1.fd",  # a comma in a path is doubled
    ]
    sandbox = machine_sandbox(spec)
    assert "/usr/share/OVMF/OVMF_CODE_4M.fd" in sandbox.reads and "/run/vars,1.fd" in sandbox.writes


def test_secure_boot_needs_q35_smm_and_secure_flash() -> None:
    from imagewright.programs.qemu_system import UefiFlash

    flash = UefiFlash(Path("/usr/share/OVMF/OVMF_CODE_4M.ms.fd"), Path("/tmp/vars.fd"), secure_boot=True)
    drives = tuple(Drive(Path(f"/img/{n}.iso"), bus="ide", media="cdrom") for n in range(6))
    argv = qemu_system_argv(MachineSpec(accelerator="tcg", uefi=flash, drives=drives))
    assert _after(argv, "-machine") == ["q35,smm=on"]
    assert _after(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on"]
    # q35's AHCI controller: six ports with one unit each (PIIX's ide.0 unit 1 does not exist there).
    devices = [d for d in _after(argv, "-device") if d.startswith("ide-cd")]
    assert [d.split(",")[2:] for d in devices] == [[f"bus=ide.{n}", "unit=0"] for n in range(6)]
    seven = (*drives, Drive(Path("/img/7.iso"), bus="ide", media="cdrom"))
    with pytest.raises(InvalidArgumentError, match="at most six"):
        qemu_system_argv(MachineSpec(accelerator="tcg", uefi=flash, drives=seven))


def test_overlay_on_an_explicit_backing_image_and_qmp(tmp_path: Path) -> None:
    """An instance's disk: the base is named in the drive's options (the overlay's header is never
    followed), read-only in the sandbox; the QMP socket's directory is the one writable directory."""
    overlay, base, qmp = tmp_path / "disk.qcow2", tmp_path / "base,1.raw", tmp_path / "qmp" / "qmp.sock"
    spec = MachineSpec(
        accelerator="tcg",
        drives=(Drive(overlay, format="qcow2", backing=BackingImage(base, "raw")),),
        qmp_socket=qmp,
    )
    argv = qemu_system_argv(spec)
    assert _after(argv, "-drive") == [
        f"file={overlay},format=qcow2,if=none,id=drive0,media=disk,"
        f"backing.driver=raw,backing.file.filename={tmp_path}/base,,1.raw"
    ]
    assert _after(argv, "-qmp") == [f"unix:{qmp},server=on,wait=off"]
    sandbox = machine_sandbox(spec)
    assert sandbox.writes == (str(overlay),)
    assert sandbox.reads == (str(base),)
    assert sandbox.directories == (str(qmp.parent),)
    with pytest.raises(InvalidArgumentError, match="Only a qcow2 overlay"):
        Drive(overlay, format="raw", backing=BackingImage(base))


def test_qemu_reads_the_base_through_the_overlay(tmp_path: Path) -> None:
    """QEMU itself follows the explicit chain: qemu-io with the same options reads the base's bytes
    through an overlay whose header names no backing file (qemu-img info shows none)."""
    import json

    from tests.fixtures.tools import run

    base = tmp_path / "base.raw"
    base.write_bytes(b"\xab" * 65536 + bytes(65536))
    overlay = tmp_path / "disk.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", overlay, "131072")
    assert "backing-filename" not in json.loads(run("qemu-img", "info", "--output=json", overlay).stdout)
    drive = _after(qemu_system_argv(MachineSpec(
        accelerator="tcg", drives=(Drive(overlay, format="qcow2", backing=BackingImage(base)),)
    )), "-drive")[0]  # fmt: skip
    options = ",".join(o for o in drive.split(",") if not o.startswith(("if=", "id=", "media=")))
    image_opts = options.replace("file=", "file.filename=", 1).replace("format=", "driver=", 1)
    out = run("qemu-io", "--image-opts", image_opts, "-c", "read -P 0xab 0 64k", "-c", "read -P 0 64k 64k")
    assert b"Pattern verification failed" not in out.stdout + out.stderr
    assert out.stdout.count(b"read 65536/65536 bytes") == 2


def test_a_uefi_boot_with_a_cd_rom_runs_on_q35(tmp_path: Path) -> None:
    """``boot --firmware uefi --cdrom seed.iso``: q35's AHCI (Linux under OVMF does not see a CD-ROM
    on PIIX's IDE), and QEMU accepts the machine; without a CD-ROM the machine stays ``pc``."""
    from tests.fixtures.tools import run

    from imagewright.compute.boot import uefi_chipset
    from imagewright.programs.ovmf import find_ovmf
    from imagewright.programs.qemu_system import UefiFlash

    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * 1024 * 1024)
    seed = tmp_path / "seed.iso"
    seed.write_bytes(b"\0" * 1024 * 1024)
    plain = [Drive(disk)]
    with_seed = [*plain, Drive(seed, bus="ide", media="cdrom")]
    assert uefi_chipset(plain) == "pc" and uefi_chipset(with_seed) == "q35"

    ovmf = find_ovmf(secure_boot=False)
    variables = tmp_path / "vars.fd"
    variables.write_bytes(ovmf.variables_template.read_bytes())
    flash = UefiFlash(ovmf.code, variables, False, chipset=uefi_chipset(with_seed))
    argv = qemu_system_argv(MachineSpec(accelerator="tcg", uefi=flash, drives=tuple(with_seed)))
    assert _after(argv, "-machine") == ["q35"]
    assert next(d for d in _after(argv, "-device") if d.startswith("ide-cd")).endswith("bus=ide.0,unit=0")
    proc = run("timeout", "3", *argv, "-S", check=False)
    assert proc.returncode == 124, proc.stderr.decode()  # still running when timeout stopped it
