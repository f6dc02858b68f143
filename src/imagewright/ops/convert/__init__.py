"""``convert``: any image format to any other, safely, with checksums, in as few passes as possible.

The source is inspected and refused if unsafe before any program reads it; qemu-img does
the format work, always told the source format (never probing). How the bytes travel:

- **raw output** (plain or ``.gz``/``.xz``/``.zst``): qemu-img writes raw into an NBD export
  served by this process (``nbd_sink``), strictly in order; each byte is hashed, compressed
  if asked, and written — zero runs become holes. One pass, no temporary image.
- **other formats** (qcow2, vmdk, vhd, vhdx, vdi): qemu-img writes the file itself (it needs
  to seek back to update its tables). With a compression wrapper, the file is then streamed
  through the compressor once — the pass compression needs anyway — and both the image and
  the compressed file are hashed in it. Without one, the checksum needs one read of the new
  file (from the page cache; holes are not read): the single case with a pass of its own.
- **compressed sources** are decompressed into a sparse scratch file (only data blocks take
  space) that is inspected in full before qemu-img reads it.

Everything is written under a temporary name and renamed at the end (``files.AtomicOutput``):
a failure, Ctrl-C or a killed child leaves no output and no scratch files, and the source is
never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imagewright.errors import ImageIOError, InvalidArgumentError
from imagewright.files import AtomicOutput
from imagewright.formats.base import Limits
from imagewright.ops.convert.nbd_sink import NbdStreamSink, StreamConsumer
from imagewright.ops.convert.output import HashingConsumer, ImageStreamWriter, stream_file
from imagewright.ops.convert.plan import DEFAULT_CHECKSUMS, OutputPlan, plan_output
from imagewright.ops.convert.source import PreparedSource, prepare_source
from imagewright.programs import qemu_img

#: ``progress(stage, done, total)``: stage is "decompressing", "converting", "compressing" or "hashing".
Progress = Callable[[str, int, int | None], None]

__all__ = ["ConvertResult", "OutputPlan", "Progress", "convert", "plan_output", "stream_raw"]


@dataclass
class ConvertResult:
    source: str
    source_format: str
    #: The compression the source was wrapped in (gzip, xz, ...), if any.
    source_compression: str | None
    output: str
    format: str
    subformat: str | None
    compression: str | None
    cluster_compression: str | None
    virtual_size: int
    #: Bytes of the output file, and the space it takes on disk (sparse files take less).
    output_size: int
    allocated_size: int
    #: Digests of the output file as written (what a registry or a download is checked against).
    checksums: dict[str, str]
    #: Digests of the image inside a compression wrapper (None without a wrapper).
    content_checksums: dict[str, str] | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    output_format: str | None = None,
    subformat: str | None = None,
    compression: str | None = None,
    cluster_compression: str | None = None,
    checksums: tuple[str, ...] = DEFAULT_CHECKSUMS,
    force: bool = False,
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> ConvertResult:
    """Convert the image ``src`` into ``dst``; see the module docstring for how."""
    started = time.monotonic()
    src_path, dst_path = Path(src), Path(dst)
    plan = plan_output(
        dst_path,
        output_format=output_format,
        subformat=subformat,
        compression=compression,
        cluster_compression=cluster_compression,
        checksums=checksums,
    )
    if dst_path.exists() and src_path.exists() and os.path.samefile(src_path, dst_path):
        raise InvalidArgumentError("The output would overwrite the source; choose another output name.")
    with AtomicOutput(dst_path, force=force) as out:
        source = prepare_source(src_path, out.scratch, limits or Limits(), progress)
        _check_space(source, out.directory)
        if plan.format == "raw":
            content, output = _write_raw(source, out.path, plan, progress)
        else:
            content, output = _write_formatted(source, out.path, out.scratch, plan, progress)
        out.commit()
    st = dst_path.stat()
    return ConvertResult(
        source=str(src_path),
        source_format=source.format,
        source_compression=source.wrapper.format if source.wrapper is not None else None,
        output=str(dst_path),
        format=plan.format,
        subformat=plan.subformat,
        compression=plan.compression,
        cluster_compression=plan.cluster_compression,
        virtual_size=source.virtual_size,
        output_size=st.st_size,
        allocated_size=st.st_blocks * 512,
        checksums=output,
        content_checksums=content if plan.compression else None,
        seconds=time.monotonic() - started,
    )


def _check_space(source: PreparedSource, directory: Path) -> None:
    """Refuse early when the data alone cannot fit (the exact need depends on the format)."""
    data = source.report.allocated_size or 0
    free = shutil.disk_usage(directory).free
    if data > free:
        raise ImageIOError(
            f"{directory} has {free // (1 << 20)} MiB free, less than the {data // (1 << 20)} MiB "
            "of data the image holds; the output was not written."
        )


@contextmanager
def _socket_dir() -> Iterator[str]:
    # Unix socket paths are limited to ~108 bytes: keep the socket in a short private dir.
    path = tempfile.mkdtemp(prefix="iw-nbd-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stream_raw(
    source: PreparedSource,
    consumer: StreamConsumer,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Stream ``source``'s guest bytes, front to back, into ``consumer`` (raw, in one pass).

    qemu-img writes raw into the in-process NBD sink, which hands ``consumer`` every write
    in ascending order and the zero runs between them (``nbd_sink``). The package stage
    uses this too (OVA, EC2 bundles, publish): one way to read any image as a stream.
    ``progress(done, total)`` is polled while qemu-img runs.
    """
    size = source.virtual_size
    with _socket_dir() as sockdir:
        sink_path = os.path.join(sockdir, "sink")
        with NbdStreamSink(sink_path, size, consumer) as sink:

            def poll() -> None:
                if progress is not None:
                    progress(sink.position, size)

            qemu_img.convert_to_nbd(source.path, source.format, sink_path, poll=poll)
            sink.finish()
    if progress is not None:
        progress(size, size)


def _write_raw(
    source: PreparedSource, temp: Path, plan: OutputPlan, progress: Progress | None
) -> tuple[dict[str, str], dict[str, str]]:
    size = source.virtual_size
    writer = ImageStreamWriter(temp, compression=plan.compression, checksums=plan.checksums)

    def converting(done: int, total: int) -> None:
        if progress is not None:
            progress("converting", done, total)

    try:
        stream_raw(source, writer, converting)
        writer.finish(size)
    finally:
        writer.close()
    return writer.content.hexdigests(), writer.output.hexdigests()


def _write_formatted(
    source: PreparedSource,
    temp: Path,
    scratch: Callable[[str], Path],
    plan: OutputPlan,
    progress: Progress | None,
) -> tuple[dict[str, str], dict[str, str]]:
    image = scratch(plan.format) if plan.compression else temp

    def qemu_progress(done: int, total: int | None) -> None:
        if progress is not None:
            progress("converting", done, total)

    qemu_img.convert(
        source.path,
        source.format,
        image,
        plan.format,
        options=plan.options,
        compress=plan.cluster_compression is not None,
        progress=qemu_progress,
        total_bytes=source.virtual_size,
    )

    def stage_progress(stage: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(stage, done, total)

        return report

    if plan.compression:
        writer = ImageStreamWriter(temp, compression=plan.compression, checksums=plan.checksums)
        try:
            size = stream_file(image, writer, stage_progress("compressing"))
            writer.finish(size)
        finally:
            writer.close()
        image.unlink()
        return writer.content.hexdigests(), writer.output.hexdigests()
    hasher = HashingConsumer(plan.checksums)
    if plan.checksums:
        stream_file(image, hasher, stage_progress("hashing"))
    digests = hasher.hashes.hexdigests()
    return digests, digests
