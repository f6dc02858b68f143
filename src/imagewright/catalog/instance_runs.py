"""Instance runs in the catalog: what ``imagewright run`` started, where, and its state.

One row per instance that was started under QEMU (``models.InstanceRun``). The launching CLI
writes it ``starting``; the instance's supervisor (``compute.supervisor``) turns it ``running``
with QEMU's pid, and ``stopped`` (or ``failed``) when QEMU ends; ``stop`` and ``rm`` write what
they did. The row never changes what the metadata service serves (that is the ``instances``
row), so these writes do not raise the instances change counter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from imagewright.catalog.accounts import utcnow
from imagewright.catalog.models import InstanceRun
from imagewright.errors import NotFoundError

STATES = ("starting", "running", "stopped", "failed")


@dataclass(frozen=True)
class RunStart:
    """What the launching CLI records before it starts the supervisor."""

    instance_id: str
    host: str
    accelerator: str
    accelerator_reason: str
    directory: str
    base_path: str
    base_format: str
    context: str
    port_forwards: Sequence[tuple[int, int]] = ()
    cpus: int = 1
    memory_mib: int = 512
    firmware: str = "bios"
    secure_boot: bool = False
    firmware_reason: str = ""


def record_start(session: Session, start: RunStart) -> InstanceRun:
    now = utcnow()
    run = InstanceRun(
        instance_id=start.instance_id,
        state="starting",
        host=start.host,
        accelerator=start.accelerator,
        accelerator_reason=start.accelerator_reason,
        directory=start.directory,
        base_path=start.base_path,
        base_format=start.base_format,
        context=start.context,
        port_forwards=json.dumps([list(pair) for pair in start.port_forwards]),
        cpus=start.cpus,
        memory_mib=start.memory_mib,
        firmware=start.firmware,
        secure_boot=start.secure_boot,
        firmware_reason=start.firmware_reason,
        started_at=now,
        updated_at=now,
    )
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, instance_id: str) -> InstanceRun:
    run = session.get(InstanceRun, instance_id) if len(instance_id) <= 32 else None
    if run is None:
        raise NotFoundError(f"The instance {instance_id[:64]} was never started with 'imagewright run'.")
    return run


def find_run(session: Session, instance_id: str) -> InstanceRun | None:
    return session.get(InstanceRun, instance_id) if len(instance_id) <= 32 else None


def list_runs(session: Session) -> list[InstanceRun]:
    return list(
        session.scalars(select(InstanceRun).order_by(InstanceRun.started_at, InstanceRun.instance_id))
    )


def mark_running(session: Session, instance_id: str, supervisor_pid: int, qemu_pid: int) -> None:
    run = get_run(session, instance_id)
    run.state, run.supervisor_pid, run.qemu_pid = "running", supervisor_pid, qemu_pid
    run.updated_at = utcnow()


def mark_ended(
    session: Session, instance_id: str, state: str, *, exit_status: int | None, message: str | None
) -> None:
    """QEMU ended (``stopped``) or never ran (``failed``); a missing row (``rm`` won) is fine."""
    run = find_run(session, instance_id)
    if run is None:
        return
    if run.state in ("stopped", "failed"):
        return  # the first account of the end stays
    run.state, run.exit_status, run.message = state, exit_status, message
    run.stopped_at = run.updated_at = utcnow()


def delete_run(session: Session, instance_id: str) -> None:
    run = find_run(session, instance_id)
    if run is not None:
        session.delete(run)
        session.flush()


def port_forwards(run: InstanceRun) -> list[tuple[int, int]]:
    return [(int(host), int(guest)) for host, guest in json.loads(run.port_forwards or "[]")]
