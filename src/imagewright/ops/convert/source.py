"""Getting a source ready for qemu-img: judged safe, in a format qemu-img reads, on disk.

A plain image is handed to qemu-img as it is. A compressed one (``.gz``, ``.xz``, ``.zst``,
``.bz2``) is streamed through its decompressor into a *sparse* scratch file next to the
output: runs of zeros become holes, so the scratch file takes only the space of the data
it holds (a 20 GiB ``raw.gz`` holding 1 GiB of data costs 1 GiB of scratch, not 20). The
scratch file is then inspected in full — the first inspection could only see a prefix of
the stream — before any other program touches it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagewright.binary import FileSource
from imagewright.errors import ImageIOError, UnsupportedFormatError
from imagewright.formats.base import Limits
from imagewright.formats.containers.decompress import DecompressedStream
from imagewright.inspection import ImageReport, inspect_image, require_safe
from imagewright.ops.convert.output import OutputFile

#: Formats qemu-img reads that imagewright converts from.
READABLE_FORMATS = frozenset({"raw", "qcow2", "qcow", "vmdk", "vpc", "vhdx", "vdi", "qed", "parallels"})

_BLOCK = 64 * 1024
_READ = 4 * 1024 * 1024
_ZERO_BLOCK = bytes(_BLOCK)


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
    """Inspect ``src``, refuse it if unsafe, decompress it to a sparse scratch file if wrapped."""
    report = require_safe(inspect_image(src, limits=limits))
    container = report.container
    if container is None:
        return _plain(src, report)
    if container.kind != "compressed":
        raise UnsupportedFormatError(
            f"{src} is a {container.format} archive ({container.kind}), not a disk image; "
            "extract the disk you want from it first."
        )
    scratch_path = scratch("source")
    _decompress_sparse(src, container.format, scratch_path, progress)
    inner = require_safe(inspect_image(scratch_path, limits=limits))
    if inner.container is not None:
        raise UnsupportedFormatError(
            f"{src} holds a {inner.format} container inside its {container.format} layer."
        )
    prepared = _plain(scratch_path, inner)
    return PreparedSource(prepared.path, prepared.format, prepared.virtual_size, inner, wrapper=report)


def _plain(path: Path, report: ImageReport) -> PreparedSource:
    if report.format not in READABLE_FORMATS or report.virtual_size is None:
        raise UnsupportedFormatError(
            f"{path} is a {report.format} image, which imagewright does not convert."
        )
    return PreparedSource(path, report.format, report.virtual_size, report)


def _decompress_sparse(src: Path, compression: str, dst: Path, progress: Progress | None) -> None:
    with FileSource(src) as source:
        stream = DecompressedStream(source, compression)  # type: ignore[arg-type]
        out = OutputFile(dst)
        try:
            position = 0
            while True:
                chunk = stream.read(_READ)
                if not chunk:
                    break
                view = memoryview(chunk)
                for start in range(0, len(view), _BLOCK):
                    block = view[start : start + _BLOCK]
                    # Zero blocks are skipped: they become holes, and the scratch file stays small.
                    if block != _ZERO_BLOCK[: len(block)]:
                        out.write_at(position + start, block)
                position += len(chunk)
                if progress is not None:
                    progress("decompressing", source.bytes_read, source.size)
            out.finish(position)
        except BaseException:
            out.close()
            raise
    if position == 0:
        raise ImageIOError(f"{src} decompresses to nothing.")
