"""modules: load kernel modules at boot (``--module acpiphp`` for hot-plugged volumes).

Appends each missing module to /etc/modules (Debian, Ubuntu, busybox guests; systemd reads it
through /etc/modules-load.d/modules.conf); a guest with /etc/modules-load.d but no
/etc/modules (RHEL, Fedora) gets /etc/modules-load.d/imagewright.conf instead. A module
already listed is not added again.
"""

from __future__ import annotations

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

MODULES = "/etc/modules"
MODULES_LOAD_D = "/etc/modules-load.d"
OWN_CONF = f"{MODULES_LOAD_D}/imagewright.conf"


def listed(text: str) -> set[str]:
    names: set[str] = set()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            names.add(words[0].replace("-", "_"))
    return names


def run(ctx: PrepareContext) -> None:
    wanted = ctx.options.modules
    if not wanted:
        ctx.note = "no --module given"
        return
    if ctx.guest.exists(MODULES) or not ctx.guest.is_dir(MODULES_LOAD_D):
        target = ctx.guest.resolve(MODULES) if ctx.guest.exists(MODULES) else MODULES
    else:
        target = OWN_CONF
    text = ctx.guest.read_text(target) if ctx.guest.is_file(target) else ""
    present = listed(text)
    missing = [m for m in dict.fromkeys(wanted) if m.replace("-", "_") not in present]
    if not missing:
        return
    if text and not text.endswith("\n"):
        text += "\n"
    text += "".join(f"{m}\n" for m in missing)
    ctx.write(target, text.encode("utf-8", "surrogateescape"), detail=f"added {', '.join(missing)}")


OPERATION = Operation(
    name="modules",
    default=False,
    summary="Load the --module kernel modules at boot (/etc/modules)",
    why="only when asked: e.g. acpiphp so that volumes attached later appear in the guest",
    run=run,
    needs="--module",
)
