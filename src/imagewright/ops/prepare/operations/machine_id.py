"""machine-id: empty /etc/machine-id (kept as an empty file) and drop D-Bus's own copy.

systemd treats an empty /etc/machine-id as "first boot" and writes a new random id early in
boot; a *missing* file breaks guests whose root is mounted read-only at that point, so it is
emptied, never deleted. /var/lib/dbus/machine-id is removed when it is a file of its own
(D-Bus then reads /etc/machine-id); when it is a link to /etc/machine-id it stays.
"""

from __future__ import annotations

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation


def run(ctx: PrepareContext) -> None:
    found = ctx.guest.stat_many(["/etc/machine-id", "/var/lib/dbus/machine-id"])
    machine_id = found["/etc/machine-id"]
    dbus = found["/var/lib/dbus/machine-id"]
    if machine_id is not None and machine_id.is_file and machine_id.size > 0:
        ctx.truncate("/etc/machine-id", detail="a new id is made at first boot")
    if dbus is not None and dbus.is_file:
        ctx.delete("/var/lib/dbus/machine-id")


OPERATION = Operation(
    name="machine-id",
    default=True,
    summary="Empty /etc/machine-id and remove /var/lib/dbus/machine-id",
    why="journald, DHCP client ids and D-Bus would be identical on every clone",
    run=run,
)
