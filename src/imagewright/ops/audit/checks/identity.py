"""Identity a clone must not inherit: machine-id, the saved random seed, cloud-init's instance state."""

from __future__ import annotations

from collections.abc import Iterator

from imagewright.guest.bounded import GuestReader
from imagewright.guest.model import join
from imagewright.ops.audit.model import AuditCheck, Leak, Severity
from imagewright.ops.prepare.operations.cloud_init_state import STATE_DIRECTORIES
from imagewright.ops.prepare.operations.random_seed import SEEDS

MACHINE_ID = "/etc/machine-id"
DBUS_MACHINE_ID = "/var/lib/dbus/machine-id"
#: What systemd writes to /etc/machine-id to mean "not set yet" (machine-id(5)).
UNSET = {b"", b"uninitialized"}


def run_machine_id(reader: GuestReader) -> Iterator[Leak]:
    found = reader.guest.stat_many([MACHINE_ID, DBUS_MACHINE_ID])
    info = found[MACHINE_ID]
    if info is not None and info.is_file and info.size > 0:
        content = reader.read(MACHINE_ID, 4096, "a machine-id")
        if content is None or content.strip() not in UNSET:
            yield Leak(MACHINE_ID, "machine-id is set: every clone would have the same one")
    dbus = found[DBUS_MACHINE_ID]
    if dbus is not None and dbus.is_file:
        yield Leak(DBUS_MACHINE_ID, "D-Bus machine-id is set")


def run_random_seed(reader: GuestReader) -> Iterator[Leak]:
    found = reader.guest.stat_many(list(SEEDS))
    for path in SEEDS:
        info = found[path]
        if info is not None and info.is_file:
            yield Leak(path, "saved random seed")


def run_cloud_init_state(reader: GuestReader) -> Iterator[Leak]:
    if reader.exists("/var/lib/cloud/instance"):
        yield Leak("/var/lib/cloud/instance", "cloud-init's record of the instance the image ran as")
    directories = reader.guest.existing_dirs(STATE_DIRECTORIES)
    listings = reader.guest.listdir_many(directories) if directories else {}
    for directory in directories:
        for entry in sorted(listings[directory], key=lambda e: e.name):
            yield Leak(join(directory, entry.name), "cloud-init instance state")


MACHINE_ID_CHECK = AuditCheck(
    name="machine-id",
    severity=Severity.IDENTITY,
    summary="a set /etc/machine-id or /var/lib/dbus/machine-id",
    fixed_by="machine-id",
    run=run_machine_id,
    looks_at=(MACHINE_ID, DBUS_MACHINE_ID),
)
RANDOM_SEED_CHECK = AuditCheck(
    name="random-seed",
    severity=Severity.IDENTITY,
    summary="a saved random seed",
    fixed_by="random-seed",
    run=run_random_seed,
    looks_at=SEEDS,
)
CLOUD_INIT_CHECK = AuditCheck(
    name="cloud-init-state",
    severity=Severity.IDENTITY,
    summary="cloud-init's state of an earlier instance (/var/lib/cloud)",
    fixed_by="cloud-init-state",
    run=run_cloud_init_state,
    looks_at=("/var/lib/cloud/instance",),
    lists=STATE_DIRECTORIES,
)
