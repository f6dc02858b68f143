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
- **compressed raw sources** (``disk.raw.gz``, ``.xz``, ``.zst``, ``.bz2``: how cloud images
  travel) are never copied: decompressed once, judged as they flow, and handed straight to
  qemu-img through an in-process NBD server (``nbd_source``) — or, for a raw output, straight
  to the output writer, no qemu-img at all. Disk use is the output alone. Why that is safe,
  and when the stream is checked once before (gzip, bzip2: no recorded size): ``raw_stream``.
- **other compressed sources** (``qcow2.gz``, ``vmdk.xz`` ...) need random access: they are
  decompressed into a sparse scratch file (only data blocks take space) that is inspected in
  full before qemu-img reads it; the result's ``notes`` say so.

The library entry point for every caller — the CLI, the registry's conversion on import,
``publish`` — is ``convert(src, dst, ...)`` below; it returns a ``ConvertResult`` (what was
written, its checksums, ``source_report``: what inspection found in the source).

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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from imagewright.binary import FileSource, GrowingFile
from imagewright.errors import ImageIOError, ImagewrightError, InvalidArgumentError, ProgramError
from imagewright.files import AtomicOutput, ScratchFiles, file_extents, io_error
from imagewright.formats.base import Limits
from imagewright.inspection import ImageReport
from imagewright.ops.convert.guest_reader import (
    GuestDigests,
    GuestHashing,
    copy_guest,
    hash_guest,
    reads_itself,
    stream_guest,
)
from imagewright.ops.convert.nbd_sink import NbdStreamSink, StreamConsumer
from imagewright.ops.convert.nbd_source import ForwardWindow, NbdStreamSource
from imagewright.ops.convert.output import HashingConsumer, ImageStreamWriter, stream_file
from imagewright.ops.convert.plan import DEFAULT_CHECKSUMS, OutputPlan, plan_output
from imagewright.ops.convert.raw_stream import NotRawError, RawStream, segments, start_producer
from imagewright.ops.convert.source import PreparedSource, open_stream, prepare_source
from imagewright.programs import qemu_img

#: ``progress(stage, done, total)``: stage is "decompressing", "converting", "compressing" or "hashing".
Progress = Callable[[str, int, int | None], None]
#: Digests of the source's raw conversion computed as it arrived, or a call that waits for them,
#: or the thread computing them (which may also write the conversion: ``GuestHashing``).
Prehashed = GuestDigests | GuestHashing | Callable[[], GuestDigests | None]

__all__ = [
    "ConvertResult",
    "GuestDigests",
    "GuestHashing",
    "ImageSource",
    "NotRawError",
    "OutputPlan",
    "Progress",
    "convert",
    "hash_guest",
    "open_source",
    "plan_output",
    "stream_raw",
]


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
    #: How the source was read ("streamed", "spooled" to a scratch file, or "file").
    source_access: str = "file"
    #: The guest bytes were read by imagewright itself (a raw file as it is, a qcow2 by its
    #: guest view: ``guest_reader``), not by qemu-img.
    own_reader: bool = False
    #: The checksums are the ones computed as the source arrived (``convert(prehashed=...)``).
    prehashed: bool = False
    notes: list[str] = field(default_factory=list)
    #: What inspection found in the source (for a streamed source: the decompressed disk,
    #: surveyed as it went by). Not part of ``to_dict``.
    source_report: ImageReport | None = field(default=None, repr=False, compare=False)
    #: The compressed file around the source, when it came compressed (its container facts,
    #: the inner report inside): what a registry checks ``container_format`` against.
    #: Not part of ``to_dict``.
    wrapper_report: ImageReport | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: _plain(getattr(self, f.name))
            for f in fields(self)
            if f.name not in ("source_report", "wrapper_report")
        }


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value


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
    growing: GrowingFile | None = None,
    prehashed: Prehashed | None = None,
) -> ConvertResult:
    """Convert the image ``src`` into ``dst``; see the module docstring for how.

    ``growing``: ``src`` is still being written (a download, ``GrowingFile``): a compressed raw
    disk is judged and converted from it as its bytes arrive; any other source waits until it
    is complete. The caller makes sure the writer ended well before it uses the output.

    ``prehashed``: the digests ``guest_reader.hash_guest`` computed of ``src`` as it arrived
    (or a call that waits for them: ``GuestHashing.result``; or the ``GuestHashing`` itself,
    which may also have written the raw output as it hashed); used instead of hashing the
    output when they are those of this very conversion (a raw output of the same complete
    file, read by the same reader), else the output is hashed. An output written as it was
    hashed is used under the same condition (renamed into place: no copy), else ignored.
    """
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
    limits = limits or Limits()
    notes: list[str] = []
    used_prehash = own_reader = False
    with AtomicOutput(dst_path, force=force) as out, growing or FileSource(src_path) as opened:
        # A raw output needs no size before the stream: one decompression, no checking pass.
        stream = open_stream(opened, str(src_path), limits, progress, sized=plan.format != "raw")
        if growing is not None and not isinstance(stream, RawStream):
            growing.wait_complete()  # read by path from here on
        source: PreparedSource | None = None
        if isinstance(stream, RawStream):
            try:
                content, output = _convert_stream(stream, out, plan, progress)
                fmt, virtual_size = "raw", stream.virtual_size
                wrapper: str | None = stream.compression
                report: ImageReport = stream.reports.inner
                wrapper_report: ImageReport | None = stream.reports.wrapper
                notes.extend(stream.reports.notes)
                access = "streamed"
            except NotRawError as err:  # a fixed VHD, known by its footer at the very end
                _empty(out.path)
                if growing is not None:
                    growing.wait_complete()
                source = prepare_source(src_path, out.scratch, limits, progress, inner_format=err.format)
        else:
            source = prepare_source(src_path, out.scratch, limits, progress, inner_format=stream)
        if source is not None:
            _check_space(source, out.directory)
            if plan.format == "raw":
                content, output, own_reader, used_prehash = _write_raw(
                    source, out.path, plan, limits, progress, prehashed
                )
            else:
                content, output = _write_formatted(source.path, source, out.path, out.scratch, plan, progress)
            fmt = source.format
            wrapper = source.wrapper.format if source.wrapper is not None else None
            virtual_size, report, wrapper_report = source.virtual_size, source.report, source.wrapper
            notes.extend(source.notes)
            access = "spooled" if source.wrapper is not None else "file"
        out.commit()
    st = dst_path.stat()
    return ConvertResult(
        source=str(src_path),
        source_format=fmt,
        source_compression=wrapper,
        output=str(dst_path),
        format=plan.format,
        subformat=plan.subformat,
        compression=plan.compression,
        cluster_compression=plan.cluster_compression,
        virtual_size=virtual_size,
        output_size=st.st_size,
        allocated_size=st.st_blocks * 512,
        checksums=output,
        content_checksums=content if plan.compression else None,
        seconds=time.monotonic() - started,
        source_access=access,
        own_reader=own_reader,
        prehashed=used_prehash,
        notes=notes,
        source_report=report,
        wrapper_report=wrapper_report,
    )


def _empty(path: Path) -> None:
    try:
        os.truncate(path, 0)
    except OSError as err:
        raise io_error(err, path) from None


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
    """A private directory for NBD sockets, removed afterwards (after a SIGKILL, by the next run).

    Unix socket paths are limited to ~108 bytes: it lives in the temporary directory, not
    beside the output, under a name ``files`` sweeps when its process is gone.
    """
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 60:
        base = Path("/tmp")
    with ScratchFiles(base / "imagewright-nbd") as scratch:
        yield str(scratch.scratch_directory("sockets"))


def _convert_stream(
    stream: RawStream, out: AtomicOutput, plan: OutputPlan, progress: Progress | None
) -> tuple[dict[str, str], dict[str, str]]:
    """Decompress ``stream`` in a thread while the output is written from it."""
    if plan.format == "raw":
        writer = ImageStreamWriter(out.path, compression=plan.compression, checksums=plan.checksums)
        try:
            stream_raw(stream, writer, _stage(progress, "converting"))
            writer.finish(stream.virtual_size)
        finally:
            writer.close()
        return writer.content.hexdigests(), writer.output.hexdigests()
    window = ForwardWindow(stream.virtual_size)
    producer = start_producer(stream, window)
    try:
        with _socket_dir() as sockdir, NbdStreamSource(os.path.join(sockdir, "source"), window) as server:
            try:
                result = _write_formatted(
                    qemu_img.NbdSource(server.socket_path, stream.label),
                    None,
                    out.path,
                    out.scratch,
                    plan,
                    progress,
                    total=stream.virtual_size,
                    failure=lambda: window.error or server.error,
                )
            finally:
                window.cancel()
                producer.join()
            server.finish()
        return result
    finally:
        window.cancel()
        producer.join()


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int | None], None] | None:
    """``progress`` as a ``(done, total)`` callback of one stage (None without progress)."""
    if progress is None:
        return None

    def report(done: int, total: int | None) -> None:
        progress(stage, done, total)

    return report


#: A source ready to be read front to back: a compressed raw disk as it decompresses
#: (``RawStream``), or a file qemu-img reads (``PreparedSource``, admitted by the gate).
ImageSource = PreparedSource | RawStream


@contextmanager
def open_source(
    src: str | os.PathLike[str],
    scratch: Callable[[str], Path],
    limits: Limits | None = None,
    progress: Progress | None = None,
    *,
    stream: bool = True,
) -> Iterator[ImageSource]:
    """``src`` as convert reads it, for callers that stream its guest bytes (``stream_raw``).

    A compressed raw disk is a ``RawStream`` (no scratch copy; see ``raw_stream``); any other
    source is admitted and prepared (``prepare_source``: a compressed non-raw image is spooled).
    ``stream`` False: always the prepared way — what a caller does again when ``stream_raw``
    raised ``NotRawError`` (a compressed fixed VHD, known by its footer only at the very end).
    """
    src_path = Path(src)
    limits = limits or Limits()
    found: RawStream | str | None = None
    with FileSource(src_path) as opened:
        if stream:
            found = open_stream(opened, str(src_path), limits, progress)
        if isinstance(found, RawStream):
            yield found
            return
    yield prepare_source(src_path, scratch, limits, progress, inner_format=found)


def stream_raw(
    source: ImageSource,
    consumer: StreamConsumer,
    progress: Callable[[int, int | None], None] | None = None,
    limits: Limits | None = None,
) -> bool:
    """Stream ``source``'s guest bytes, front to back, into ``consumer`` (raw, in one pass);
    True when imagewright read them itself, False when qemu-img did.

    A ``RawStream`` is decompressed in a thread and handed on from its window, no qemu-img at
    all (a refusal mid-stream is raised here, before the last piece) — an unsized one (its size
    is learned at its end: ``RawStream.runs``) is decompressed in this thread and handed on
    directly (``total`` None until then); a prepared raw file is read as it is
    (``stream_file``), a qcow2 by its own guest view (``guest_reader.stream_guest``); any other
    prepared source is read by qemu-img, which writes raw into the in-process NBD sink, which
    hands ``consumer`` every write in ascending order and the zero runs between them
    (``nbd_sink``). Convert's raw
    outputs and the package stage (OVA, EC2 bundles, publish) use this: one way to read any
    image as a stream. ``progress(done, total)`` is called as the bytes go by; ``limits``
    bound the guest view's second reading of an admitted image's metadata (the gate's own).
    """
    if isinstance(source, RawStream) and not source.size_known:
        for offset, length, data in source.runs():
            if data is None:
                consumer.zeros(offset, length)
            else:
                consumer.write(offset, data)  # bytes: kept by background lanes without a copy
            if progress is not None:
                progress(offset + length, source.virtual_size if source.size_known else None)
        return True
    size = source.virtual_size
    if isinstance(source, RawStream):
        window = ForwardWindow(size)
        producer = start_producer(source, window)
        try:
            for offset, length, data in segments(window, size):
                if data is None:
                    consumer.zeros(offset, length)
                else:
                    consumer.write(offset, memoryview(data))
                if progress is not None:
                    progress(offset + length, size)
        finally:
            window.cancel()
            producer.join()
        return True
    if _is_plain_raw_file(source):
        # A raw file the gate admitted is its guest bytes: read it directly (holes as zero
        # runs, a thread reading ahead) — qemu-img and the NBD sink would move every byte
        # across a socket twice for nothing.
        stream_file(source.path, consumer, progress)
        return True
    if stream_guest(source, consumer, limits or Limits(), progress):
        return True
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
    return False


#: A source with more data extents than this is not mapped in advance (``possible_data``).
MAX_PLANNED_EXTENTS = 1 << 16


def possible_data(source: ImageSource) -> list[tuple[int, int]] | None:
    """The guest ranges ``(offset, length)`` that may hold data, known before the stream starts
    (everything else reads as zeros): a plain raw file's data extents, which ``stream_raw``
    reads the same way. None when that is not known up front (a compressed stream, an image
    read through its format, a file of more than ``MAX_PLANNED_EXTENTS`` extents)."""
    if isinstance(source, RawStream) or not _is_plain_raw_file(source):
        return None
    ranges: list[tuple[int, int]] = []
    try:
        with source.path.open("rb", buffering=0) as f:
            for offset, length, is_data in file_extents(f.fileno(), source.virtual_size):
                if is_data:
                    if len(ranges) == MAX_PLANNED_EXTENTS:
                        return None
                    ranges.append((offset, length))
    except OSError:
        return None  # the stream itself reports what is wrong with the file
    return ranges


def _is_plain_raw_file(source: PreparedSource) -> bool:
    """A safe raw source whose file is exactly the guest (no more, no fewer bytes)."""
    if source.format != "raw" or not source.report.safe:
        return False
    try:
        return source.path.stat().st_size == source.virtual_size
    except OSError:
        return False


def _write_raw(
    source: PreparedSource,
    temp: Path,
    plan: OutputPlan,
    limits: Limits,
    progress: Progress | None,
    prehashed: Prehashed | None = None,
) -> tuple[dict[str, str], dict[str, str], bool, bool]:
    """Content and output digests, whether the source was read by ``guest_reader``, and
    whether the digests are ``prehashed``'s."""
    stage = _stage(progress, "converting")
    if isinstance(prehashed, GuestHashing) and prehashed.writes_output and plan.compression is None:
        # The thread writes the output as it hashes (guest_reader: "Writing while the image
        # arrives"): wait for it, and take what it wrote if it is this very conversion.
        known = prehashed.result()
        prehashed = known
        if (
            known is not None
            and known.output is not None
            and known.matches(source, plan.checksums)
            and _take_prewritten(known.output, temp, source.virtual_size)
        ):
            if stage is not None:
                stage(source.virtual_size, source.virtual_size)
            digests = {name: known.digests[name] for name in plan.checksums}
            return digests, digests, True, True
    if isinstance(prehashed, GuestHashing):
        prehashed = prehashed.result
    if (
        prehashed is not None
        and plan.compression is None
        and (callable(prehashed) or prehashed.matches(source, plan.checksums))
        and reads_itself(source)
        and copy_guest(source, temp, limits, stage)
    ):
        # Copied (and flushed: copy_guest's OutputFile.finish) while the prehashing (a thread:
        # GuestHashing.result) may still be finishing.
        known = prehashed() if callable(prehashed) else prehashed
        if known is not None and known.matches(source, plan.checksums):
            digests = {name: known.digests[name] for name in plan.checksums}
            return digests, digests, True, True
        hasher = HashingConsumer(plan.checksums, background=True)  # one read of what was written
        stream_file(temp, hasher, _stage(progress, "hashing"))
        digests = hasher.hashes.hexdigests()
        return digests, digests, True, False
    writer = ImageStreamWriter(temp, compression=plan.compression, checksums=plan.checksums)
    try:
        # A raw file as it is, a qcow2 by its guest view; else qemu-img (``stream_raw``).
        own = stream_raw(source, writer, stage, limits)
        writer.finish(source.virtual_size)
    finally:
        writer.close()
    return writer.content.hexdigests(), writer.output.hexdigests(), own, False


def _take_prewritten(prewritten: str, temp: Path, size: int) -> bool:
    """Put the raw output ``hash_guest`` wrote in place of ``temp`` (the output's temporary
    name, created empty: its mode is kept); False when it cannot be renamed there."""
    try:
        if os.stat(prewritten).st_size != size:
            return False
        os.chmod(prewritten, os.stat(temp).st_mode & 0o7777)
        os.replace(prewritten, temp)
    except OSError:
        return False
    return True


def _write_formatted(
    src: Path | qemu_img.NbdSource,
    source: PreparedSource | None,
    temp: Path,
    scratch: Callable[[str], Path],
    plan: OutputPlan,
    progress: Progress | None,
    *,
    total: int | None = None,
    failure: Callable[[], BaseException | None] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """qemu-img writes the output (into a scratch image first when it is to be compressed).

    ``failure``: what made a streamed source fail, if anything — the real reason when
    qemu-img then fails on a read (a refusal mid-stream), raised instead of qemu-img's error.
    """
    image = scratch(plan.format) if plan.compression else temp

    def qemu_progress(done: int, total: int | None) -> None:
        if progress is not None:
            progress("converting", done, total)

    try:
        qemu_img.convert(
            src,
            source.format if source is not None else "raw",
            image,
            plan.format,
            options=plan.options,
            compress=plan.cluster_compression is not None,
            progress=qemu_progress,
            total_bytes=source.virtual_size if source is not None else total,
        )
    except ProgramError:
        cause = failure() if failure is not None else None
        if isinstance(cause, ImagewrightError | NotRawError):
            raise cause from None
        raise

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
