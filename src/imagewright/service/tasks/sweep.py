"""The task sweep: nothing stays ``processing``, ``uploading`` or stored without a reason.

Run by every server (at start-up, then with the periodic sweep) and every worker, idempotent and
conditional on the rows it read, like the upload sweep (``service.sweep``):

1. A ``processing`` task whose lease ran out — or whose holder is a dead process of this host
   (``leases.holder_is_dead_here``: right after a ``kill -9``, no waiting) — loses what its
   attempt wrote (the ``pending`` blobs it named) and is requeued for another attempt, or, when
   it had its last, fails with the reason ("the worker … stopped") and its image import is
   undone (the image back to ``queued``, staged data deleted) — or its export removed.
2. A stage (``uploading`` with a holder) whose lease ran out or whose holder died goes back to
   ``queued`` and its staged blob is deleted.
3. Procrastinate tasks still ``pending`` with no job (their server died between the commit and
   the deferral) are deferred.
4. Expired exports (blob and row) and expired finished tasks are removed; scratch files of dead
   task runners are removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from imagewright.catalog import exports, imports
from imagewright.catalog import tasks as task_rows
from imagewright.catalog.accounts import utcnow
from imagewright.catalog.imports import BlobRef
from imagewright.catalog.task_models import EXPORT_TASK_TYPE
from imagewright.errors import ImagewrightError, StoreError
from imagewright.service.leases import holder_is_dead_here
from imagewright.service.tasks.environment import TaskEnvironment

LOG = logging.getLogger("imagewright.service.tasks")

#: A pending Procrastinate task with no job this old is deferred again.
UNQUEUED_GRACE = timedelta(seconds=30)


@dataclass
class TaskSweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    reset_stages: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    removed_exports: list[str] = field(default_factory=list)
    removed_tasks: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.requeued)} task(s) requeued, {len(self.failed)} failed after their worker died, "
            f"{len(self.reset_stages)} stalled stage(s) reset, {len(self.removed_exports)} export(s) expired"
        )

    def __bool__(self) -> bool:
        return bool(
            self.requeued or self.failed or self.reset_stages or self.deferred or self.removed_exports
        )


def _abandoned(holder: str | None, expires_at: object, now: object) -> bool:
    expired = expires_at is None or expires_at <= now  # type: ignore[operator]
    return expired or holder_is_dead_here(holder)


def sweep_tasks(environment: TaskEnvironment) -> TaskSweepReport:
    report = TaskSweepReport()
    catalog = environment.catalog
    now = utcnow()
    with catalog.reading() as session:
        running = task_rows.processing_tasks(session)
    for task in running:
        if not _abandoned(task.holder, task.lease_expires_at, now):
            continue
        who = task.holder or "an unknown worker"
        if task.attempts < task.max_attempts:
            with catalog.writing() as session:
                blobs = imports.drop_pending_blobs(session, task.id)
                requeued = task_rows.requeue_task(
                    session,
                    task.id,
                    task.holder,
                    f"The worker running this task ({who}) stopped; it runs again "
                    f"(attempt {task.attempts + 1} of {task.max_attempts}).",
                )
            if not requeued:
                continue
            _delete(environment, blobs)
            if task.type == EXPORT_TASK_TYPE:
                _remove_export(environment, task.id)
            report.requeued.append(task.id)
            LOG.warning("task %s: its worker %s stopped; requeued", task.id, who)
            try:
                environment.queue.resubmit(catalog, task.id, task.queue_job_id)
            except ImagewrightError as err:
                LOG.warning("task %s could not be queued again (the next sweep retries): %s", task.id, err)
        else:
            message = (
                f"The worker running this task ({who}) stopped before it finished, "
                f"{task.attempts} time(s); the task is not tried again."
            )
            with catalog.writing() as session:
                failed = task_rows.finish_task(
                    session, task.id, task.holder, status="failure", message=message
                )
                blobs = imports.drop_pending_blobs(session, task.id) if failed else []
                if failed and task.image_id is not None and task.type != EXPORT_TASK_TYPE:
                    task_input = task_rows.loads(task_rows.get_task(session, task.id).input)
                    method = str(task_input.get("import_req", {}).get("method", {}).get("name", ""))
                    stores = list(task_input.get("backend") or [])
                    blobs += imports.revert_import(session, task.image_id, task.id, method, stores)
            if not failed:
                continue
            _delete(environment, blobs)
            if task.type == EXPORT_TASK_TYPE:
                _remove_export(environment, task.id)
            report.failed.append(task.id)
            LOG.warning("task %s failed: %s", task.id, message)

    with catalog.reading() as session:
        stages = imports.stages_in_progress(session)
    for stage in stages:
        if not _abandoned(stage.holder, stage.expires_at, now):
            continue
        with catalog.writing() as session:
            blobs = imports.release_stage(session, stage.image_id, stage.holder)
        if blobs:
            _delete(environment, blobs)
            report.reset_stages.append(stage.image_id)
            LOG.warning("the stage of image %s was interrupted; the image is queued again", stage.image_id)

    if environment.queue.name == "procrastinate":
        with catalog.reading() as session:
            unqueued = task_rows.unqueued_tasks(session, "procrastinate", now - UNQUEUED_GRACE)
        for task_id in unqueued:
            try:
                environment.queue.submit(catalog, task_id)
                report.deferred.append(task_id)
            except ImagewrightError as err:
                LOG.warning("task %s could not be queued (the next sweep retries): %s", task_id, err)

    with catalog.reading() as session:
        expired = exports.expired_exports(session, now)
    for task_id in expired:
        if _remove_export(environment, task_id):
            report.removed_exports.append(task_id)

    with catalog.reading() as session:
        old = task_rows.expired_tasks(session, now)
    for task_id in old:
        _remove_export(environment, task_id)  # an export never outlives its task
    with catalog.writing() as session:
        task_rows.delete_tasks(session, old)
        report.removed_tasks = len(old)
    environment.prepare_scratch()
    return report


def _remove_export(environment: TaskEnvironment, task_id: str) -> bool:
    with environment.catalog.writing() as session:
        where = exports.remove_export(session, task_id)
    if where is None:
        return False
    _delete(environment, [BlobRef(*where)])
    return True


def _delete(environment: TaskEnvironment, blobs: list[BlobRef]) -> None:
    for blob in blobs:
        if blob.store_id not in environment.stores:
            continue
        try:
            environment.stores[blob.store_id].delete(blob.location)
        except StoreError as err:
            LOG.warning("could not delete %s (the next sweep will): %s", blob.location, err)
