"""IMAGE_REF → a base image on disk that an instance's overlay sits on.

A path to an existing file is used where it lies, once the safety gate admitted it (the image
is only ever read: every instance writes its own overlay). Anything else names a registry
image (id, or a name only one image has) in the data dir's catalog: its bytes are copied from
its store once into ``DATA_DIR/cache/images/<image id>/<sha512 prefix>.img`` while md5 and
sha512 are computed, and the copy is kept only when both equal the catalog's ``checksum`` and
``os_hash_value`` (an image whose data changed gets a new hash, hence a new cache file). The
cached copy is admitted by the gate before QEMU sees it, like any file.

A file's instance records an image id made from its path (a UUID5 of its ``file://`` URL), so
the metadata service has an ``ami-id`` to tell; a registry image's is its own. A registry
image also brings its properties (``hw_firmware_type`` ...), and every base brings what the
gate's inspection found about how it boots (``boots_under``): ``firmware`` chooses from both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imagewright.catalog.database import Catalog
from imagewright.catalog.instances import resolve_image
from imagewright.catalog.models import Image
from imagewright.disk.survey import required_firmware
from imagewright.errors import ImageIOError, ImagewrightError, InvalidArgumentError
from imagewright.files import AtomicOutput, io_error
from imagewright.gate import admit
from imagewright.inspection import ImageReport
from imagewright.ops.convert.output import Hashes
from imagewright.stores.storeset import StoreSet

CACHE_DIRECTORY = Path("cache") / "images"
_CHUNK = 1 << 20

DownloadProgress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class BaseImage:
    """The image an instance boots, on disk, and what the catalog records about it."""

    path: Path
    #: QEMU's driver for it, as the gate found it.
    format: str
    image_id: str
    virtual_size: int
    #: ``file`` or ``registry``.
    origin: str
    #: It was copied from the store just now (not found in the cache).
    downloaded: bool = False
    #: "bios" and/or "uefi": the firmware the inspection found the disk boots under.
    boots_under: tuple[str, ...] = ()
    #: The firmware it must be started with (``disk.survey.required_firmware``): None when
    #: it boots under neither.
    needed_firmware: str | None = None
    #: The registry image's properties (a file has none).
    properties: Mapping[str, str] = field(default_factory=dict)
    #: The gate's report of ``path`` (what later readers of the base pass on, not judge again).
    report: ImageReport | None = field(default=None, repr=False, compare=False)


def is_file_reference(ref: str) -> bool:
    """A path (it names an existing file, or it has a '/'), not a registry id or name."""
    return os.sep in ref or Path(ref).is_file()


def file_image_id(path: Path) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, path.absolute().as_uri()))


def _admitted(
    path: Path, origin: str, image_id: str, downloaded: bool, properties: Mapping[str, str] | None = None
) -> BaseImage:
    admitted = admit(path)
    if admitted.spooled is not None:
        raise InvalidArgumentError(f"{path} is compressed; convert it to a disk image first.")
    fmt = admitted.qemu_format()
    size = admitted.virtual_size or path.stat().st_size
    boot = admitted.report.disk.boot if admitted.report.disk is not None else None
    return BaseImage(
        path, fmt, image_id, size, origin, downloaded,
        boots_under=tuple(boot.boots_under) if boot is not None else (),
        needed_firmware=required_firmware(boot),
        properties=dict(properties or {}), report=admitted.report,
    )  # fmt: skip


def boots_systemd(base: BaseImage) -> bool:
    """The guest's init is systemd (``inspect_os``'s ``read_init_system``: /sbin/init, links
    followed): its boot runs units in parallel (``compute.instance.default_cpus``). False when
    the image's filesystem cannot be read (a blank disk, a filesystem imagewright does not read).

    A registry image says so in its ``imagewright_init_system`` property (the registry reads it
    at upload, with the other OS facts): nothing is opened. A file is read (as the gate's report
    of the base lets it be: the image is not judged a second time); a qcow2 file needs a raw
    working copy for that, one pass over the image before the launch."""
    from imagewright.guest.bounded import GuestReader
    from imagewright.guest.session import open_guest
    from imagewright.ops.inspect_os.properties import INIT_SYSTEM_PROPERTY
    from imagewright.ops.inspect_os.system import read_init_system

    recorded = base.properties.get(INIT_SYSTEM_PROPERTY)
    if recorded:
        return recorded.strip().lower() == "systemd"
    try:
        with open_guest(base.path, format=base.format, report=base.report) as guest:
            return read_init_system(GuestReader(guest)) == "systemd"
    except (ImagewrightError, OSError):
        return False


def base_from_file(path: Path) -> BaseImage:
    path = path.absolute()
    if not path.is_file():
        raise InvalidArgumentError(f"{path} is not a file.")
    return _admitted(path, "file", file_image_id(path), False)


def cache_path(data_dir: Path, image: Image) -> Path:
    tag = (image.os_hash_value or image.checksum or "")[:32]
    if not tag:
        raise ImageIOError(f"The image {image.id} has no recorded checksum to check a copy against.")
    return data_dir / CACHE_DIRECTORY / image.id / f"{tag}.img"


def base_from_registry(
    catalog: Catalog,
    stores: StoreSet,
    data_dir: Path,
    ref: str,
    project_id: str | None,
    *,
    progress: DownloadProgress | None = None,
) -> BaseImage:
    """The registry image ``ref`` (visible to ``project_id``; every image when None), cached."""
    with catalog.reading() as session:
        image = resolve_image(session, ref, project_id, is_admin=project_id is None)
        properties = {prop.name: prop.value for prop in image.properties}
        session.expunge(image)
    if not image.location or not image.store_id:
        raise ImageIOError(f"The image {image.id} has no data in any store.")
    target = cache_path(data_dir, image)
    downloaded = False
    if not target.is_file():
        _download(image, stores, target, progress)
        downloaded = True
    elif image.size is not None and target.stat().st_size != image.size:
        raise ImageIOError(
            f"The cached copy {target} is {target.stat().st_size} bytes, not the image's {image.size}; "
            "remove it to download the image again."
        )
    return _admitted(target, "registry", image.id, downloaded, properties)


def _download(image: Image, stores: StoreSet, target: Path, progress: DownloadProgress | None) -> None:
    assert image.location is not None and image.store_id is not None
    store = stores[image.store_id]
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise io_error(err, target.parent, "creating") from None
    algorithm = image.os_hash_algo or "sha512"
    hashes = Hashes(("md5", algorithm) if algorithm != "md5" else ("md5",))
    done = 0
    with AtomicOutput(target, force=True, mode=0o600, doing="downloading") as out:
        with open(out.path, "wb") as handle:
            for chunk in store.read_chunks(image.location, chunk_size=_CHUNK):
                hashes.update(chunk)
                handle.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, image.size)
        digests = hashes.hexdigests()
        expected = {"md5": image.checksum, algorithm: image.os_hash_value}
        for name, value in expected.items():
            if value and digests.get(name) != value:
                raise ImageIOError(
                    f"The data of image {image.id} does not match its recorded {name} checksum; "
                    "the copy was discarded."
                )
        if image.size is not None and done != image.size:
            raise ImageIOError(
                f"The store gave {done} bytes of image {image.id}, not its recorded {image.size}."
            )
        out.commit()
