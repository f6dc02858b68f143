"""Compressed wrappers (gzip, xz, bzip2, zstd): look inside without extracting.

The walk:
1. Read what the container records without decompressing: the gzip header and ISIZE, the
   xz indexes (exact size), the zstd frame headers and block walk (content size,
   truncation), the bzip2 level.
2. Decompress a first piece. If it starts with a tar header, the content is an archive:
   decompress it again from the start and stream the *whole* tar, judging every member —
   a hostile member deep inside a ``.tar.gz`` is found wherever it is — and keeping the
   content of every member (``_Captures``) so that each can be inspected in turn.
3. Otherwise the content is a disk image: it is decompressed to its end into memory
   (``HeldBytes``: blocks of zeros cost nothing), and ``inner`` reads it.

NOTE: the inspection is paid for by its input (``formats.base.Budget``): decompressed
bytes and members in proportion to the compressed size, data held in memory up to
``Limits.max_held_bytes``. When a stream does not fit, it stops with a problem that says so:
what was not examined is never called safe. ``JudgedStream`` is the other way through a
compressed image, for callers that hand it on as it is read (``examine_stream`` spools it to
a file for build; convert streams a raw disk straight to qemu-img): the whole stream, judged
the same way, piece by piece.

NOTE: compression inside compression (a gzip holding an xz ...) has no use for an image
and is how recursive decompression bombs are built: it is refused. A stream whose recorded
size exceeds the virtual-size limit (or, for an archive, the scan budget) is refused before
any decompression.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from imagewright.binary import ByteSource, HeldBytes, PrefixSource
from imagewright.errors import ImageFormatError
from imagewright.formats.base import Budget, Limits
from imagewright.formats.containers import bzip2, gzip, xz, zstd
from imagewright.formats.containers.archive import judge_archive
from imagewright.formats.containers.classify import top_component, tops_look_like_rootfs
from imagewright.formats.containers.decompress import CompressionFormat, DecompressedStream
from imagewright.formats.containers.model import (
    ArchiveMember,
    ContainerDetails,
    OpenedContainer,
)
from imagewright.formats.containers.problems import Findings, as_problem
from imagewright.formats.containers.signature import probe_compression
from imagewright.formats.containers.streams import DecompressedInput
from imagewright.formats.containers.tar import TRAILING_DATA, TarScanner
from imagewright.formats.containers.tar_header import looks_like_tar
from imagewright.units import format_size

_STEP = 1024 * 1024

Details = gzip.GzipDetails | xz.XzDetails | bzip2.Bzip2Details | zstd.ZstdDetails


class _Recorded:
    """What the container says about itself before any decompression."""

    def __init__(self, details: Details, size: int | None, zstd_end: int | None = None) -> None:
        self.details = details
        self.size = size
        self.zstd_end = zstd_end


def _describe(src: ByteSource, fmt: CompressionFormat, findings: Findings) -> _Recorded:
    if fmt == "gzip":
        return _Recorded(gzip.read_details(src), None)
    if fmt == "xz":
        try:
            details = xz.read_details(src)
        except ImageFormatError as err:
            # The streams may still decompress up to the damage: report both.
            findings.problem(as_problem(err))
            return _Recorded(xz.XzDetails(0, 0, 0, 0, 0, []), None)
        return _Recorded(details, details.uncompressed_size)
    if fmt == "bzip2":
        return _Recorded(bzip2.read_details(src), None)
    zdetails = zstd.read_details(src)
    try:
        walk = zstd.walk_frames(src)
    except ImageFormatError as err:
        findings.problem(as_problem(err))
        return _Recorded(zdetails, None)
    if not walk.complete:
        findings.note("the zstd file has too many frames or blocks to total their sizes")
        return _Recorded(zdetails, None)
    zdetails.frames = walk.frames
    zdetails.skippable_frames = walk.skippable_frames
    zdetails.total_content_size = walk.total_content_size
    zdetails.frames_without_content_size = walk.frames_without_content_size
    zdetails.compressed_size = walk.end
    if walk.largest_window > zstd.MAX_WINDOW_SIZE:
        findings.problem(
            f"a zstd frame needs a {format_size(walk.largest_window)} window, more than the "
            f"{format_size(zstd.MAX_WINDOW_SIZE)} imagewright decodes with"
        )
    if walk.trailing_bytes:
        findings.problem(
            f"{walk.trailing_bytes} bytes after the last zstd frame are not a frame; decompressors ignore "
            "or reject them"
        )
    return _Recorded(zdetails, walk.total_content_size, walk.end)


def _judge_end(stream: DecompressedStream, recorded: _Recorded, findings: Findings) -> None:
    """A fully decompressed stream: members, trailing bytes, size against the record."""
    end = stream.end
    if end is None:
        return
    details = recorded.details
    if isinstance(details, gzip.GzipDetails):
        details.members = end.members
        if end.members > 1:
            findings.note(f"the gzip file holds {end.members} concatenated members")
    elif isinstance(details, bzip2.Bzip2Details):
        details.streams = end.members
    if end.trailing_bytes:
        label = {"gzip": "gzip", "xz": "xz", "bzip2": "bzip2", "zstd": "zstd"}[stream.format]
        if end.trailing_zeros:
            findings.note(f"{end.trailing_bytes} zero bytes of padding follow the {label} stream")
        else:
            findings.problem(
                f"{end.trailing_bytes} bytes after the end of the {label} stream are not part of it; "
                "decompressors ignore or reject them, so the file can mean two things"
            )
    if recorded.size is not None and recorded.size != stream.position:
        findings.problem(
            f"the {stream.format} stream records {recorded.size} uncompressed bytes but holds "
            f"{stream.position}"
        )


def open_compressed(
    src: ByteSource,
    fmt: CompressionFormat,
    limits: Limits,
    name_hint: str | None = None,
    budget: Budget | None = None,
) -> OpenedContainer:
    """Open a compressed file: an archive is scanned member by member, a disk image is
    decompressed whole into memory (zeros cost nothing) as far as ``budget`` allows."""
    budget = budget if budget is not None else Budget(limits, src.size)
    findings = Findings()
    recorded = _describe(src, fmt, findings)
    stream = DecompressedStream(src, fmt, zstd_end=recorded.zstd_end)
    # A first small piece tells an archive from a disk image.
    try:
        first = stream.read(_STEP)
    except ImageFormatError as err:
        findings.problem(as_problem(err))
        first = b""
    if looks_like_tar(first[:512]):
        # The archive is scanned from the start again; its faults are found (and reported) there.
        return _open_compressed_tar(
            src=src, fmt=fmt, recorded=recorded, limits=limits, budget=budget, findings=findings,
            name_hint=name_hint,
        )  # fmt: skip
    held = HeldBytes()
    _keep(first, held, budget, findings, fmt)
    nested = probe_compression(first[:64])
    if nested is not None:
        findings.problem(_nested_sentence(fmt, nested))
    elif recorded.size is not None and recorded.size > limits.max_virtual_size:
        findings.problem(_bomb_sentence(fmt, recorded.size, limits))
    else:
        _hold(stream, held, budget, findings, fmt)
    if stream.finished:
        _judge_end(stream, recorded, findings)
    size = stream.position if stream.finished else recorded.size
    findings.finish()
    return OpenedContainer(
        format=fmt,
        kind="compressed",
        details=ContainerDetails(compression=recorded.details),
        layers=[fmt],
        uncompressed_size=size,
        problems=findings.problems,
        notes=findings.notes,
        partial=not stream.finished,
        inner=PrefixSource(held, size, limits.max_virtual_size),
    )


def _nested_sentence(fmt: str, nested: str) -> str:
    return (
        f"the decompressed {fmt} stream is itself compressed ({nested}); compression inside compression "
        "is how recursive decompression bombs are built"
    )


def _bomb_sentence(fmt: str, size: int, limits: Limits) -> str:
    return (
        f"the {fmt} stream claims {format_size(size)} of uncompressed data, more than the limit of "
        f"{format_size(limits.max_virtual_size)} (a decompression bomb)"
    )


def _hold(
    stream: DecompressedStream,
    held: HeldBytes,
    budget: Budget,
    findings: Findings,
    fmt: CompressionFormat,
) -> None:
    """Decompress the rest of the stream into ``held``.

    Stops with a problem at a decoding error, or when the stream would exceed the budget of
    work or memory, or the virtual-size limit: what is not held was not examined.
    """
    for piece in _pieces(stream, findings):
        _keep(piece, held, budget, findings, fmt)


def _pieces(stream: DecompressedStream, findings: Findings) -> Iterator[bytes]:
    """The decompressed stream in steps, until its end or the first problem (a decoding
    error becomes one)."""
    while not findings.problems:
        try:
            piece = stream.read(_STEP)
        except ImageFormatError as err:
            findings.problem(as_problem(err))
            return
        if not piece:
            return
        yield piece


def _keep(piece: bytes, held: HeldBytes, budget: Budget, findings: Findings, fmt: CompressionFormat) -> None:
    """Charge ``piece`` to the budget and hold it; a problem (and nothing held) if it does not fit."""
    what = f"the {fmt} stream"
    try:
        budget.charge_decompressed(len(piece), what)
    except ImageFormatError as err:
        findings.problem(as_problem(err))
        return
    before = held.held
    held.append(piece)
    if not budget.charge_held(held.held - before):
        findings.problem(as_problem(budget.held_sentence(what)))
    elif held.length > budget.limits.max_virtual_size:
        findings.problem(_bomb_sentence(fmt, held.length, budget.limits))


#: ``sink(offset, data)``: receives the decompressed stream in order.
Sink = Callable[[int, bytes], None]


class JudgedStream:
    """The decompressed bytes of a compressed disk image, judged as they are read.

    What the container records (checked before any decompression: a recorded size over the
    virtual-size limit is a bomb), every byte decoded (CRCs, truncation), compression inside
    compression (the first piece), the virtual-size limit and the expected size (checked
    before each piece is handed on), and, at the end, what follows the last member. A
    problem stops ``pieces``; ``finish`` tells the whole verdict. For callers that hand the
    stream on while it is judged (``examine_stream``; convert's streaming raw path)::

        judged = JudgedStream(src, "gzip", limits)
        for piece in judged.pieces():        # stops at the end or at the first problem
            hand_on(judged.position - len(piece), piece)
        opened = judged.finish()             # opened.problems: refuse if any
    """

    def __init__(self, src: ByteSource, fmt: CompressionFormat, limits: Limits) -> None:
        self.format = fmt
        self._limits = limits
        self._findings = Findings()
        self._recorded = _describe(src, fmt, self._findings)
        self._expected: int | None = None
        self._expected_sentence = ""
        self._report: OpenedContainer | None = None
        if self._recorded.size is not None and self._recorded.size > limits.max_virtual_size:
            self._findings.problem(_bomb_sentence(fmt, self._recorded.size, limits))
        self._stream = DecompressedStream(src, fmt, zstd_end=self._recorded.zstd_end)

    @property
    def recorded_size(self) -> int | None:
        """The decompressed size the container records (xz index, zstd frame headers), if any."""
        return self._recorded.size

    @property
    def position(self) -> int:
        """Decompressed bytes handed out so far."""
        return self._stream.position

    @property
    def finished(self) -> bool:
        return self._stream.finished

    @property
    def problems(self) -> list[str]:
        return self._findings.problems

    def expect_size(self, size: int, sentence: str) -> None:
        """Stop with the problem ``sentence`` as soon as the stream grows past ``size`` bytes."""
        self._expected = size
        self._expected_sentence = sentence

    def pieces(self, step: int = _STEP) -> Iterator[bytes]:
        """The stream in pieces of ``step`` bytes (fewer only at the end), each judged first."""
        limit = self._limits.max_virtual_size
        while not self._findings.problems:
            try:
                piece = self._stream.read(step)
            except ImageFormatError as err:
                self._findings.problem(as_problem(err))
                return
            if not piece:
                return
            position = self._stream.position
            if position == len(piece):
                nested = probe_compression(piece[:64])
                if nested is not None:
                    self._findings.problem(_nested_sentence(self.format, nested))
                    return
            if position > limit:
                self._findings.problem(_bomb_sentence(self.format, position, self._limits))
                return
            if self._expected is not None and position > self._expected:
                self._findings.problem(self._expected_sentence)
                return
            yield piece

    def finish(self) -> OpenedContainer:
        """The container's report: every problem met, and the end judged if it was reached."""
        if self._report is not None:
            return self._report
        if self._stream.finished:
            _judge_end(self._stream, self._recorded, self._findings)
        self._findings.finish()
        stream = self._stream
        self._report = OpenedContainer(
            format=self.format,
            kind="compressed",
            details=ContainerDetails(compression=self._recorded.details),
            layers=[self.format],
            uncompressed_size=stream.position if stream.finished else self._recorded.size,
            problems=self._findings.problems,
            notes=self._findings.notes,
            partial=not stream.finished,
        )
        return self._report


def examine_stream(src: ByteSource, fmt: CompressionFormat, limits: Limits, sink: Sink) -> OpenedContainer:
    """Decompress the whole of ``src`` into ``sink``, judging the stream as it goes.

    For a caller that spools a compressed image to a file before handing it on (convert,
    build): see ``JudgedStream`` for what is judged. Any problem stops the stream; the
    caller refuses the image, and then inspects what it spooled in full, as any image.
    """
    judged = JudgedStream(src, fmt, limits)
    for piece in judged.pieces():
        sink(judged.position - len(piece), piece)
    return judged.finish()


class _Captures:
    """The content of the regular members of a compressed archive, kept as the scan passes.

    Every member is captured (zeros cost nothing) as far as the memory budget allows; a
    member that does not fit gets no source, and the inspection refuses it as not examined.
    Once the archive looks like a root filesystem, whose members are files for a guest and
    never images, capturing stops and what was kept is let go.
    """

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self.content: dict[int, HeldBytes] = {}
        self._tops: set[str] = set()
        self._rootfs = False

    def want(self, member: ArchiveMember) -> bool:
        if self._rootfs:
            return False
        self._tops.add(top_component(member.name))
        if tops_look_like_rootfs(self._tops):
            self._rootfs = True
            for held in self.content.values():
                self._budget.release_held(held.held)
            self.content.clear()
            return False
        return True

    def store(self, member: ArchiveMember, held: HeldBytes | None) -> None:
        if held is not None:
            self.content[id(member)] = held

    def read(self, member: ArchiveMember, limit: int) -> bytes | None:
        held = self.content.get(id(member))
        if held is None or member.size > limit:
            return None
        return held.read(0, member.size)


def _drain(inp: DecompressedInput, findings: Findings) -> None:
    """Read what follows the end-of-archive marker (normally zero padding) to the stream's end."""
    nonzero = False
    while True:
        try:
            piece = inp.read(_STEP)
        except ImageFormatError as err:
            findings.problem(as_problem(err))
            return
        if not piece:
            break
        nonzero = nonzero or any(piece)
    if nonzero:
        findings.problem(TRAILING_DATA.format(where=" inside the compressed stream"))


def _open_compressed_tar(
    *,
    src: ByteSource,
    fmt: CompressionFormat,
    recorded: _Recorded,
    limits: Limits,
    budget: Budget,
    findings: Findings,
    name_hint: str | None,
) -> OpenedContainer:
    details = ContainerDetails(compression=recorded.details)
    if recorded.size is not None and recorded.size > budget.decompressed_left:
        findings.problem(
            f"the {fmt} stream holds a {format_size(recorded.size)} archive; "
            + as_problem(budget.decompressed_sentence("the archive"))
        )
        findings.finish()
        return OpenedContainer(
            format=fmt,
            kind="archive",
            details=details,
            layers=[fmt, "tar"],
            uncompressed_size=recorded.size,
            problems=findings.problems,
            notes=findings.notes,
            partial=True,
        )
    stream = DecompressedStream(src, fmt, zstd_end=recorded.zstd_end)
    inp = DecompressedInput(stream, budget)
    captures = _Captures(budget)
    scan = TarScanner(
        inp, limits, budget=budget, capture=captures.want, store=captures.store, findings=findings
    ).scan()
    if scan.complete:
        _drain(inp, findings)
        _judge_end(stream, recorded, findings)
    for member in scan.members:
        held = captures.content.get(id(member))
        if held is not None:
            member.source = PrefixSource(held, member.size, member.size)
    kind, ova = judge_archive(scan.members, captures.read, limits, findings, name_hint)
    details.archive = scan.details
    details.ova = ova
    findings.finish()
    return OpenedContainer(
        format=fmt,
        kind=kind,
        details=details,
        layers=[fmt, "ova" if kind == "ova" else "tar"],
        uncompressed_size=stream.position if stream.finished else recorded.size,
        members=scan.members,
        problems=findings.problems,
        notes=findings.notes,
        partial=not (scan.complete and stream.finished),
    )
