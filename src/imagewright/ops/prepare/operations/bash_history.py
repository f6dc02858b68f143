"""bash-history: remove shell histories of root and of every user under /home.

Histories record what the image's builder typed, passwords on command lines included.
busybox ash keeps its history in .ash_history; both are removed.
"""

from __future__ import annotations

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

HISTORIES = (".bash_history", ".ash_history")


def run(ctx: PrepareContext) -> None:
    homes = ["/root", *ctx.guest.glob("/home/*")]
    candidates = [f"{home}/{name}" for home in homes for name in HISTORIES]
    found = ctx.guest.stat_many(candidates)
    ctx.delete_many([path for path in candidates if (info := found[path]) is not None and not info.is_dir])


OPERATION = Operation(
    name="bash-history",
    default=True,
    summary="Remove shell histories (/root and /home/*: .bash_history, .ash_history)",
    why="they record what the builder typed, secrets on command lines included",
    run=run,
)
