"""shell-histories: non-empty shell histories of root and users (what the builder typed)."""

from __future__ import annotations

from collections.abc import Iterator

from imagewright.guest.bounded import GuestReader
from imagewright.ops.audit.checks.authorized_keys import homes
from imagewright.ops.audit.model import AuditCheck, Leak, Severity
from imagewright.ops.prepare.operations.bash_history import HISTORIES

#: Histories no prepare operation removes (yet).
OTHER_HISTORIES = (".zsh_history", ".sh_history", ".python_history", ".mysql_history", ".psql_history")


def _histories(reader: GuestReader, names: tuple[str, ...]) -> Iterator[Leak]:
    candidates = [f"{home}/{name}" for home in homes(reader) for name in names]
    found = reader.guest.stat_many(candidates)
    for path in candidates:
        info = found[path]
        if info is not None and info.is_file and info.size > 0:
            yield Leak(path, f"shell history, {info.size} bytes")


def run(reader: GuestReader) -> Iterator[Leak]:
    return _histories(reader, HISTORIES)


def run_others(reader: GuestReader) -> Iterator[Leak]:
    return _histories(reader, OTHER_HISTORIES)


CHECK = AuditCheck(
    name="shell-histories",
    severity=Severity.SECRET,
    summary="non-empty .bash_history / .ash_history of root and users",
    fixed_by="bash-history",
    run=run,
    in_homes=HISTORIES,
)
OTHER_CHECK = AuditCheck(
    name="other-histories",
    severity=Severity.SECRET,
    summary="other non-empty histories (zsh, sh, python, mysql, psql)",
    fixed_by=None,
    run=run_others,
    in_homes=OTHER_HISTORIES,
)
