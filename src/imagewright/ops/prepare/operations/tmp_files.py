"""tmp: empty /tmp and /var/tmp (the directories themselves and their modes stay)."""

from __future__ import annotations

from imagewright.guest.model import join
from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation


def run(ctx: PrepareContext) -> None:
    # existing_dirs resolves links and drops repeats: /var/tmp may be a link to /tmp.
    directories = ctx.guest.existing_dirs(("/tmp", "/var/tmp"))
    listings = ctx.guest.listdir_many(directories) if directories else {}
    doomed = [join(d, entry.name) for d in directories for entry in sorted(listings[d], key=lambda e: e.name)]
    ctx.delete_many(doomed)


OPERATION = Operation(
    name="tmp",
    default=True,
    summary="Remove everything in /tmp and /var/tmp",
    why="leftovers of the build; /var/tmp survives reboots and would be in every clone",
    run=run,
)
