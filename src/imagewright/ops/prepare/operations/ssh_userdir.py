"""ssh-userdir: remove ~/.ssh of root and of every user under /home (authorized_keys included)."""

from __future__ import annotations

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation


def run(ctx: PrepareContext) -> None:
    ctx.delete_many(["/root/.ssh", *ctx.guest.glob("/home/*/.ssh")])


OPERATION = Operation(
    name="ssh-userdir",
    default=False,
    summary="Remove ~/.ssh of root and users (authorized_keys, known_hosts, keys)",
    why="off by default: on a cloud without key injection the baked-in keys are the only way in",
    run=run,
)
