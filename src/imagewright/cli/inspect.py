"""``imagewright inspect IMAGE...``: qemu-img info + fdisk -l + blkid in one, plus a verdict.

The command as click declares it (its help, its usage errors); the work and the report are
``cli.inspect_run``'s, which ``cli.main`` also runs straight from plain arguments without
importing click (``inspect_run.plain_arguments`` reads them as this declaration does).
"""

from __future__ import annotations

import click

from imagewright.cli.common import SIZE, json_option
from imagewright.cli.inspect_run import InspectArguments, run_inspect


@click.command("inspect")
# Paths stay strings: pathlib (with urllib.parse and ipaddress behind it) is not worth its import here.
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@json_option
@click.option(
    "--max-virtual-size",
    type=SIZE,
    default=None,
    help="Refuse images whose virtual size exceeds this (default 16T).",
)
@click.option(
    "--os",
    "with_os",
    is_flag=True,
    help="Also tell the operating system inside: distribution, kernels, architecture, packages ...",
)
@click.option(
    "--audit",
    is_flag=True,
    help="Also tell what the image would leak if published (host keys, authorized_keys, histories, "
    "password hashes, machine-id ...), each with the prepare operation that removes it.",
)
@click.option("--strict", is_flag=True, help="With --audit: exit 1 when the audit finds anything.")
def command(
    images: tuple[str, ...],
    as_json: bool,
    max_virtual_size: int | None,
    with_os: bool,
    audit: bool,
    strict: bool,
) -> None:
    """Tell what each IMAGE is and whether it is safe to touch.

    Reads only headers and metadata, runs no other program and opens no file but IMAGE.
    A compressed image is decompressed in memory, as far as its size pays for; whatever
    could not be examined is a reason to refuse. Exits 1 when any image is refused.

    With --os, the root filesystems of a safe image are read (ext2/3/4 through debugfs,
    read-only; nothing in the guest runs) to tell the operating system inside; with --audit,
    what it would leak if published. --audit --strict exits 1 when the audit finds anything.
    """
    if strict and not audit:
        raise click.UsageError("--strict applies to --audit; give both.")
    code = run_inspect(InspectArguments(images, as_json, max_virtual_size, with_os, audit, strict))
    if code:
        raise click.exceptions.Exit(code)
