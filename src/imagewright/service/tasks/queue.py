"""Handing tasks to whoever runs them.

The catalog row is the truth about a task; a queue only says "someone, run task T". Two:

- ``EmbeddedQueue``: the task threads of the server processes poll the catalog for ``pending``
  tasks of the ``embedded`` queue; submitting wakes the threads of this process at once (the
  others find it at their next poll). Nothing is lost when a process dies: the row is there.
- ``ProcrastinateQueue``: a Procrastinate job per task on the catalog's PostgreSQL, run by
  ``imagewright worker`` processes on any machine (``procrastinate_queue``). The job carries
  only the task id and a lock named after it (one job of a task runs at a time). A task the
  sweep requeues gets its old job retried (``doing`` → ``todo``), or a new one when that job
  is gone; a task whose server died between commit and deferral is deferred by the sweep.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

from imagewright.catalog import tasks as task_rows
from imagewright.catalog.database import Catalog

LOG = logging.getLogger("imagewright.service.tasks")


class TaskQueue(ABC):
    name: str

    @abstractmethod
    def submit(self, catalog: Catalog, task_id: str) -> None:
        """Make sure someone runs the (committed, pending) task."""

    @abstractmethod
    def resubmit(self, catalog: Catalog, task_id: str, job_id: int | None) -> None:
        """The sweep put a task back to pending: have it run again."""

    def close(self) -> None:  # noqa: B027 - most queues hold nothing
        """Release connections."""


class EmbeddedQueue(TaskQueue):
    name = "embedded"

    def __init__(self) -> None:
        self._wakers: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def add_waker(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakers.append(wake)

    def _wake(self) -> None:
        with self._lock:
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def submit(self, catalog: Catalog, task_id: str) -> None:
        self._wake()

    def resubmit(self, catalog: Catalog, task_id: str, job_id: int | None) -> None:
        self._wake()


class ProcrastinateQueue(TaskQueue):
    name = "procrastinate"

    def __init__(self, database_url: str) -> None:
        from imagewright.service.tasks import procrastinate_queue

        self._jobs = procrastinate_queue.JobQueue(database_url)

    def submit(self, catalog: Catalog, task_id: str) -> None:
        job_id = self._jobs.defer(task_id)
        with catalog.writing() as session:
            task_rows.set_queue_job(session, task_id, job_id)

    def resubmit(self, catalog: Catalog, task_id: str, job_id: int | None) -> None:
        if job_id is not None and self._jobs.retry(job_id):
            return
        self.submit(catalog, task_id)

    def close(self) -> None:
        self._jobs.close()


def open_queue(name: str, database_url: str) -> TaskQueue:
    if name == "procrastinate":
        return ProcrastinateQueue(database_url)
    return EmbeddedQueue()
