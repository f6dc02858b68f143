"""What a task runner works with, and the registry settings tasks carry with them.

A task is run by whichever process claims it — a thread of any ``imagewright serve`` process
(embedded) or an ``imagewright worker`` on another machine (Procrastinate). So that a worker
needs nothing but the catalog and the stores, the settings that decide *what* a task does are
fixed when the API accepts it and travel in the task's private input: the web-download allow
list, the size cap and timeouts, the conversion target (``--convert-to``), a remote registry's
endpoint and token. A worker only decides *where* it works (its scratch directory).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from imagewright.catalog.database import Catalog
from imagewright.errors import InvalidArgumentError
from imagewright.files import sweep_leftovers
from imagewright.service.config import ServiceConfig
from imagewright.service.tasks.queue import TaskQueue
from imagewright.stores import StoreSet

LOG = logging.getLogger("imagewright.service.tasks")

#: What ``--convert-to`` accepts (Glance's image_conversion ``output_format``).
CONVERSION_FORMATS = ("raw", "qcow2")
QUEUE_NAMES = ("embedded", "procrastinate")


@dataclass
class TaskEnvironment:
    catalog: Catalog
    stores: StoreSet
    #: Where tasks download and convert (one private directory per running task inside).
    scratch_root: Path
    #: Who runs new and retried tasks (``queue.EmbeddedQueue`` or ``ProcrastinateQueue``).
    queue: TaskQueue
    lease_seconds: float = 30.0

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    def prepare_scratch(self) -> None:
        self.scratch_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in sweep_leftovers(self.scratch_root):
            LOG.info("removed the scratch files of a dead task runner: %s", leftover)

    @classmethod
    def for_service(
        cls, config: ServiceConfig, catalog: Catalog, stores: StoreSet, queue: TaskQueue
    ) -> TaskEnvironment:
        return cls(
            catalog=catalog,
            stores=stores,
            scratch_root=config.data_dir / "tasks",
            queue=queue,
            lease_seconds=config.task_lease_seconds,
        )


def parse_conversions(values: Sequence[str], store_ids: Sequence[str]) -> dict[str | None, str]:
    """``--convert-to`` values → {store id or None (every store): format}."""
    conversions: dict[str | None, str] = {}
    for value in values:
        store, sep, fmt = value.rpartition("=")
        key = store if sep else None
        if fmt not in CONVERSION_FORMATS:
            raise InvalidArgumentError(
                f"--convert-to {value!r}: convert imports to {' or '.join(CONVERSION_FORMATS)}."
            )
        if key is not None and key not in store_ids:
            raise InvalidArgumentError(
                f"--convert-to {value!r} names the store {key!r}, which is not configured "
                f"(the stores are: {', '.join(store_ids)})."
            )
        if key in conversions:
            raise InvalidArgumentError(f"--convert-to gives {key or 'every store'} two formats.")
        conversions[key] = fmt
    return conversions


def conversion_for(conversions: dict[str | None, str], store_id: str) -> str | None:
    return conversions.get(store_id, conversions.get(None))


@dataclass(frozen=True)
class GlanceRegion:
    """Another Glance-compatible registry glance-download copies from (``--glance-region``)."""

    name: str
    cloud: str
    clouds_yaml: Path | None

    @classmethod
    def parse(cls, text: str) -> GlanceRegion:
        name, sep, rest = text.partition("=")
        cloud, at, path = rest.partition("@")
        if not sep or not name or not cloud or (at and not path):
            raise InvalidArgumentError(
                f"--glance-region {text!r} is not NAME=CLOUD or NAME=CLOUD@CLOUDS_YAML."
            )
        return cls(name, cloud, Path(path).absolute() if path else None)


def parse_regions(values: Sequence[str]) -> dict[str, GlanceRegion]:
    regions: dict[str, GlanceRegion] = {}
    for value in values:
        region = GlanceRegion.parse(value)
        if region.name in regions:
            raise InvalidArgumentError(f"--glance-region names {region.name!r} twice.")
        regions[region.name] = region
    return regions
