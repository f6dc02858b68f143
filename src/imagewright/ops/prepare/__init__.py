"""``prepare``: make a guest image cloud-ready without booting or mounting it (sysprep).

    from imagewright.ops.prepare import prepare, PrepareOptions
    report = prepare(Path("disk.qcow2"), options=PrepareOptions(dns=("10.0.0.2",), agent=True))

Each operation (``operations/``) is a small unit that looks at the guest and changes what it
finds; every change is reported, and ``dry_run`` reports the same changes without making any
(the image is then only read). The image is inspected and refused if unsafe; edits happen on a
working copy that replaces the image only when every operation succeeded and e2fsck finds the
filesystem clean, so bad input or a failure leaves the image as it was.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from imagewright.errors import GuestFilesystemError
from imagewright.guest import GuestFS, open_guest, open_scratch_guest
from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.model import Change, OperationResult, PrepareOptions, PrepareReport
from imagewright.ops.prepare.operations import BY_NAME, DEFAULTS, OPERATIONS, Operation, select

if TYPE_CHECKING:
    from imagewright.inspection import ImageReport

ProgressCallback = Callable[[int, int | None], None]


def list_operations() -> list[Operation]:
    """Every operation, in run order (name, default_text, summary, why)."""
    return list(OPERATIONS)


def prepare(
    image: str | os.PathLike[str],
    *,
    operations: Sequence[str] | None = None,
    dry_run: bool = False,
    options: PrepareOptions | None = None,
    progress: ProgressCallback | None = None,
) -> PrepareReport:
    """Run the selected operations (default: the safe set) on the guest in ``image``.

    Raises InvalidArgumentError for an unknown operation or a bad option, UnsafeImageError for
    an image inspect refuses, GuestFilesystemError for a guest that cannot be edited (not
    ext2/3/4 without libguestfs, no /etc); the image is untouched in every one of those cases.
    """
    options = options or PrepareOptions()
    options.validate()
    selected = select(operations, options)
    started = time.monotonic()
    with open_guest(image, partition=options.partition, writable=not dry_run, progress=progress) as guest:
        results = _run_operations(guest, selected, options, dry_run=dry_run)
    return PrepareReport(
        image=os.fspath(image),
        format=guest.image_format,
        filesystem=guest.description,
        dry_run=dry_run,
        operations=results,
        seconds=time.monotonic() - started,
    )


def prepare_scratch(
    raw: Path,
    report: ImageReport,
    *,
    name: str,
    operations: Sequence[str] | None = None,
    options: PrepareOptions | None = None,
) -> PrepareReport:
    """``prepare`` on ``raw``, a raw scratch copy of the image ``name`` that the gate admitted
    with ``report``, edited in place (``guest.open_scratch_guest``): how ``publish`` tunes what
    it reads without touching its source. The same operations, checks and report; on an
    error ``raw`` may be partly edited (the caller discards it) — unless the error came before
    the first change (no Linux root, a filesystem e2fsck finds unclean), then ``raw`` is as it was.
    """
    options = options or PrepareOptions()
    options.validate()
    selected = select(operations, options)
    started = time.monotonic()
    with open_scratch_guest(raw, report, name=name, partition=options.partition) as guest:
        results = _run_operations(guest, selected, options, dry_run=False)
    return PrepareReport(
        image=name,
        format=str(report.format),
        filesystem=guest.description,
        dry_run=False,
        operations=results,
        seconds=time.monotonic() - started,
    )


def _run_operations(
    guest: GuestFS, selected: list[Operation], options: PrepareOptions, *, dry_run: bool
) -> list[OperationResult]:
    if not guest.is_dir("/etc"):
        raise GuestFilesystemError(
            f"{guest.description} has no /etc; it does not look like a Linux root filesystem."
        )
    context = PrepareContext(guest, options, dry_run=dry_run)
    results: list[OperationResult] = []
    for operation in selected:
        context.begin()
        operation.run(context)
        results.append(OperationResult(operation.name, list(context.changes), context.note))
    return results


__all__ = [
    "BY_NAME",
    "DEFAULTS",
    "Change",
    "Operation",
    "OperationResult",
    "PrepareOptions",
    "PrepareReport",
    "list_operations",
    "prepare",
    "prepare_scratch",
    "select",
]
