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

from imagewright.errors import GuestFilesystemError
from imagewright.guest import open_guest
from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.model import Change, OperationResult, PrepareOptions, PrepareReport
from imagewright.ops.prepare.operations import BY_NAME, DEFAULTS, OPERATIONS, Operation, select

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
    results: list[OperationResult] = []
    with open_guest(image, partition=options.partition, writable=not dry_run, progress=progress) as guest:
        if not guest.is_dir("/etc"):
            raise GuestFilesystemError(
                f"{guest.description} has no /etc; it does not look like a Linux root filesystem."
            )
        context = PrepareContext(guest, options, dry_run=dry_run)
        for operation in selected:
            context.begin()
            operation.run(context)
            results.append(OperationResult(operation.name, list(context.changes), context.note))
        description = guest.description
        fmt = guest.image_format
    return PrepareReport(
        image=os.fspath(image),
        format=fmt,
        filesystem=description,
        dry_run=dry_run,
        operations=results,
        seconds=time.monotonic() - started,
    )


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
    "select",
]
