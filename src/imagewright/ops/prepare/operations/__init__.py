"""The registry of prepare operations, in the order they run, and how a selection is read.

Default set (the safe set: nothing anyone needs to log in, nothing that is user data):

===================  =======  ==========================================================
operation            default  why
===================  =======  ==========================================================
ssh-hostkeys         yes      clones would share host identity and private keys
net-persistent       yes      a clone's new MAC would be eth1 while the config waits for eth0
net-hwaddr           yes      configuration bound to the old MAC never comes up on a clone
machine-id           yes      journald, DHCP client ids, D-Bus would collide between clones
random-seed          yes      clones would start their random pool from the same seed
logfiles             yes      the build machine's logs would ship in every copy
bash-history         yes      the builder's commands, secrets on command lines included
tmp                  yes      build leftovers; /var/tmp survives reboots
dhcp-leases          yes      clones would all ask for the original's address
package-cache        yes      dead weight, refilled on demand
passwd-backups       yes      old password hashes, also of removed accounts
cloud-init-state     yes      cloud-init would skip first-boot steps on clones
resolv-conf          --dns    only when asked; most clouds hand out DNS by DHCP
modules              --module only when asked (e.g. acpiphp for hot-plugged volumes)
boot-tuning          --boot-  only when asked (publish asks): GRUB timeout 0 + serial console,
                     tuning   cloud-init's datasource pinned, no DSA host key, the RSA one
                              after the boot, no wait-online
root-password        no       changes how people log in (console password images)
ssh-userdir          no       baked-in keys may be the only way in without key injection
agent                --agent  adds a program to the guest
===================  =======  ==========================================================

Left out of virt-sysprep's defaults, and why: user-account, fs-uuids and lvm-uuids (change
how the guest finds its disks and users), customize/script (not sysprep), and the
product-specific ones (abrt, kerberos, puppet, rhn, samba, sssd, yum-uuid ...) that a
private-cloud image rarely carries — ``tmp``, ``logfiles`` and ``package-cache`` cover most
of their files.
"""

from __future__ import annotations

from collections.abc import Sequence

from imagewright.errors import InvalidArgumentError
from imagewright.ops.prepare.model import PrepareOptions
from imagewright.ops.prepare.operations import (
    agent,
    bash_history,
    boot_tuning,
    cloud_init_state,
    dhcp_leases,
    logfiles,
    machine_id,
    modules,
    net_hwaddr,
    net_persistent,
    package_cache,
    passwd_backups,
    random_seed,
    resolv_conf,
    root_password,
    ssh_hostkeys,
    ssh_userdir,
    tmp_files,
)
from imagewright.ops.prepare.operations.base import Operation

#: Every operation, in the order they run (the agent last, after everything it might touch).
OPERATIONS: tuple[Operation, ...] = (
    ssh_hostkeys.OPERATION,
    net_persistent.OPERATION,
    net_hwaddr.OPERATION,
    machine_id.OPERATION,
    random_seed.OPERATION,
    logfiles.OPERATION,
    bash_history.OPERATION,
    tmp_files.OPERATION,
    dhcp_leases.OPERATION,
    package_cache.OPERATION,
    passwd_backups.OPERATION,
    cloud_init_state.OPERATION,
    resolv_conf.OPERATION,
    modules.OPERATION,
    boot_tuning.OPERATION,
    root_password.OPERATION,
    ssh_userdir.OPERATION,
    agent.OPERATION,
)
BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}
DEFAULTS: tuple[str, ...] = tuple(op.name for op in OPERATIONS if op.default)

#: Which option switches which operation on.
_OPTION_OPERATIONS = (
    ("--dns", "resolv-conf"),
    ("--module", "modules"),
    ("--boot-tuning", "boot-tuning"),
    ("--agent", "agent"),
)


def _check(name: str) -> str:
    if name not in BY_NAME:
        raise InvalidArgumentError(
            f"'{name}' is not a prepare operation; valid names are {', '.join(BY_NAME)} "
            "(and 'defaults', 'all')."
        )
    return name


def select(spec: Sequence[str] | None, options: PrepareOptions) -> list[Operation]:
    """The operations to run, in run order.

    ``spec`` items (comma lists are split): ``name`` adds, ``-name`` removes, ``defaults`` and
    ``all`` add those sets; a list that starts with a removal starts from the defaults.
    ``None`` means the defaults. ``--dns``, ``--module``, ``--boot-tuning`` and ``--agent`` add
    their operation unless the spec removes it; naming one of those without its option is an error.
    """
    items = [item.strip() for entry in (spec or ()) for item in entry.split(",") if item.strip()]
    chosen: list[str] = list(DEFAULTS) if spec is None or (items and items[0].startswith("-")) else []
    removed: set[str] = set()
    for item in items:
        if item in ("defaults", "default"):
            chosen += DEFAULTS
        elif item == "all":
            chosen += [op.name for op in OPERATIONS if op.needs is None]
        elif item.startswith("-"):
            name = _check(item[1:])
            removed.add(name)
            chosen = [n for n in chosen if n != name]
        else:
            chosen.append(_check(item))
    given = {
        "--dns": bool(options.dns),
        "--module": bool(options.modules),
        "--boot-tuning": options.boot_tuning,
        "--agent": options.agent,
    }
    for option, name in _OPTION_OPERATIONS:
        if given[option] and name not in removed:
            chosen.append(name)
        elif name in chosen and not given[option]:
            raise InvalidArgumentError(f"The operation {name} needs {option}.")
    wanted = set(chosen)
    return [op for op in OPERATIONS if op.name in wanted]


__all__ = ["BY_NAME", "DEFAULTS", "OPERATIONS", "Operation", "select"]
