"""Getting a source ready for qemu-img: admitted by the gate, in a format qemu-img reads, on disk.

A plain image is handed to qemu-img as it is. A compressed one (``.gz``, ``.xz``, ``.zst``,
``.bz2``) is decompressed by the gate into a *sparse* scratch file next to the output — the
stream judged as it goes (every member decoded and checked, nothing hidden after its end,
no compression inside compression) — and the scratch file is then inspected in full before
qemu-img reads a byte of it. Runs of zeros become holes, so the scratch file takes only the
space of the data it holds (a 20 GiB ``raw.gz`` holding 1 GiB of data costs 1 GiB of
scratch, not 20).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import UnsupportedFormatError
from imagewright.formats.base import Limits
from imagewright.gate import admit
from imagewright.inspection import ImageReport

#: Formats qemu-img reads that imagewright converts from.
READABLE_FORMATS = frozenset({"raw", "qcow2", "qcow", "vmdk", "vpc", "vhdx", "vdi", "qed", "parallels"})


@dataclass(frozen=True)
class PreparedSource:
    """A file qemu-img can read with an explicit format, and the report that judged it."""

    path: Path
    format: str
    virtual_size: int
    report: ImageReport
    #: The outer report when ``path`` is a decompressed scratch copy.
    wrapper: ImageReport | None = None


Progress = Callable[[str, int, int | None], None]


def prepare_source(
    src: Path, scratch: Callable[[str], Path], limits: Limits, progress: Progress | None = None
) -> PreparedSource:
    """Admit ``src`` (decompressing it to a sparse scratch file if wrapped) or refuse it."""

    def decompressing(done: int, total: int) -> None:
        if progress is not None:
            progress("decompressing", done, total)

    admitted = admit(src, limits=limits, spool=scratch, progress=decompressing)
    report = admitted.report
    container = report.container
    if container is not None:
        if admitted.spooled is not None:
            raise UnsupportedFormatError(
                f"{src} holds a {report.format} container inside its {admitted.compression} layer."
            )
        raise UnsupportedFormatError(
            f"{src} is a {container.format} archive ({container.kind}), not a disk image; "
            "extract the disk you want from it first."
        )
    path = admitted.spooled or src
    if report.format not in READABLE_FORMATS or report.virtual_size is None:
        raise UnsupportedFormatError(
            f"{path} is a {report.format} image, which imagewright does not convert."
        )
    return PreparedSource(path, report.format, report.virtual_size, report, wrapper=admitted.wrapper)
