"""What the publish-readiness audit says: findings, each naming a file and what fixes it.

A finding never holds a secret itself: a password hash is "present", a key is its type and
comment, a history is its size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from imagewright.guest.bounded import GuestReader


class Severity(StrEnum):
    #: Something that lets others in or tells them what they must not know (keys, hashes, histories).
    SECRET = "secret"  # noqa: S105 - a severity name, not a password
    #: What makes every clone the same machine (machine-id, MAC-bound config, leases, instance state).
    IDENTITY = "identity"
    #: The build's leftovers (logs, caches, temporary files).
    RESIDUE = "residue"


@dataclass(frozen=True)
class Leak:
    """What a check found: the guest path and what is there (never the secret itself)."""

    path: str
    detail: str


@dataclass(frozen=True)
class AuditCheck:
    """One check: a module-level record, as prepare's operations are."""

    name: str
    severity: Severity
    #: One line for the report's legend.
    summary: str
    #: The prepare operation that fixes what this check finds; None when none does.
    fixed_by: str | None
    run: Callable[[GuestReader], Iterable[Leak]]
    #: Paths the check looks at and directories it lists: looked up for all checks at once.
    looks_at: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()
    #: Names it looks for in every home directory (/root and /home/*).
    in_homes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    path: str
    detail: str
    fixed_by: str | None

    @property
    def remedy(self) -> str:
        if self.fixed_by is None:
            return "no prepare operation; fix it in the guest"
        return f"imagewright prepare --operations {self.fixed_by}"


@dataclass
class RootAudit:
    """The audit of one root filesystem."""

    filesystem: str
    findings: list[Finding] = field(default_factory=list)
    #: The checks that could not finish (a hostile tree): what they would find is unknown.
    incomplete: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "filesystem": self.filesystem,
            "findings": [asdict(f) | {"remedy": f.remedy} for f in self.findings],
            "incomplete": list(self.incomplete),
            "notes": list(self.notes),
        }


@dataclass
class AuditReport:
    roots: list[RootAudit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [finding for root in self.roots for finding in root.findings]

    @property
    def clean(self) -> bool:
        """Nothing would leak: something was audited, every check finished, none found anything."""
        return bool(self.roots) and not self.findings and not any(root.incomplete for root in self.roots)

    def left_after(self, operations: set[str]) -> list[Finding]:
        """The findings that running these prepare operations would not fix."""
        return [f for f in self.findings if f.fixed_by not in operations]

    @property
    def secrets(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.SECRET]

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "counts": {s.value: sum(f.severity is s for f in self.findings) for s in Severity},
            "roots": [root.to_dict() for root in self.roots],
            "notes": list(self.notes),
        }
