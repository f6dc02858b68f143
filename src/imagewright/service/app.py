"""The ASGI application ``imagewright serve`` runs: one sub-app per API, mounted by path.

Why Starlette on uvicorn: the registry's work is streaming bytes and small JSON documents, where
the framework's per-request cost is noise next to the database round trip and the data; Starlette
gives routing, streaming requests/responses, ``Mount`` for per-API sub-apps and a lifespan hook
with almost no layers, and it is a plain ASGI app, so granian (faster on tiny requests, which the
metadata service of a later issue will care about) can run the same object. uvicorn is the
reference ASGI server, ships as a wheel with uvloop/httptools, and runs ``--workers N`` from an
import string with ``factory=True`` — which is what ``create_app`` is.

Layout: ``/identity`` (Keystone v3 subset), ``/image`` (Glance v2), ``/compute`` (instance
records, ``service.compute``); the metadata service is its own process (``service.imds``).
Later APIs (``/ec2``, the console at ``/``) mount here the same way and add their row to
``catalog_entries.SERVICES``.

State: each worker process builds its own ``Registry`` (catalog engine + stores) in the lifespan
and puts it in every request's state; the periodic sweep runs as a task of the lifespan. Nothing
else lives in memory between requests, so N workers and M machines behave as one service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from imagewright.catalog.database import Catalog
from imagewright.service import logs
from imagewright.service.compute.routes import build_compute_app
from imagewright.service.compute.routes import versions as compute_versions
from imagewright.service.config import ServiceConfig
from imagewright.service.http import Registry, blocking, json_response
from imagewright.service.identity.routes import build_identity_app
from imagewright.service.identity.routes import versions as identity_versions
from imagewright.service.images.routes import build_images_app
from imagewright.service.images.routes import versions as image_versions
from imagewright.service.sweep import sweep
from imagewright.service.tasks.environment import TaskEnvironment
from imagewright.service.tasks.queue import EmbeddedQueue, open_queue
from imagewright.service.tasks.runner import EmbeddedRunner
from imagewright.stores import open_stores

LOG = logging.getLogger("imagewright.service")


def open_registry(config: ServiceConfig) -> Registry:
    catalog = Catalog(config.database_url)
    stores = open_stores(list(config.store_specs), config.data_dir)
    queue = open_queue(config.task_queue, config.database_url)
    tasks = TaskEnvironment.for_service(config, catalog, stores, queue)
    return Registry(config=config, catalog=catalog, stores=stores, tasks=tasks)


def _start_task_runner(registry: Registry) -> EmbeddedRunner | None:
    """The embedded task threads of this process (none when Procrastinate workers run tasks)."""
    environment = registry.tasks
    if environment is None or not isinstance(environment.queue, EmbeddedQueue):
        return None
    if registry.config.task_threads < 1:
        return None
    environment.prepare_scratch()
    runner = EmbeddedRunner(environment, registry.config.task_threads)
    environment.queue.add_waker(runner.wake)
    runner.start()
    return runner


async def _periodic_sweep(registry: Registry) -> None:
    while True:
        await asyncio.sleep(registry.config.sweep_interval_seconds)
        try:
            report = await blocking(sweep, registry)
            if report:
                LOG.info("sweep: %s", report.summary())
        except Exception:
            LOG.exception("sweep failed")


async def _root(request: Request) -> Response:
    registry: Registry = request.state.registry
    base = registry.public_url
    return json_response(
        {
            "name": "imagewright registry",
            "apis": {
                "identity": f"{base}/identity/v3",
                "image": f"{base}/image",
                "compute": f"{base}/compute/v1",
            },
        }
    )


def build_app(config: ServiceConfig) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Registry]]:
        registry = await blocking(open_registry, config)
        runner = await blocking(_start_task_runner, registry)
        task = asyncio.create_task(_periodic_sweep(registry))
        base = registry.public_url
        LOG.info("worker ready: identity %s/identity/v3, image %s/image", base, base)
        try:
            yield {"registry": registry}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if runner is not None:
                # Running tasks give themselves back (pending) for the next server to run.
                await blocking(runner.stop)
            if registry.tasks is not None:
                registry.tasks.queue.close()
            registry.catalog.dispose()

    identity, image, compute = build_identity_app(), build_images_app(), build_compute_app()
    routes = [
        Route("/", _root, methods=["GET"]),
        # The bare mount points answer too (version discovery asks for them without a slash).
        Route("/identity", identity_versions, methods=["GET"]),
        Route("/image", image_versions, methods=["GET"]),
        Route("/compute", compute_versions, methods=["GET"]),
        Mount("/identity", app=identity),
        Mount("/image", app=image),
        Mount("/compute", app=compute),
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(logs.RequestLog)])


def create_app() -> Starlette:
    """The ASGI servers' app factory (``imagewright.service.app:create_app``, ``factory=True``),
    run in each worker process."""
    config = ServiceConfig.from_environment()
    logs.configure(config.log_level)
    return build_app(config)
