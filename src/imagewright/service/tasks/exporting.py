"""Export: an image converted to a download format, behind a signed URL that expires.

``POST /image/v2/images/{id}/actions/export`` (our extension, documented in
``/v2/schemas/export``) creates an ``image_export`` task; this runs it: the image's data is
converted by ``ops.convert`` (``qcow2``; ``vmdk`` streamOptimized, the subformat ESXi,
VirtualBox and OVF tools import; ``raw``; ``raw.gz``/``raw.zst``/``qcow2.gz``), md5 and sha256
computed as it is written, and the file is stored in the default store. The task's result names
a download path, ``/image/v2/exports/{task}/{file}?expires=T&signature=S``, where ``S`` is
HMAC-SHA256 (the registry's shared ``export_signing_key``) of ``{task}/{file}/{T}``: whoever
holds the URL may download until ``T`` (Range and checksums served), nobody can forge or
extend one. The sweep removes the blob when it expires.

Source: CloudStack ``extractTemplate`` (an async job whose result is a URL), AWS S3 presigned
URLs (the signed-expiry idea), RFC 2104 (HMAC).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from imagewright.catalog import exports
from imagewright.catalog.accounts import utcnow
from imagewright.catalog.models import Image
from imagewright.errors import ImagewrightError, StoreError
from imagewright.files import ScratchFiles
from imagewright.service.tasks.run import TaskRun
from imagewright.stores.file import FileStore

LOG = logging.getLogger("imagewright.service.tasks")

EXPORT_CHECKSUMS = ("md5", "sha256")


@dataclass(frozen=True)
class ExportFormat:
    name: str
    output_format: str
    subformat: str | None
    compression: str | None
    suffix: str


EXPORT_FORMATS: dict[str, ExportFormat] = {
    fmt.name: fmt
    for fmt in (
        ExportFormat("qcow2", "qcow2", None, None, ".qcow2"),
        ExportFormat("qcow2.gz", "qcow2", None, "gzip", ".qcow2.gz"),
        ExportFormat("raw", "raw", None, None, ".raw"),
        ExportFormat("raw.gz", "raw", None, "gzip", ".raw.gz"),
        ExportFormat("raw.zst", "raw", None, "zstd", ".raw.zst"),
        ExportFormat("vmdk", "vmdk", "streamOptimized", None, ".vmdk"),
    )
}


class ExportFailedError(ImagewrightError):
    """An export that cannot complete; the message is the task's."""


def sign(key: str, task_id: str, filename: str, expires: int) -> str:
    message = f"{task_id}/{filename}/{expires}".encode()
    return hmac.new(bytes.fromhex(key), message, hashlib.sha256).hexdigest()


def signature_valid(key: str, task_id: str, filename: str, expires: int, signature: str) -> bool:
    return hmac.compare_digest(sign(key, task_id, filename, expires), signature)


def download_path(task_id: str, filename: str, expires: int, signature: str) -> str:
    return f"/image/v2/exports/{task_id}/{quote(filename)}?expires={expires}&signature={signature}"


def run_export(run: TaskRun) -> dict[str, Any]:
    task = run.task
    environment = run.environment
    fmt = EXPORT_FORMATS.get(str(task.input.get("format")))
    if task.image_id is None or fmt is None:
        raise ExportFailedError("The export task names no image or no known format.")
    ttl = float(task.private.get("ttl_seconds") or 24 * 3600)
    with environment.catalog.reading() as session:
        image = session.get(Image, task.image_id)
        if image is None or image.status not in ("active", "deactivated") or not image.location:
            raise ExportFailedError(f"The image {task.image_id} has no data to export (any more).")
        store_id, location = image.store_id or "", image.location
    store = environment.stores.default
    filename = f"{task.image_id}{fmt.suffix}"
    key = f"{task.id}.export"
    target = store.location_for(key)
    expires_at = utcnow() + timedelta(seconds=ttl)
    with environment.catalog.writing() as session:
        exports.add_export(
            session,
            task_id=task.id,
            image_id=task.image_id,
            store_id=store.info.id,
            location=target,
            filename=filename,
            export_format=fmt.name,
            expires_at=expires_at,
        )
    try:
        with ScratchFiles(environment.scratch_root / task.id) as scratch:
            work = scratch.scratch_directory("work")
            source = _source_path(run, store_id, location, work)
            output = work / filename
            result = _convert(run, source, output, fmt)
            size = _store(run, output, key)
    except BaseException:
        with environment.catalog.writing() as session:
            exports.remove_export(session, task.id)
        try:
            store.delete(target)
        except StoreError as err:
            LOG.warning("could not delete the export %s (the sweep will): %s", target, err)
        raise
    with environment.catalog.writing() as session:
        exports.complete_export(session, task.id, size, result)
        key_hex = exports.shared_secret(session, exports.EXPORT_SIGNING_KEY)
    expires = int(expires_at.replace(tzinfo=UTC).timestamp())
    signature = sign(key_hex, task.id, filename, expires)
    return {
        "image_id": task.image_id,
        "format": fmt.name,
        "filename": filename,
        "size": size,
        "checksums": result,
        "expires_at": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "download_path": download_path(task.id, filename, expires, signature),
    }


def _source_path(run: TaskRun, store_id: str, location: str, work: Path) -> Path:
    store = run.environment.stores[store_id]
    if isinstance(store, FileStore):
        return store.path_for(store.key_of(location))
    path = work / "source"
    done = 0
    with store.open(location) as reader:
        total = reader.size
    with open(path, "wb") as out:
        for chunk in store.read_chunks(location):
            out.write(chunk)
            done += len(chunk)
            run.progress("fetching", done, total)
    return path


def _convert(run: TaskRun, source: Path, output: Path, fmt: ExportFormat) -> dict[str, str]:
    from imagewright.ops.convert import convert

    def progress(stage: str, done: int, total: int | None) -> None:
        run.progress(stage, done, total)

    result = convert(
        source,
        output,
        output_format=fmt.output_format,
        subformat=fmt.subformat,
        compression=fmt.compression,
        checksums=EXPORT_CHECKSUMS,
        progress=progress,
    )
    return dict(result.checksums)


def _store(run: TaskRun, path: Path, key: str) -> int:
    store = run.environment.stores.default
    size = path.stat().st_size
    done = 0
    with store.writer(key, size) as writer, open(path, "rb") as source:
        while chunk := source.read(1 << 20):
            writer.write(chunk)
            done += len(chunk)
            run.progress("storing", done, size)
        writer.finish()
    return size
