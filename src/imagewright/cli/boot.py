"""``imagewright boot IMAGE``: boot an image under QEMU and watch its serial console."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from imagewright.cli.common import json_option
from imagewright.cli.render import emit_json, stderr_console, stdout_console
from imagewright.errors import UnsafeImageError
from imagewright.programs.qemu_system import DISK_BUSES

if TYPE_CHECKING:
    from imagewright.compute.boot import Role

_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
#: Console lines shown when a boot fails.
_SHOWN_LINES = 15


def checked_format(path: Path, *, role: Role) -> str:
    """The safety gate for a file QEMU is to be handed as ``role`` ("image", "drive", "CD-ROM");
    returns QEMU's driver name for it (``compute.boot`` admits it again: the library guards itself)."""
    from imagewright.compute.boot import admitted_format

    try:
        return admitted_format(path, role=role)
    except UnsafeImageError as err:
        raise UnsafeImageError(f"The {role} {err}", err.reasons) from None


@click.command("boot")
@click.argument("image", type=_EXISTING_FILE)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=120.0,
    show_default=True,
    metavar="S",
    help="Give up after S seconds.",
)
@click.option(
    "--expect",
    metavar="TEXT",
    help="Succeed as soon as TEXT appears on the serial console (without it: when the guest powers off).",
)
@click.option(
    "--cdrom",
    "cdroms",
    multiple=True,
    type=_EXISTING_FILE,
    metavar="ISO",
    help="Attach ISO as a CD-ROM (repeatable).",
)
@click.option(
    "--drive",
    "drives",
    multiple=True,
    type=_EXISTING_FILE,
    metavar="FILE",
    help="Attach FILE as an extra virtio disk, e.g. a VFAT metadata disk (repeatable).",
)
@click.option(
    "--snapshot",
    is_flag=True,
    help="Leave IMAGE and the drives unchanged (writes go to a throwaway overlay).",
)
@click.option(
    "--memory",
    "memory_mib",
    type=click.IntRange(16, 1 << 20),
    default=512,
    show_default=True,
    metavar="MiB",
    help="Guest memory.",
)
@click.option(
    "--disk-bus",
    type=click.Choice(DISK_BUSES),
    default="virtio",
    show_default=True,
    help="Bus of IMAGE's disk.",
)
@click.option(
    "--console-log",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the whole serial console to FILE.",
)
@click.option(
    "--firmware",
    type=click.Choice(["auto", "bios", "uefi"]),
    default="auto",
    show_default=True,
    help="SeaBIOS or OVMF (UEFI); auto: BIOS when IMAGE boots under BIOS, else UEFI if it boots under UEFI.",
)
@click.option(
    "--secure-boot",
    is_flag=True,
    help="UEFI with Secure Boot on and Microsoft's keys enrolled (implies --firmware uefi).",
)
@click.option("--follow", is_flag=True, help="Print the console on stderr as it arrives.")
@json_option
def command(  # click passes every parameter by keyword
    *,
    image: Path,
    timeout: float,
    expect: str | None,
    cdroms: tuple[Path, ...],
    drives: tuple[Path, ...],
    snapshot: bool,
    memory_mib: int,
    disk_bus: str,
    console_log: Path | None,
    firmware: str,
    secure_boot: bool,
    follow: bool,
    as_json: bool,
) -> None:
    """Boot IMAGE under QEMU from its own disk and watch the serial console (ttyS0).

    IMAGE is inspected first and refused when unsafe (backing files, external extents ...);
    its format is taken from the inspection, never guessed by QEMU. KVM is used only when a
    probe boot shows it runs a standard guest, else TCG (override: IMAGEWRIGHT_ACCEL=tcg|kvm).
    QEMU is always stopped when the command ends.

    The firmware is SeaBIOS or OVMF (Debian's ovmf package), chosen from what inspect finds
    on IMAGE unless --firmware says; each UEFI boot starts from a fresh copy of OVMF's
    variable store. With --secure-boot the report says whether the kernel found Secure Boot
    enabled (every stage was verified to get there) or the firmware refused the boot loader.

    Exits 0 when TEXT appeared (or, without --expect, when the guest powered off cleanly),
    1 otherwise, showing the last console lines.
    """
    from imagewright.compute.boot import BootTimeoutError, Drive, boot

    if secure_boot and firmware == "bios":
        raise click.UsageError("--secure-boot needs UEFI firmware; drop --firmware bios.")
    image_format, needed = _checked_image(image)
    chosen = "uefi" if secure_boot else (needed or "bios") if firmware == "auto" else firmware
    if chosen == "uefi":
        from imagewright.programs.ovmf import find_ovmf

        find_ovmf(secure_boot=secure_boot)  # a missing firmware is said before anything starts
    extra_drives = [
        Drive(path, format=checked_format(path, role="drive"), snapshot=snapshot) for path in drives
    ]
    for iso in cdroms:
        checked_format(iso, role="CD-ROM")

    def show_line(line: str) -> None:
        stderr_console().print(Text(line, style="dim"))

    if not as_json:
        stderr_console().print(Text(f"booting {image} ({image_format}, {disk_bus}, {chosen.upper()}) ..."))
    try:
        result = boot(
            image,
            format=image_format,
            timeout=timeout,
            expect=expect,
            cdroms=cdroms,
            drives=extra_drives,
            snapshot=snapshot,
            memory_mib=memory_mib,
            console_log=console_log,
            disk_bus=disk_bus,  # type: ignore[arg-type]  # click.Choice guarantees a DiskBus
            on_line=show_line if follow else None,
            firmware=chosen,  # type: ignore[arg-type]
            secure_boot=secure_boot,
        )
    except BootTimeoutError as err:
        if as_json:
            emit_json({**err.result.to_dict(), "ok": False, "error": str(err)})
            raise click.exceptions.Exit(1) from None
        _render(err.result, expect, show_tail=not follow)
        raise

    ok = result.matched if expect is not None else result.exit_status == 0
    if secure_boot and ok and result.kernel_secure_boot == "disabled":
        ok = False  # the firmware ran with Secure Boot but the kernel says it was off: not proven
    if as_json:
        payload: dict[str, Any] = {**result.to_dict(), "ok": ok}
        emit_json(payload)
    else:
        _render(result, expect, show_tail=not ok and not follow)
    if not ok:
        if not as_json:
            if expect is not None:
                why = f"the guest stopped (QEMU exit status {result.exit_status}) before '{expect}' appeared"
            elif result.exit_status is None:
                why = f"the guest did not power off within {timeout:g} s"
            else:
                why = f"the guest ended with QEMU exit status {result.exit_status}"
            stderr_console().print(Text(f"imagewright: boot failed: {why}.", style="bold red"))
        raise click.exceptions.Exit(1)


def _checked_image(image: Path) -> tuple[str, str | None]:
    """QEMU's driver for IMAGE (through the safety gate) and the firmware it needs ("bios"/"uefi"/None)."""
    from imagewright.disk.survey import required_firmware
    from imagewright.gate import admit

    try:
        admitted = admit(image)
    except UnsafeImageError as err:
        raise UnsafeImageError(f"The image {err}", err.reasons) from None
    disk = admitted.report.disk
    return admitted.qemu_format(role="image"), required_firmware(disk.boot if disk is not None else None)


def _render(result: Any, expect: str | None, *, show_tail: bool) -> None:
    out = stdout_console()
    out.print(Text(f"{'accelerator:':<14}{result.accelerator} ({result.accelerator_reason})"))
    out.print(Text(f"{'firmware:':<14}{result.firmware_description}"))
    if result.firmware == "uefi":
        if result.kernel_secure_boot is not None:
            verified = (
                " (the firmware verified shim, GRUB and the kernel)" if result.secure_boot_verified else ""
            )
            out.print(Text(f"{'secure boot:':<14}the kernel says '{result.kernel_secure_boot}'{verified}"))
        for refusal in result.firmware_refusals:
            out.print(Text(f"{'refused:':<14}{refusal}", style="red"))
    if result.matched:
        out.print(Text(f"{'matched:':<14}{result.matched_line.strip()}", style="green"))
    elif expect is not None:
        out.print(Text(f"{'matched:':<14}no: '{expect}' did not appear", style="red"))
    if result.exit_status is not None:
        out.print(Text(f"{'qemu exit:':<14}{result.exit_status}"))
    out.print(Text(f"{'elapsed:':<14}{result.elapsed:.1f} s"))
    if result.console_log is not None:
        out.print(Text(f"{'console log:':<14}{result.console_log}"))
    if show_tail and result.last_lines:
        stderr_console().print(Text("last console lines:", style="bold"))
        for line in result.last_lines[-_SHOWN_LINES:]:
            stderr_console().print(Text(f"  {line}"))
