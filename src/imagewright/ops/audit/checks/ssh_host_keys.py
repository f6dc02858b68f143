"""ssh-host-keys: the builder's SSH host keys; every clone would share them (and their private halves)."""

from __future__ import annotations

from collections.abc import Iterator

from imagewright.guest.bounded import GuestReader
from imagewright.ops.audit.model import AuditCheck, Leak, Severity

PATTERN = "/etc/ssh/ssh_host_*"


def run(reader: GuestReader) -> Iterator[Leak]:
    keys = reader.glob(PATTERN)
    found = reader.guest.stat_many(keys) if keys else {}
    for path in keys:
        info = found[path]
        if info is None or info.is_dir:
            continue
        yield Leak(path, "public SSH host key" if path.endswith(".pub") else "private SSH host key")


CHECK = AuditCheck(
    name="ssh-host-keys",
    severity=Severity.SECRET,
    summary="SSH host keys (/etc/ssh/ssh_host_*)",
    fixed_by="ssh-hostkeys",
    run=run,
    lists=("/etc/ssh",),
)
