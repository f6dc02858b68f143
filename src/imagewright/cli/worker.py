"""``imagewright worker``: run the registry's import and export tasks (Procrastinate on PostgreSQL)."""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from pathlib import Path

import click

from imagewright.cli.common import log_level_option, task_lease_option


@click.command("worker")
@click.option(
    "--database",
    required=True,
    metavar="URL",
    help="The registry's catalog (postgresql://USER@HOST/DB), where the task queue lives too.",
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    metavar="SPEC",
    help="The registry's blob stores, exactly as given to 'imagewright serve' (repeatable).",
)
@click.option(
    "--data-dir",
    default=None,
    help="The registry's data dir, when it uses the default file store under it (no --store).",
)
@click.option(
    "--scratch-dir",
    default=None,
    metavar="DIR",
    help="Where tasks download and convert (default: a directory under the system's temp dir).",
)
@click.option(
    "--concurrency", default=1, show_default=True, type=click.IntRange(1, 64), help="Tasks run at once."
)
@task_lease_option
@click.option(
    "--sweep-interval",
    default=10.0,
    show_default=True,
    type=click.FloatRange(1.0),
    metavar="SECONDS",
    help="How often this worker looks for tasks whose worker died.",
)
@log_level_option
def command(
    database: str,
    stores: tuple[str, ...],
    data_dir: str | None,
    scratch_dir: str | None,
    concurrency: int,
    task_lease: float,
    sweep_interval: float,
    log_level: str,
) -> None:
    """Run import/export tasks of a registry started with '--task-queue procrastinate'.

    Any number of workers on any number of machines share the queue (Procrastinate on the
    catalog's PostgreSQL); each needs the same --store values as the servers. A task whose
    worker dies is run again by another (or failed with that reason). Ctrl-C or SIGTERM stops
    the worker after its running tasks.
    """
    from imagewright.catalog.database import Catalog, redact
    from imagewright.errors import InvalidArgumentError
    from imagewright.service import logs
    from imagewright.service.tasks import procrastinate_queue
    from imagewright.service.tasks.environment import TaskEnvironment
    from imagewright.service.tasks.queue import ProcrastinateQueue
    from imagewright.service.tasks.runner import run_task
    from imagewright.service.tasks.sweep import sweep_tasks
    from imagewright.stores import open_stores

    if not stores and data_dir is None:
        raise InvalidArgumentError(
            "Name the registry's stores (--store, as given to 'imagewright serve'), or its --data-dir "
            "when it keeps images in the default file store."
        )
    # The servers' handler and levels (service.logs): a worker's task lines read like serve's;
    # Procrastinate's own warnings go to stderr in the same format.
    logging.basicConfig(stream=sys.stderr, level=logs.server_level(log_level).upper(), format=logs.FORMAT)
    logs.configure(log_level)
    catalog = Catalog(database)
    catalog.check_schema()
    procrastinate_queue.ensure_schema(database)
    store_set = open_stores(list(stores), Path(data_dir or ".").absolute())
    store_set.check()
    scratch = Path(scratch_dir) if scratch_dir else Path(tempfile.gettempdir()) / "imagewright-tasks"
    queue = ProcrastinateQueue(database)
    environment = TaskEnvironment(
        catalog=catalog,
        stores=store_set,
        scratch_root=scratch.absolute(),
        queue=queue,
        lease_seconds=task_lease,
    )
    environment.prepare_scratch()
    stopping = threading.Event()

    def sweep_loop() -> None:
        while not stopping.wait(sweep_interval):
            try:
                report = sweep_tasks(environment)
                if report:
                    logging.getLogger("imagewright.worker").info("sweep: %s", report.summary())
            except Exception:
                logging.getLogger("imagewright.worker").exception("sweep failed")

    sweeper = threading.Thread(target=sweep_loop, name="task-sweep", daemon=True)
    sweeper.start()
    click.echo(
        f"imagewright worker: catalog {redact(catalog.url)}, stores "
        f"{', '.join(info.id for info in store_set.infos())}, scratch {scratch}, {concurrency} at once",
        err=True,
    )
    try:
        procrastinate_queue.run_worker(
            database, concurrency, {"run": lambda task_id: run_task(environment, task_id)}
        )
    finally:
        stopping.set()
        queue.close()
        catalog.dispose()
