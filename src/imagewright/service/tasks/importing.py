"""The interoperable import pipeline: fetch, judge, convert, store, activate — or undo and say why.

One task, four methods (Glance's, ``glance/async_/flows/api_image_import.py``):

- **web-download**: the URL is fetched into the task's scratch directory under the URL policy
  that was in force when the import was accepted (``web_download``).
- **glance-download**: the image's data is fetched from another Glance-compatible registry
  (``/v2/images/{id}/file``) with the token the API obtained when it accepted the import.
- **glance-direct**: the data staged by ``PUT /stage`` (a blob in a store).
- **copy-image**: the active image's data is copied into more stores, checked against its
  checksum and hash on the way; the image stays ``active``.

For the first three, the bytes then go through the same gate as an upload
(``imagewright.upload_gate``: imagewright's inspection, and the content must be what
``disk_format``/``container_format`` say — an image created without them gets them from its
content), and what is inside them becomes properties (OS, firmware, audit) as for an upload
(``service.images.publishing``; a public image whose data holds secrets fails the import).
If the target stores convert (``--convert-to``), ``ops.convert`` writes the image in that format
— ``imagewright convert``'s one path (the source judged again by its own gate; md5 and sha512 of
the output computed as it is written — or, for a downloaded qcow2 converted to raw, computed
from the download as it arrives by imagewright's own qcow2 reader, which writes the raw output
into the task's scratch in the same pass: ``ops.convert.guest_reader``; the gate still judges
the complete file, and that output is used only if it admits it and it is this very file's
conversion, else converted after the gate as any other). A compressed image
(``container_format`` ``compressed``: a ``disk.raw.gz`` as cloud images travel) is judged by
convert alone: a raw disk inside is judged and converted as it decompresses, no scratch copy,
every byte seen before the image can turn active (the upload gate would examine it only as far
as memory allows, and refuse more); then its content must be what the declared formats say.
``disk_format`` becomes the target and ``container_format`` ``bare``, as Glance's
image_conversion plugin does. The data is written into each target store (each blob named in the
catalog before its first byte), hashed on the way when no conversion hashed it, and the image
turns ``active`` with size, ``virtual_size``, ``checksum`` (md5) and ``os_hash_value`` (sha512)
of what the stores hold.

Any failure (a refused URL, a hostile image, a full store, the image deleted meanwhile) deletes
every blob this attempt wrote and the staged data, and puts the image back to ``queued``
(``catalog.imports.revert_import``); the task's message is the error's one sentence. With
``all_stores_must_succeed`` false, a store that fails is listed in ``os_glance_failed_import``
and the import succeeds if one store took the image.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagewright.binary import ByteSource, FileSource, GrowingFile
from imagewright.catalog import imports
from imagewright.catalog.imports import BlobRef
from imagewright.catalog.models import Image
from imagewright.errors import ImagewrightError, StoreError, UnsafeImageError
from imagewright.files import ScratchFiles
from imagewright.formats.containers.signature import probe_compression
from imagewright.inspection import ImageReport, inspect_image
from imagewright.ops.inspect_os.properties import ImageFacts
from imagewright.service.images import publishing
from imagewright.service.images.schemas import MAX_PROPERTIES
from imagewright.service.tasks import web_download
from imagewright.service.tasks.run import TaskRun, TaskStoppedError
from imagewright.stores import BlobStore
from imagewright.stores.file import FileStore
from imagewright.upload_gate import judge_report, judge_upload

if TYPE_CHECKING:
    from imagewright.ops.convert import ConvertResult, GuestHashing

LOG = logging.getLogger("imagewright.service.tasks")

CHUNK = 1 << 20
HASH_ALGORITHM = "sha512"
#: Glance's ``checksum`` and ``os_hash_value``.
CHECKSUMS = ("md5", HASH_ALGORITHM)


class ImportFailedError(ImagewrightError):
    """An import that cannot complete; the message is the task's."""


@dataclass(frozen=True)
class ImportPlan:
    """What the API decided when it accepted the import (the task's private input)."""

    method: str
    stores: tuple[str, ...]
    all_stores_must_succeed: bool
    convert_to: str | None
    uri: str | None = None
    allow: tuple[str, ...] = ()
    max_bytes: int = 1 << 40
    idle_timeout: float = 60.0
    timeout: float = 6 * 3600.0
    remote_url: str | None = None
    remote_token: str | None = None
    #: Keep the data as it arrived beside its conversion (``--keep-original``).
    keep_original: bool = False

    def to_private(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "stores": list(self.stores),
            "all_stores_must_succeed": self.all_stores_must_succeed,
            "convert_to": self.convert_to,
            "uri": self.uri,
            "allow": list(self.allow),
            "max_bytes": self.max_bytes,
            "idle_timeout": self.idle_timeout,
            "timeout": self.timeout,
            "remote_url": self.remote_url,
            "remote_token": self.remote_token,
            "keep_original": self.keep_original,
        }

    @classmethod
    def from_private(cls, data: dict[str, Any]) -> ImportPlan:
        return cls(
            method=str(data["method"]),
            stores=tuple(data["stores"]),
            all_stores_must_succeed=bool(data["all_stores_must_succeed"]),
            convert_to=data.get("convert_to"),
            uri=data.get("uri"),
            allow=tuple(data.get("allow") or ()),
            max_bytes=int(data.get("max_bytes") or 1 << 40),
            idle_timeout=float(data.get("idle_timeout") or 60.0),
            timeout=float(data.get("timeout") or 6 * 3600.0),
            remote_url=data.get("remote_url"),
            remote_token=data.get("remote_token"),
            keep_original=bool(data.get("keep_original")),
        )


@dataclass
class ImageData:
    """The bytes to store: a local file or a blob, what they are, and (when known) their hashes."""

    size: int
    disk_format: str
    container_format: str
    virtual_size: int | None
    path: Path | None = None
    blob: BlobRef | None = None
    md5: str | None = None
    sha512: str | None = None
    #: ``path`` is this task's own scratch file (a store may take it instead of a copy).
    owned: bool = False
    #: What the gate found to record (an OVA's signer: ``upload_gate.OVA_PROPERTIES``).
    properties: dict[str, str] = field(default_factory=dict)
    #: The gate's inspection of the bytes (set by ``_judge``).
    report: ImageReport | None = None
    #: md5 and sha512 of the raw conversion of ``path``, being computed as it arrives.
    prehashed: GuestHashing | None = None


@dataclass(frozen=True)
class DeclaredImage:
    disk_format: str | None
    container_format: str | None
    checksum: str | None
    os_hash_value: str | None
    size: int | None
    primary: BlobRef | None


def run_import(run: TaskRun) -> dict[str, Any]:
    task = run.task
    if task.image_id is None:
        raise ImportFailedError("The import task names no image.")
    plan = ImportPlan.from_private(task.private)
    environment = run.environment
    written: list[BlobRef] = []
    failed: list[str] = []
    try:
        with ScratchFiles(environment.scratch_root / task.id) as scratch:
            work = scratch.scratch_directory("work")
            if plan.method == "copy-image":
                return _copy_image(run, plan, task.image_id, written, failed)
            return _import(run, plan, task.image_id, work, written, failed)
    except TaskStoppedError as err:
        if err.requeue:
            # Another attempt will start over: what this one wrote goes, the image stays importing.
            with environment.catalog.writing() as session:
                blobs = imports.drop_pending_blobs(session, task.id)
            _delete_blobs(run, [*blobs, *written])
        raise
    except BaseException:
        # The import failed for every store it targeted (what was written is deleted below).
        with environment.catalog.writing() as session:
            blobs = imports.revert_import(session, task.image_id, task.id, plan.method, plan.stores)
        _delete_blobs(run, [*blobs, *written])
        raise


# --- web-download, glance-download, glance-direct ----------------------------------------------


def _declared(run: TaskRun, image_id: str) -> DeclaredImage:
    with run.environment.catalog.reading() as session:
        image = session.get(Image, image_id)
        if image is None:
            raise ImportFailedError(f"The image {image_id} was deleted before its import started.")
        if not imports.holds_lock(image, run.task.id):
            raise ImportFailedError("Another import of this image took over.")
        primary = BlobRef(image.store_id, image.location) if image.store_id and image.location else None
        return DeclaredImage(
            image.disk_format,
            image.container_format,
            image.checksum,
            image.os_hash_value,
            image.size,
            primary,
        )


def _import(
    run: TaskRun, plan: ImportPlan, image_id: str, work: Path, written: list[BlobRef], failed: list[str]
) -> dict[str, Any]:
    declared = _declared(run, image_id)
    if plan.convert_to is not None and plan.method != "glance-direct":
        arrived, converted = _acquire_converting(run, plan, work, declared)
    else:
        arrived, converted = _acquire(run, plan, image_id, work), None
    try:
        return _import_arrived(run, plan, image_id, work, written, failed, declared, arrived, converted)
    finally:
        if arrived.prehashed is not None:
            arrived.prehashed.cancel()  # (ended already, unless the import failed before using it)


def _import_arrived(
    run: TaskRun,
    plan: ImportPlan,
    image_id: str,
    work: Path,
    written: list[BlobRef],
    failed: list[str],
    declared: DeclaredImage,
    arrived: ImageData,
    converted: ImageData | None,
) -> dict[str, Any]:
    facts: ImageFacts | None = None
    if converted is None:
        run.progress("inspecting", 0, arrived.size)
        if plan.convert_to is not None and _compressed(run, arrived):
            # A compressed image is judged by convert itself, every decompressed byte as it goes
            # by (the upload gate examines a compressed blob only as far as memory allows).
            converted = _convert_compressed(run, plan, arrived, work, declared)
        else:
            _judge(run, arrived, image_id, declared)
            if not _converts_into_raw(plan, arrived):
                run.progress("looking inside", 0, None)
                facts = _facts(run, arrived, work)
            converted = _convert(run, plan, arrived, work)
    data = converted
    if facts is None:
        # Converted as it decompressed, or into raw: what is inside is read from the output.
        run.progress("looking inside", 0, None)
        facts = _converted_facts(data)
    original = (
        _keep_original(run, image_id, plan, arrived) if plan.keep_original and data is not arrived else None
    )
    for index, store_id in enumerate(plan.stores):
        run.check()
        last = index == len(plan.stores) - 1
        try:
            # The last store may take the task's own file: the file store renames it in (the
            # others would stream it as _write does, and _write hashes in the same pass).
            adopt = last and data.owned and isinstance(run.environment.stores[store_id], FileStore)
            written.append(_store(run, image_id, store_id, data, adopt=adopt))
        except StoreError as err:
            if plan.all_stores_must_succeed:
                raise
            LOG.warning("import of %s into store %s failed: %s", image_id, store_id, err)
            failed.append(store_id)
    if not written:
        raise ImportFailedError(f"No store took the image ({', '.join(failed)} failed).")
    values = {
        "size": data.size,
        "virtual_size": data.virtual_size,
        "checksum": data.md5,
        "os_hash_algo": HASH_ALGORITHM,
        "os_hash_value": data.sha512,
        "disk_format": data.disk_format,
        "container_format": data.container_format,
    }
    with run.environment.catalog.writing() as session:
        staged = imports.complete_import(
            session,
            image_id,
            run.task.id,
            values=values,
            written=written,
            failed_stores=failed,
            stores=plan.stores,
            properties=data.properties,
            original=original,
        )
        if staged is not None:
            image = session.get(Image, image_id)
            assert image is not None
            publishing.apply_facts(image, facts, limit=MAX_PROPERTIES)
            publishing.require_publishable(image_id, image.visibility, publishing.property_dict(image))
            run.succeed_in(session, {"image_id": image_id})
    if staged is None:
        raise ImportFailedError(
            "The image was deleted, or its import taken over, while the data was imported."
        )
    _delete_blobs(run, staged)
    return {"image_id": image_id}


def _acquire(run: TaskRun, plan: ImportPlan, image_id: str, work: Path) -> ImageData:
    """The bytes to import: downloaded into ``work``, or the staged blob."""
    if plan.method == "glance-direct":
        with run.environment.catalog.reading() as session:
            staged = imports.staging_blob(session, image_id)
        if staged is None:
            raise ImportFailedError("The image has no staged data; stage it again (PUT /stage).")
        store = run.environment.stores[staged.store_id]
        with store.open(staged.location) as reader:
            size = reader.size
        return ImageData(size=size, disk_format="", container_format="", virtual_size=None, blob=staged)
    target = work / "download"
    url, headers, policy = _fetch_spec(plan)
    limits = web_download.Limits(plan.max_bytes, plan.idle_timeout, plan.timeout)
    # Without a conversion (or with the original kept) the downloaded bytes are stored: hash
    # them as they arrive.
    hashes = _Hashes() if plan.convert_to is None or plan.keep_original else None
    result = web_download.download(
        url,
        target,
        policy,
        limits,
        headers=headers,
        progress=run.reporter("downloading"),
        should_stop=run.should_stop,
        on_data=hashes.update if hashes is not None else None,
    )
    run.check()
    LOG.info("task %s downloaded %d bytes from %s", run.task.id, result.size, result.final_url)
    if result.size == 0:
        raise ImportFailedError(f"{url} sent no data.")
    data = ImageData(
        size=result.size, disk_format="", container_format="", virtual_size=None, path=target, owned=True
    )
    if hashes is not None:
        data.md5, data.sha512 = hashes.md5.hexdigest(), hashes.sha512.hexdigest()
    return data


def _fetch_spec(plan: ImportPlan) -> tuple[str, dict[str, str], web_download.UrlPolicy]:
    """What a web-download or glance-download fetches: the URL, its headers, the URL policy."""
    if plan.method == "web-download":
        if not plan.uri:
            raise ImportFailedError("The web-download import names no URI.")
        return plan.uri, {}, web_download.UrlPolicy.from_prefixes(plan.allow)
    if plan.method == "glance-download":
        if not plan.remote_url:
            raise ImportFailedError("The glance-download import names no remote image.")
        headers = {"X-Auth-Token": plan.remote_token or ""}
        # The remote registry is the operator's (configured with --glance-region): allowed as such.
        return plan.remote_url, headers, web_download.UrlPolicy.from_prefixes([_origin(plan.remote_url)])
    raise ImportFailedError(f"Unknown import method {plan.method!r}.")


def _acquire_converting(
    run: TaskRun, plan: ImportPlan, work: Path, declared: DeclaredImage
) -> tuple[ImageData, ImageData | None]:
    """A download into a converting store: (what arrived, its conversion or None).

    The download runs in a thread. A compressed image is converted from the file *as it
    arrives* (``convert`` reads it through a ``GrowingFile``, waiting for each byte): a raw disk
    inside streams through convert's own judge — every decompressed byte judged before it is
    handed on, the last piece held back until the end of the stream is judged, and no qemu-img
    reads anything but ``-f raw`` — so decompressing (for gzip: the checking pass) overlaps the
    download. The image turns active only after both ended well. Anything else (a qcow2 ...)
    needs random access: None, and the caller judges and converts the complete file.
    """
    target = work / "download"
    target.touch()
    url, headers, policy = _fetch_spec(plan)
    limits = web_download.Limits(plan.max_bytes, plan.idle_timeout, plan.timeout)
    hashes = _Hashes() if plan.keep_original else None
    stop = threading.Event()
    outcome: list[web_download.DownloadResult] = []
    growing = GrowingFile(target)
    hashing: GuestHashing | None = None
    try:
        report = run.reporter("downloading")

        def progress(done: int, total: int | None) -> None:
            if total is not None:
                growing.expect(total)
            report(done, total)

        def fetch() -> None:
            try:
                outcome.append(
                    web_download.download(
                        url,
                        target,
                        policy,
                        limits,
                        headers=headers,
                        progress=progress,
                        should_stop=lambda: stop.is_set() or run.should_stop(),
                        on_data=hashes.update if hashes is not None else None,
                        on_written=growing.grew,
                    )
                )
                growing.finish()
            except BaseException as err:  # noqa: BLE001 - handed to the reader, raised there
                growing.fail(err)

        thread = threading.Thread(target=fetch, name=f"download-{run.task.id[:8]}", daemon=True)
        thread.start()
        arrived = ImageData(
            size=0, disk_format="", container_format="", virtual_size=None, path=target, owned=True
        )
        converted: ImageData | None = None
        try:
            if probe_compression(growing.pread(0, 64)) is not None:
                converted = _convert_compressed(run, plan, arrived, work, declared, growing=growing)
            elif plan.convert_to == "raw":
                # A qcow2 is judged only once it is complete, but the digests of its conversion,
                # and the conversion itself (a candidate in the scratch, used only if the gate
                # admits this very file), can be made as it arrives (ops.convert.guest_reader),
                # by a thread that goes on beside the gate; it closes ``growing``.
                from imagewright.ops.convert import GuestHashing

                hashing = arrived.prehashed = GuestHashing(
                    growing, target, CHECKSUMS, output=work / "prewritten.raw"
                )
            growing.wait_complete()
        finally:
            if not outcome:
                stop.set()  # the conversion failed: the download stops too
            thread.join()
        run.check()
        result = outcome[0]
        LOG.info("task %s downloaded %d bytes from %s", run.task.id, result.size, result.final_url)
        if result.size == 0:
            raise ImportFailedError(f"{url} sent no data.")
    except BaseException:
        if hashing is not None:
            hashing.cancel()
        raise
    finally:
        if hashing is None:
            growing.close()
    arrived.size = result.size
    if hashes is not None:
        arrived.md5, arrived.sha512 = hashes.md5.hexdigest(), hashes.sha512.hexdigest()
    return arrived, converted


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


def _open_source(run: TaskRun, data: ImageData) -> ByteSource:
    if data.path is not None:
        return FileSource(str(data.path))
    assert data.blob is not None
    return run.environment.stores[data.blob.store_id].open(data.blob.location)


def _judge(run: TaskRun, data: ImageData, image_id: str, declared: DeclaredImage) -> None:
    """The upload gate on the bytes; fills in the formats (declared, or found when undeclared)."""
    source = _open_source(run, data)
    try:
        # Undeclared formats are the content's (judge_upload names them, or refuses content
        # Glance has no disk_format for); an OVA is verified as a package there too.
        judged = judge_upload(source, f"image {image_id}", declared.disk_format, declared.container_format)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    data.disk_format, data.container_format = judged.disk_format, judged.container_format
    data.virtual_size = judged.virtual_size
    data.properties = judged.properties
    data.report = judged.report


def _facts(run: TaskRun, data: ImageData, work: Path) -> ImageFacts:
    """What is inside the judged bytes (``service.images.publishing``), read from a local file."""
    assert data.report is not None
    if not publishing.looked_into(data.disk_format, data.container_format):
        return ImageFacts()
    if data.path is None:
        # A staged blob: the file store's own file, or a copy that the conversion and the
        # stores then read instead of the blob.
        data.path = _local_copy(run, data, work)
    return publishing.content_facts(data.path, data.report, data.disk_format, data.container_format)


def _converts_into_raw(plan: ImportPlan, data: ImageData) -> bool:
    """Whether ``_convert`` writes judged, looked-into bytes (a bare disk that is not raw) into a
    new raw file: what is inside is then read from that file where it lies (``_converted_facts``)
    instead of from a raw working copy of the source made for it alone (a whole extra pass)."""
    return (
        plan.convert_to == "raw"
        and data.container_format == "bare"
        and publishing.looked_into(data.disk_format, data.container_format)
        and data.disk_format != "raw"
    )


def _converted_facts(data: ImageData) -> ImageFacts:
    """``_facts`` of a conversion's output: a local file this task wrote from judged bytes."""
    assert data.path is not None
    return publishing.content_facts(
        data.path, inspect_image(data.path), data.disk_format, data.container_format
    )


def _compressed(run: TaskRun, data: ImageData) -> bool:
    source = _open_source(run, data)
    try:
        return probe_compression(source.pread(0, 64)) is not None
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _convert_compressed(
    run: TaskRun,
    plan: ImportPlan,
    data: ImageData,
    work: Path,
    declared: DeclaredImage,
    *,
    growing: GrowingFile | None = None,
) -> ImageData:
    """A compressed image into ``plan.convert_to`` by ``imagewright convert``'s own path (a raw
    disk inside is judged and converted as it decompresses, no scratch copy; any other format
    is spooled and inspected in full first): the gate's verdict is convert's, and the content
    must then be what the image's formats declare (``container_format`` ``compressed``)."""
    assert plan.convert_to is not None
    try:
        converted, result = _run_convert(run, plan.convert_to, data, work, growing=growing)
    except UnsafeImageError as err:
        reasons = err.reasons
        more = f" (also: {'; '.join(reasons[1:4])})" if len(reasons) > 1 else ""
        raise UnsafeImageError(f"The image is refused: {reasons[0].rstrip('.')}{more}.", reasons) from None
    found = result.wrapper_report or result.source_report
    if found is None:
        raise ImportFailedError("The conversion did not say what it read; the image was not imported.")
    judged = judge_report(found, declared.disk_format, declared.container_format)
    data.disk_format, data.container_format = judged.disk_format, judged.container_format
    data.virtual_size = result.virtual_size
    return converted


def _convert(run: TaskRun, plan: ImportPlan, data: ImageData, work: Path) -> ImageData:
    """The data in ``plan.convert_to`` (via ``ops.convert``), or unchanged when it already is."""
    target = plan.convert_to
    if target is None or data.disk_format == "iso":
        return data
    if data.disk_format == target and data.container_format == "bare":
        return data
    if data.container_format == "ova":
        raise ImportFailedError(
            f"The target store keeps {target} images, and an OVA package cannot be converted on import; "
            "import its disk image instead."
        )
    return _run_convert(run, target, data, work)[0]


def _run_convert(
    run: TaskRun, target: str, data: ImageData, work: Path, *, growing: GrowingFile | None = None
) -> tuple[ImageData, ConvertResult]:
    """``ops.convert.convert`` (the CLI's one path) on the data, md5 and sha512 as it writes."""
    from imagewright.ops.convert import convert

    source = data.path if data.path is not None else _local_copy(run, data, work)
    output = work / f"converted.{target}"

    def progress(stage: str, done: int, total: int | None) -> None:
        run.progress(stage, done, total)

    result = convert(
        source,
        output,
        output_format=target,
        checksums=CHECKSUMS,
        progress=progress,
        growing=growing,
        prehashed=data.prehashed,
    )
    run.check()
    LOG.info(
        "task %s converted %s to %s (%d bytes, source %s%s) in %.1f s",
        run.task.id,
        result.source_compression or result.source_format,
        target,
        result.output_size,
        result.source_access,
        ", hashed as it arrived" if result.prehashed else "",
        result.seconds,
    )
    converted = ImageData(
        size=result.output_size,
        disk_format=target,
        container_format="bare",
        virtual_size=result.virtual_size,
        path=output,
        md5=result.checksums["md5"],
        sha512=result.checksums["sha512"],
        owned=True,
    )
    return converted, result


def _keep_original(run: TaskRun, image_id: str, plan: ImportPlan, arrived: ImageData) -> imports.KeptOriginal:
    """The data as it arrived, kept as a blob of its own (``--keep-original``) in the first target
    store: the staged blob itself for glance-direct, else the download moved (or copied) in.

    Not a location of the image: Glance's locations all hold the image's bytes, and a client may
    read any of them. The catalog names it (``image_locations``, status ``original``: deleted
    with the image) and the image's ``os_imagewright_original_*`` properties describe it.
    """
    if arrived.blob is not None:
        blob = arrived.blob
        _hash(run, arrived)
    else:
        store_id = plan.stores[0]
        adopt = isinstance(run.environment.stores[store_id], FileStore)
        blob = _store(run, image_id, store_id, arrived, adopt=adopt)
    assert arrived.md5 is not None and arrived.sha512 is not None
    return imports.KeptOriginal(
        blob=blob,
        disk_format=arrived.disk_format,
        container_format=arrived.container_format,
        size=arrived.size,
        md5=arrived.md5,
        sha512=arrived.sha512,
    )


def _local_copy(run: TaskRun, data: ImageData, work: Path) -> Path:
    """A path to the blob's bytes: the file store's own file, or a copy in ``work``."""
    assert data.blob is not None
    store = run.environment.stores[data.blob.store_id]
    if isinstance(store, FileStore):
        return store.path_for(store.key_of(data.blob.location))
    path = work / "staged"
    done = 0
    with open(path, "wb") as out:
        for chunk in store.read_chunks(data.blob.location):
            out.write(chunk)
            done += len(chunk)
            run.progress("fetching", done, data.size)
    return path


class _Hashes:
    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha512 = hashlib.sha512()

    def update(self, data: bytes | memoryview) -> None:
        self.md5.update(data)
        self.sha512.update(data)


def _chunks(run: TaskRun, data: ImageData) -> Iterator[bytes]:
    if data.path is not None:
        with open(data.path, "rb") as source:
            while chunk := source.read(CHUNK):
                yield chunk
    else:
        assert data.blob is not None
        yield from run.environment.stores[data.blob.store_id].read_chunks(data.blob.location)


def _hash(run: TaskRun, data: ImageData) -> None:
    """md5 and sha512 of ``data`` (one read) unless known."""
    if data.md5 is not None and data.sha512 is not None:
        return
    hashes = _Hashes()
    done = 0
    for chunk in _chunks(run, data):
        hashes.update(chunk)
        done += len(chunk)
        run.progress("hashing", done, data.size)
    data.md5, data.sha512 = hashes.md5.hexdigest(), hashes.sha512.hexdigest()


def _store(run: TaskRun, image_id: str, store_id: str, data: ImageData, *, adopt: bool = False) -> BlobRef:
    """Write ``data`` into the store as a new blob (named in the catalog first); hash if unknown.

    ``adopt``: the store takes the scratch file itself (moved, not copied, where it can).
    """
    store = run.environment.stores[store_id]
    blob = _new_blob(run, image_id, store)
    key = store.key_of(blob.location)
    if adopt and data.path is not None:
        _hash(run, data)
        stage = f"storing:{store_id}"
        run.progress(stage, 0, data.size)
        location = store.adopt(key, data.path, lambda done: run.progress(stage, done, data.size))
        data.path = None
        run.progress(stage, data.size, data.size)
    else:
        location = _write(run, store, key, store_id, data)
    if location != blob.location:
        raise StoreError(f"The store wrote the blob to {location}, not to {blob.location}.")
    return blob


def _write(run: TaskRun, store: BlobStore, key: str, store_id: str, data: ImageData) -> str:
    hashes = _Hashes() if data.md5 is None or data.sha512 is None else None
    done = 0
    with store.writer(key, data.size) as writer:
        for chunk in _chunks(run, data):
            if hashes is not None:
                hashes.update(chunk)
            writer.write(chunk)
            done += len(chunk)
            run.progress(f"storing:{store_id}", done, data.size)
        if done != data.size:
            raise ImportFailedError(
                f"The image data changed while it was stored ({done} of {data.size} bytes)."
            )
        location = writer.finish()
    if hashes is not None:
        data.md5, data.sha512 = hashes.md5.hexdigest(), hashes.sha512.hexdigest()
    return location


def _new_blob(run: TaskRun, image_id: str, store: BlobStore) -> BlobRef:
    key = f"{image_id}.{uuid.uuid4().hex[:12]}"
    location = store.location_for(key)
    with run.environment.catalog.writing() as session:
        imports.add_pending_blob(session, image_id, run.task.id, store.info.id, location)
    return BlobRef(store.info.id, location)


# --- copy-image ---------------------------------------------------------------------------------


def _copy_image(
    run: TaskRun, plan: ImportPlan, image_id: str, written: list[BlobRef], failed: list[str]
) -> dict[str, Any]:
    declared = _declared(run, image_id)
    if declared.primary is None or declared.size is None:
        raise ImportFailedError("The image has no data to copy.")
    source = ImageData(
        size=declared.size,
        disk_format=declared.disk_format or "",
        container_format=declared.container_format or "",
        virtual_size=None,
        blob=declared.primary,
    )
    for store_id in plan.stores:
        run.check()
        try:
            blob = _store(run, image_id, store_id, source)
            if source.md5 != declared.checksum or source.sha512 != declared.os_hash_value:
                _delete_blobs(run, [blob])
                raise ImportFailedError(
                    f"The copy of the image in store {store_id} does not match its checksum: the data in "
                    f"store {declared.primary.store_id} may be damaged."
                )
            written.append(blob)
        except StoreError as err:
            if plan.all_stores_must_succeed:
                raise
            LOG.warning("copy of %s into store %s failed: %s", image_id, store_id, err)
            failed.append(store_id)
        source.md5 = source.sha512 = None  # each copy is checked on its own pass
    if not written:
        raise ImportFailedError(f"No store took the copy ({', '.join(failed)} failed).")
    with run.environment.catalog.writing() as session:
        done = imports.complete_copy(
            session, image_id, run.task.id, written=written, failed_stores=failed, stores=plan.stores
        )
        result = {"image_id": image_id, "stores": [blob.store_id for blob in written]}
        if done:
            run.succeed_in(session, result)
    if not done:
        raise ImportFailedError("The image was deleted, or deactivated, while it was copied.")
    return result


def _delete_blobs(run: TaskRun, blobs: list[BlobRef]) -> None:
    seen: set[str] = set()
    for blob in blobs:
        if blob.location in seen or blob.store_id not in run.environment.stores:
            continue
        seen.add(blob.location)
        try:
            run.environment.stores[blob.store_id].delete(blob.location)
        except StoreError as err:
            LOG.warning("could not delete %s (the sweep will): %s", blob.location, err)
