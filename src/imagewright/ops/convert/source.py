"""Getting a source ready for qemu-img: admitted by the gate, in a format qemu-img reads.

- A plain image is handed to qemu-img as it is, once the gate has admitted it.
- A compressed *raw* disk (``.gz``, ``.xz``, ``.zst``, ``.bz2`` holding a raw disk: the way
  cloud images travel) is not copied anywhere: it becomes a ``RawStream`` (``raw_stream.py``),
  decompressed once while qemu-img (or the output writer) reads it, judged as it flows.
- A compressed image of any other format (``qcow2.gz``, ``vmdk.xz`` ...) needs random
  access: the gate decompresses it into a *sparse* scratch file next to the output — the
  stream judged as it goes — and the scratch file is inspected in full before qemu-img reads
  a byte of it (zero runs become holes: the scratch file takes the space of the data it
  holds). The source says so in a note.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagewright.binary import ByteSource
from imagewright.errors import ImagewrightError, UnsupportedFormatError
from imagewright.formats.base import Limits
from imagewright.formats.containers.decompress import DecompressedStream
from imagewright.formats.containers.signature import probe_compression
from imagewright.formats.containers.tar_header import looks_like_tar
from imagewright.gate import admit
from imagewright.inspection import ImageReport
from imagewright.ops.convert.raw_stream import NotRawError, RawStream

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
    notes: tuple[str, ...] = ()


Progress = Callable[[str, int, int | None], None]


def open_stream(
    src: ByteSource, label: str, limits: Limits, progress: Progress | None = None, *, sized: bool = True
) -> RawStream | str | None:
    """``src`` as a ``RawStream`` when it is a compressed raw disk; else None (not compressed,
    or a compressed archive), or the format of the compressed content (needs the spool way).
    UnsafeImageError when the stream is refused. ``sized`` False: its size may be learned at
    its end (a raw output; see ``raw_stream``)."""
    compression = probe_compression(src.pread(0, 64))
    if compression is None:
        return None

    def checking(done: int, total: int) -> None:
        if progress is not None:
            progress("checking", done, total)

    try:
        first = DecompressedStream(src, compression).read(512)
    except ImagewrightError:
        first = b""  # a corrupt stream: the stream's own judgement refuses it
    if looks_like_tar(first):
        return None
    try:
        return RawStream(src, label, compression, limits, checking, sized=sized)
    except NotRawError as err:
        return err.format


def prepare_source(
    src: Path,
    scratch: Callable[[str], Path],
    limits: Limits,
    progress: Progress | None = None,
    *,
    inner_format: str | None = None,
) -> PreparedSource:
    """Admit ``src`` (decompressing it to a sparse scratch file if wrapped) or refuse it.

    ``inner_format``: what ``open_stream`` found inside a compressed ``src`` (for the note).
    """

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
    notes: tuple[str, ...] = ()
    if admitted.spooled is not None:
        found = inner_format if inner_format not in (None, "unknown") else report.format
        notes = (
            f"the {found} image inside the {admitted.compression} stream was decompressed to a scratch "
            f"file first: qemu-img reads {found} by random access (only a raw disk is streamed)",
        )
    return PreparedSource(
        path, report.format, report.virtual_size, report, wrapper=admitted.wrapper, notes=notes
    )
