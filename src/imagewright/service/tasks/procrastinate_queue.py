"""Procrastinate on the catalog's PostgreSQL: the job queue of ``--task-queue procrastinate``.

Why Procrastinate (and not Celery with a broker): the catalog already runs on PostgreSQL at
scale, and Procrastinate needs nothing else — jobs are rows in the same database, fetched with
``SELECT … FOR UPDATE SKIP LOCKED``, woken by ``LISTEN/NOTIFY``, with worker heartbeats — so
there is no second stateful service to run, secure and back up, and a job and the catalog can
never disagree about which database they live in. Celery would add a broker (Redis/RabbitMQ)
whose only job here would be to carry a task id.

The job is ``imagewright.run_task(task_id)`` on the queue ``imagewright``, with the lock
``task:<id>`` (Procrastinate runs one job per lock at a time). The job only calls
``runner.run_task``: the catalog row decides everything (a duplicate or stale job finds the task
not ``pending`` and returns). Procrastinate's own tables are created by ``ensure_schema``
(under an advisory lock, so that several workers starting at once create them once).

Source: Procrastinate 3 documentation ("Retry stalled jobs", "Locks", "Define a task",
``JobManager.retry_job_by_id``, ``SchemaManager``).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import make_url

from imagewright.catalog.database import normalise_url, redact
from imagewright.errors import CatalogError

LOG = logging.getLogger("imagewright.service.tasks")

QUEUE = "imagewright"
JOB_NAME = "imagewright.run_task"
#: An arbitrary, fixed advisory-lock key: "imagewright schema" in ASCII, truncated.
_SCHEMA_LOCK = 0x696D6167_65777269


def conninfo(database_url: str) -> str:
    """The libpq connection string of a catalog URL (``postgresql+psycopg://`` → ``postgresql://``)."""
    url = normalise_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise CatalogError(
            f"The Procrastinate task queue runs on PostgreSQL; the catalog {redact(database_url)} is not."
        )
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def ensure_schema(database_url: str) -> bool:
    """Create Procrastinate's tables in the catalog database if they are missing; True if created."""
    import psycopg
    from procrastinate.schema import SchemaManager

    try:
        with psycopg.connect(conninfo(database_url), autocommit=True) as connection:
            connection.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            try:
                row = connection.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
                if row is not None and row[0] is not None:
                    return False
                with connection.transaction():
                    connection.execute(SchemaManager.get_schema())
                return True
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))
    except psycopg.Error as err:
        raise CatalogError(
            f"The task queue tables in {redact(database_url)} could not be created: "
            f"{str(err).strip().splitlines()[0]}."
        ) from None


class JobQueue:
    """Deferring and retrying jobs from any thread (a synchronous Procrastinate app)."""

    def __init__(self, database_url: str) -> None:
        import procrastinate

        self._app = procrastinate.App(
            connector=procrastinate.SyncPsycopgConnector(conninfo=conninfo(database_url), max_size=4)
        )
        self._app.open()

    def defer(self, task_id: str) -> int:
        deferrer = self._app.configure_task(JOB_NAME, queue=QUEUE, lock=f"task:{task_id}")
        return int(deferrer.defer(task_id=task_id))

    def retry(self, job_id: int) -> bool:
        """Put a job that was ``doing`` (its worker died) or ``failed`` back to ``todo``."""
        import procrastinate.exceptions

        try:
            self._app.job_manager.retry_job_by_id(job_id, retry_at=datetime.now(UTC))
        except procrastinate.exceptions.ConnectorException as err:
            LOG.info("job %s could not be retried (%s); deferring a new one", job_id, err)
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._app.close()


def run_worker(database_url: str, concurrency: int, context: dict[str, Any]) -> None:
    """Run Procrastinate's worker until SIGINT/SIGTERM: each job runs ``context['run']``."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(database_url)))

    @app.task(name=JOB_NAME, queue=QUEUE, pass_context=True)
    def run_task(job_context: procrastinate.JobContext, task_id: str) -> None:
        job_context.additional_context["run"](task_id)

    app.run_worker(
        queues=[QUEUE],
        concurrency=concurrency,
        additional_context=context,
        delete_jobs="successful",
        install_signal_handlers=True,
        update_heartbeat_interval=5.0,
        stalled_worker_timeout=15.0,
    )
