"""``imagewright prepare IMAGE``: sysprep a guest image (and install the agent with --agent)."""

from __future__ import annotations

from pathlib import Path

import click

from imagewright.cli.common import byte_progress, emit_json, json_option
from imagewright.errors import InvalidArgumentError
from imagewright.ops.prepare import PrepareOptions, PrepareReport, prepare
from imagewright.ops.prepare import list_operations as all_operations


def _print_operations(as_json: bool) -> None:
    operations = all_operations()
    if as_json:
        emit_json(
            [
                {"name": op.name, "default": op.default_text, "description": op.summary, "why": op.why}
                for op in operations
            ]
        )
        return
    width = max(len(op.name) for op in operations)
    column = max(len(op.default_text) for op in operations)
    click.echo(f"{'operation':<{width}}  {'default':<{column}}  description")
    for op in operations:
        click.echo(f"{op.name:<{width}}  {op.default_text:<{column}}  {op.summary}")


def _print_report(report: PrepareReport) -> None:
    count = report.change_count
    plural = "" if count == 1 else "s"
    if report.dry_run:
        click.echo(
            f"dry run of prepare on {report.image} ({report.filesystem}): "
            f"{count} change{plural} would be made; the image was not changed"
        )
    else:
        click.echo(
            f"prepared {report.image} ({report.filesystem}): {count} change{plural} in {report.seconds:.1f} s"
        )
    width = max((len(op.name) for op in report.operations), default=0)
    for op in report.operations:
        if not op.changes:
            reason = f" ({op.note})" if op.note else ""
            click.echo(f"  {op.name:<{width}}  nothing to do{reason}")
            continue
        for index, change in enumerate(op.changes):
            label = op.name if index == 0 else ""
            click.echo(f"  {label:<{width}}  {change.describe(report.dry_run)}")


@click.command("prepare")
@click.argument("image", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--operations",
    "operations",
    multiple=True,
    metavar="LIST",
    help="Operations to run, e.g. 'ssh-hostkeys,logfiles' or '-tmp' (defaults minus tmp); "
    "'defaults' and 'all' name the sets.",
)
@click.option("--list-operations", is_flag=True, help="List every operation and whether it runs by default.")
@click.option("--dry-run", is_flag=True, help="List every file prepare would change, and change nothing.")
@click.option("--agent", is_flag=True, help="Also install the imagewright agent and run it at every boot.")
@click.option(
    "--dns", multiple=True, metavar="IP", help="Write /etc/resolv.conf with this name server (repeatable)."
)
@click.option(
    "--module", "modules", multiple=True, metavar="NAME", help="Load this kernel module at boot (repeatable)."
)
@click.option(
    "--partition",
    type=click.IntRange(min=1),
    default=None,
    help="Partition to prepare (default: the one holding /etc).",
)
@json_option
def command(
    *,
    image: Path | None,
    operations: tuple[str, ...],
    list_operations: bool,
    dry_run: bool,
    agent: bool,
    dns: tuple[str, ...],
    modules: tuple[str, ...],
    partition: int | None,
    as_json: bool,
) -> None:
    """Make a guest image cloud-ready: fresh identity on every instance, no MAC addresses
    baked in, clean logs, and (with --agent) a boot-time agent that asks the cloud for
    hostname, SSH keys, network and user-data. Nothing is mounted and nothing is booted.
    """
    if list_operations:
        _print_operations(as_json)
        return
    if image is None:
        raise click.UsageError("Missing argument 'IMAGE'.")
    options = PrepareOptions(dns=dns, modules=modules, agent=agent, partition=partition)
    if operations and not any(item.strip() for entry in operations for item in entry.split(",")):
        raise InvalidArgumentError("--operations was given an empty list.")
    with byte_progress("working copy", enabled=not as_json) as progress:
        report = prepare(
            image,
            operations=list(operations) if operations else None,
            dry_run=dry_run,
            options=options,
            progress=progress,
        )
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_report(report)
