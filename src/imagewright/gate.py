"""The safety gate: may these bytes be handed to QEMU, or to any program that reads images?

``admit`` is the one answer, and every entry point asks it before another program reads an
image: ``convert``, ``resize``, ``build``, guest sessions (``prepare``, ``ls``, ``cat`` ...),
``compute.boot`` (the disk, every extra drive and CD-ROM), and the registry for every upload
(through a ``ByteSource``, so a blob in an object store is judged by ranged reads)::

    admitted = admit(path)                       # inspect, refuse unless safe
    admitted = admit(path, spool=out.scratch)    # a compressed disk image: decompressed to a
                                                 # sparse scratch file, judged as it streams,
                                                 # then inspected in full
    admitted = admit(blob, name="images/42")     # any ByteSource
    qemu_format = admitted.qemu_format()         # the driver to name explicitly, never probed

NOTE on what "safe" means here (see ``inspection`` and ``formats.safety``): no reference to
any other file, by QEMU's rules; every header field within bounds; and every byte a later
step could interpret examined — an image examined only in part is refused ("could not be
examined within the limit"), never passed with a note. A caller that names a format
different from the one inspection found is refused too: QEMU's driver for that format would
read the file by rules nobody judged (``-f vmdk`` makes any text file a descriptor whose
extents QEMU opens). Naming ``raw`` for any image is allowed: raw interprets nothing.

``spool`` is for the entry points that accept compressed disk images (convert, build from a
``.img.gz``; convert streams a compressed *raw* disk instead, judged the same way as it flows —
``ops/convert/raw_stream.py``): inspection alone examines a compressed image only as far as its
budget allows, so they decompress it whole instead — ``formats.containers.examine_stream`` judges the stream
as it goes, before any other program reads a byte — and the gate then inspects the
decompressed file like any image. Compressed archives (a ``.tar.gz``) are not spooled:
their scan already streams through every member.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagewright.binary import ByteSource, CountingSource, FileSource, data_runs
from imagewright.errors import ImageIOError, ImagewrightError, UnsafeImageError
from imagewright.files import io_error
from imagewright.formats.base import Limits
from imagewright.formats.containers import examine_stream
from imagewright.formats.containers.decompress import CompressionFormat, DecompressedStream
from imagewright.formats.containers.signature import probe_compression
from imagewright.formats.containers.tar_header import looks_like_tar
from imagewright.inspection import ContainerReport, ImageReport, inspect_image, inspect_source

#: Formats QEMU is handed (its driver names); anything else (a container) is not a disk to it.
QEMU_FORMATS = frozenset({"raw", "qcow2", "qcow", "vmdk", "vpc", "vhdx", "vdi", "qed", "parallels"})

#: ``progress(done, total)``: compressed bytes read while a compressed image is spooled.
SpoolProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class AdmittedImage:
    """An image the gate found safe, and how to read it."""

    #: The inspection of the bytes to read (the spooled copy, for a compressed source).
    report: ImageReport
    #: A decompressed copy to read instead of the source, when the source was compressed.
    spooled: Path | None = None
    #: The compression the source came in, when it was spooled.
    compression: CompressionFormat | None = None
    #: The stream-level report of a spooled source (container facts: gzip header, xz index ...).
    wrapper: ImageReport | None = None

    @property
    def format(self) -> str:
        return self.report.format

    @property
    def virtual_size(self) -> int | None:
        return self.report.virtual_size

    def qemu_format(self, requested: str | None = None, *, role: str = "image") -> str:
        """The QEMU driver to name for these bytes; refuses what QEMU is not to be handed.

        ``requested``: a format the caller wants to name; it must be the one inspection found,
        or ``raw`` (which interprets nothing).
        """
        found = self.report.format
        if requested is not None and requested not in (found, "raw"):
            raise UnsafeImageError(
                f"The {role} {self.report.path} is a {found} image, not {requested}; QEMU's {requested} "
                "driver would read it by rules imagewright did not judge.",
                (f"the {role} is a {found} image, not {requested}",),
            )
        if requested == "raw":
            return "raw"
        if found not in QEMU_FORMATS:
            raise ImagewrightError(
                f"The {role} {self.report.path} is a {found} file, not a disk image QEMU can boot or "
                "attach; convert it first."
            )
        return found


def admit(
    image: str | os.PathLike[str] | ByteSource,
    *,
    name: str | None = None,
    limits: Limits | None = None,
    report: ImageReport | None = None,
    spool: Callable[[str], Path] | None = None,
    progress: SpoolProgress | None = None,
) -> AdmittedImage:
    """Judge ``image`` (a path, or any ``ByteSource`` called ``name``); UnsafeImageError
    unless it is safe. See the module docstring.

    ``report``: an inspection of the same path the caller already has (reused, not redone).
    ``spool``: a factory of scratch paths (``AtomicOutput.scratch``); with it, a compressed
    disk image is decompressed into one and the copy is what is judged and read.
    """
    limits = limits or Limits()
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        if spool is not None:
            with FileSource(path) as src:
                compression = _compressed_disk(src)
                if compression is not None:
                    return _spool(src, path, compression, spool, limits, progress)
        if report is None or report.path != path:
            report = inspect_image(path, limits=limits)
    else:
        path = name or "the image"
        if spool is not None:
            compression = _compressed_disk(image)
            if compression is not None:
                return _spool(image, path, compression, spool, limits, progress)
        if report is None or report.path != path:
            report = inspect_source(image, path, limits=limits)
    return AdmittedImage(require_safe(report))


def require_safe(report: ImageReport) -> ImageReport:
    """``report`` if its verdict is safe, else UnsafeImageError naming the first reason.

    The verdict of an inspection is already complete (what was not examined is a reason);
    entry points call ``admit``, which ends here.
    """
    if not report.verdict.safe:
        raise UnsafeImageError(
            f"{report.path} is refused: {report.verdict.reasons[0]}", report.verdict.reasons
        )
    return report


def _compressed_disk(src: ByteSource) -> CompressionFormat | None:
    """The compression of ``src`` when what it holds is not a tar archive (archives are
    scanned as they stream, never spooled), else None."""
    compression = probe_compression(src.pread(0, 64))
    if compression is None:
        return None
    try:
        first = DecompressedStream(src, compression).read(512)
    except ImagewrightError:
        return compression  # a corrupt stream: spooling judges and refuses it
    return None if looks_like_tar(first) else compression


def _spool(
    src: ByteSource,
    label: str,
    compression: CompressionFormat,
    spool: Callable[[str], Path],
    limits: Limits,
    progress: SpoolProgress | None,
) -> AdmittedImage:
    """Decompress ``src`` into a sparse scratch file, judging the stream; then inspect it."""
    target = spool("decompressed")
    counting = CountingSource(src)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise io_error(err, target, "creating") from None
    try:

        def sink(offset: int, data: bytes) -> None:
            view = memoryview(data)
            # Blocks of zeros are holes: the scratch file takes the space of the data only.
            for start, end in data_runs(data):
                _pwrite_all(fd, view[start:end], offset + start, target)
            if progress is not None:
                progress(counting.bytes_read, src.size)

        opened = examine_stream(counting, compression, limits, sink)
        if opened.problems:
            reason = opened.problems[0]
            raise UnsafeImageError(f"{label} is refused: {reason}", tuple(opened.problems))
        size = opened.uncompressed_size or 0
        if size == 0:
            raise ImageIOError(f"{label} decompresses to nothing.")
        try:
            os.ftruncate(fd, size)
        except OSError as err:
            raise io_error(err, target, "decompressing into") from None
    finally:
        os.close(fd)
    inner = inspect_image(target, limits=limits)
    inner.path = f"{label} (decompressed)"
    container = ContainerReport.of(opened)
    container.inner = inner
    wrapper = ImageReport(
        path=label,
        format=compression,
        virtual_size=inner.virtual_size,
        file_size=src.size,
        container=container,
        verdict=inner.verdict,
    )
    return AdmittedImage(require_safe(inner), spooled=target, compression=compression, wrapper=wrapper)


def _pwrite_all(fd: int, data: memoryview, offset: int, target: Path) -> None:
    try:
        while data:
            written = os.pwrite(fd, data, offset)
            data = data[written:]
            offset += written
    except OSError as err:
        raise io_error(err, target, "decompressing into") from None
