"""Which filesystem of an image to open: from ``inspect``'s report to a byte range.

The choice, in order: the partition the user named; else the filesystem of an unpartitioned
image; else the ext2/3/4 partition that holds ``/etc`` (asked of debugfs, which reads only
that partition's superblock and root directory). A guest whose root filesystem is something
else (xfs, btrfs, LVM) needs libguestfs; that is said in one sentence naming the filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imagewright.errors import GuestFilesystemError, InvalidArgumentError, as_clause
from imagewright.guest import libguestfs
from imagewright.programs import e2fs

if TYPE_CHECKING:
    from imagewright.inspection import ImageReport

EXT_TYPES = frozenset({"ext2", "ext3", "ext4"})
#: Filesystems a Linux root can live on that only libguestfs can edit here.
OTHER_LINUX_TYPES = frozenset({"xfs", "btrfs", "reiserfs", "jfs", "f2fs", "LVM2_member", "crypto_LUKS"})


@dataclass(frozen=True)
class FilesystemRegion:
    """A filesystem (or something that may be one) at a byte range of the raw disk."""

    offset: int
    size: int
    fs_type: str | None
    #: Partition number as partitioning tools print it; None for an unpartitioned image.
    partition: int | None
    label: str | None = None
    #: The root is to be found by libguestfs' inspection (xfs/btrfs/LVM disks with several
    #: candidates, whose /etc only the appliance can look for).
    find_root: bool = False

    def describe(self) -> str:
        kind = self.fs_type or "no filesystem imagewright recognises"
        if self.find_root:
            return f"the root filesystem ({kind})"
        if self.partition is None:
            return f"the filesystem of the whole disk ({kind})"
        return f"partition {self.partition} ({kind})"


@dataclass(frozen=True)
class DiskLayout:
    format: str
    regions: tuple[FilesystemRegion, ...]
    partitioned: bool


def layout_of(report: ImageReport, raw: Path) -> DiskLayout:
    """The filesystem regions an inspection report describes (``raw`` is the disk's raw bytes).

    Partition starts are in sectors of the table's sector size, sizes in bytes (disk.partitions).
    """
    fmt = str(report.format)
    table = report.partition_table
    if table is not None:
        sector = int(getattr(table, "sector_size", 512) or 512)
        regions = []
        for part in table.partitions:
            filesystem = getattr(part, "filesystem", None)
            regions.append(
                FilesystemRegion(
                    offset=int(part.start) * sector,
                    size=int(part.size) if part.size else int(part.sectors) * sector,
                    fs_type=getattr(filesystem, "type", None),
                    partition=int(part.number),
                    label=getattr(filesystem, "label", None),
                )
            )
        return DiskLayout(fmt, tuple(regions), partitioned=True)
    filesystem = report.filesystem
    if filesystem is None or getattr(filesystem, "type", None) is None:
        return DiskLayout(fmt, (), partitioned=False)
    size = raw.stat().st_size
    region = FilesystemRegion(0, size, filesystem.type, None, getattr(filesystem, "label", None))
    return DiskLayout(fmt, (region,), partitioned=False)


def why_not_editable(report: ImageReport) -> str | None:
    """Why no filesystem of the image ``report`` describes can hold a Linux root a backend here
    edits, judged from the report alone (before a raw copy is made); None when one may (its
    ``/etc`` is looked for when the filesystem is opened)."""
    table = report.partition_table
    if table is not None:
        found = [getattr(getattr(part, "filesystem", None), "type", None) for part in table.partitions]
    else:
        found = [getattr(report.filesystem, "type", None)]
    kinds = [kind for kind in found if kind is not None]
    if any(kind in EXT_TYPES for kind in kinds):
        return None
    others = sorted({kind for kind in kinds if kind in OTHER_LINUX_TYPES})
    if others:
        return None if libguestfs.available() else as_clause(libguestfs.unavailable(others[0]))
    if not kinds:
        return "the image holds no filesystem imagewright recognises"
    return f"the image holds no Linux filesystem (only {', '.join(sorted(set(kinds)))})"


def choose_region(layout: DiskLayout, raw: Path, partition: int | None) -> FilesystemRegion:
    """The region to open (see the module docstring for the order)."""
    if partition is not None:
        if not layout.partitioned:
            raise InvalidArgumentError("The image has no partition table; leave out --partition.")
        for region in layout.regions:
            if region.partition == partition:
                return region
        numbers = ", ".join(str(r.partition) for r in layout.regions) or "none"
        raise InvalidArgumentError(f"The image has no partition {partition} (it has: {numbers}).")
    if not layout.partitioned:
        if not layout.regions:
            raise GuestFilesystemError("The image holds neither a partition table nor a filesystem.")
        return layout.regions[0]
    ext_regions = [r for r in layout.regions if r.fs_type in EXT_TYPES]
    for region in ext_regions:
        if _holds_etc(raw, region):
            return region
    others = [r for r in layout.regions if r.fs_type in OTHER_LINUX_TYPES]
    if others:
        if not libguestfs.available():
            raise libguestfs.unavailable(str(others[0].fs_type))
        first = others[0]
        return FilesystemRegion(0, first.size, first.fs_type, None, first.label, find_root=True)
    if ext_regions:
        numbers = ", ".join(str(r.partition) for r in ext_regions)
        raise GuestFilesystemError(
            f"No partition of the image holds /etc; name one with --partition (ext partitions: {numbers})."
        )
    raise GuestFilesystemError("The image has no Linux filesystem imagewright can open.")


def root_regions(layout: DiskLayout, raw: Path) -> tuple[list[FilesystemRegion], list[str]]:
    """Every region that holds a Linux root filesystem (an ext2/3/4 filesystem with ``/etc``;
    the root libguestfs finds on other filesystems), and a note for each one not opened."""
    notes: list[str] = []
    roots = [r for r in layout.regions if r.fs_type in EXT_TYPES and _holds_etc(raw, r)]
    others = [r for r in layout.regions if r.fs_type in OTHER_LINUX_TYPES]
    if others and not roots:
        if libguestfs.available():
            first = others[0]
            if layout.partitioned:
                roots.append(
                    FilesystemRegion(0, first.size, first.fs_type, None, first.label, find_root=True)
                )
            else:
                roots.append(first)
        else:
            kinds = ", ".join(sorted({str(r.fs_type) for r in others}))
            notes.append(
                f"a {kinds} filesystem was not looked into: imagewright reads ext2/3/4 itself and "
                "needs libguestfs (Debian: libguestfs-tools) for others"
            )
    if not roots and not notes:
        notes.append("no filesystem of the image holds /etc (no Linux root filesystem found)")
    return roots, notes


def _holds_etc(raw: Path, region: FilesystemRegion) -> bool:
    try:
        outputs = e2fs.run_debugfs(e2fs.device_name(raw, region.offset), [e2fs.command("stat", "/etc")])
    except GuestFilesystemError:
        return False
    return b"Type: directory" in outputs[0]
