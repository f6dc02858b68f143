"""``imagewright context build``: the medium a new instance reads to configure itself."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from imagewright.cli.common import json_option
from imagewright.cli.render import emit_json, stdout_console
from imagewright.metadata.context import CONTEXT_KINDS, build_context_medium
from imagewright.metadata.instance import (
    DEFAULT_IMAGE_ID,
    QEMU_DEFAULT_MAC,
    InstanceDescription,
    collect_keys,
    parse_extra_host,
    read_ssh_key_file,
    read_user_data,
)
from imagewright.metadata.network import parse_network_spec
from imagewright.units import format_size

_PATH = click.Path(path_type=Path, dir_okay=True)


@click.group("context")
def command() -> None:
    """Build context media: the seed an instance reads at first boot."""


@command.command("build")
@click.option(
    "--kind",
    required=True,
    type=click.Choice(CONTEXT_KINDS),
    help="nocloud (cidata ISO), configdrive (config-2 ISO), opennebula (CONTEXT ISO) "
    "or wakame (METADATA FAT disk).",
)
@click.option(
    "--instance-id", required=True, help="The instance's id; a new id makes the guest a new instance."
)
@click.option("--hostname", required=True, help="Host name or FQDN (RFC 1123).")
@click.option(
    "--ssh-key", "ssh_keys", multiple=True, type=_PATH, help="An OpenSSH public key file (repeatable)."
)
@click.option("--user-data", type=_PATH, default=None, help="A file handed to the guest as user-data.")
@click.option(
    "--network",
    default="dhcp",
    show_default=True,
    help="'dhcp' or 'static:IP/MASK,GATEWAY,DNS[,DNS2]'.",
)
@click.option("--mac", default=QEMU_DEFAULT_MAC, show_default=True, help="MAC address of the instance's NIC.")
@click.option(
    "--extra-host",
    "extra_hosts",
    multiple=True,
    help="NAME=IP for the guest's /etc/hosts (wakame; repeatable).",
)
@click.option(
    "--ami-id", default=DEFAULT_IMAGE_ID, show_default=True, help="Image id (wakame, configdrive ec2/)."
)
@click.option("--init-script", type=_PATH, default=None, help="Script shipped as init.sh (opennebula).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The medium to write.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@json_option
def build(
    *,
    kind: str,
    instance_id: str,
    hostname: str,
    ssh_keys: tuple[Path, ...],
    user_data: Path | None,
    network: str,
    mac: str,
    extra_hosts: tuple[str, ...],
    ami_id: str,
    init_script: Path | None,
    output: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Write a context medium for one instance.

    Everything is checked before anything is written; the medium appears under OUTPUT only
    when complete.
    """
    instance = InstanceDescription(
        instance_id=instance_id,
        hostname=hostname,
        ssh_keys=collect_keys(read_ssh_key_file(path) for path in ssh_keys),
        user_data=read_user_data(user_data) if user_data is not None else None,
        network=parse_network_spec(network),
        mac=mac,
        extra_hosts=tuple(parse_extra_host(text) for text in extra_hosts),
        image_id=ami_id,
        init_script=read_user_data(init_script, what="init script") if init_script is not None else None,
    )
    report = build_context_medium(kind, instance, output, force=force)
    if as_json:
        emit_json(report.to_dict())
        return
    out = stdout_console()

    def line(label: str, value: object) -> None:
        out.print(Text(f"{label + ':':<10}{value}"))

    line("wrote", report.path)
    line("kind", f"{report.kind} ({report.description})")
    line("label", f"{report.label} ({report.filesystem})")
    line("size", f"{format_size(report.size)} ({report.size} bytes)")
    line("sha256", report.sha256)
    line("network", instance.network.describe())
    line("files", ", ".join(report.files))
