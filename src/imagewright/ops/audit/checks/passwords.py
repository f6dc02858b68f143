"""Passwords: root's and users' password hashes in /etc/shadow (their presence only, never the
hash), empty passwords, and account-file backups with old hashes.

Source: shadow(5): ``name:password:...``; a password starting with '!' or '*' is locked, an
empty one lets anyone in without a password. NOTE: /etc/shadow is read with a bound and each
line only split; nothing of the password field but its kind reaches the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from imagewright.guest.bounded import GuestReader, lines
from imagewright.ops.audit.model import AuditCheck, Leak, Severity
from imagewright.ops.prepare.operations.passwd_backups import BACKUPS
from imagewright.ops.prepare.operations.root_password import SHADOW

MAX_SHADOW = 4 * 1024 * 1024
#: An account name as shadow-utils accepts it (useradd(8), NAME_REGEX relaxed: upper case too);
#: a line whose first field is not one is garbage, not an account.
_ACCOUNT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
MAX_ACCOUNTS = 100_000


def _accounts(reader: GuestReader) -> Iterator[tuple[str, str]]:
    """``(account, "hash" | "empty")`` for every account that can log in by password."""
    text = reader.text(SHADOW, MAX_SHADOW, "a shadow file")
    if text is None:
        return
    for line in lines(text, MAX_ACCOUNTS):
        fields = line.split(":")
        if len(fields) < 2 or not _ACCOUNT.match(fields[0]):
            continue
        password = fields[1]
        if password.startswith(("!", "*")):
            continue
        yield fields[0], "empty" if password == "" else "hash"


def _leak(name: str, kind: str) -> Leak:
    if kind == "empty":
        return Leak(SHADOW, f"{name} has an empty password: anyone can log in as {name} without one")
    return Leak(SHADOW, f"{name} has a password hash (not shown)")


def run_root(reader: GuestReader) -> Iterator[Leak]:
    for name, kind in _accounts(reader):
        if name == "root":
            yield _leak(name, kind)


def run_users(reader: GuestReader) -> Iterator[Leak]:
    for name, kind in _accounts(reader):
        if name != "root":
            yield _leak(name, kind)


def run_backups(reader: GuestReader) -> Iterator[Leak]:
    found = reader.guest.stat_many(list(BACKUPS))
    for path in BACKUPS:
        info = found[path]
        if info is not None and not info.is_dir:
            yield Leak(path, "backup of an account file (old password hashes, removed accounts)")


ROOT_CHECK = AuditCheck(
    name="root-password",
    severity=Severity.SECRET,
    summary="root can log in with a password (hash present, or empty)",
    fixed_by="root-password",
    run=run_root,
    looks_at=(SHADOW,),
)
USERS_CHECK = AuditCheck(
    name="user-passwords",
    severity=Severity.SECRET,
    summary="other accounts that can log in with a password",
    fixed_by=None,
    run=run_users,
)
BACKUPS_CHECK = AuditCheck(
    name="passwd-backups",
    severity=Severity.SECRET,
    summary="/etc/shadow- and other account-file backups",
    fixed_by="passwd-backups",
    run=run_backups,
    looks_at=BACKUPS,
)
