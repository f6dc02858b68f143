"""resolv-conf: write /etc/resolv.conf with the name servers given by ``--dns``.

Only runs when ``--dns`` is given. A link (to systemd-resolved's or resolvconf's file) is
replaced by a plain file: the user asked for these servers, whatever the guest would manage.
"""

from __future__ import annotations

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

PATH = "/etc/resolv.conf"


def content(servers: tuple[str, ...]) -> bytes:
    lines = ["# Written by imagewright prepare --dns."] + [f"nameserver {server}" for server in servers]
    return ("\n".join(lines) + "\n").encode()


def run(ctx: PrepareContext) -> None:
    servers = ctx.options.dns
    if not servers:
        ctx.note = "no --dns given"
        return
    wanted = content(servers)
    found = ctx.guest.lstat_or_none(PATH)
    if found is not None and found.is_file and ctx.guest.read_file(PATH) == wanted:
        return
    detail = f"nameserver {', '.join(servers)}"
    if found is not None and found.is_symlink:
        detail += f"; replaces the link to {found.link_target}"
        ctx.delete(PATH)
    ctx.write(PATH, wanted, mode=0o644, uid=0, gid=0, detail=detail)


OPERATION = Operation(
    name="resolv-conf",
    default=False,
    summary="Write /etc/resolv.conf with the --dns name servers",
    why="only when asked: most clouds hand out name servers by DHCP",
    run=run,
    needs="--dns",
)
