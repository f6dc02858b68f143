"""root-password: lock root's password in /etc/shadow.

A password hash gets a '!' in front (``passwd -l`` does the same, ``passwd -u`` undoes it);
an empty password field, which lets anyone log in as root without a password, becomes '*'.
Every other line and field of /etc/shadow stays byte for byte, and so do its owner and mode.
SSH keys still work (with ``UsePAM yes``, the default on Debian, Ubuntu and RHEL).
"""

from __future__ import annotations

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

SHADOW = "/etc/shadow"


def lock(text: str) -> tuple[str, str]:
    """The shadow text with root locked, and what changed ("" if root was already locked)."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] != "root" or len(fields) < 2:
            continue
        password = fields[1]
        if password.startswith(("!", "*")):
            return text, ""
        fields[1] = "*" if password == "" else "!" + password
        lines[index] = ":".join(fields)
        return "\n".join(
            lines
        ), "empty password replaced by '*'" if password == "" else "password hash prefixed with '!'"
    return text, ""


def run(ctx: PrepareContext) -> None:
    if not ctx.guest.is_file(SHADOW):
        ctx.note = "the guest has no /etc/shadow"
        return
    text = ctx.guest.read_text(SHADOW)
    locked, detail = lock(text)
    if detail:
        ctx.write(SHADOW, locked.encode("utf-8", "surrogateescape"), detail=detail)


OPERATION = Operation(
    name="root-password",
    default=False,
    summary="Lock root's password in /etc/shadow",
    why="off by default: it changes how people log in; images reached by console password need it",
    run=run,
)
