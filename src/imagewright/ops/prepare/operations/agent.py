"""agent: install the imagewright agent and hook it into the guest's boot.

The script comes from ``imagewright.agent.agent_script()`` (imported only when this
operation runs) and goes to /usr/local/sbin/imagewright-agent, 0755 root:root. The hook
depends on how the guest boots, checked in this order:

1. systemd (``/lib/systemd/systemd`` or ``/usr/lib/systemd/systemd`` exists and ``/sbin/init``
   leads to it, or there is no ``/sbin/init``): the agent's oneshot unit in
   /etc/systemd/system, enabled the way ``systemctl enable`` does it, by a link in
   multi-user.target.wants/.
2. rc.local, when the guest runs it (``/etc/rc.local`` exists, or an init script, rcS or
   inittab mentions it): the call goes before the final ``exit 0`` (a line after it would
   never run), and the file is made executable (sysvinit and systemd's rc-local generator
   skip it otherwise). Created with ``#!/bin/sh`` and ``exit 0`` when the guest runs rc.local
   but has none.
3. SysV init (``/etc/init.d`` and ``/etc/rcS.d``): an init script plus ``S99`` links in rcS.d,
   so it runs at the end of the single-user part of boot, before the runlevel's services.
4. busybox init (``/etc/inittab`` with ``::sysinit:``): an ``/etc/init.d/S99`` script when
   rcS runs ``/etc/init.d/S??*`` scripts, else a ``::sysinit:`` line after the last one.

A guest with none of these is refused in one sentence; nothing is installed then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

from imagewright.errors import ContextError
from imagewright.guest import GuestFileNotFoundError
from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

AGENT_PATH = "/usr/local/sbin/imagewright-agent"
SYSTEMD_BINARIES = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
RC_LOCAL = "/etc/rc.local"
RC_LOCAL_MENTIONS = ("/etc/init.d/rcS", "/etc/inittab", "/etc/init.d/rc.local", "/etc/rc.d/rc.sysinit")
INITTAB = "/etc/inittab"
INIT_SCRIPT_NAME = "imagewright-agent"


@dataclass(frozen=True)
class AgentFiles:
    """What the agent package provides (the script may be replaced through the options)."""

    script: bytes
    unit: bytes
    init_script: bytes
    rc_local_line: str
    install_path: str = AGENT_PATH
    unit_path: str = "/etc/systemd/system/imagewright-agent.service"
    wants_link: str = "/etc/systemd/system/multi-user.target.wants/imagewright-agent.service"


def _agent_module() -> ModuleType:
    try:
        from imagewright import agent
    except ImportError as err:  # pragma: no cover - part of the package
        raise ContextError(f"The imagewright agent is not part of this installation ({err}).") from None
    return agent


def agent_files(script_override: bytes | None) -> AgentFiles:
    agent = _agent_module()
    script = script_override if script_override is not None else agent.agent_script()
    return AgentFiles(
        script=script,
        unit=agent.systemd_unit(),
        init_script=agent.init_script(),
        rc_local_line=str(agent.RC_LOCAL_LINE),
        install_path=str(agent.AGENT_INSTALL_PATH),
        unit_path=str(agent.SYSTEMD_UNIT_PATH),
        wants_link=str(agent.SYSTEMD_WANTS_LINK),
    )


def boots_with_systemd(ctx: PrepareContext) -> bool:
    ctx.guest.stat_many([*SYSTEMD_BINARIES, "/sbin/init", "/usr/sbin/init"])  # one lookup, cached
    binaries = [path for path in SYSTEMD_BINARIES if ctx.guest.is_file(path)]
    if not binaries:
        return False
    real_binaries = {ctx.guest.resolve(path) for path in binaries}
    for init in ("/sbin/init", "/usr/sbin/init"):
        if ctx.guest.exists(init):
            try:
                return ctx.guest.resolve(init) in real_binaries
            except GuestFileNotFoundError:
                return False
    return True  # no /sbin/init at all: the kernel's init= or an initramfs starts systemd


def runs_rc_local(ctx: PrepareContext) -> bool:
    if ctx.guest.exists(RC_LOCAL) or ctx.guest.exists("/etc/rc.d/rc.local"):
        return True
    if ctx.guest.is_file("/etc/init.d/rc.local"):
        return True
    for path in RC_LOCAL_MENTIONS:
        if ctx.guest.is_file(path) and "rc.local" in ctx.guest.read_text(path, limit=1 << 20):
            return True
    return False


def add_to_rc_local(text: str, line: str) -> str:
    """``text`` with ``line`` before its final ``exit 0`` (or at the end when there is none)."""
    lines = text.splitlines(keepends=True)
    last = None
    for index in range(len(lines) - 1, -1, -1):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            continue
        last = index
        break
    if last is not None and re.fullmatch(r"exit\s+0\s*(#.*)?", lines[last].strip()):
        return "".join(lines[:last]) + line + "\n" + "".join(lines[last:])
    if text and not text.endswith("\n"):
        text += "\n"
    return text + line + "\n"


def _install_script(ctx: PrepareContext, files: AgentFiles) -> None:
    path = files.install_path
    ctx.mkdir(path.rpartition("/")[0] or "/")
    found = ctx.guest.lstat_or_none(path)
    if (
        found is not None
        and found.is_file
        and found.mode == 0o755
        and ctx.guest.read_file(path) == files.script
    ):
        return
    ctx.write(path, files.script, mode=0o755, uid=0, gid=0)


def _hook_systemd(ctx: PrepareContext, files: AgentFiles) -> None:
    unit = files.unit_path
    if not (ctx.guest.is_file(unit) and ctx.guest.read_file(unit) == files.unit):
        ctx.mkdir(unit.rpartition("/")[0])
        ctx.write(unit, files.unit, mode=0o644, uid=0, gid=0, detail="systemd unit")
    ctx.mkdir(files.wants_link.rpartition("/")[0])
    ctx.symlink(unit, files.wants_link, detail="enabled")


def _hook_rc_local(ctx: PrepareContext, files: AgentFiles) -> None:
    path = ctx.guest.resolve(RC_LOCAL) if ctx.guest.exists(RC_LOCAL) else RC_LOCAL
    if not ctx.guest.exists(path) and ctx.guest.exists("/etc/rc.d/rc.local"):
        path = ctx.guest.resolve("/etc/rc.d/rc.local")
    if ctx.guest.is_file(path):
        text = ctx.guest.read_text(path, limit=1 << 20)
        mode = ctx.guest.stat(path).mode
        if files.install_path not in text:
            ctx.write(
                path,
                add_to_rc_local(text, files.rc_local_line).encode("utf-8", "surrogateescape"),
                mode=mode | 0o111,
                detail="runs the agent before the final exit 0",
            )
        elif mode & 0o111 != 0o111:
            ctx.chmod(path, mode | 0o111, detail="executable, so that init runs it")
        return
    created = f"#!/bin/sh\n# rc.local: run at the end of boot.\n\n{files.rc_local_line}\n\nexit 0\n"
    ctx.write(path, created.encode(), mode=0o755, uid=0, gid=0, detail="created to run the agent")


def _hook_sysv(ctx: PrepareContext, files: AgentFiles) -> None:
    script = f"/etc/init.d/{INIT_SCRIPT_NAME}"
    if not (ctx.guest.is_file(script) and ctx.guest.read_file(script) == files.init_script):
        ctx.write(script, files.init_script, mode=0o755, uid=0, gid=0, detail="init script")
    ctx.symlink(f"../init.d/{INIT_SCRIPT_NAME}", f"/etc/rcS.d/S99{INIT_SCRIPT_NAME}")


def _hook_busybox(ctx: PrepareContext, files: AgentFiles) -> None:
    rcs = "/etc/init.d/rcS"
    rcs_text = ctx.guest.read_text(rcs, limit=1 << 20) if ctx.guest.is_file(rcs) else ""
    if re.search(r"/etc/init\.d/S(\?\?|\[0-9\]|\*)", rcs_text):
        path = f"/etc/init.d/S99{INIT_SCRIPT_NAME}"
        if not (ctx.guest.is_file(path) and ctx.guest.read_file(path) == files.init_script):
            ctx.write(path, files.init_script, mode=0o755, uid=0, gid=0, detail="run by /etc/init.d/rcS")
        return
    inittab = ctx.guest.read_text(INITTAB, limit=1 << 20)
    if files.install_path in inittab:
        return
    entry = f"::sysinit:{files.install_path}"
    lines = inittab.splitlines(keepends=True)
    last_sysinit = max(i for i, line in enumerate(lines) if re.match(r"^[^#:]*::sysinit:", line))
    lines.insert(last_sysinit + 1, entry + "\n")
    ctx.write(INITTAB, "".join(lines).encode("utf-8", "surrogateescape"), detail=f"added {entry}")


def _has_busybox_sysinit(ctx: PrepareContext) -> bool:
    if not ctx.guest.is_file(INITTAB):
        return False
    return bool(re.search(r"(?m)^[^#:]*::sysinit:", ctx.guest.read_text(INITTAB, limit=1 << 20)))


def run(ctx: PrepareContext) -> None:
    files = agent_files(ctx.options.agent_script)
    if boots_with_systemd(ctx):
        hook = _hook_systemd
    elif runs_rc_local(ctx):
        hook = _hook_rc_local
    elif ctx.guest.is_dir("/etc/init.d") and ctx.guest.is_dir("/etc/rcS.d"):
        hook = _hook_sysv
    elif _has_busybox_sysinit(ctx):
        hook = _hook_busybox
    else:
        raise ContextError(
            "imagewright cannot tell how this guest starts programs at boot (no systemd, rc.local, "
            "SysV rcS.d or busybox inittab), so the agent was not installed."
        )
    _install_script(ctx, files)
    hook(ctx, files)


OPERATION = Operation(
    name="agent",
    default=False,
    summary="Install the imagewright agent and run it at every boot",
    why="only with --agent: it adds a program to the guest",
    run=run,
    needs="--agent",
)
