"""Starting a registry: prepare the data dir, catalog, accounts and stores once, then serve.

``prepare`` does everything that must happen exactly once before any worker answers: the data
dir and its lock (embedded catalog), the schema (a SQLite catalog upgrades itself; an empty
PostgreSQL database is created; an outdated one is refused with the command that fixes it), the
``Default`` domain and ``admin`` account, the client files, the stores' check, and the start-up
sweep. ``run`` hands the config to uvicorn, which starts the workers (``app.create_app``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagewright.catalog import accounts
from imagewright.catalog.database import Catalog, redact, sqlite_url
from imagewright.errors import InvalidArgumentError
from imagewright.service import datadir, logs
from imagewright.service.config import ENVIRONMENT_VARIABLE, ServiceConfig, url_host
from imagewright.service.http import Registry
from imagewright.service.imds import serving as imds_serving
from imagewright.service.imds.config import MetadataConfig
from imagewright.service.sweep import SweepReport, sweep
from imagewright.service.tasks import procrastinate_queue
from imagewright.service.tasks.environment import (
    QUEUE_NAMES,
    TaskEnvironment,
    parse_conversions,
    parse_regions,
)
from imagewright.service.tasks.queue import open_queue
from imagewright.service.tasks.web_download import UrlPolicy
from imagewright.stores import open_stores

ADMIN_PASSWORD_VARIABLE = "IMAGEWRIGHT_ADMIN_PASSWORD"  # noqa: S105 - a variable name, not a password


@dataclass
class Prepared:
    config: ServiceConfig
    #: The admin's password when the account was created now (printed once), else None.
    admin_password: str | None
    clouds_yaml: Path
    openrc: Path
    schema: tuple[str | None, str]
    sweep: SweepReport
    lock: datadir.DataDirLock | None


def prepare(
    data_dir: Path,
    host: str,
    port: int,
    *,
    database: str | None = None,
    store_specs: tuple[str, ...] = (),
    public_url: str | None = None,
    image_size_cap: int | None = None,
    settings: dict[str, Any] | None = None,
) -> Prepared:
    """Everything before the first request; ``settings``: more ``ServiceConfig`` fields (tasks)."""
    datadir.ensure_data_dir(data_dir)
    database_url = database or sqlite_url(data_dir)
    catalog = Catalog(database_url)
    lock: datadir.DataDirLock | None = None
    try:
        if catalog.is_sqlite:
            # One server per SQLite file: a second one would fight the first for the write lock
            # and, worse, sweep its live uploads.
            lock = datadir.DataDirLock(data_dir)
            lock.acquire()
        if catalog.is_sqlite or catalog.is_empty():
            schema = catalog.upgrade()
        else:
            catalog.check_schema()
            schema = (catalog.current_revision(), catalog.head_revision())
        with catalog.writing() as session:
            created = accounts.bootstrap(session, os.environ.get(ADMIN_PASSWORD_VARIABLE) or None)
        url = (public_url or f"http://{url_host(host)}:{port}").rstrip("/")
        config = ServiceConfig(
            data_dir=data_dir,
            database_url=database_url,
            store_specs=tuple(store_specs),
            public_url=url,
            **(settings or {}),
        )
        if image_size_cap is not None:
            config = dataclasses.replace(config, image_size_cap=image_size_cap)
        stores = open_stores(list(store_specs), data_dir)
        stores.check()
        check_task_settings(config, [info.id for info in stores.infos()])
        if config.task_queue == "procrastinate":
            procrastinate_queue.ensure_schema(database_url)
        datadir.write_config(data_dir, datadir.DataDirConfig(database_url, tuple(store_specs), url))
        clouds = data_dir / "clouds.yaml"
        rc = data_dir / "openrc"
        if created.password is not None:
            clouds, rc = datadir.write_client_files(
                data_dir, url, created.user.name, created.password, created.project.name, config.region
            )
        queue = open_queue(config.task_queue, database_url)
        tasks = TaskEnvironment.for_service(config, catalog, stores, queue)
        registry = Registry(config=config, catalog=catalog, stores=stores, tasks=tasks)
        # With an embedded catalog no writer of another server can be alive (we hold the lock).
        try:
            report = sweep(registry, incomplete_grace=0.0 if catalog.is_sqlite else None)
        finally:
            queue.close()
    finally:
        catalog.dispose()
    return Prepared(config, created.password, clouds, rc, schema, report, lock)


def check_task_settings(config: ServiceConfig, store_ids: list[str]) -> None:
    """Refuse, in one sentence, task settings that cannot work (before anything is served)."""
    if config.task_queue not in QUEUE_NAMES:
        raise InvalidArgumentError(f"--task-queue must be one of {', '.join(QUEUE_NAMES)}.")
    if config.task_queue == "procrastinate" and not config.database_url.startswith("postgresql"):
        raise InvalidArgumentError(
            "--task-queue procrastinate needs the catalog on PostgreSQL (--database postgresql://…)."
        )
    parse_conversions(config.convert_to, store_ids)
    parse_regions(config.glance_regions)
    UrlPolicy.from_prefixes(config.web_download_allow)


#: The ASGI servers ``serve --server`` runs the same app on (the first is the default).
SERVERS = ("uvicorn", "granian")


def run(
    config: ServiceConfig,
    host: str,
    port: int,
    workers: int,
    *,
    metadata: MetadataConfig | None = None,
    server: str = SERVERS[0],
) -> None:
    """Serve until stopped; with ``metadata``, the metadata service runs as a child process."""
    if server not in SERVERS:
        raise InvalidArgumentError(f"--server must be one of {', '.join(SERVERS)}.")
    os.environ[ENVIRONMENT_VARIABLE] = config.to_json()
    logs.configure(config.log_level)
    child = imds_serving.start_child(metadata) if metadata is not None else None
    try:
        if server == "granian":
            _run_granian(host, port, workers, logs.server_level(config.log_level))
        else:
            _run_uvicorn(host, port, workers, logs.server_level(config.log_level))
    finally:
        if child is not None:
            imds_serving.stop_child(child)


def _run_granian(host: str, port: int, workers: int, log_level: str) -> None:
    """granian (Rust HTTP, its own worker processes); full downloads from a file store leave as
    ``http.response.pathsend`` — the server reads the file itself, no Python chunk loop."""
    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        "imagewright.service.app:create_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        log_access=False,
        log_dictconfig={
            "version": 1,
            "disable_existing_loggers": False,
            "root": {"level": log_level.upper(), "handlers": ["console"]},
            "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
            "loggers": {"_granian": {"level": log_level.upper()}, "granian.access": {"level": "WARNING"}},
        },
        workers_kill_timeout=10,
    ).serve()


def _run_uvicorn(host: str, port: int, workers: int, log_level: str) -> None:
    import uvicorn

    uvicorn.run(
        "imagewright.service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )


def describe_database(config: ServiceConfig) -> str:
    return redact(config.database_url)
