"""ssh-hostkeys: remove the SSH host keys, so no two instances share one.

A host key identifies the machine to every client; instances cloned from one image with its
keys all claim to be the same host, and anyone holding the image holds their private keys.
sshd needs new ones at first boot: cloud-init, the imagewright agent, RHEL's sshd-keygen
units and ``ssh-keygen -A`` create missing keys.
"""

from __future__ import annotations

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation


def run(ctx: PrepareContext) -> None:
    keys = ctx.guest.glob("/etc/ssh/ssh_host_*")
    found = ctx.guest.stat_many(keys)
    ctx.delete_many([path for path in keys if (info := found[path]) is not None and not info.is_dir])


OPERATION = Operation(
    name="ssh-hostkeys",
    default=True,
    summary="Remove the SSH host keys (/etc/ssh/ssh_host_*)",
    why="every clone would present the same host identity and private keys; regenerated at first boot",
    run=run,
)
