"""The sweep: uploads that died are reset and their bytes removed; blobs no image names go.

Run once when ``imagewright serve`` starts (before it accepts requests) and then every
``sweep_interval_seconds`` in each worker (it is idempotent, and every change it makes is
conditional on the catalog row it read, so several servers sweeping at once do no harm):

1. ``saving`` rows whose lease ran out — or whose holder is a dead process of this host
   (``leases.holder_is_dead_here``: right after a ``kill -9`` and restart, no waiting) — go back to
   ``queued`` and the blob at their location, finished or not, is deleted.
2. Tasks whose worker died are requeued or failed with that reason, stalled stages reset,
   expired exports removed (``service.tasks.sweep``).
3. Each store's ``sweep_incomplete`` removes temp files and multipart uploads of writers that
   died (at start-up with an embedded catalog no writer of ours can be alive: ``incomplete_grace``
   is 0 then; otherwise writers idle longer than the grace).
4. Finished blobs that no catalog row names (``images``, ``image_locations``, ``exports``) are
   deleted. The store is listed *before* the catalog is read: a blob written after the listing
   is not seen, and a blob in the listing was claimed (its row records the location) before its
   first byte, so it is in the catalog read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from imagewright.catalog import images, imports
from imagewright.catalog.accounts import utcnow
from imagewright.catalog.tokens import purge_expired
from imagewright.errors import StoreError
from imagewright.service.http import Registry
from imagewright.service.leases import holder_is_dead_here
from imagewright.service.tasks.sweep import TaskSweepReport, sweep_tasks

LOG = logging.getLogger("imagewright.service.sweep")


@dataclass
class SweepReport:
    reset_uploads: list[str] = field(default_factory=list)
    removed_incomplete: list[str] = field(default_factory=list)
    removed_orphans: list[str] = field(default_factory=list)
    purged_tokens: int = 0
    tasks: TaskSweepReport = field(default_factory=TaskSweepReport)

    def summary(self) -> str:
        text = (
            f"{len(self.reset_uploads)} interrupted upload(s) reset, "
            f"{len(self.removed_incomplete)} incomplete write(s) and "
            f"{len(self.removed_orphans)} unreferenced blob(s) removed"
        )
        return f"{text}; {self.tasks.summary()}" if self.tasks else text

    def __bool__(self) -> bool:
        return bool(self.reset_uploads or self.removed_orphans or self.removed_incomplete or self.tasks)


def sweep(registry: Registry, *, incomplete_grace: float | None = None) -> SweepReport:
    report = SweepReport()
    grace = registry.config.incomplete_grace_seconds if incomplete_grace is None else incomplete_grace
    now = utcnow()

    with registry.catalog.reading() as session:
        saving = images.saving_uploads(session)
    for upload in saving:
        expired = upload.expires_at is None or upload.expires_at <= now
        if not (expired or holder_is_dead_here(upload.holder)):
            continue
        with registry.catalog.writing() as session:
            reset = images.release_upload(session, upload.image_id, upload.holder)
        if not reset:
            continue
        report.reset_uploads.append(upload.image_id)
        if upload.location and upload.store_id in registry.stores:
            _delete(registry, upload.store_id or "", upload.location)
        LOG.warning("upload of image %s was interrupted; the image is queued again", upload.image_id)

    if registry.tasks is not None:
        # Before the orphan pass: the blobs of tasks whose worker died lose their names here.
        report.tasks = sweep_tasks(registry.tasks)

    for store in registry.stores:
        try:
            report.removed_incomplete.extend(store.sweep_incomplete(grace))
            listed = list(store.iter_locations())
        except StoreError as err:
            LOG.warning("sweep of store %s skipped: %s", store.info.id, err)
            continue
        with registry.catalog.reading() as session:
            referenced = images.referenced_locations(session) | imports.referenced_blob_locations(session)
        for location in listed:
            if location not in referenced:
                _delete(registry, store.info.id, location)
                report.removed_orphans.append(location)

    with registry.catalog.writing() as session:
        report.purged_tokens = purge_expired(session)
    return report


def _delete(registry: Registry, store_id: str, location: str) -> None:
    try:
        registry.stores[store_id].delete(location)
    except StoreError as err:
        LOG.warning("could not delete %s (next sweep will retry): %s", location, err)
