"""The in-guest contextualization agent: a POSIX sh script shipped as package data.

``prepare --agent`` installs :func:`agent_script` as :data:`AGENT_INSTALL_PATH` inside an image
and hooks it into boot with :func:`systemd_unit` (guests with systemd), :data:`RC_LOCAL_LINE`
(before the final ``exit 0`` of ``/etc/rc.local``) or :func:`init_script` (SysV / busybox rcS).
At every boot the agent reads the instance's data from a config drive (``config-2``), a NoCloud
seed (``cidata``), an OpenNebula context CD (``CONTEXT``), a Wakame-vdc metadata drive
(``METADATA``) or the EC2 metadata service, applies hostname, SSH keys, network, root disk growth
and user-data, and ends with one console line that boot tests look for::

    imagewright-agent: ready instance-id=<id> hostname=<name> source=<kind>

The script's header documents what it applies and when (per instance or per boot), its
settings file (:data:`CONFIG_PATH`, see :func:`agent_config`) and its few test hooks.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from imagewright.errors import ImagewrightError, InvalidArgumentError

#: Where ``prepare --agent`` installs the script inside the guest.
AGENT_INSTALL_PATH = "/usr/local/sbin/imagewright-agent"
#: The systemd unit: name, and where it goes (enable = symlink from multi-user.target.wants/).
SYSTEMD_UNIT_NAME = "imagewright-agent.service"
SYSTEMD_UNIT_PATH = "/etc/systemd/system/imagewright-agent.service"
SYSTEMD_WANTS_LINK = "/etc/systemd/system/multi-user.target.wants/imagewright-agent.service"
#: The SysV init script (Debian LSB header; busybox rcS runs /etc/init.d/S?? scripts instead).
INIT_SCRIPT_PATH = "/etc/init.d/imagewright-agent"
#: The line ``prepare`` puts into /etc/rc.local before its final ``exit 0``.
RC_LOCAL_LINE = f"{AGENT_INSTALL_PATH} >/dev/console 2>&1 </dev/null || true"
#: The agent's settings (KEY=VALUE lines, parsed by the agent, never sourced).
CONFIG_PATH = "/etc/imagewright/agent.conf"
#: Per-instance state: STATE_DIR/<instance-id>/{user-data, user-data.log, user-data.status, sem/<step>}.
STATE_DIR = "/var/lib/imagewright-agent"
#: Everything the agent prints, appended at every boot.
LOG_PATH = "/var/log/imagewright-agent.log"
#: The start of the one line the agent prints when it is done.
READY_PREFIX = "imagewright-agent: ready"
#: Source names the ready line can show, in the order the agent tries them ("none" last).
SOURCES = ("configdrive", "nocloud", "opennebula", "wakame", "ec2")

_READY_LINE = re.compile(
    r"imagewright-agent: ready instance-id=(?P<instance_id>\S+) hostname=(?P<hostname>\S+)"
    r" source=(?P<source>configdrive|nocloud|opennebula|wakame|ec2|none)\b"
)
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


#: The agent's main source file; its ``#include`` lines name the parts joined into it.
AGENT_SOURCE = "imagewright-agent.sh"
#: ``#include PATH`` on a line of its own, PATH relative to the including file's directory.
_INCLUDE = re.compile(rb"^#include ([A-Za-z0-9._/-]+)\n", re.MULTILINE)
#: Parts nest one level in practice (main -> data.sh -> yaml.awk); more is a mistake in the tree.
_MAX_INCLUDE_DEPTH = 4


def _resource(name: str) -> bytes:
    try:
        return resources.files(__name__).joinpath(name).read_bytes()
    except OSError as err:
        raise ImagewrightError(
            f"The agent's source part {name} is missing from this installation ({err.strerror})."
        ) from None


def _joined(name: str, depth: int = 0) -> bytes:
    """``name`` with every ``#include`` line replaced by the (joined) part it names.

    An ``.awk`` part lands inside a single-quoted shell string, so it may hold no ``'``.
    """
    if depth > _MAX_INCLUDE_DEPTH:
        raise ImagewrightError(f"The agent's source parts include each other too deeply (at {name}).")
    base = posixpath.dirname(name)

    def include(match: re.Match[bytes]) -> bytes:
        part = posixpath.normpath(posixpath.join(base, match[1].decode("ascii")))
        body = _joined(part, depth + 1)
        if part.endswith(".awk") and b"'" in body:
            raise ImagewrightError(
                f"The agent's awk part {part} holds a single quote, which would end its shell string."
            )
        return body

    return _INCLUDE.sub(include, _resource(name))


@functools.cache
def agent_script() -> bytes:
    """The agent itself (POSIX sh), to be installed executable (0755) at AGENT_INSTALL_PATH.

    One file, joined from :data:`AGENT_SOURCE` and the parts under ``parts/`` (shell pieces by
    topic, and the awk programs that become shell strings) — guests may have nothing but
    busybox sh, so what is installed never sources anything.
    """
    return _joined(AGENT_SOURCE)


def systemd_unit() -> bytes:
    """The oneshot unit that runs the agent early at boot (before network-pre.target and sshd)."""
    return _resource("imagewright-agent.service")


def init_script() -> bytes:
    """A SysV init script (LSB header) for guests without systemd; runs the agent on ``start``."""
    return (
        "#!/bin/sh\n"
        "### BEGIN INIT INFO\n"
        "# Provides:          imagewright-agent\n"
        "# Required-Start:    $local_fs\n"
        "# Required-Stop:\n"
        "# X-Start-Before:    networking ssh dropbear\n"
        "# Default-Start:     S\n"
        "# Default-Stop:\n"
        "# Short-Description: imagewright contextualization agent\n"
        "# Description:       Hostname, SSH keys, network, root disk growth and user-data\n"
        "#                    from the cloud's metadata; prints a ready line on the console.\n"
        "### END INIT INFO\n"
        'case "${1:-start}" in\n'
        "    start)\n"
        "        if [ -w /dev/console ]; then\n"
        f"            {AGENT_INSTALL_PATH} >/dev/console 2>&1 </dev/null\n"
        "        else\n"
        f"            {AGENT_INSTALL_PATH} </dev/null\n"
        "        fi\n"
        "        ;;\n"
        "    stop | status | restart | reload | force-reload) ;;\n"
        '    *) echo "Usage: $0 start" >&2; exit 3 ;;\n'
        "esac\n"
        "exit 0\n"
    ).encode()


def agent_config(
    *,
    default_user: str | None = None,
    sources: Sequence[str] | None = None,
    grow_root: bool = True,
    host_keys: str = "per-instance",
    dhcp: bool = True,
) -> bytes:
    """The text of CONFIG_PATH for these settings (the agent's defaults need no file at all).

    ``default_user`` receives the SSH keys instead of root (e.g. ``debian``); ``sources`` limits
    and orders the sources tried; ``host_keys`` is ``per-instance`` (new keys for every new
    instance-id, as cloud-init does) or ``missing`` (only create keys that do not exist).
    """
    lines = ["# imagewright-agent settings (read by the agent at boot, never sourced)"]
    if default_user is not None:
        if not _USER_NAME.fullmatch(default_user):
            raise InvalidArgumentError(f"'{default_user}' is not a valid user name for the agent.")
        lines.append(f"DEFAULT_USER={default_user}")
    if sources is not None:
        unknown = [s for s in sources if s not in SOURCES]
        if unknown or not sources:
            raise InvalidArgumentError(
                f"Agent sources must be among {', '.join(SOURCES)}; got {', '.join(sources) or 'none'}."
            )
        lines.append(f'SOURCES="{" ".join(sources)}"')
    if host_keys not in ("per-instance", "missing"):
        raise InvalidArgumentError(f"host_keys must be 'per-instance' or 'missing', not '{host_keys}'.")
    lines.append(f"GROW_ROOT={'yes' if grow_root else 'no'}")
    lines.append(f"HOST_KEYS={host_keys}")
    lines.append(f"DHCP={'yes' if dhcp else 'no'}")
    return ("\n".join(lines) + "\n").encode()


def instance_state_dir(instance_id: str) -> str:
    """The guest path of an instance's state directory, with the agent's own id clean-up.

    The agent keeps ``[A-Za-z0-9._-]`` and turns every other byte into ``_``, drops leading
    dots and keeps 128 characters (``clean_instance_id`` in the script).
    """
    cleaned = re.sub(rb"[^A-Za-z0-9._-]", b"_", instance_id.replace("\r", "").replace("\n", "").encode())
    cleaned = cleaned.lstrip(b".")[:128]
    return f"{STATE_DIR}/{cleaned.decode('ascii')}"


@dataclass(frozen=True)
class ReadyLine:
    """What the agent reported at the end of a boot."""

    instance_id: str
    hostname: str
    source: str


def find_ready_line(console: str) -> ReadyLine | None:
    """The last ready line in console output (serial logs interleave kernel messages), or None."""
    found = None
    for match in _READY_LINE.finditer(console):
        found = ReadyLine(match["instance_id"], match["hostname"], match["source"])
    return found


__all__ = [
    "AGENT_INSTALL_PATH",
    "CONFIG_PATH",
    "INIT_SCRIPT_PATH",
    "LOG_PATH",
    "RC_LOCAL_LINE",
    "READY_PREFIX",
    "SOURCES",
    "STATE_DIR",
    "SYSTEMD_UNIT_NAME",
    "SYSTEMD_UNIT_PATH",
    "SYSTEMD_WANTS_LINK",
    "ReadyLine",
    "agent_config",
    "agent_script",
    "find_ready_line",
    "init_script",
    "instance_state_dir",
    "systemd_unit",
]
