"""``imagewright resize IMAGE SIZE|+DELTA|-DELTA``: grow a disk image and its last partition."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from imagewright.cli.common import SIZE, json_option, sigterm_as_interrupt, staged_progress
from imagewright.cli.render import emit_json, stdout_console
from imagewright.formats.base import Limits
from imagewright.ops.resize import resize


# ignore_unknown_options lets a negative delta ("-512M") through as the SIZE argument
# instead of being taken for an option.
@click.command("resize", context_settings={"ignore_unknown_options": True})
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("size", metavar="SIZE|+DELTA|-DELTA")
@click.option(
    "--partition",
    type=click.IntRange(min=1),
    metavar="N",
    help="Grow partition N (default: the partition that ends last; it must be the last one).",
)
@click.option(
    "--no-partition",
    is_flag=True,
    help="Change only the virtual disk; leave partitions and filesystems as they are.",
)
@click.option(
    "--grow-filesystem",
    is_flag=True,
    help="Also grow the partition's ext2/3/4 filesystem now (resize2fs), not at first boot.",
)
@click.option(
    "--max-virtual-size", type=SIZE, default=None, help="Refuse disks larger than this (default 16T)."
)
@json_option
def command(
    image: Path,
    size: str,
    partition: int | None,
    no_partition: bool,
    grow_filesystem: bool,
    max_virtual_size: int | None,
    as_json: bool,
) -> None:
    """Resize IMAGE to SIZE (8G), or by +DELTA (+1G) or -DELTA (-512M).

    IMAGE may be raw, qcow2, vmdk, vhdx, vdi or vhd; it is inspected first and refused if
    unsafe. The virtual disk grows, then the partition that ends last grows to fill it (MBR
    primary or logical, GPT with its backup moved to the new end). A filesystem inside a
    partition grows at first boot (imagewright-agent); a flat ext2/3/4 image grows now.
    Shrinking is refused unless the space cut off is unused. The work happens on a copy
    that replaces IMAGE only when complete and checked.

    \b
    Examples:
      imagewright resize disk.qcow2 +1G
      imagewright resize disk.img 20G --partition 2
      imagewright resize disk.vmdk -512M
    """
    if no_partition and (partition is not None or grow_filesystem):
        raise click.UsageError("--no-partition cannot be combined with --partition or --grow-filesystem.")
    limits = Limits() if max_virtual_size is None else Limits(max_virtual_size=max_virtual_size)
    with sigterm_as_interrupt(), staged_progress(enabled=not as_json) as progress:
        report = resize(
            image,
            size,
            partition=partition,
            grow_partition=not no_partition,
            grow_filesystem=grow_filesystem,
            limits=limits,
            progress=progress,
        )
    if as_json:
        emit_json(report.to_dict())
        return
    for line in report.summary():
        stdout_console().print(Text(line))
