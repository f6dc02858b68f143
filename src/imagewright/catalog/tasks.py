"""Tasks in the catalog: creating, claiming, heartbeats, finishing, and finding the abandoned.

Every change a worker makes is one conditional UPDATE on the row it read (``status`` and
``holder`` in the WHERE clause), so any number of workers and servers can race for the same
task and exactly one wins; a worker that lost its lease (the sweep gave its task to another)
finds out at its next heartbeat and stops.

The life of a task (``task_models.Task``)::

    pending ──claim──► processing ──finish──► success | failure
       ▲                   │ lease expired / holder dead (the sweep)
       └─── requeue ◄──────┤ attempts left
                           └──► failure "the worker … stopped" (no attempts left)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from imagewright.catalog.accounts import utcnow
from imagewright.catalog.task_models import FINISHED_TASK_STATUSES, TASK_STATUSES, TASK_TYPES, Task
from imagewright.errors import InvalidArgumentError, NotFoundError

#: How long a finished task stays listed (Glance's ``task_time_to_live``, 48 hours).
TASK_TIME_TO_LIVE = timedelta(hours=48)


def new_task_id() -> str:
    return str(uuid.uuid4())


def create_task(
    session: Session,
    *,
    task_type: str,
    owner: str | None,
    user_id: str | None,
    image_id: str | None,
    task_input: dict[str, Any],
    private: dict[str, Any] | None,
    queue: str,
    max_attempts: int,
    request_id: str | None = None,
    task_id: str | None = None,
) -> Task:
    now = utcnow()
    task = Task(
        id=task_id or new_task_id(),
        type=task_type,
        status="pending",
        owner=owner,
        user_id=user_id,
        request_id=request_id,
        image_id=image_id,
        input=json.dumps(task_input, sort_keys=True),
        private=json.dumps(private, sort_keys=True) if private is not None else None,
        result=None,
        message="",
        progress_stage=None,
        progress_done=0,
        progress_total=None,
        attempts=0,
        max_attempts=max_attempts,
        queue=queue,
        created_at=now,
        updated_at=now,
    )
    session.add(task)
    session.flush()
    return task


def task_not_found(task_id: str) -> NotFoundError:
    return NotFoundError(f"Task with identifier {task_id} not found.")


def get_task(session: Session, task_id: str) -> Task:
    task = session.get(Task, task_id) if len(task_id) <= 36 else None
    if task is None:
        raise task_not_found(task_id)
    return task


def tasks_of_image(session: Session, image_id: str) -> list[Task]:
    return list(
        session.scalars(select(Task).where(Task.image_id == image_id).order_by(Task.created_at, Task.id))
    )


@dataclass
class TaskQuery:
    owner: str | None = None
    status: str | None = None
    type: str | None = None
    sort_dir: str = "desc"
    marker: str | None = None
    limit: int = 25


def list_tasks(session: Session, query: TaskQuery) -> list[Task]:
    """Tasks newest first (or oldest, ``sort_dir=asc``), keyset-paged by (created_at, id)."""
    if query.status is not None and query.status not in TASK_STATUSES:
        raise InvalidArgumentError(f"Invalid status value: {query.status}.")
    if query.type is not None and query.type not in (*TASK_TYPES, "import"):
        raise InvalidArgumentError(f"Invalid type value: {query.type}.")
    statement = select(Task)
    if query.owner is not None:
        statement = statement.where(Task.owner == query.owner)
    if query.status is not None:
        statement = statement.where(Task.status == query.status)
    if query.type is not None:
        statement = statement.where(Task.type.in_(TASK_TYPES if query.type == "import" else (query.type,)))
    descending = query.sort_dir == "desc"
    if query.marker is not None:
        marker = session.get(Task, query.marker) if len(query.marker) <= 36 else None
        if marker is None or (query.owner is not None and marker.owner != query.owner):
            raise InvalidArgumentError(f"Invalid marker: task {query.marker} could not be found.")
        if descending:
            statement = statement.where(
                or_(
                    Task.created_at < marker.created_at,
                    and_(Task.created_at == marker.created_at, Task.id < marker.id),
                )
            )
        else:
            statement = statement.where(
                or_(
                    Task.created_at > marker.created_at,
                    and_(Task.created_at == marker.created_at, Task.id > marker.id),
                )
            )
    order = (Task.created_at.desc(), Task.id.desc()) if descending else (Task.created_at, Task.id)
    return list(session.scalars(statement.order_by(*order).limit(query.limit)))


def pending_task_ids(session: Session, queue: str, limit: int = 10) -> list[str]:
    return list(
        session.scalars(
            select(Task.id)
            .where(Task.status == "pending", Task.queue == queue)
            .order_by(Task.created_at, Task.id)
            .limit(limit)
        )
    )


def claim_task(session: Session, task_id: str, holder: str, lease: timedelta) -> bool:
    """``pending`` → ``processing`` for ``holder`` (one attempt more), if still pending."""
    now = utcnow()
    result = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == "pending", Task.attempts < Task.max_attempts)
        .values(
            status="processing",
            holder=holder,
            lease_expires_at=now + lease,
            attempts=Task.attempts + 1,
            started_at=now,
            updated_at=now,
            message="",
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def heartbeat(
    session: Session,
    task_id: str,
    holder: str,
    lease: timedelta,
    progress: tuple[str, int, int | None] | None = None,
) -> bool:
    """Renew the lease (and record progress) while ``holder`` still holds the task."""
    values: dict[str, Any] = {"lease_expires_at": utcnow() + lease}
    if progress is not None:
        stage, done, total = progress
        values.update(progress_stage=stage, progress_done=done, progress_total=total, updated_at=utcnow())
    result = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == "processing", Task.holder == holder)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def finish_task(
    session: Session,
    task_id: str,
    holder: str | None,
    *,
    status: str,
    message: str = "",
    result: dict[str, Any] | None = None,
    progress: tuple[str, int, int | None] | None = None,
) -> bool:
    """``processing`` (held by ``holder``; None: by anyone) → ``success`` / ``failure``."""
    if status not in FINISHED_TASK_STATUSES:
        raise ValueError(status)
    now = utcnow()
    last: dict[str, Any] = {}
    if progress is not None:
        last = {"progress_stage": progress[0], "progress_done": progress[1], "progress_total": progress[2]}
    conditions = [Task.id == task_id, Task.status == "processing"]
    if holder is not None:
        conditions.append(Task.holder == holder)
    outcome = session.execute(
        update(Task)
        .where(*conditions)
        .values(
            status=status,
            message=message,
            result=json.dumps(result, sort_keys=True) if result is not None else None,
            private=None,
            holder=None,
            lease_expires_at=None,
            updated_at=now,
            finished_at=now,
            expires_at=now + TASK_TIME_TO_LIVE,
            **last,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(outcome, "rowcount", 0))


def fail_pending_task(session: Session, task_id: str, message: str) -> bool:
    """A task that never started fails (it could not be queued, its image went away …)."""
    now = utcnow()
    outcome = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == "pending")
        .values(
            status="failure",
            message=message,
            private=None,
            updated_at=now,
            finished_at=now,
            expires_at=now + TASK_TIME_TO_LIVE,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(outcome, "rowcount", 0))


def requeue_task(session: Session, task_id: str, holder: str | None, message: str) -> bool:
    """``processing`` → ``pending`` for another attempt (the sweep, after its worker died)."""
    outcome = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == "processing", Task.holder == holder)
        .values(
            status="pending",
            holder=None,
            lease_expires_at=None,
            message=message,
            progress_stage=None,
            progress_done=0,
            progress_total=None,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(outcome, "rowcount", 0))


def set_queue_job(session: Session, task_id: str, job_id: int) -> None:
    session.execute(
        update(Task)
        .where(Task.id == task_id)
        .values(queue_job_id=job_id)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class RunningTask:
    id: str
    type: str
    image_id: str | None
    holder: str | None
    lease_expires_at: datetime | None
    attempts: int
    max_attempts: int
    queue: str
    queue_job_id: int | None


def processing_tasks(session: Session) -> list[RunningTask]:
    rows = session.execute(
        select(
            Task.id,
            Task.type,
            Task.image_id,
            Task.holder,
            Task.lease_expires_at,
            Task.attempts,
            Task.max_attempts,
            Task.queue,
            Task.queue_job_id,
        ).where(Task.status == "processing")
    ).all()
    return [RunningTask(*row) for row in rows]


def unqueued_tasks(session: Session, queue: str, older_than: datetime) -> list[str]:
    """Pending tasks of ``queue`` that no job carries (their server died between commit and defer)."""
    return list(
        session.scalars(
            select(Task.id).where(
                Task.status == "pending",
                Task.queue == queue,
                Task.queue_job_id.is_(None),
                Task.updated_at < older_than,
            )
        )
    )


def expired_tasks(session: Session, now: datetime) -> Sequence[str]:
    return list(
        session.scalars(select(Task.id).where(Task.status.in_(FINISHED_TASK_STATUSES), Task.expires_at < now))
    )


def delete_tasks(session: Session, task_ids: Sequence[str]) -> None:
    for task_id in task_ids:
        task = session.get(Task, task_id)
        if task is not None:
            session.delete(task)
    session.flush()


def loads(text: str | None) -> dict[str, Any]:
    """A JSON column as a dict ({} for NULL)."""
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
