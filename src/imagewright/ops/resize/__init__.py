"""``resize``: make a disk image larger (or smaller), then let its last partition fill the new disk.

The image is inspected first and refused if unsafe; sizes come from ``units.parse_size_change``
(``+1G``, ``-512M``, ``8G``). Then, always on a copy next to the image (a ``files.AtomicOutput``
in place of the image):

1. the virtual disk changes size — ``qemu-img resize`` for raw and qcow2 on a reflink or
   sparse copy; for vmdk, vhdx, vdi and vpc (which qemu-img cannot resize) on a raw working
   copy that is converted back with the options that matter (``formats.py``);
2. the partition table follows (``layout.py``, growpart's rules): a GPT's backup header and
   entry array move to the new end, and the partition that ends last (or the one named)
   grows to fill the disk — an MBR primary, or a logical partition together with its
   extended container and EBR link. The sectors are written with ``pwrite`` into raw files
   and through ``qemu-io`` into qcow2, never by letting a tool probe the format;
3. a flat (unpartitioned) ext2/3/4 filesystem grows with ``resize2fs``; a partition's
   filesystem is left for the in-guest agent to grow at first boot (like cloud-init's
   growpart), unless ``grow_filesystem`` asks for resize2fs now;
4. the result is inspected again with imagewright's own readers (virtual size, the exact
   partition table expected, a safe verdict) and checked by ``qemu-img check``;
5. only then is it renamed over the original. A failure, a Ctrl-C or a killed child program
   at any earlier point leaves the original byte for byte as it was and no temporary file.

Shrinking is refused unless everything cut off is unused: beyond the last partition (and the
33 sectors of a GPT's backup), or beyond a flat filesystem whose size is known.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imagewright.disk.table import DiskWrite, PartitionTable
from imagewright.errors import (
    ImageFormatError,
    ImageIOError,
    InvalidArgumentError,
    ProgramError,
)
from imagewright.files import AtomicOutput, copy_sparse, reflink
from imagewright.formats.base import Limits
from imagewright.gate import admit
from imagewright.guest.workcopy import WriteBack, write_back_plan
from imagewright.inspection import ImageReport, inspect_image
from imagewright.ops.resize.filesystem import EXT_TYPES, FilesystemGrowth, grow_ext
from imagewright.ops.resize.formats import (
    RESIZED_IN_PLACE,
    check_convertible,
    check_supported,
    preallocates,
    vhd_size_source,
)
from imagewright.ops.resize.layout import (
    PartitionGrowth,
    TablePlan,
    check_flat_shrink,
    plan_table,
)
from imagewright.ops.resize.sizes import SizePlan, plan_size
from imagewright.programs import qemu_img, qemu_io
from imagewright.units import format_size, parse_size_change

#: ``progress(stage, done, total)``: stage is "copying", "converting" or "writing back".
Progress = Callable[[str, int, int | None], None]

__all__ = ["PartitionChange", "Progress", "ResizeReport", "resize"]

#: Formats ``qemu-img check`` can check (raw and vpc have no metadata to check).
_CHECKED_FORMATS = frozenset({"qcow2", "vmdk", "vdi", "vhdx"})
#: What qemu-img says when a disk or quota is full, and when it hits the file size limit.
_OUT_OF_SPACE = ("No space left on device", "Disk quota exceeded")
_FILE_SIZE_LIMIT = ("File too large", "killed by signal 25")
#: Room left over on top of an estimate (metadata, rounding, the filesystem's own reserve).
SPACE_MARGIN = 16 * 1024 * 1024


@dataclass
class PartitionChange:
    """The partition that grew (sectors inclusive; sizes in bytes)."""

    number: int
    kind: str
    start: int
    old_end: int
    new_end: int
    sector_size: int
    old_size: int
    new_size: int
    filesystem: str | None


@dataclass
class ResizeReport:
    image: str
    format: str
    subformat: str | None
    old_virtual_size: int
    new_virtual_size: int
    #: What was asked for; differs from ``new_virtual_size`` only for CHS-sized VHDs.
    requested_size: int
    #: "mbr", "gpt" or None (unpartitioned).
    partition_table: str | None
    partition: PartitionChange | None
    gpt_backup_moved: bool
    #: The filesystem concerned: the flat one, or the grown partition's.
    filesystem: str | None
    #: "grown" (resize2fs ran), "at-first-boot" (the agent grows it), "not-grown" or "none".
    filesystem_action: str
    filesystem_old_size: int | None
    filesystem_new_size: int | None
    #: The image's format, unchanged (kept for --json readers).
    output_format: str
    #: "copy" (qemu-img resize on a copy), "raw-working-copy", or "unchanged".
    method: str
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> list[str]:
        """The report in a few lines, for people."""
        kind = self.format + (f" ({self.subformat})" if self.subformat else "")
        if self.method == "unchanged":
            lines = [
                f"{self.image} ({kind}) is already {format_size(self.new_virtual_size)}; nothing changed"
            ]
        else:
            lines = [
                f"resized {self.image} ({kind}): {format_size(self.old_virtual_size)} -> "
                f"{format_size(self.new_virtual_size)} ({self.new_virtual_size} bytes)"
            ]
        part = self.partition
        if part is not None and part.new_end != part.old_end:
            line = (
                f"partition {part.number} now ends at sector {part.new_end} (was {part.old_end}), "
                f"{format_size(part.new_size)}"
            )
            line += self._filesystem_clause()
            lines.append(line)
        elif self.partition_table is None and self.filesystem is not None:
            lines.append(f"the disk's {self.filesystem} filesystem" + self._filesystem_clause(flat=True))
        if self.gpt_backup_moved:
            lines.append("the GPT backup header and entry array moved to the new end of the disk")
        lines.extend(self.notes)
        return lines

    def _filesystem_clause(self, flat: bool = False) -> str:
        fs = self.filesystem
        if self.filesystem_action == "grown" and self.filesystem_new_size is not None:
            verb = " was grown" if flat else f"; its {fs} filesystem was grown"
            return f"{verb} to {format_size(self.filesystem_new_size)} (resize2fs)"
        if self.filesystem_action == "at-first-boot":
            return f"; its {fs} filesystem will grow to fill it at first boot (imagewright-agent)"
        if self.filesystem_action == "not-grown":
            return " was not grown" if flat else f"; the {fs} inside it was not grown"
        if flat:
            return " is unchanged"
        return "; it holds no filesystem imagewright recognises"


@dataclass(frozen=True)
class _FilesystemJob:
    """resize2fs to run on the raw working copy: the filesystem at ``offset`` fills ``size`` bytes."""

    offset: int
    size: int
    type: str


def resize(
    image: str | os.PathLike[str],
    size_change: str | tuple[str, int],
    *,
    partition: int | None = None,
    grow_partition: bool = True,
    grow_filesystem: bool = False,
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> ResizeReport:
    """Resize ``image`` by ``size_change`` (``"+1G"``, ``"-512M"``, ``"8G"``); see the module docstring.

    ``partition`` names the partition to grow (default: the one that ends last);
    ``grow_partition=False`` changes only the virtual disk (a GPT's backup still moves to the
    new end); ``grow_filesystem`` also grows the partition's ext2/3/4 filesystem now.
    Raises ImagewrightError subclasses with one sentence; the image is then unchanged.
    """
    started = time.monotonic()
    path = Path(image)
    change = parse_size_change(size_change) if isinstance(size_change, str) else size_change
    if partition is not None and not grow_partition:
        raise InvalidArgumentError("--partition names a partition to grow; it contradicts --no-partition.")
    if grow_filesystem and not grow_partition:
        raise InvalidArgumentError(
            "--grow-filesystem grows a partition's filesystem; it contradicts --no-partition."
        )
    if not path.is_file():
        raise ImageIOError(f"{path} is not an existing image file.")
    real = path.resolve()
    limits = limits or Limits()

    report = admit(real, limits=limits).report
    check_supported(report)
    assert report.virtual_size is not None
    table = report.partition_table
    sizes = plan_size(
        report.virtual_size,
        change,
        fmt=report.format,
        vhd_size_source=vhd_size_source(report),
        sector_size=table.sector_size if table is not None else 512,
        max_size=limits.max_virtual_size,
    )
    if sizes.shrinks and (partition is not None or grow_filesystem):
        raise InvalidArgumentError(
            f"The disk shrinks ({format_size(sizes.current)} -> {format_size(sizes.final)}); "
            "--partition and --grow-filesystem apply only when it grows."
        )
    if table is None and partition is not None:
        raise InvalidArgumentError(f"{path.name} has no partition table, so it has no partition {partition}.")
    if table is None and sizes.shrinks:
        check_flat_shrink(report.filesystem, sizes.final)
    table_plan = (
        plan_table(table, sizes.final, partition=partition, grow=grow_partition and not sizes.shrinks)
        if table is not None
        else None
    )
    job, fs_type, fs_action, notes = _filesystem_plan(
        report, table_plan, sizes, grow_partition, grow_filesystem
    )
    if sizes.note:
        notes.insert(0, sizes.note)
    if table_plan is not None:
        notes.extend(table_plan.notes)

    writes = _last_write_wins(table_plan.writes) if table_plan is not None else []
    method = "unchanged"
    growth: FilesystemGrowth | None = None
    if sizes.final != sizes.current or writes or job is not None:
        method, growth = _carry_out(real, report, sizes, table_plan, writes, job, limits, progress)

    growth_of_partition = table_plan.growth if table_plan is not None else None
    return ResizeReport(
        image=str(path),
        format=report.format,
        subformat=report.subformat,
        old_virtual_size=sizes.current,
        new_virtual_size=sizes.final,
        requested_size=sizes.requested,
        partition_table=table.kind if table is not None else None,
        partition=_partition_change(growth_of_partition),
        gpt_backup_moved=table_plan.gpt_backup_moved if table_plan is not None else False,
        filesystem=fs_type,
        filesystem_action="grown" if growth is not None else fs_action,
        filesystem_old_size=growth.old_size if growth is not None else None,
        filesystem_new_size=growth.new_size if growth is not None else None,
        output_format=report.format,
        method=method,
        notes=notes,
        seconds=time.monotonic() - started,
    )


def _carry_out(
    real: Path,
    report: ImageReport,
    sizes: SizePlan,
    table_plan: TablePlan | None,
    writes: list[DiskWrite],
    job: _FilesystemJob | None,
    limits: Limits,
    progress: Progress | None,
) -> tuple[str, FilesystemGrowth | None]:
    """Do the work on a copy, check it, put it in place; returns (method, filesystem growth)."""
    with AtomicOutput(real, in_place=True, doing="resizing") as out:
        try:
            if report.format in RESIZED_IN_PLACE and not (report.format == "qcow2" and job is not None):
                method = "copy"
                growth = _resize_copy(out, report, sizes, writes, job, progress)
            else:
                method = "raw-working-copy"
                check_convertible(report)
                plan = write_back_plan(report)
                growth = _resize_through_raw(out, report, plan, sizes, writes, job, progress)
            _verify(out.path, report.format, sizes.final, table_plan, limits)
            out.commit()
        except ProgramError as err:
            if any(marker in str(err) for marker in _OUT_OF_SPACE):
                raise _out_of_space_error(out.directory, real) from None
            if any(marker in str(err) for marker in _FILE_SIZE_LIMIT):
                raise _file_size_limit_error(real) from None
            raise
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _out_of_space_error(out.directory, real) from None
            if err.errno == errno.EFBIG:
                raise _file_size_limit_error(real) from None
            raise ImageIOError(f"Resizing {real.name} failed: {err.strerror}.") from None
    return method, growth


def _filesystem_plan(
    report: ImageReport,
    table_plan: TablePlan | None,
    sizes: SizePlan,
    grow_partition: bool,
    grow_filesystem: bool,
) -> tuple[_FilesystemJob | None, str | None, str, list[str]]:
    """(resize2fs job or None, filesystem type, action if no job runs, notes)."""
    notes: list[str] = []
    if table_plan is None:
        flat = report.filesystem
        if flat is None:
            return None, None, "none", notes
        if not sizes.grows or not grow_partition:
            return None, flat.type, "none", notes
        if flat.type in EXT_TYPES:
            return _FilesystemJob(0, sizes.final, flat.type), flat.type, "grown", notes
        notes.append(
            f"imagewright grows ext2/3/4 filesystems only; grow the {flat.type} filesystem inside the guest."
        )
        return None, flat.type, "not-grown", notes
    growth = table_plan.growth
    if growth is None or not growth.grew:
        if grow_filesystem:
            raise InvalidArgumentError(
                "No partition grows, so there is no filesystem to grow (--grow-filesystem)."
            )
        return None, growth.filesystem if growth else None, "none", notes
    fs = growth.filesystem
    if grow_filesystem:
        if fs not in EXT_TYPES:
            what = f"holds {fs}" if fs else "holds no filesystem imagewright recognises"
            raise InvalidArgumentError(
                f"--grow-filesystem grows ext2/3/4 filesystems only; partition {growth.number} {what}."
            )
        assert fs is not None
        return _FilesystemJob(growth.byte_offset, growth.new_size, fs), fs, "grown", notes
    if fs in EXT_TYPES or fs in ("xfs", "btrfs"):
        return None, fs, "at-first-boot", notes
    return None, fs, "not-grown" if fs else "none", notes


def _partition_change(growth: PartitionGrowth | None) -> PartitionChange | None:
    if growth is None:
        return None
    return PartitionChange(
        number=growth.number,
        kind=growth.kind,
        start=growth.start,
        old_end=growth.old_end,
        new_end=growth.new_end,
        sector_size=growth.sector_size,
        old_size=growth.old_size,
        new_size=growth.new_size,
        filesystem=growth.filesystem,
    )


def _last_write_wins(writes: list[DiskWrite]) -> list[DiskWrite]:
    """Drop writes a later one to the same range replaces (relocation, then growth, rewrite both headers)."""
    seen: set[tuple[int, int]] = set()
    kept: list[DiskWrite] = []
    for write in reversed(writes):
        key = (write.offset, len(write.data))
        if key not in seen:
            seen.add(key)
            kept.append(write)
    kept.reverse()
    return kept


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int | None], None] | None:
    if progress is None:
        return None

    def report(done: int, total: int | None) -> None:
        progress(stage, done, total)

    return report


def _resize_copy(
    out: AtomicOutput,
    report: ImageReport,
    sizes: SizePlan,
    writes: list[DiskWrite],
    job: _FilesystemJob | None,
    progress: Progress | None,
) -> FilesystemGrowth | None:
    """raw and qcow2: qemu-img resize on a copy; sectors by pwrite (raw) or qemu-io (qcow2)."""
    fmt = report.format
    image = Path(report.path)
    work = out.path
    if not reflink(image, work):
        st = image.stat()
        _require_space(out.directory, min(st.st_blocks * 512, st.st_size), f"a copy of {image.name}")
        copy_sparse(image, work, _stage(progress, "copying"))
    if sizes.final != sizes.current:
        qemu_img.resize(work, fmt, sizes.final, shrink=sizes.shrinks)
    if fmt == "raw":
        _pwrite_all(work, writes)
    else:
        qemu_io.write_guest(work, fmt, [(write.offset, write.data) for write in writes])
    return grow_ext(work, job.offset, job.size, job.type, out.scratch) if job is not None else None


def _resize_through_raw(
    out: AtomicOutput,
    report: ImageReport,
    plan: WriteBack,
    sizes: SizePlan,
    writes: list[DiskWrite],
    job: _FilesystemJob | None,
    progress: Progress | None,
) -> FilesystemGrowth | None:
    """vmdk, vhdx, vdi, vpc (and qcow2 with a filesystem to grow): raw working copy, converted back."""
    fmt = report.format
    data = report.allocated_size if report.allocated_size is not None else report.file_size
    output = max(sizes.final, sizes.current) if preallocates(plan) else data
    name = Path(report.path).name
    _require_space(out.directory, data + output, f"resizing {name} through a raw working copy")
    raw = out.scratch("raw")
    qemu_img.convert(
        report.path, fmt, raw, "raw", progress=_stage(progress, "converting"), total_bytes=sizes.current
    )
    os.truncate(raw, sizes.final)
    _pwrite_all(raw, writes)
    growth = grow_ext(raw, job.offset, job.size, job.type, out.scratch) if job is not None else None
    qemu_img.convert(
        raw,
        "raw",
        out.path,
        plan.fmt,
        options=plan.options,
        compress=plan.compress,
        progress=_stage(progress, "writing back"),
        total_bytes=sizes.final,
    )
    with contextlib.suppress(FileNotFoundError):
        raw.unlink()
    return growth


def _require_space(directory: Path, needed: int, what: str) -> None:
    """ImageIOError in one sentence when ``needed`` bytes (plus a margin) are not free in ``directory``."""
    free = shutil.disk_usage(directory).free
    if needed + SPACE_MARGIN > free:
        raise ImageIOError(
            f"{directory} has {format_size(free)} free, but {what} needs about "
            f"{format_size(needed + SPACE_MARGIN)}; free some space (the image was not changed)."
        )


def _out_of_space_error(directory: Path, image: Path) -> ImageIOError:
    return ImageIOError(
        f"{directory} ran out of free space while {image.name} was being resized; "
        "the image was left as it was."
    )


def _file_size_limit_error(image: Path) -> ImageIOError:
    return ImageIOError(
        f"A copy of {image.name} grew past this process's file size limit (ulimit -f: File too large); "
        "the image was left as it was."
    )


def _pwrite_all(path: Path, writes: list[DiskWrite]) -> None:
    if not writes:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for write in writes:
            view = memoryview(write.data)
            offset = write.offset
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify(result: Path, fmt: str, size: int, table_plan: TablePlan | None, limits: Limits) -> None:
    """Read the result back with our own readers (and qemu-img check) before it replaces anything."""
    check = inspect_image(result, limits=limits)

    def fail(reason: str) -> ImageFormatError:
        return ImageFormatError(
            f"The resized image did not pass imagewright's own check ({reason}); the original was kept."
        )

    if not check.verdict.safe:
        raise fail(check.verdict.reasons[0])
    if check.format != fmt:
        raise fail(f"it reads as {check.format}, not {fmt}")
    if check.virtual_size != size:
        raise fail(f"its disk is {check.virtual_size} bytes, not {size}")
    if table_plan is not None:
        problem = _table_difference(table_plan.expected, check.partition_table)
        if problem is not None:
            raise fail(problem)
    if fmt in _CHECKED_FORMATS:
        checked = qemu_img.check(result, fmt)
        if checked.supported and not checked.clean:
            raise fail(f"qemu-img check found {checked.corruptions} corruptions and {checked.leaks} leaks")


#: Warnings that say a GPT does not fit its disk: none may remain after a resize.
_GPT_MISFIT = ("backup GPT", "GPT header is unusable", "than the GPT says", "protective MBR covers")


def _table_difference(expected: PartitionTable, actual: PartitionTable | None) -> str | None:
    """What differs between the table we meant to write and the one read back, or None."""
    if actual is None:
        return "no partition table was found in it"
    if actual.kind != expected.kind or actual.sector_size != expected.sector_size:
        return f"its partition table reads as {actual.kind}, not {expected.kind}"
    if actual.problems:
        return actual.problems[0]
    misfits = [w for w in actual.warnings if any(marker in w for marker in _GPT_MISFIT)]
    if misfits:
        return misfits[0]
    if actual.kind == "gpt" and actual.last_usable_lba != expected.last_usable_lba:
        return f"its GPT's last usable sector is {actual.last_usable_lba}, not {expected.last_usable_lba}"

    def shape(table: PartitionTable) -> list[tuple[object, ...]]:
        return [
            (p.number, p.kind, p.start, p.end, p.type_id, p.uuid, p.name, p.bootable)
            for p in table.partitions
        ]

    if shape(actual) != shape(expected):
        return "its partitions are not the ones planned"
    return None
