"""cloud-init-state: forget cloud-init's record of earlier instances (like ``cloud-init clean``).

An image that was booted once (to install packages) remembers that instance under
/var/lib/cloud; cloud-init would skip its once-per-image steps on the clones. The seed
directory and the scripts directories stay.
"""

from __future__ import annotations

from imagewright.guest.model import join
from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

STATE_DIRECTORIES = ("/var/lib/cloud/instances", "/var/lib/cloud/data", "/var/lib/cloud/sem")


def run(ctx: PrepareContext) -> None:
    doomed = ["/var/lib/cloud/instance"]  # a link to instances/<id>; missing paths are skipped
    directories = ctx.guest.existing_dirs(STATE_DIRECTORIES)
    listings = ctx.guest.listdir_many(directories) if directories else {}
    doomed += [
        join(d, entry.name) for d in directories for entry in sorted(listings[d], key=lambda e: e.name)
    ]
    ctx.delete_many(doomed)


OPERATION = Operation(
    name="cloud-init-state",
    default=True,
    summary="Remove cloud-init's instance state (/var/lib/cloud/instance*, data, sem)",
    why="cloud-init would treat clones as an instance that already ran its first-boot steps",
    run=run,
)
