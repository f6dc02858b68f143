"""``imagewright run | ps | stop | rm | console``: instances of images under QEMU.

The instances live in a registry's data dir (``--data-dir``): their records in its catalog
(served by the metadata service), their overlays and console logs under ``instances/``, the
registry images they boot cached under ``cache/images/``. See ``service.launch``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from imagewright.cli.common import ByteProgress, data_dir_option, database_option, json_option, tokens_option
from imagewright.cli.render import emit_json, stderr_console, stdout_console
from imagewright.errors import InvalidArgumentError

if TYPE_CHECKING:
    from imagewright.service.launch.instances import Site

CONTEXT_CHOICES = ("metadata", "nocloud", "configdrive", "opennebula", "wakame")

firmware_option = click.option(
    "--firmware",
    type=click.Choice(["bios", "uefi"]),
    default=None,
    help="SeaBIOS or OVMF (UEFI). Default: the image's hw_firmware_type (os_secure_boot=required: "
    "Secure Boot), else what inspect finds: OVMF for a disk that boots under UEFI only, else SeaBIOS.",
)
secure_boot_option = click.option(
    "--secure-boot", is_flag=True, help="OVMF with Secure Boot on and Microsoft's keys enrolled."
)
cpus_option = click.option(
    "--cpus",
    type=click.IntRange(1, 64),
    default=None,
    help="vCPUs. Default: 2 under TCG for a guest that boots systemd (multi-threaded TCG, one host "
    "core each; 1 on a one-core host), else 1.",
)
disk_size_option = click.option(
    "--disk-size",
    "disk_size_text",
    default=None,
    metavar="SIZE",
    help="The instance's disk (e.g. 4G): at least the image's size; the guest grows its root into it.",
)


def site_of(data_dir: str | None, database: str | None) -> Site:
    from imagewright.service.datadir import resolve_data_dir
    from imagewright.service.launch.instances import Site

    return Site(resolve_data_dir(data_dir), database)


def _vcpus_text(cpus: int) -> str:
    return f"{cpus} vCPU{'s' if cpus > 1 else ''}"


def parse_port_forward(text: str) -> tuple[int, int]:
    host, sep, guest = text.partition(":")
    if not sep or not host.isdigit() or not guest.isdigit():
        raise InvalidArgumentError(f"The port forward {text[:32]!r} must be written HOSTPORT:GUESTPORT.")
    return int(host), int(guest)


@click.command("run")
@click.argument("image_ref", metavar="IMAGE_REF")
@click.option("--name", default=None, help="The instance's name (default: vm-XXXXXX).")
@click.option("--hostname", default=None, help="Its host name (default: the name).")
@click.option(
    "--key-file", "key_files", multiple=True, metavar="FILE", help="OpenSSH public keys (repeatable)."
)
@click.option(
    "--user-data", "user_data_file", default=None, metavar="FILE", help="User-data (at most 64 KiB)."
)
@cpus_option
@click.option(
    "--memory", "memory_mib", type=click.IntRange(64, 65536), default=512, show_default=True, metavar="MiB"
)
@click.option(
    "--context",
    type=click.Choice(CONTEXT_CHOICES),
    default="metadata",
    show_default=True,
    help="metadata: the metadata service at 169.254.169.254 (through the instance's forwarder); "
    "else a context medium of that kind.",
)
@tokens_option
@click.option(
    "--port-forward",
    "port_forwards",
    multiple=True,
    metavar="HOST:GUEST",
    help="Forward 127.0.0.1:HOST to the guest's port GUEST (repeatable), e.g. 2222:22.",
)
@click.option("--detach", is_flag=True, help="Return once the instance runs (else follow its console).")
@firmware_option
@secure_boot_option
@disk_size_option
@click.option(
    "--project",
    default=None,
    help="The project that owns the instance (default: admin); a registry image must be one it sees.",
)
@data_dir_option
@database_option
@json_option
def run_command(
    image_ref: str,
    name: str | None,
    hostname: str | None,
    key_files: tuple[str, ...],
    user_data_file: str | None,
    cpus: int | None,
    memory_mib: int,
    context: str,
    tokens: str,
    port_forwards: tuple[str, ...],
    detach: bool,
    firmware: str | None,
    secure_boot: bool,
    disk_size_text: str | None,
    project: str | None,
    data_dir: str | None,
    database: str | None,
    as_json: bool,
) -> None:
    """Start an instance of IMAGE_REF (a file, or a registry image id or name) under QEMU."""
    from imagewright.catalog.instances import MAX_USER_DATA_BYTES
    from imagewright.cli.instance import read_keys
    from imagewright.metadata.instance import read_user_data
    from imagewright.service.launch import instances
    from imagewright.units import parse_size

    site = site_of(data_dir, database)
    request = instances.LaunchRequest(
        image_ref=image_ref,
        name=name,
        hostname=hostname,
        keys=read_keys(key_files),
        user_data=read_user_data(Path(user_data_file), MAX_USER_DATA_BYTES) if user_data_file else None,
        context=context,
        tokens=tokens,
        cpus=cpus,
        memory_mib=memory_mib,
        port_forwards=tuple(parse_port_forward(text) for text in port_forwards),
        firmware=firmware,
        secure_boot=secure_boot,
        disk_size=parse_size(disk_size_text) if disk_size_text is not None else None,
        project=project,
    )
    launched = instances.launch(site, request, progress=ByteProgress("downloading", not as_json))
    if as_json:
        emit_json(launched.to_dict())
    else:
        stdout_console().print(
            f"instance {launched.instance_id} running ({launched.name}, {launched.accelerator}, "
            f"{_vcpus_text(launched.cpus)}, "
            f"{_firmware_text(launched.firmware.firmware, launched.firmware.secure_boot)} "
            f"({launched.firmware.reason}), context {launched.context}); "
            f"console: {launched.files.console_log}"
        )
    if detach:
        return
    log, running = instances.console_path(site, launched.instance_id)
    try:
        instances.follow_console(log, running, _write_stdout, follow=True)
    except KeyboardInterrupt:
        stderr_console().print(f"stopping {launched.instance_id} ...")
        outcome = instances.stop(site, launched.instance_id, grace=10.0)
        stderr_console().print(f"instance {launched.instance_id} stopped ({outcome.how})")
        raise SystemExit(130) from None


def _firmware_text(firmware: str | None, secure_boot: bool) -> str:
    """ "SeaBIOS", "OVMF", "OVMF+SB"."""
    if firmware is None:
        return "-"
    return "SeaBIOS" if firmware == "bios" else "OVMF+SB" if secure_boot else "OVMF"


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@click.command("ps")
@data_dir_option
@database_option
@json_option
def ps_command(data_dir: str | None, database: str | None, as_json: bool) -> None:
    """List the instances, their state checked against the live QEMU processes, and orphans."""
    from imagewright.service.launch import instances

    rows, orphans = instances.statuses(site_of(data_dir, database))
    if as_json:
        emit_json({"instances": [r.to_dict() for r in rows], "orphans": [o.to_dict() for o in orphans]})
        return
    console = stdout_console()
    console.print(
        f"{'ID':<21} {'NAME':<16} {'STATE':<9} {'ACCEL':<5} {'CPUS':>4} {'FIRMWARE':<8} {'PID':>7}  "
        "CONTEXT  IMAGE"
    )
    for row in rows:
        pid = str(row.qemu_pid) if row.state == "running" and row.qemu_pid else "-"
        firmware = _firmware_text(row.firmware, row.secure_boot) if row.accelerator else "-"
        cpus = str(row.cpus) if row.accelerator and row.cpus else "-"
        console.print(
            f"{row.instance_id:<21} {row.name[:16]:<16} {row.state:<9} {row.accelerator or '-':<5} "
            f"{cpus:>4} {firmware:<8} {pid:>7}  {row.context or '-':<8} {row.image_id}"
        )
    for orphan in orphans:
        what = "not running in the catalog" if orphan.known else "not in the catalog"
        console.print(
            f"orphan: QEMU pid {', '.join(map(str, orphan.pids))} runs instance {orphan.instance_id} ({what})"
        )


@click.command("stop")
@click.argument("instance_ids", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="End QEMU at once (QMP quit; SIGKILL if it does not answer).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="S",
    help="How long the guest may take to power off before QEMU is told to quit.",
)
@data_dir_option
@database_option
@json_option
def stop_command(
    instance_ids: tuple[str, ...],
    force: bool,
    timeout: float,
    data_dir: str | None,
    database: str | None,
    as_json: bool,
) -> None:
    """Stop instances: ACPI power-off, then QEMU quits (its disks closed cleanly)."""
    from imagewright.service.launch import instances

    site = site_of(data_dir, database)
    outcomes = [instances.stop(site, instance_id, force=force, grace=timeout) for instance_id in instance_ids]
    if as_json:
        emit_json([{"id": o.instance_id, "how": o.how} for o in outcomes])
        return
    for outcome in outcomes:
        stdout_console().print(f"instance {outcome.instance_id} stopped ({outcome.how})")


@click.command("rm")
@click.argument("instance_ids", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Stop a running instance first (at once).")
@data_dir_option
@database_option
@json_option
def rm_command(
    instance_ids: tuple[str, ...], force: bool, data_dir: str | None, database: str | None, as_json: bool
) -> None:
    """Remove instances: record, overlay, console log and forwarder."""
    from imagewright.service.launch import instances

    site = site_of(data_dir, database)
    outcomes = [instances.remove(site, instance_id, force=force) for instance_id in instance_ids]
    if as_json:
        emit_json([{"id": o.instance_id, "stopped": o.how} for o in outcomes])
        return
    for outcome in outcomes:
        stopped = "" if outcome.how == "not running" else f" (stopped: {outcome.how})"
        stdout_console().print(f"instance {outcome.instance_id} removed{stopped}")


@click.command("console")
@click.argument("instance_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing what the console prints while it runs.")
@data_dir_option
@database_option
def console_command(instance_id: str, follow: bool, data_dir: str | None, database: str | None) -> None:
    """Print an instance's serial console (saved in its console log)."""
    from imagewright.service.launch import instances

    log, running = instances.console_path(site_of(data_dir, database), instance_id)
    instances.follow_console(log, running, _write_stdout, follow=follow)


@click.command("verify")
@click.argument("image_ref", metavar="IMAGE_REF")
@click.option(
    "--context",
    type=click.Choice(CONTEXT_CHOICES),
    default="nocloud",
    show_default=True,
    help="How the instance learns who it is: the metadata service, or a context medium of that kind.",
)
@tokens_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    metavar="S",
    help="How long the guest may take to become ready.",
)
@click.option("--keep", is_flag=True, help="Keep the (stopped) instance and its overlay afterwards.")
@click.option(
    "--user-data",
    "user_data_file",
    default=None,
    metavar="FILE",
    help="Your own user-data (at most 64 KiB) instead of verify's marker script; checked to have run.",
)
@firmware_option
@secure_boot_option
@disk_size_option
@cpus_option
@data_dir_option
@database_option
@json_option
def verify_command(
    image_ref: str,
    context: str,
    tokens: str,
    timeout: float,
    keep: bool,
    user_data_file: str | None,
    firmware: str | None,
    secure_boot: bool,
    disk_size_text: str | None,
    cpus: int | None,
    data_dir: str | None,
    database: str | None,
    as_json: bool,
) -> None:
    """Boot IMAGE_REF with a fresh hostname, key and user-data on a bigger disk, and check from
    outside that each took.

    The checks: console ready, firmware as started, hostname, SSH key, user-data ran (once),
    root filesystem grown to the disk, new SSH host keys.
    """
    from imagewright.catalog.instances import MAX_USER_DATA_BYTES
    from imagewright.metadata.instance import read_user_data
    from imagewright.service.launch.verify import verify_image
    from imagewright.units import parse_size

    report = verify_image(
        site_of(data_dir, database), image_ref, context=context, tokens=tokens, timeout=timeout, keep=keep,
        user_data=read_user_data(Path(user_data_file), MAX_USER_DATA_BYTES) if user_data_file else None,
        disk_size=parse_size(disk_size_text) if disk_size_text is not None else None,
        firmware=firmware, secure_boot=secure_boot, cpus=cpus,
    )  # fmt: skip
    if as_json:
        emit_json(report.to_dict())
    else:
        console = stdout_console()
        console.print(
            f"verify {image_ref}: instance {report.instance_id} ({report.hostname}, {report.accelerator}, "
            f"{_vcpus_text(report.cpus)}, "
            f"{_firmware_text(report.firmware, report.secure_boot)} ({report.firmware_reason}), "
            f"context {report.context})"
        )
        for check in report.checks:
            mark = "✔" if check.ok else "✘"
            console.print(f"  {mark} {check.name:<14} {check.seconds:7.1f} s  {check.detail}")
        verdict = "passed" if report.ok else "FAILED"
        console.print(f"{verdict} in {report.total_seconds:.1f} s")
    if not report.ok:
        raise SystemExit(1)


@click.command("wait")
@click.argument("instance_id")
@click.option(
    "--for",
    "want",
    type=click.Choice(["ready", "login", "ssh"]),
    default="ready",
    show_default=True,
    help="ready: our agent's ready line for this instance (or a login prompt); login: a login prompt; "
    "ssh: an SSH server answering on the port forwarded to the guest's port 22.",
)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=300.0, show_default=True, metavar="S")
@data_dir_option
@database_option
def wait_command(
    instance_id: str, want: str, timeout: float, data_dir: str | None, database: str | None
) -> None:
    """Wait until an instance's console shows it ready (exit 1 if it does not in time)."""
    import time

    from imagewright.errors import InstanceError
    from imagewright.service.launch import instances

    site = site_of(data_dir, database)
    log, running = instances.console_path(site, instance_id)
    deadline = time.monotonic() + timeout
    if want == "ssh":
        seen, detail = instances.wait_for_ssh(instances.ssh_endpoint(site, instance_id), running, deadline)
    else:
        seen, detail = instances.wait_for_console(log, instance_id, running, deadline, want=want)
    if not seen:
        raise InstanceError(f"The instance {instance_id} is not ready: {detail}.")
    stdout_console().print(f"instance {instance_id}: {detail}")


@click.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("instance_id")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--user", "-l", default="root", show_default=True, help="The guest user to log in as.")
@click.option(
    "--identity",
    "-i",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    metavar="FILE",
    help="The private key (of a --key-file the instance was given); default: ssh's own choice.",
)
@click.option("--batch", is_flag=True, help="Never prompt (ssh BatchMode): fail instead.")
@data_dir_option
@database_option
def ssh_command(
    instance_id: str,
    command: tuple[str, ...],
    user: str,
    identity: Path | None,
    batch: bool,
    data_dir: str | None,
    database: str | None,
) -> None:
    """Open an SSH session on an instance (or run COMMAND there) through its port forwarded to 22.

    Run the instance with --port-forward HOSTPORT:22 and your --key-file; the instance's host
    key is kept in its own known_hosts on first use. ssh's exit status is this command's.
    """
    from imagewright.programs.ssh import exec_ssh, ssh_argv
    from imagewright.service.launch import instances

    endpoint = instances.ssh_endpoint(site_of(data_dir, database), instance_id)
    exec_ssh(
        ssh_argv(endpoint.port, user, endpoint.known_hosts, identity=identity, command=command, batch=batch)
    )
