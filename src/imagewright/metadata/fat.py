"""VFAT disk images for context media, built through mtools: no mount, no loop device, no root.

The image is a *superfloppy*: the FAT boot sector sits at byte 0 of the disk and there is no
partition table. Why: a guest finds the medium by its label (``blkid -t LABEL=METADATA`` /
``mount LABEL=METADATA``), and on a superfloppy the label is on the whole disk (``/dev/vdb``),
so no partition scan has to happen first (busybox initramfs guests often have no partition
devices until mdev runs); ``blkid -p`` on the image file itself sees ``TYPE=vfat``, which keeps
host-side checks simple. Wakame-vdc's own first metadata drive was made the same way
(``mkfs.vfat -n METADATA`` over a 10 MiB file); later releases put one FAT partition in an
MBR table (``parted mklabel msdos; mkpart primary fat32 1 10m``) - a label lookup finds either.

Steps: stage the tree in a private temporary directory, ``truncate`` the image to its size,
``mformat -v LABEL``, ``mcopy -s`` the staged tree in, then ``mdir -/ -b`` the result and check
every expected path is there (mtools skips a name it considers clashing instead of failing).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from imagewright.errors import ContextError
from imagewright.metadata.layout import MediumLayout
from imagewright.programs import mtools

MIB = 1024 * 1024
#: Small enough to be cheap, large enough that FAT16 with 2 KiB clusters leaves room for
#: user-data; grown for large user-data (see ``image_size_for``).
DEFAULT_IMAGE_SIZE = 16 * MIB
#: Room for boot sector, two FATs and the root directory, plus one cluster per file and dir.
_OVERHEAD = 2 * MIB
_CLUSTER = 4096


def image_size_for(layout: MediumLayout) -> int:
    """Bytes for an image holding ``layout``: 16 MiB, or more for a large user-data."""
    needed = _OVERHEAD
    for item in layout.files:
        needed += max(1, -(-len(item.data) // _CLUSTER)) * _CLUSTER
    needed += len(layout.all_directories()) * _CLUSTER
    size = max(DEFAULT_IMAGE_SIZE, needed + needed // 8)
    return -(-size // MIB) * MIB


def volume_serial(layout: MediumLayout) -> int:
    """A FAT volume serial derived from the content, so equal inputs give equal serials."""
    digest = hashlib.sha256()
    for item in layout.files:
        digest.update(item.path.encode() + b"\0" + hashlib.sha256(item.data).digest())
    return int.from_bytes(digest.digest()[:4], "big")


def write_fat_image(layout: MediumLayout, destination: Path, size: int | None = None) -> None:
    """Write ``layout`` as a FAT superfloppy image labelled ``layout.label`` to ``destination``."""
    if layout.filesystem != "vfat":
        raise ContextError(f"The {layout.kind} medium is not a FAT medium.")
    size = image_size_for(layout) if size is None else size
    with tempfile.TemporaryDirectory(prefix="imagewright-fat-") as staging_name:
        staging = Path(staging_name)
        top_level = _stage(layout, staging)
        try:
            with destination.open("wb") as out:
                out.truncate(size)
        except OSError as err:
            raise ContextError(
                f"The image '{destination}' could not be created: {err.strerror or err}."
            ) from None
        mtools.format_fat(destination, layout.label, volume_serial(layout))
        mtools.copy_in(destination, [staging / name for name in top_level])
    _check_tree(layout, destination)


def _stage(layout: MediumLayout, staging: Path) -> list[str]:
    for directory in layout.all_directories():
        (staging / directory).mkdir(mode=0o700)
    for item in layout.files:
        (staging / item.path).write_bytes(item.data)
    return sorted({p.split("/", 1)[0] for p in layout.file_paths + layout.all_directories()})


def _check_tree(layout: MediumLayout, image: Path) -> None:
    present = set(mtools.list_tree(image))
    expected = set(layout.file_paths) | {d + "/" for d in layout.all_directories()}
    missing = sorted(expected - present)
    if missing:
        raise ContextError(f"mtools did not store '{missing[0]}' in the FAT image.")
