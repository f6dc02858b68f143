"""``imagewright prepare IMAGE``: sysprep a guest image (and install the agent with --agent)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from imagewright.cli.common import byte_progress, json_option
from imagewright.cli.render import emit_json
from imagewright.errors import InvalidArgumentError
from imagewright.ops.prepare import PrepareOptions, PrepareReport, prepare
from imagewright.ops.prepare import list_operations as all_operations

if TYPE_CHECKING:
    from imagewright.ops.audit import AuditReport


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
@click.option(
    "--dry-run",
    is_flag=True,
    help="List every file prepare would change, and what inspect --audit would still find; change nothing.",
)
@click.option("--agent", is_flag=True, help="Also install the imagewright agent and run it at every boot.")
@click.option(
    "--dns", multiple=True, metavar="IP", help="Write /etc/resolv.conf with this name server (repeatable)."
)
@click.option(
    "--module", "modules", multiple=True, metavar="NAME", help="Load this kernel module at boot (repeatable)."
)
@click.option(
    "--boot-tuning",
    is_flag=True,
    help="Also tune the first boot: GRUB timeout 0 and a serial console, no wait-online, and "
    "cloud-init's datasource pinned to --datasource.",
)
@click.option(
    "--datasource",
    metavar="KIND[,KIND]",
    default=None,
    help="With --boot-tuning: the cloud-init datasource the image's instances see — ec2 (the "
    "metadata service), nocloud, configdrive or opennebula — or several, media first "
    "(nocloud,configdrive,ec2: an attached medium, else the metadata service).",
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
    boot_tuning: bool,
    datasource: str | None,
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
    if datasource is not None and not boot_tuning:
        raise click.UsageError("--datasource goes with --boot-tuning.")
    options = PrepareOptions(
        dns=dns,
        modules=modules,
        agent=agent,
        partition=partition,
        boot_tuning=boot_tuning,
        boot_datasource=datasource,
    )
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
    audit = _audit_of(image) if dry_run else None
    if as_json:
        document = report.to_dict()
        if audit is not None:
            names = {op.name for op in report.operations}
            document["audit"] = audit.to_dict() | {
                "fixed_by_this_run": len(audit.findings) - len(audit.left_after(names)),
                "left_after_this_run": [
                    {"check": f.check, "path": f.path, "detail": f.detail, "remedy": f.remedy}
                    for f in audit.left_after(names)
                ],
            }
        emit_json(document)
    else:
        _print_report(report)
        if audit is not None:
            _print_audit(audit, {op.name for op in report.operations})


def _audit_of(image: Path) -> AuditReport:
    """What ``inspect --audit`` finds in the image now (for a dry run: what this run fixes)."""
    from imagewright.ops.inspect_os import inspect_os

    audit = inspect_os(image, facts=False, audit=True).audit
    assert audit is not None
    return audit


def _print_audit(audit: AuditReport, operations: set[str]) -> None:
    left = audit.left_after(operations)
    fixed = len(audit.findings) - len(left)
    click.echo(
        f"audit: {len(audit.findings)} finding{'' if len(audit.findings) == 1 else 's'} "
        f"(inspect --audit); these operations fix {fixed}, {len(left)} would be left:"
    )
    for finding in left:
        remedy = f"--operations {finding.fixed_by}" if finding.fixed_by else "no prepare operation"
        click.echo(f"  {finding.severity.value:<9}{finding.path}  {finding.detail}  [{remedy}]")
    for root in audit.roots:
        if root.incomplete:
            click.echo(f"  not complete: the {', '.join(root.incomplete)} check could not finish")
