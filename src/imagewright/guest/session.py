"""``open_guest``: inspect an image, pick its filesystem, hand out a ``GuestFS``, save or forget.

The image is inspected first and refused when unsafe; nothing else reads it before that.
Opened for writing, every change happens on a working copy (see ``workcopy``) that replaces
the image only after the block finished without an error and (ext2/3/4) ``e2fsck -fn`` found
the edited filesystem clean, or (other filesystems) libguestfs unmounted it and shut down.
An exception anywhere leaves the image exactly as it was. A block that changed nothing leaves
it untouched too (not even rewritten).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from imagewright.errors import (
    GuestFilesystemError,
    GuestNotEditableError,
    ImageIOError,
    ImagewrightError,
    InvalidArgumentError,
)
from imagewright.guest import libguestfs
from imagewright.guest.base import GuestFS
from imagewright.guest.e2fs import E2fsGuest
from imagewright.guest.locate import (
    EXT_TYPES,
    OTHER_LINUX_TYPES,
    DiskLayout,
    FilesystemRegion,
    choose_region,
    layout_of,
    root_regions,
)
from imagewright.guest.workcopy import WorkingCopy, plain_name
from imagewright.programs import e2fs

if TYPE_CHECKING:
    from imagewright.inspection import ImageReport

ProgressCallback = Callable[[int, int | None], None]


@contextmanager
def open_guest(
    image: str | os.PathLike[str],
    *,
    format: str | None = None,
    partition: int | None = None,
    writable: bool = False,
    report: ImageReport | None = None,
    progress: ProgressCallback | None = None,
    verify: bool = True,
) -> Iterator[GuestFS]:
    """Open the filesystem of a guest image for reading (and writing, with ``writable``).

    ``format`` is an assertion: the image must be of that qemu format (inspect decides).
    ``partition`` names the partition by number; by default the filesystem holding ``/etc``.
    ``report`` is an ``imagewright.inspect`` report the caller already has. ``progress``
    receives ``(done, total)`` bytes while a working copy is made and written back.
    ``verify`` runs ``e2fsck -fn`` before the first change and after the last one.
    """
    path = _existing_image(image)
    from imagewright.gate import admit

    report = admit(path, report=report).report
    fmt = str(report.format)
    if format is not None and format != fmt:
        raise InvalidArgumentError(f"{path.name} is a {fmt} image, not {format}.")
    with WorkingCopy(path, report, writable=writable, progress=progress) as work:
        layout = layout_of(report, work.e2fs_path)
        region = choose_region(layout, work.e2fs_path, partition)
        guest = _backend(region, work.e2fs_path, f"{region.describe()} of {path.name}", writable, verify)
        guest.image_format = fmt
        try:
            yield guest
            guest.close()
            if writable and guest.modified:
                if verify:
                    guest.verify_edits()
                work.commit()
        finally:
            guest.discard()


@contextmanager
def open_scratch_guest(
    raw: Path, report: ImageReport, *, name: str, partition: int | None = None
) -> Iterator[GuestFS]:
    """The guest filesystem of ``raw``, a raw scratch copy the caller made of an image the gate
    admitted with ``report`` (its guest bytes are the same, so is its layout), opened for
    writing *in place*: no working copy, nothing to commit. ``name`` is the image's, for
    messages. The edits are checked as ``open_guest`` checks them (``e2fsck -fn`` before the
    first change and after the last). GuestNotEditableError when the guest cannot be edited
    (no Linux root filesystem, one no backend here writes, e2fsck finds errors): raised
    before anything was written, so ``raw`` still holds the image's guest bytes (a pending
    ext journal may have been replayed). On any later error ``raw`` may hold part of the
    edits — the caller owns it and throws it away.
    """
    links, device = plain_name(raw)
    try:
        try:
            layout = layout_of(report, device)
            region = choose_region(layout, device, partition)
            guest = _backend(region, device, f"{region.describe()} of {name}", True, True)
        except ImagewrightError as err:
            raise GuestNotEditableError(str(err)) from err
        guest.image_format = str(report.format)
        try:
            try:
                guest.ready_for_writes()
                if not guest.is_dir("/etc"):
                    raise GuestFilesystemError(
                        f"{guest.description} has no /etc; it does not look like a Linux root filesystem."
                    )
            except ImagewrightError as err:
                raise GuestNotEditableError(str(err)) from err
            yield guest
            guest.close()
            if guest.modified:
                guest.verify_edits()
        finally:
            guest.discard()
    finally:
        if links is not None:
            links.cleanup()


class OtherFilesystems:
    """The image's other filesystems, opened read-only on demand (a separate /boot a root's
    fstab names): ``open(partition)`` gives the filesystem of that partition (None: the
    unpartitioned disk's one), or None when there is none a backend here reads."""

    def __init__(self, layout: DiskLayout, raw: Path, name: str, fmt: str) -> None:
        self._layout, self._raw, self._name, self._fmt = layout, raw, name, fmt
        self._opened: dict[int | None, GuestFS | None] = {}

    def open(self, partition: int | None) -> GuestFS | None:
        if partition not in self._opened:
            region = next((r for r in self._layout.regions if r.partition == partition), None)
            guest: GuestFS | None = None
            if region is not None and (region.fs_type in EXT_TYPES or libguestfs.available()):
                try:
                    guest = _backend(region, self._raw, f"{region.describe()} of {self._name}", False, False)
                    guest.image_format = self._fmt
                except (GuestFilesystemError, InvalidArgumentError):
                    guest = None
            self._opened[partition] = guest
        return self._opened[partition]

    def discard(self) -> None:
        for guest in self._opened.values():
            if guest is not None:
                guest.discard()


@contextmanager
def open_root_filesystems(
    image: str | os.PathLike[str], *, report: ImageReport | None = None
) -> Iterator[tuple[list[GuestFS], list[str], OtherFilesystems]]:
    """Open every Linux root filesystem of an image read-only: ``(guests, notes, others)``,
    where the notes say what was not opened and why (a root on a filesystem without a backend
    here), and ``others`` opens the image's other filesystems when asked.

    As ``open_guest``, the image is judged by ``inspect`` first; nothing in the guest runs.
    """
    path = _existing_image(image)
    from imagewright.gate import admit

    report = admit(path, report=report).report
    fmt = str(report.format)
    with WorkingCopy(path, report, writable=False) as work:
        layout = layout_of(report, work.e2fs_path)
        regions, notes = root_regions(layout, work.e2fs_path)
        guests: list[GuestFS] = []
        others = OtherFilesystems(layout, work.e2fs_path, path.name, fmt)
        try:
            for region in regions:
                guest = _backend(region, work.e2fs_path, f"{region.describe()} of {path.name}", False, False)
                guest.image_format = fmt
                guests.append(guest)
            yield guests, notes, others
        finally:
            others.discard()
            for guest in guests:
                guest.discard()


def _existing_image(image: str | os.PathLike[str]) -> Path:
    path = Path(image)
    if not path.exists():
        raise ImageIOError(f"{os.fspath(image)} does not exist.")
    if not path.is_file():
        raise ImageIOError(f"{os.fspath(image)} is not a regular file.")
    if not os.access(path, os.R_OK):
        raise ImageIOError(f"{os.fspath(image)} is not readable.")
    # Edit the file a symbolic link points to, not replace the link with a file.
    return path.resolve()


def _backend(region: FilesystemRegion, raw: Path, description: str, writable: bool, verify: bool) -> GuestFS:
    if region.fs_type in EXT_TYPES:
        device = e2fs.device_name(raw, region.offset)
        superblock = e2fs.read_superblock(device)
        if superblock.size > region.size:
            # A filesystem claiming more blocks than its partition would make debugfs write
            # into whatever follows the partition.
            raise GuestFilesystemError(
                f"The filesystem in {description} claims {superblock.size} bytes but its space "
                f"is only {region.size} bytes."
            )
        return E2fsGuest(
            raw,
            offset=region.offset,
            writable=writable,
            fs_type=region.fs_type or "ext4",
            description=description,
            verify=verify,
        )
    if region.fs_type is None or region.fs_type == "swap":
        where = "The image" if region.partition is None else f"Partition {region.partition} of the image"
        what = "swap space" if region.fs_type == "swap" else "no filesystem imagewright recognises"
        raise GuestFilesystemError(f"{where} holds {what}.")
    if libguestfs.available():
        return libguestfs.LibguestfsGuest(
            raw,
            partition=region.partition,
            fs_type=region.fs_type,
            writable=writable,
            description=description,
            find_root=region.find_root,
        )
    if region.partition is not None and region.fs_type not in OTHER_LINUX_TYPES:
        raise GuestFilesystemError(
            f"Partition {region.partition} of the image is {region.fs_type}; imagewright edits "
            f"ext2/3/4 directly and needs libguestfs (Debian: libguestfs-tools) for {region.fs_type}."
        )
    raise libguestfs.unavailable(region.fs_type)
