"""passwd-backups: remove /etc/passwd-, /etc/shadow- and the other backups shadow tools leave.

They hold earlier password hashes, including those of accounts since locked or removed.
"""

from __future__ import annotations

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

BACKUPS = ("/etc/passwd-", "/etc/shadow-", "/etc/group-", "/etc/gshadow-", "/etc/subuid-", "/etc/subgid-")


def run(ctx: PrepareContext) -> None:
    found = ctx.guest.stat_many(BACKUPS)
    ctx.delete_many([path for path in BACKUPS if (info := found[path]) is not None and not info.is_dir])


OPERATION = Operation(
    name="passwd-backups",
    default=True,
    summary="Remove /etc/passwd-, /etc/shadow- and other account file backups",
    why="they keep old password hashes, also of accounts that were locked or removed",
    run=run,
)
