"""The root filesystem, written into its partition's byte range of the image — never mounted.

- From a tree (a directory source, or a tarball extracted into staging): ``mke2fs -t ext4
  -E offset=BYTES -d TREE IMAGE SIZEk`` creates and fills the filesystem in one go, then the
  metadata the tree could not hold is applied with debugfs (``metadata.py``).
- From a flat filesystem image: a private raw copy (streamed, holes skipped; a source in another
  format or compressed is turned into one by ``convert``) is checked with ``e2fsck -fp`` as
  ``resize2fs`` demands (replaying a journal left by an unclean shutdown), resized to the
  partition's size (grown, or shrunk when it is larger but holds little), and copied into the
  partition.

NOTE: e2fsprogs reach the filesystem inside the image as ``"IMAGE?offset=BYTES"``; that is why
the image must be a raw file while it is built (any other output format is converted at the end).
resize2fs is the exception: it strips the ``?offset=`` part to open the *file*, and after a
resize it truncates (or extends) that file to the filesystem's new size — measured with
e2fsprogs 1.47.0, ``resize2fs "disk.img?offset=2097152" 2G`` cut a GPT disk to 2 GiB, taking the
end of the root partition, the swap partition and the backup GPT with it. So a flat filesystem
is checked and resized in a scratch file of its own (where "the file is the filesystem" holds),
and only then copied into the partition.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import BuildError, ProgramError
from imagewright.formats.base import Limits
from imagewright.ops.build.layout import LayoutShape, PlannedPartition
from imagewright.ops.build.metadata import InodeState, MetadataPlan, apply_metadata
from imagewright.ops.build.sizing import check_filesystem_fits
from imagewright.ops.build.source import FilesystemImageSource
from imagewright.ops.build.transfer import copy_into
from imagewright.programs import e2fs
from imagewright.units import format_size

#: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int | None], None]

#: Label of the root filesystems build creates.
ROOT_LABEL = "root"
_FULL_MARKERS = ("Could not allocate", "No space left", "too many inodes", "Inode bitmap")


@dataclass(frozen=True)
class RootFilesystem:
    """The root filesystem as written."""

    fs_type: str
    uuid: str
    label: str | None
    size: int
    #: How it was made: "mke2fs -d" or "copied" (+ "grown"/"shrunk").
    method: str
    #: debugfs commands run for owners, modes, device nodes and attributes.
    metadata_commands: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "type": self.fs_type,
            "uuid": self.uuid,
            "label": self.label,
            "size": self.size,
            "method": self.method,
            "metadata_commands": self.metadata_commands,
        }


def write_tree(
    image: Path,
    part: PlannedPartition,
    tree: Path,
    plan: MetadataPlan,
    *,
    fs_type: str,
    uuid: str,
    scratch: Path,
) -> RootFilesystem:
    """Create the root filesystem from ``tree`` in ``part`` and apply ``plan``."""
    try:
        e2fs.mke2fs(
            image,
            fs_type=fs_type,
            size_bytes=part.size,
            offset=part.offset,
            root_dir=tree,
            label=ROOT_LABEL,
            uuid=uuid,
        )
    except ProgramError as err:
        if any(marker in str(err) for marker in _FULL_MARKERS):
            raise BuildError(
                f"The source does not fit a {format_size(part.size)} {fs_type} root partition "
                f"(mke2fs: {str(err).split(': ', 1)[-1].rstrip('.')}); give a larger --size."
            ) from None
        raise
    commands = apply_metadata(e2fs.device_name(image, part.offset), plan, scratch)
    return RootFilesystem(fs_type, uuid, ROOT_LABEL, part.size, "mke2fs -d", commands)


def directory_plan(root: Path) -> MetadataPlan:
    """Owners for a directory source: as non-root, the user's own files become root's.

    mke2fs copies each file's owner from the tree; a tree a non-root user made (or unpacked)
    is theirs, and a root filesystem owned by uid 1000 does not work. So files owned by the
    current user become 0 (and their group, if it is the user's group, 0) — as ``tar --owner 0``
    would. Files owned by others keep their owners. Run as root, nothing changes. The root
    directory's mode and owner are always set (mke2fs gives it its own).
    """
    plan = MetadataPlan()
    uid, gid = os.getuid(), os.getgid()
    top = os.lstat(root)
    plan.fixes["/"] = InodeState(
        stat.S_IFDIR,
        stat.S_IMODE(top.st_mode),
        0 if top.st_uid == uid else top.st_uid,
        0 if top.st_gid == gid else top.st_gid,
    )
    if uid == 0:
        return plan
    linked: set[tuple[int, int]] = set()
    for directory, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            full = os.path.join(directory, name)
            st = os.lstat(full)
            if st.st_uid != uid and st.st_gid != gid:
                continue
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in linked:
                    continue  # one inode, one fix
                linked.add((st.st_dev, st.st_ino))
            guest = "/" + os.path.relpath(full, root).replace(os.sep, "/")
            plan.fixes[guest] = InodeState(
                stat.S_IFMT(st.st_mode),
                0o777 if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode),
                0 if st.st_uid == uid else st.st_uid,
                0 if st.st_gid == gid else st.st_gid,
            )
    return plan


def write_filesystem_image(
    image: Path,
    image_fd: int,
    part: PlannedPartition,
    source: FilesystemImageSource,
    *,
    scratch: Callable[[str], Path],
    disk_size: int,
    shape: LayoutShape,
    limits: Limits,
    progress: Progress | None = None,
) -> RootFilesystem:
    """Copy the flat filesystem of ``source`` into ``part`` and make it fill the partition."""
    raw = _raw_source(source, scratch, limits, progress)
    superblock = e2fs.read_superblock(e2fs.device_name(raw))
    fs_size = superblock.size
    try:
        free = int(superblock.fields.get("Free blocks", "0")) * superblock.block_size
    except ValueError:
        free = 0
    if raw.stat().st_size < fs_size:
        raise BuildError(
            f"The {source.fs_type} filesystem in {source.path} claims {format_size(fs_size)} but the image "
            f"holds only {format_size(raw.stat().st_size)}; it is truncated."
        )
    shrink = check_filesystem_fits(
        fs_size,
        fs_size - free,
        part.size,
        disk_size=disk_size,
        shape=shape,
        fs_type=source.fs_type,
    )

    def copying(done: int, total: int) -> None:
        if progress is not None:
            progress("copying the filesystem", done, total)

    # resize2fs works on a private copy at offset 0, never on the image: see the module NOTE.
    work = raw if raw != source.path else _scratch_copy(raw, fs_size, scratch("root.raw"), copying)
    _check(e2fs.device_name(work), source)
    if fs_size != part.size:
        e2fs.resize2fs(e2fs.device_name(work), part.size)
    method = "copied" if fs_size == part.size else ("copied, shrunk" if shrink else "copied, grown")
    # resize2fs leaves the file exactly as large as the filesystem (whole blocks of it).
    copy_into(work, image_fd, part.offset, min(work.stat().st_size, part.size), progress=copying)
    if work != source.path:
        work.unlink(missing_ok=True)
    final = e2fs.read_superblock(e2fs.device_name(image, part.offset))
    return RootFilesystem(source.fs_type, final.uuid, final.label or None, final.size, method)


def _raw_source(
    source: FilesystemImageSource, scratch: Callable[[str], Path], limits: Limits, progress: Progress | None
) -> Path:
    if not source.needs_conversion:
        return source.data_path
    from imagewright.ops.convert import convert

    raw = scratch("source.raw")
    convert(source.data_path, raw, output_format="raw", checksums=(), limits=limits, progress=progress)
    return raw


def _scratch_copy(raw: Path, length: int, target: Path, progress: Callable[[int, int], None]) -> Path:
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, length)
        copy_into(raw, fd, 0, length, progress=progress)
    finally:
        os.close(fd)
    return target


def _check(device: str, source: FilesystemImageSource) -> None:
    """``e2fsck -fp`` before resize2fs (which refuses an unchecked filesystem)."""
    try:
        e2fs.e2fsck_preen(device)
    except ProgramError as err:
        raise BuildError(
            f"The {source.fs_type} filesystem of {source.path} has errors e2fsck does not fix unattended "
            f"({str(err).split(': ', 1)[-1].rstrip('.')}); repair a copy with e2fsck -f and build from that."
        ) from None
