"""One claimed task while it runs: what a handler (``importing``, ``exporting``) is given.

``TaskRun`` carries the task's loaded row, the environment, and the heartbeat thread that
renews the task's lease every quarter lease and writes the progress the handler reports. When
a renewal finds the task no longer held (the sweep gave it to another worker), or the runner is
stopping, ``check`` raises ``TaskStoppedError`` at the handler's next progress report.

Apart from ``runner`` (which claims, dispatches and finishes tasks) so that the handlers it
dispatches to import this, not it: no import circle between the runner and its handlers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagewright.catalog import tasks as task_rows
from imagewright.errors import ImagewrightError
from imagewright.service.tasks.environment import TaskEnvironment

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

LOG = logging.getLogger("imagewright.service.tasks")


class TaskStoppedError(ImagewrightError):
    """The task must stop: its lease was lost, or its runner is shutting down."""

    def __init__(self, message: str, *, requeue: bool) -> None:
        super().__init__(message)
        self.requeue = requeue


@dataclass
class LoadedTask:
    id: str
    type: str
    image_id: str | None
    input: dict[str, Any]
    private: dict[str, Any]
    owner: str | None
    attempt: int
    max_attempts: int


class TaskRun:
    """A claimed task while it runs: progress, heartbeat, and whether to stop."""

    def __init__(
        self, environment: TaskEnvironment, task: LoadedTask, holder: str, stopping: threading.Event
    ) -> None:
        self.environment = environment
        self.task = task
        self.holder = holder
        self._stopping = stopping
        self._lost = False
        #: Set by ``succeed_in``: the task row is already ``success`` (the runner leaves it).
        self.finished = False
        self._progress: tuple[str, int, int | None] | None = None
        self._written: tuple[str, int, int | None] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{task.id[:8]}", daemon=True)

    def __enter__(self) -> TaskRun:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def progress(self, stage: str, done: int, total: int | None) -> None:
        """Record progress (written by the heartbeat); raises TaskStoppedError when told to stop."""
        self._progress = (stage, done, total)
        self.check()

    def reporter(self, stage: str) -> Callable[[int, int | None], None]:
        def report(done: int, total: int | None) -> None:
            self.progress(stage, done, total)

        return report

    @property
    def last_progress(self) -> tuple[str, int, int | None] | None:
        return self._progress

    def succeed_in(self, session: Session, result: dict[str, Any]) -> bool:
        """Mark the task ``success`` in ``session``, the transaction that commits its outcome.

        A handler whose last step is a catalog write calls this inside that write, so that the
        outcome and the task's end commit together: a worker killed after the commit leaves a
        finished task, not one the sweep runs again against an image it already completed.
        """
        self.finished = task_rows.finish_task(
            session, self.task.id, self.holder, status="success", result=result, progress=self._progress
        )
        return self.finished

    def should_stop(self) -> bool:
        return self._lost or self._stopping.is_set()

    def check(self) -> None:
        if self._lost:
            raise TaskStoppedError("The task's lease was lost (another worker took it over).", requeue=False)
        if self._stopping.is_set():
            raise TaskStoppedError("The worker running this task is shutting down.", requeue=True)

    def _beat(self) -> None:
        interval = max(0.2, self.environment.lease_seconds / 4)
        while not self._done.wait(min(interval, 1.0) if self._progress != self._written else interval):
            self._renew()

    def _renew(self) -> None:
        progress = self._progress
        try:
            with self.environment.catalog.writing() as session:
                held = task_rows.heartbeat(
                    session, self.task.id, self.holder, self.environment.lease, progress
                )
        except ImagewrightError as err:
            LOG.warning("heartbeat of task %s failed (will retry): %s", self.task.id, err)
            return
        self._written = progress
        if not held:
            LOG.warning("task %s is no longer held by this worker; stopping it", self.task.id)
            self._lost = True
