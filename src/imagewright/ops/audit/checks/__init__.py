"""The audit checks, in the order they are reported (secrets first).

One module per concern, each with module-level ``AuditCheck`` records (the shape of prepare's
operations); a check whose finding a prepare operation fixes names that operation and finds
what it would change by that operation's own patterns.
"""

from __future__ import annotations

from imagewright.ops.audit.checks import (
    authorized_keys,
    histories,
    identity,
    network,
    passwords,
    residue,
    ssh_host_keys,
)
from imagewright.ops.audit.model import AuditCheck

CHECKS: tuple[AuditCheck, ...] = (
    ssh_host_keys.CHECK,
    authorized_keys.CHECK,
    histories.CHECK,
    histories.OTHER_CHECK,
    passwords.ROOT_CHECK,
    passwords.USERS_CHECK,
    passwords.BACKUPS_CHECK,
    identity.MACHINE_ID_CHECK,
    identity.RANDOM_SEED_CHECK,
    identity.CLOUD_INIT_CHECK,
    network.MAC_CHECK,
    network.PERSISTENT_CHECK,
    network.LEASES_CHECK,
    residue.LOGS_CHECK,
    residue.PACKAGE_CACHE_CHECK,
    residue.TMP_CHECK,
)
BY_NAME: dict[str, AuditCheck] = {check.name: check for check in CHECKS}
