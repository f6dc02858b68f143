"""What ``publish`` reads when it boot-tunes (issue 12: ``prepare --boot-tuning``, on by default
in ``publish``): a raw scratch copy of the admitted source, tuned in place — the source itself
is never written.

The order, so that the gate judges the original before any tool touches it and the source
is read once:

1. ``open_source`` admits the source as ``convert`` does (a compressed raw disk is judged
   as it decompresses);
2. from the gate's report alone, before anything is copied: does the disk hold a
   filesystem a Linux root can be on that a backend here edits? If not, the pass reads the
   source as it is and the result says why the tuning was skipped;
3. (a compressed raw disk is judged as it flows, so its report comes only at its end: its
   head alone decides whether it is copied — no partition table and no filesystem there, no
   copy); the guest bytes go once into a sparse raw scratch file next to the outputs: a reflink or
   sparse copy of a raw source, qemu-img for the other formats, the decompressed stream of a
   ``raw.gz`` (judged as it flows, exactly as the pass would have judged it);
4. ``prepare``'s ``boot-tuning`` operation edits that file in place
   (``ops.prepare.prepare_scratch``: debugfs, e2fsck before and after); a guest that turns
   out not to be editable (no ``/etc``, a filesystem e2fsck finds errors in) is found out
   before the first write, and is published untuned, with the reason;
5. the pass reads the scratch file (raw) instead of the source.

Why a raw copy and not a qcow2 overlay backed by the source: debugfs and e2fsck read and
write raw bytes only, and the one way to show them an overlay as a file here is a FUSE export
(``qemu-storage-daemon --export type=fuse``), whose mount, made inside the sandbox every
program reading an image runs in (``programs/runner.py``: its own mount namespace), is not
visible outside it. What the copy costs is measured by ``bench/publish_tuning_bench.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagewright.binary import PrefixSource
from imagewright.disk.survey import survey_disk
from imagewright.errors import GuestNotEditableError, ImageFormatError, as_clause
from imagewright.guest.locate import why_not_editable
from imagewright.guest.workcopy import copy_to_raw
from imagewright.ops.convert import ImageSource, stream_raw
from imagewright.ops.convert.output import ImageStreamWriter
from imagewright.ops.convert.raw_stream import RawStream
from imagewright.ops.convert.source import PreparedSource
from imagewright.ops.prepare import OperationResult, PrepareOptions, PrepareReport, prepare_scratch
from imagewright.ops.prepare.model import ANY_DATASOURCE

Progress = Callable[[str, int, int | None], None]
#: The prepare operation publish applies.
OPERATION = "boot-tuning"


@dataclass(frozen=True)
class BootTuning:
    """How ``publish`` tunes the first boot: prepare's ``--datasource`` value (the kinds of
    medium or metadata the published image's instances see)."""

    datasource: str = ANY_DATASOURCE


@dataclass
class TuningReport:
    """What the tuning did: prepare's report of the operations applied, or why it was skipped."""

    datasource: str
    #: prepare's report (on the scratch copy); None when the tuning was skipped.
    prepared: PrepareReport | None
    #: Why the tuning was skipped, or what the operation found worth saying.
    note: str = ""
    #: The whole tuning: the scratch copy and the edits.
    seconds: float = 0.0

    @property
    def applied(self) -> bool:
        return self.prepared is not None

    @property
    def filesystem(self) -> str:
        return self.prepared.filesystem if self.prepared is not None else ""

    @property
    def operations(self) -> list[OperationResult]:
        return self.prepared.operations if self.prepared is not None else []

    @property
    def change_count(self) -> int:
        return self.prepared.change_count if self.prepared is not None else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "datasource": self.datasource,
            "applied": self.applied,
            "note": self.note,
            "filesystem": self.filesystem,
            "changes": self.change_count,
            "seconds": round(self.seconds, 3),
            "operations": [op.to_dict() for op in self.operations],
        }


def tune_source(
    source: ImageSource,
    scratch: Callable[[str], Path],
    tuning: BootTuning,
    name: str,
    progress: Progress | None = None,
) -> tuple[ImageSource, TuningReport]:
    """The source the pass reads and what the tuning did (see the module docstring).

    ``source`` is what ``open_source`` gave (already admitted, or judged as it streams);
    ``scratch`` names scratch files (removed with the publish's other scratch files).
    Raises what ``prepare`` raises for a failure after the first write (nothing is published).
    """
    started = time.monotonic()
    options = PrepareOptions(boot_tuning=True, boot_datasource=tuning.datasource)
    options.validate()

    def skipped(reason: str) -> TuningReport:
        return TuningReport(tuning.datasource, None, note=reason, seconds=time.monotonic() - started)

    def copying(done: int, total: int | None) -> None:
        if progress is not None:
            progress("copying for boot-tuning", done, total)

    raw = scratch("tuned.raw")
    if isinstance(source, RawStream):
        if _nothing_at_the_head(source):
            return source, skipped("the image holds no partition table or filesystem imagewright recognises")
        _decompress(source, raw, copying)
        report = source.reports.inner
        copied: PreparedSource = PreparedSource(raw, "raw", source.virtual_size, report)
        reason = why_not_editable(report)
        if reason is not None:
            return copied, skipped(reason)
    else:
        assert isinstance(source, PreparedSource)
        report = source.report
        reason = why_not_editable(report)
        if reason is not None:
            return source, skipped(reason)
        # Not flushed: the pass reads it back from the page cache, and it is thrown away after.
        copy_to_raw(source.path, source.format, raw, source.virtual_size, copying, durable=False)
        copied = PreparedSource(raw, "raw", source.virtual_size, report, source.wrapper, source.notes)
    try:
        prepared = prepare_scratch(raw, report, name=name, operations=[OPERATION], options=options)
    except GuestNotEditableError as err:
        return copied, skipped(as_clause(err))
    (result,) = prepared.operations
    return copied, TuningReport(
        tuning.datasource, prepared, note=result.note, seconds=time.monotonic() - started
    )


def _nothing_at_the_head(source: RawStream) -> bool:
    """Whether the head of a compressed raw disk (``RawStream.head``, its first 64 KiB, known
    before the stream flows) shows neither a partition table nor a filesystem: then there is
    nothing to tune, and no scratch copy is made. Anything else is decompressed and judged by
    the full report, which names the filesystems the head does not reach."""
    size = source.size if source.size_known else None
    try:
        survey = survey_disk(PrefixSource(source.head, size, len(source.head)))
    except ImageFormatError:
        return False  # a table the head alone cannot read: the full report decides
    return survey.partition_table is None and survey.filesystem is None


def _decompress(source: RawStream, raw: Path, progress: Callable[[int, int | None], None]) -> None:
    """The guest bytes of a compressed raw disk into the sparse file ``raw``, judged as they
    flow (a refusal raises before the last piece is written)."""
    # convert's sparse raw writer (zero runs stay holes, writes on a thread of their own);
    # no digests, and not flushed: the pass reads it back from the page cache.
    writer = ImageStreamWriter(raw, compression=None, checksums=())
    try:
        stream_raw(source, writer, progress)
        writer.finish(source.virtual_size, durable=False)
    finally:
        writer.close()


__all__ = ["BootTuning", "TuningReport", "tune_source"]
