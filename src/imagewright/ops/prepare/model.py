"""What ``prepare`` takes and reports: options, one change, one operation's result, the report."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from imagewright.errors import InvalidArgumentError

#: glibc reads at most three ``nameserver`` lines (MAXNS in resolv.h); more are ignored.
MAX_NAMESERVERS = 3
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: What ``--datasource`` names (``operations/boot_tuning.py`` maps them to cloud-init's).
BOOT_DATASOURCES = ("ec2", "nocloud", "configdrive", "opennebula")
#: ``--datasource`` when the medium is not known (``publish``'s default): the media imagewright
#: makes are found by their label when attached, else the metadata service (see boot_tuning.py).
ANY_DATASOURCE = "nocloud,configdrive,ec2"


def datasource_kinds(text: str) -> tuple[str, ...]:
    """The kinds a ``--datasource`` value names, in order (``ec2`` or ``nocloud,ec2``)."""
    kinds = tuple(part.strip().lower() for part in text.split(","))
    for kind in kinds:
        if kind not in BOOT_DATASOURCES:
            raise InvalidArgumentError(
                f"'{kind[:32]}' is not a datasource; use one of {', '.join(BOOT_DATASOURCES)} "
                "(or several, separated by commas)."
            )
    if len(set(kinds)) != len(kinds):
        raise InvalidArgumentError(f"--datasource names a datasource twice in '{text[:64]}'.")
    return kinds


#: Verbs of the human report, for changes made and for changes a dry run would make.
VERBS: dict[str, tuple[str, str]] = {
    "delete": ("deleted", "would delete"),
    "truncate": ("emptied", "would empty"),
    "write": ("wrote", "would write"),
    "edit": ("edited", "would edit"),
    "link": ("linked", "would link"),
    "mkdir": ("created", "would create"),
    "chmod": ("made executable", "would make executable"),
}


@dataclass(frozen=True)
class PrepareOptions:
    """Values some operations need; the defaults need none of them."""

    #: Name servers for ``resolv-conf`` (IPv4 or IPv6 addresses).
    dns: tuple[str, ...] = ()
    #: Kernel modules for ``modules`` (e.g. ``acpiphp`` for hot-plugged volumes).
    modules: tuple[str, ...] = ()
    #: Install and hook the in-guest agent (adds the ``agent`` operation).
    agent: bool = False
    #: The agent script to install; None takes ``imagewright.agent.agent_script()``.
    agent_script: bytes | None = None
    #: Partition to prepare; None finds the one holding /etc.
    partition: int | None = None
    #: Tune the first boot (adds the ``boot-tuning`` operation).
    boot_tuning: bool = False
    #: The cloud-init datasource ``boot-tuning`` pins (``ec2``, ``nocloud``, ``configdrive``,
    #: ``opennebula``), or several in order (``nocloud,configdrive,ec2``: ``ANY_DATASOURCE``);
    #: None leaves cloud-init's list alone.
    boot_datasource: str | None = None

    def validate(self) -> None:
        """InvalidArgumentError for a bad address or module name, before the image is opened."""
        for server in self.dns:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise InvalidArgumentError(f"'{server}' is not an IPv4 or IPv6 address for --dns.") from None
        if len(self.dns) > MAX_NAMESERVERS:
            raise InvalidArgumentError(
                f"resolv.conf uses at most {MAX_NAMESERVERS} name servers; {len(self.dns)} were given."
            )
        if self.boot_datasource is not None:
            datasource_kinds(self.boot_datasource)
        for module in self.modules:
            if not _MODULE_NAME.match(module):
                raise InvalidArgumentError(f"'{module}' is not a kernel module name for --module.")


@dataclass(frozen=True)
class Change:
    """One file an operation changed (or, in a dry run, would change)."""

    action: str
    path: str
    detail: str = ""

    def describe(self, dry_run: bool) -> str:
        done, would = VERBS.get(self.action, (self.action, f"would {self.action}"))
        text = f"{would if dry_run else done} {self.path}"
        return f"{text} ({self.detail})" if self.detail else text

    def to_dict(self) -> dict[str, str]:
        return {"action": self.action, "path": self.path, "detail": self.detail}


@dataclass
class OperationResult:
    name: str
    changes: list[Change] = field(default_factory=list)
    #: Why the operation did nothing, when that is worth saying ("the guest has no udev").
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "changes": [c.to_dict() for c in self.changes], "note": self.note}


@dataclass
class PrepareReport:
    image: str
    format: str
    filesystem: str
    dry_run: bool
    operations: list[OperationResult]
    seconds: float = 0.0

    @property
    def change_count(self) -> int:
        return sum(len(op.changes) for op in self.operations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "format": self.format,
            "filesystem": self.filesystem,
            "dry_run": self.dry_run,
            "changes": self.change_count,
            "seconds": round(self.seconds, 3),
            "operations": [op.to_dict() for op in self.operations],
        }
