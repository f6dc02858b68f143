"""``inspect --audit``: what an image would leak if it were published as it is.

    from imagewright.ops.audit import audit_guest
    with open_guest("disk.qcow2") as guest:
        for finding in audit_guest(guest).findings:
            print(finding.severity, finding.path, finding.detail, finding.remedy)

Each check (``checks/``) looks at the guest read-only and reports what it finds by file, with
the ``prepare`` operation that fixes it; secrets are described, never shown (a password hash
is "present", a key is its type and comment). A check that cannot finish on a hostile guest
(a walk over more entries than a guest can have, a link loop) leaves a note; the others run.
"""

from __future__ import annotations

from itertools import islice

from imagewright.errors import GuestFilesystemError, InvalidArgumentError
from imagewright.guest.base import GuestFS
from imagewright.guest.bounded import GuestReader
from imagewright.ops.audit.checks import BY_NAME, CHECKS
from imagewright.ops.audit.model import AuditCheck, AuditReport, Finding, RootAudit, Severity

#: The most findings one check reports on one filesystem; more are summed up in one line.
MAX_FINDINGS_PER_CHECK = 200


def audit_guest(guest: GuestFS, checks: tuple[AuditCheck, ...] = CHECKS) -> RootAudit:
    """Run ``checks`` on one root filesystem (opened read-only or not; nothing is written)."""
    reader = GuestReader(guest)
    reader.prefetch(
        [path for check in checks for path in check.looks_at], [d for check in checks for d in check.lists]
    )
    names = [name for check in checks for name in check.in_homes]
    if names:
        homes = ["/root", *reader.glob("/home/*")]
        reader.prefetch([f"{home}/{name}" for home in homes for name in names])
    result = RootAudit(filesystem=guest.description)
    for check in checks:
        try:
            leaks = list(islice(check.run(reader), MAX_FINDINGS_PER_CHECK + 1))
        except (GuestFilesystemError, InvalidArgumentError) as err:
            reader.note(f"the {check.name} check could not finish: {err}")
            result.incomplete.append(check.name)
            continue
        for leak in leaks[:MAX_FINDINGS_PER_CHECK]:
            result.findings.append(
                Finding(check.name, check.severity, leak.path, leak.detail, check.fixed_by)
            )
        if len(leaks) > MAX_FINDINGS_PER_CHECK:
            reader.note(
                f"the {check.name} check found more than {MAX_FINDINGS_PER_CHECK} files; "
                "the rest are not listed"
            )
    result.notes = reader.notes
    return result


__all__ = ["BY_NAME", "CHECKS", "AuditReport", "Finding", "RootAudit", "Severity", "audit_guest"]
