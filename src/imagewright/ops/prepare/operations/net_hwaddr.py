"""net-hwaddr: remove MAC addresses baked into network configuration.

- ``ifcfg-*`` (RHEL family ``/etc/sysconfig/network-scripts``, SUSE ``/etc/sysconfig/network``):
  ``HWADDR=``, ``MACADDR=`` and ``LLADDR=`` lines. With HWADDR set, the RHEL network scripts
  refuse to bring the interface up on a NIC with another MAC.
- netplan (``/etc/netplan/*.yaml``): ``macaddress:`` keys. A ``match:`` left empty is dropped,
  and with it a ``set-name:`` of the same interface, which netplan rejects without a match.
- NetworkManager keyfiles (``/etc/NetworkManager/system-connections/*``): ``mac-address=`` and
  ``cloned-mac-address=`` lines holding an address (``cloned-mac-address=random`` and the
  other keywords stay). A profile bound to the old MAC never activates on a clone.

Files are edited line by line, so comments and layout stay; owner and mode stay too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

IFCFG_PATTERNS = ("/etc/sysconfig/network-scripts/ifcfg-*", "/etc/sysconfig/network/ifcfg-*")
NETPLAN_PATTERNS = ("/etc/netplan/*.yaml", "/etc/netplan/*.yml")
NM_PATTERNS = ("/etc/NetworkManager/system-connections/*",)

_IFCFG_MAC = re.compile(r"^\s*(?:export\s+)?(HWADDR|MACADDR|LLADDR)\s*=")
_MAC = r"[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}"
_NM_MAC = re.compile(rf"^\s*(?:cloned-)?mac-address\s*=\s*{_MAC}\s*$")
_YAML_MAC = re.compile(r"^macaddress\s*:")
_YAML_MATCH = re.compile(r"^match\s*:\s*(?:#.*)?$")
_YAML_FLOW_MATCH = re.compile(r"^match\s*:\s*\{(?P<body>[^{}]*)\}\s*(?:#.*)?$")
_YAML_SET_NAME = re.compile(r"^set-name\s*:")


def strip_ifcfg(text: str) -> tuple[str, list[str]]:
    return _drop_lines(text, lambda line: bool(_IFCFG_MAC.match(line)))


def strip_keyfile(text: str) -> tuple[str, list[str]]:
    return _drop_lines(text, lambda line: bool(_NM_MAC.match(line)))


def _drop_lines(text: str, drop: Callable[[str], bool]) -> tuple[str, list[str]]:
    kept: list[str] = []
    removed: list[str] = []
    for line in text.splitlines(keepends=True):
        if drop(line):
            removed.append(line.strip())
        else:
            kept.append(line)
    return "".join(kept), removed


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _meaningful(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def strip_netplan(text: str) -> tuple[str, list[str]]:
    """``text`` without MAC addresses (see the module docstring), and the lines removed."""
    lines = text.splitlines(keepends=True)
    drop: set[int] = set()
    removed: list[str] = []
    emptied_matches: list[int] = []  # indices of match: lines dropped as a whole
    for index, line in enumerate(lines):
        stripped = line.strip()
        if _YAML_MAC.match(stripped):
            drop.add(index)
            removed.append(stripped)
            continue
        flow = _YAML_FLOW_MATCH.match(stripped)
        if flow and "macaddress" in flow.group("body"):
            keys = [k.strip() for k in flow.group("body").split(",") if k.strip()]
            rest = [k for k in keys if not k.startswith("macaddress")]
            removed.append(stripped)
            if rest:
                lines[index] = " " * _indent(line) + "match: {" + ", ".join(rest) + "}\n"
            else:
                drop.add(index)
                emptied_matches.append(index)
    for index, line in enumerate(lines):
        if index in drop or not _YAML_MATCH.match(line.strip()):
            continue
        body = _block(lines, index)
        # Only a match that lost its macaddress and has nothing else left goes.
        if any(i in drop for i in body) and all(i in drop or not _meaningful(lines[i]) for i in body):
            drop.add(index)
            drop.update(i for i in body if _meaningful(lines[i]) or lines[i].strip().startswith("#"))
            emptied_matches.append(index)
    for index in emptied_matches:
        level = _indent(lines[index])
        for sibling in _siblings(lines, index, level):
            if _YAML_SET_NAME.match(lines[sibling].strip()) and sibling not in drop:
                drop.add(sibling)
                removed.append(lines[sibling].strip())
    return "".join(line for i, line in enumerate(lines) if i not in drop), removed


def _block(lines: list[str], index: int) -> list[int]:
    """Indices of the lines nested under the mapping key at ``index``."""
    level = _indent(lines[index])
    body: list[int] = []
    for i in range(index + 1, len(lines)):
        if _meaningful(lines[i]) and _indent(lines[i]) <= level:
            break
        body.append(i)
    while body and not lines[body[-1]].strip():
        body.pop()  # trailing blank lines belong to what follows
    return body


def _siblings(lines: list[str], index: int, level: int) -> list[int]:
    """Indices of the keys at ``level`` in the same mapping as the key at ``index``."""
    result: list[int] = []
    for step in (-1, 1):
        i = index + step
        while 0 <= i < len(lines):
            if _meaningful(lines[i]):
                indent = _indent(lines[i])
                if indent < level:
                    break
                if indent == level:
                    result.append(i)
            i += step
    return result


def _edit(
    ctx: PrepareContext, patterns: tuple[str, ...], strip: Callable[[str], tuple[str, list[str]]]
) -> None:
    for pattern in patterns:
        for path in ctx.guest.glob(pattern):
            found = ctx.guest.lstat_or_none(path)
            if found is None or not found.is_file:
                continue
            text = ctx.guest.read_text(path)
            edited, removed = strip(text)
            if removed:
                ctx.write(
                    path, edited.encode("utf-8", "surrogateescape"), detail="removed " + "; ".join(removed)
                )


def run(ctx: PrepareContext) -> None:
    _edit(ctx, IFCFG_PATTERNS, strip_ifcfg)
    _edit(ctx, NETPLAN_PATTERNS, strip_netplan)
    _edit(ctx, NM_PATTERNS, strip_keyfile)


OPERATION = Operation(
    name="net-hwaddr",
    default=True,
    summary="Remove MAC addresses from ifcfg-*, netplan and NetworkManager connection files",
    why="a configuration bound to the original MAC does not come up on a clone's new NIC",
    run=run,
)
