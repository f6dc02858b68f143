"""dhcp-leases: remove DHCP client leases (ISC dhclient, NetworkManager, dhcpcd).

A clone that finds its parent's lease asks the server for the parent's address first, which
is how two instances end up fighting over one IP for a lease time.
"""

from __future__ import annotations

from imagewright.guest.model import join
from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

#: Directories whose whole content is client (or server) lease state.
LEASE_DIRECTORIES = ("/var/lib/dhcp", "/var/lib/dhclient", "/var/lib/dhcpcd", "/var/lib/dhcpcd5")
#: Lease files among other state.
LEASE_PATTERNS = (
    "/var/lib/NetworkManager/*.lease",
    "/var/lib/NetworkManager/*.leases",
    "/var/lib/wicked/lease-*",
)


def run(ctx: PrepareContext) -> None:
    directories = ctx.guest.existing_dirs(LEASE_DIRECTORIES)
    listings = ctx.guest.listdir_many(directories) if directories else {}
    doomed = [join(d, entry.name) for d in directories for entry in sorted(listings[d], key=lambda e: e.name)]
    leases = [path for pattern in LEASE_PATTERNS for path in ctx.guest.glob(pattern)]
    found = ctx.guest.stat_many(leases)
    doomed += [path for path in leases if (info := found[path]) is not None and not info.is_dir]
    ctx.delete_many(doomed)


OPERATION = Operation(
    name="dhcp-leases",
    default=True,
    summary="Remove DHCP leases (/var/lib/dhcp, /var/lib/dhclient, NetworkManager, dhcpcd)",
    why="clones would all ask for the address the original machine had",
    run=run,
)
