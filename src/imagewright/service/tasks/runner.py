"""Running one task, and the embedded task threads of ``imagewright serve``.

``run_task(environment, task_id)``:

1. **Claim** (``pending`` → ``processing``, this process as holder, a lease): exactly one of
   any number of racing runners wins; a job for a task that is not pending returns at once.
2. **Heartbeat**: a thread renews the lease every quarter lease and writes the progress the
   task reports (stage, bytes done, total). If the renewal finds the task no longer held — the
   sweep decided this runner was dead and gave the task to another — the task is told to stop
   (``TaskRun.check``) and leaves the catalog alone.
3. **Run** the handler for the task's type (``importing`` / ``exporting``); it cleans up after
   itself on failure (blobs written, the image's import state).
4. **Finish**: ``success`` with the handler's result, or ``failure`` with the error's one
   sentence. An unexpected exception is logged with its traceback and reported as such.
   When the runner itself is stopping (server shutdown), the task goes back to ``pending``
   instead, for the next runner.

``EmbeddedRunner``: ``task_threads`` threads per server process that poll the catalog for
pending tasks of the embedded queue (and are woken by submissions in the same process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from imagewright.catalog import tasks as task_rows
from imagewright.catalog.task_models import EXPORT_TASK_TYPE, IMPORT_TASK_TYPE
from imagewright.errors import ImagewrightError
from imagewright.service.leases import this_holder
from imagewright.service.tasks.environment import TaskEnvironment
from imagewright.service.tasks.run import LoadedTask, TaskRun, TaskStoppedError

LOG = logging.getLogger("imagewright.service.tasks")

#: Seconds between polls of the catalog for pending tasks.
POLL_SECONDS = 1.0


Handler = Callable[[TaskRun], dict[str, Any]]


def _handlers() -> dict[str, Handler]:
    from imagewright.service.tasks import exporting, importing

    return {IMPORT_TASK_TYPE: importing.run_import, EXPORT_TASK_TYPE: exporting.run_export}


def _load(environment: TaskEnvironment, task_id: str) -> LoadedTask:
    with environment.catalog.reading() as session:
        row = task_rows.get_task(session, task_id)
        return LoadedTask(
            id=row.id,
            type=row.type,
            image_id=row.image_id,
            input=task_rows.loads(row.input),
            private=task_rows.loads(row.private),
            owner=row.owner,
            attempt=row.attempts,
            max_attempts=row.max_attempts,
        )


def run_task(environment: TaskEnvironment, task_id: str, stopping: threading.Event | None = None) -> bool:
    """Claim and run ``task_id``; False when it was not pending (someone else has or had it)."""
    holder = this_holder()
    with environment.catalog.writing() as session:
        if not task_rows.claim_task(session, task_id, holder, environment.lease):
            return False
    task = _load(environment, task_id)
    handler = _handlers().get(task.type)
    LOG.info("task %s (%s, attempt %d) started", task.id, task.type, task.attempt)
    status, message, result = "failure", "", None
    with TaskRun(environment, task, holder, stopping or threading.Event()) as run:
        try:
            if handler is None:
                raise ImagewrightError(f"There is no runner for tasks of type {task.type!r}.")
            result = handler(run)
            status = "success"
        except TaskStoppedError as err:
            if err.requeue:
                _give_back(environment, task, holder, str(err))
            else:
                LOG.warning("task %s stopped: %s", task.id, err)
            return True
        except ImagewrightError as err:
            message = _sentence(str(err))
        except Exception as err:
            LOG.exception("task %s failed unexpectedly", task.id)
            message = (
                f"The task failed unexpectedly ({type(err).__name__}: {_sentence(str(err))}); "
                "the registry's log has the details."
            )
    if run.finished and status == "success":
        # The handler ended the task in the transaction of its outcome (TaskRun.succeed_in).
        LOG.info("task %s ended: success", task.id)
        return True
    with environment.catalog.writing() as session:
        finished = task_rows.finish_task(
            session,
            task.id,
            holder,
            status=status,
            message=message,
            result=result,
            progress=run.last_progress,
        )
    if finished:
        LOG.info("task %s ended: %s %s", task.id, status, message)
    else:
        LOG.warning("task %s ended (%s) after it was taken over; its outcome is dropped", task.id, status)
    return True


def _give_back(environment: TaskEnvironment, task: LoadedTask, holder: str, reason: str) -> None:
    with environment.catalog.writing() as session:
        requeued = task_rows.requeue_task(
            session, task.id, holder, f"Interrupted ({reason.rstrip('.')}); the task will run again."
        )
    if requeued:
        LOG.info("task %s goes back to the queue: %s", task.id, reason)
        environment.queue.resubmit(environment.catalog, task.id, None)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", "!", "?")) else text + "."


class EmbeddedRunner:
    """Task threads inside a server process, taking pending tasks of the embedded queue."""

    def __init__(self, environment: TaskEnvironment, threads: int) -> None:
        self.environment = environment
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, name=f"task-runner-{n}", daemon=True) for n in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask running tasks to give themselves back, and wait for the threads."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while not self._stopping.is_set():
            ran = False
            try:
                with self.environment.catalog.reading() as session:
                    candidates = task_rows.pending_task_ids(session, "embedded")
                for task_id in candidates:
                    if self._stopping.is_set():
                        break
                    if run_task(self.environment, task_id, self._stopping):
                        ran = True
                        break
            except Exception:
                LOG.exception("the task runner hit an error; it goes on")
            if not ran:
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()
