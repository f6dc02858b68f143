"""Network identity: MAC addresses in network configuration, udev's persistent names, DHCP leases.

The MAC lines are found by the very functions ``prepare``'s net-hwaddr operation edits with,
so the audit flags exactly what that operation removes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from imagewright.guest.bounded import GuestReader
from imagewright.ops.audit.model import AuditCheck, Leak, Severity
from imagewright.ops.prepare.operations import dhcp_leases, net_hwaddr
from imagewright.ops.prepare.operations.net_persistent import PERSISTENT_RULES

MAX_CONFIG = 1024 * 1024

_EDITORS: tuple[tuple[tuple[str, ...], Callable[[str], tuple[str, list[str]]]], ...] = (
    (net_hwaddr.IFCFG_PATTERNS, net_hwaddr.strip_ifcfg),
    (net_hwaddr.NETPLAN_PATTERNS, net_hwaddr.strip_netplan),
    (net_hwaddr.NM_PATTERNS, net_hwaddr.strip_keyfile),
)


def run_mac(reader: GuestReader) -> Iterator[Leak]:
    for patterns, strip in _EDITORS:
        for pattern in patterns:
            for path in reader.glob(pattern):
                info = reader.guest.lstat_or_none(path)
                if info is None or not info.is_file:
                    continue
                text = reader.text(path, MAX_CONFIG, "a network configuration")
                if text is None:
                    continue
                _, removed = strip(text)
                if removed:
                    yield Leak(path, "MAC address in network configuration: " + "; ".join(removed)[:300])


def run_persistent(reader: GuestReader) -> Iterator[Leak]:
    info = reader.guest.lstat_or_none(PERSISTENT_RULES)
    if info is not None and info.is_file and info.size > 0:
        yield Leak(PERSISTENT_RULES, "udev names interfaces by the builder's MAC addresses")


def run_leases(reader: GuestReader) -> Iterator[Leak]:
    directories = reader.guest.existing_dirs(dhcp_leases.LEASE_DIRECTORIES)
    listings = reader.guest.listdir_many(directories) if directories else {}
    for directory in directories:
        for entry in sorted(listings[directory], key=lambda e: e.name):
            yield Leak(f"{directory}/{entry.name}", "DHCP client state (leases)")
    leases = [path for pattern in dhcp_leases.LEASE_PATTERNS for path in reader.glob(pattern)]
    found = reader.guest.stat_many(leases) if leases else {}
    for path in leases:
        info = found[path]
        if info is not None and not info.is_dir:
            yield Leak(path, "DHCP lease")


MAC_CHECK = AuditCheck(
    name="mac-addresses",
    severity=Severity.IDENTITY,
    summary="MAC addresses in ifcfg, netplan and NetworkManager files",
    fixed_by="net-hwaddr",
    run=run_mac,
    lists=tuple(p.rpartition("/")[0] for patterns, _ in _EDITORS for p in patterns),
)
PERSISTENT_CHECK = AuditCheck(
    name="persistent-net-rules",
    severity=Severity.IDENTITY,
    summary="udev's 70-persistent-net.rules with the builder's MACs",
    fixed_by="net-persistent",
    run=run_persistent,
    looks_at=(PERSISTENT_RULES,),
)
LEASES_CHECK = AuditCheck(
    name="dhcp-leases",
    severity=Severity.IDENTITY,
    summary="DHCP leases",
    fixed_by="dhcp-leases",
    run=run_leases,
    lists=(*dhcp_leases.LEASE_DIRECTORIES, *(p.rpartition("/")[0] for p in dhcp_leases.LEASE_PATTERNS)),
)
