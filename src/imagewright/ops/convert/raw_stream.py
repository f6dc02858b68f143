"""A compressed raw disk, decompressed as it is read and handed on without a scratch copy.

``disk.raw.gz`` (``.xz``, ``.zst``, ``.bz2``) is how cloud images travel. Converting one used
to mean decompressing it into a scratch file, inspecting the copy, and letting qemu-img read
the copy: two passes over the data and a scratch file as large as the data. Here the
decompressed bytes go straight from the decoder to where they are needed — qemu-img, through
the in-process NBD server (``nbd_source``), or, for a raw output, the output writer — while
the stream checks run on the same bytes.

Why that is as safe as the scratch copy (issue 13, category 2: safe only when every byte a
later step could interpret was judged):

- **The format is decided before qemu-img reads a byte**, from the decompressed head, by the
  same probes the gate uses (``formats.registry`` — our readers in their order — and
  ``formats.qemu_probe`` — QEMU's own): only content that every reader takes for *raw*, and
  that QEMU's probe also calls raw, is streamed. Anything else (a qcow2 or a VMDK inside the
  ``.gz`` ...) needs random access and takes the old way: spooled, inspected in full, then
  read (``source.py``); the result says so in a note.
- **qemu-img reads it with ``-f raw``**, and the raw driver interprets nothing: no header, no
  backing file, no extent, no ``json:`` name; whatever the bytes hold, QEMU opens no other
  file because of them. What is left to judge is the stream itself — every member decoded
  and its CRC checked, nothing after the end, no compression inside compression, the size
  within the limit and equal to what was announced — and ``JudgedStream`` judges exactly
  that, piece by piece, before each piece is handed on. The fixed VHD is the one format
  recognised at the *end* (its footer): it is checked before the last piece is handed on,
  and the conversion is then done again the spool way.
- **A refusal mid-stream stops everything**: the producer puts the refusal in the window,
  every NBD read fails from then on, qemu-img fails, and the output's temporary file is
  removed (``files.AtomicOutput``) — nothing appears under the output name. The last piece is
  held back until the end of the stream has been judged, so qemu-img never completes a
  conversion of a stream that is refused at its very end (a bad CRC in the last member,
  data after it).
- **The size must be known before qemu-img starts** (an NBD export has a size). xz records
  it in its index and zstd in its frame headers (when every frame has one): one pass. gzip
  and bzip2 record nothing reliable (gzip's ISIZE is modulo 4 GiB, of the last member only),
  so the stream is first decompressed once without being kept — the *checking pass*, at
  ISA-L speed for gzip, judging the whole stream, so that a hostile gzip is refused before
  qemu-img runs at all — and then streamed. Both passes judge the stream; if the file
  changed in between (another size, another head), the second pass refuses it.
- **A raw output needs no size up front** (no qemu-img, no NBD export: ``sized=False``): a
  gzip or bzip2 stream is then decompressed once (the checking pass cost as much CPU as the
  rest of an import to raw). The size is what the one pass found; the last piece is held back
  until the end was judged, as always, and the tail of the disk (GPT backup, a fixed VHD's
  footer) is recalled from the last pieces, which are kept until the end (``runs``).

The inspection report of the decompressed disk (partition table, filesystems, boot code) is
made of regions captured as they go by (``StreamCapture``): the head and the tail (GPT
backup, VHD footer) are kept from the start; the survey is run on what was kept whenever a
region it asked for has just gone by, and asks for the next ones (partition starts, their
superblocks) while they are still ahead; its last run, at the end, is the report. A region it
asked for too late is not guessed at: the report says that part could not be examined (a
note, not a refusal: qemu-img reads the disk with ``-f raw`` either way, and every later step
that reads a filesystem — resize, prepare, boot — judges the output by itself). Problems of
the partition table (loops, tables beyond the disk) refuse the image, as the gate would.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from imagewright.binary import ByteSource, CountingSource, MiB, NotExaminedError, PrefixSource, data_runs
from imagewright.disk.survey import DiskSurvey, survey_disk
from imagewright.errors import ImageFormatError, ImageIOError, UnsafeImageError
from imagewright.formats import raw, registry
from imagewright.formats.base import HEAD_SIZE, Limits
from imagewright.formats.containers import JudgedStream
from imagewright.formats.containers.decompress import CompressionFormat
from imagewright.formats.containers.model import OpenedContainer
from imagewright.formats.containers.streams import StreamCapture
from imagewright.formats.safety import Verdict, judge
from imagewright.inspection import NOT_EXAMINED, ContainerReport, ImageReport
from imagewright.ops.convert.nbd_source import ForwardWindow, StreamCancelledError

#: Decompressed bytes per piece: what is judged, zero-scanned and handed on at once.
PIECE = 1 * MiB
#: The head and the tail of the disk, kept for the format decision and the survey.
EDGE = 1 * MiB
#: Pieces an unsized stream keeps until its end: more than ``EDGE`` whatever the last one's length.
RECENT_PIECES = 2 + EDGE // PIECE
#: How often the survey may look again while the disk goes by (each look is cheap).
MAX_SURVEY_LOOKS = 64

#: ``progress(done, total)`` of the checking pass: compressed bytes read.
CheckProgress = Callable[[int, int], None]


class NotRawError(Exception):
    """The decompressed content is not a raw disk (``format`` is what it is): it needs
    random access, and takes the spool way."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self.format = fmt


@dataclass
class StreamReports:
    """What was learned of a streamed source, complete once the stream has ended."""

    #: The decompressed disk (format raw, its survey).
    inner: ImageReport
    #: The compressed file around it (container facts: gzip header, xz index ...).
    wrapper: ImageReport
    notes: list[str] = field(default_factory=list)


def _format_of_head(head: bytes) -> str:
    """The format our readers give a disk that starts with ``head`` (its end unknown yet);
    raw only when QEMU's own probe agrees."""
    prefix = PrefixSource(head, None, 1 << 62)
    try:
        reader = registry.detect_disk_format(prefix, head)
        if reader.name != "raw":
            return reader.name
        if registry.probe_conflicts(prefix, head, reader):
            return "unknown"  # QEMU would open it as something else: the spool way refuses it
    except NotExaminedError:
        return "unknown"
    return "raw"


class RawStream:
    """A compressed raw disk ``src`` (called ``label``), ready to stream; see the module
    docstring. Construction reads the head (and, without a recorded size, checks the whole
    stream once); ``NotRawError`` when the content is not raw, UnsafeImageError when the
    stream is refused. Then ``produce(window)`` (in a thread) hands the disk on, and
    ``reports`` tells what was found.
    """

    #: What the consumer reads: the decompressed disk is raw.
    format = "raw"

    def __init__(
        self,
        src: ByteSource,
        label: str,
        compression: CompressionFormat,
        limits: Limits,
        progress: CheckProgress | None = None,
        *,
        sized: bool = True,
    ) -> None:
        self.label = label
        self.compression = compression
        self._src = src
        self._limits = limits
        self.counted = False
        judged, first = self._start()
        self.head = first[:HEAD_SIZE]
        fmt = _format_of_head(self.head)
        if fmt != "raw":
            raise NotRawError(fmt)
        size = judged.recorded_size
        if size is None and sized:
            size = self._checking_pass(progress)
            judged, first = self._start()
            if first[:HEAD_SIZE] != self.head:
                self._refuse(["the compressed file changed while it was being read"])
            self.counted = True
        if size == 0:
            raise ImageIOError(f"{label} decompresses to nothing.")
        if size is not None:
            judged.expect_size(
                size,
                f"the {compression} stream holds more than the {size} bytes "
                + ("it held when it was checked" if self.counted else "it records"),
            )
        #: None until the one pass of an unsized stream has ended (``size_known``).
        self._size = size
        self._judged = judged
        self._first = first
        # An unsized stream is surveyed as the largest disk allowed until its end is known.
        self._capture = StreamCapture(
            size if size is not None else limits.max_virtual_size, limits.max_held_bytes
        )
        self._capture.want(0, EDGE)
        if size is not None:
            self._capture.want(max(0, size - EDGE), EDGE)
        self._capture.on_pending = self._look
        self._looks = 0
        self._reports: StreamReports | None = None

    @property
    def size_known(self) -> bool:
        """Whether ``size`` is known (before the stream: a recorded size or the checking pass)."""
        return self._size is not None

    @property
    def size(self) -> int:
        """The decompressed size (of an unsized stream: once ``runs`` has ended)."""
        if self._size is None:
            raise AssertionError("the size of an unsized stream is known once it has been produced")
        return self._size

    @property
    def virtual_size(self) -> int:
        return -(-self.size // raw.SECTOR) * raw.SECTOR

    # --- the passes ---------------------------------------------------------------------------

    def _start(self) -> tuple[JudgedStream, bytes]:
        judged = JudgedStream(self._src, self.compression, self._limits)
        first = next(iter(judged.pieces(PIECE)), b"")
        if judged.problems:
            self._refuse(judged.finish().problems)
        if not first:
            raise ImageIOError(f"{self.label} decompresses to nothing.")
        return judged, first

    def _checking_pass(self, progress: CheckProgress | None) -> int:
        """Decompress the rest without keeping it; judge the stream; return its size."""
        counting = CountingSource(self._src)
        judged = JudgedStream(counting, self.compression, self._limits)
        tail = b""
        for piece in judged.pieces(PIECE):
            tail = (tail + piece)[-EDGE:] if len(piece) < EDGE else piece[-EDGE:]
            if progress is not None:
                progress(counting.bytes_read, self._src.size)
        opened = judged.finish()
        if opened.problems:
            self._refuse(opened.problems)
        size = judged.position
        # The end is known now: a fixed VHD footer there makes it a vpc image, not raw.
        self._check_tail(size, self.head, tail)
        return size

    @staticmethod
    def _check_tail(size: int, head: bytes, tail: bytes) -> None:
        reader = registry.detect_disk_format(_Edges(size, head, tail), head)
        if reader.name != "raw":
            raise NotRawError(reader.name)

    def _refuse(self, problems: list[str]) -> None:
        raise UnsafeImageError(f"{self.label} is refused: {problems[0]}", tuple(problems))

    def produce(self, window: ForwardWindow) -> None:
        """Hand the disk to ``window`` (run it in a thread). Any refusal goes to the window."""
        try:
            self._produce(window)
        except StreamCancelledError:
            return
        except BaseException as err:  # noqa: BLE001 - the reader gets it through the window
            window.fail(err)

    def _produce(self, window: ForwardWindow) -> None:
        for run in self.runs():
            _put(window, *run)

    def runs(self) -> Iterator[tuple[int, int, bytes | None]]:
        """The disk front to back, ``(offset, length, data or None for zeros)``, judged piece by
        piece; the last piece only once the end of the stream was judged (a refusal raises)."""
        judged = self._judged
        held = (0, self._first)
        # An unsized stream's last pieces, for its tail once its end is known.
        recent: deque[tuple[int, bytes]] = deque([held], maxlen=RECENT_PIECES)
        self._capture.feed(0, self._first)
        self._look()  # the head is in: the survey asks for what it needs next
        for piece in judged.pieces(PIECE):
            offset = judged.position - len(piece)
            self._capture.feed(offset, piece)
            if self._size is None:
                recent.append((offset, piece))
            yield from _runs(*held)
            held = (offset, piece)
        opened = judged.finish()
        if opened.problems:
            self._refuse(opened.problems)
        if self._size is None:
            if judged.position == 0:
                raise ImageIOError(f"{self.label} decompresses to nothing.")
            self._size = judged.position
            self._capture.recall(self._size, max(0, self._size - EDGE), recent)
        if judged.position != self.size:
            self._refuse([f"the {self.compression} stream holds {judged.position} bytes, not {self.size}"])
        if not self.counted:
            self._check_tail(self.size, self.head, self._capture.pread(max(0, self.size - EDGE), EDGE))
        self._reports = self._report(opened)
        if not self._reports.inner.verdict.safe:
            reasons = list(self._reports.inner.verdict.reasons)
            raise UnsafeImageError(f"{self.label} is refused: {reasons[0]}", tuple(reasons))
        yield from _runs(*held)
        if self.virtual_size > self.size:
            yield self.size, self.virtual_size - self.size, None

    # --- the survey ---------------------------------------------------------------------------

    def _look(self) -> None:
        """A region the survey asked for has just been kept: look again (speculatively)."""
        if self._looks >= MAX_SURVEY_LOOKS:
            return
        self._looks += 1
        with contextlib.suppress(ImageFormatError):  # judged at the end, on everything kept
            survey_disk(self._capture)

    def _report(self, opened: OpenedContainer) -> StreamReports:
        self._capture.speculative = False
        opened_image = raw.open_image(self._capture, self._limits)
        reasons = list(judge(opened_image, self._limits).reasons)
        notes: list[str] = []
        survey: DiskSurvey | None = None
        try:
            survey = survey_disk(opened_image.guest or self._capture)
        except NotExaminedError:
            notes.append(f"the partition table {NOT_EXAMINED} (it went by before it was asked for)")
        except ImageFormatError as err:
            text = str(err).strip().rstrip(".")
            reasons.append(text[:1].lower() + text[1:])
        if survey is not None:
            reasons.extend(survey.problems)
            if survey.partial:
                notes.append(
                    f"part of the guest disk {NOT_EXAMINED}: the disk was streamed, and that part "
                    "went by before the survey asked for it"
                )
        inner = ImageReport(
            path=f"{self.label} (decompressed)",
            format="raw",
            virtual_size=self.virtual_size,
            file_size=self.size,
            details=opened_image.details,
            disk=survey,
            verdict=Verdict(tuple(dict.fromkeys(reasons))),
            notes=[*notes, *(survey.warnings if survey is not None else [])],
        )
        container = ContainerReport.of(opened)
        container.inner = inner
        wrapper = ImageReport(
            path=self.label,
            format=self.compression,
            virtual_size=self.virtual_size,
            file_size=self._src.size,
            container=container,
            verdict=inner.verdict,
        )
        return StreamReports(inner, wrapper, notes)

    @property
    def reports(self) -> StreamReports:
        """The reports, once the stream has been produced to its end."""
        if self._reports is None:
            raise AssertionError("the stream has not been produced to its end")
        return self._reports


class _Edges:
    """The head and the tail of a disk of ``size`` bytes; nothing in between (a ``ByteSource``
    for the probes, which read nothing else)."""

    def __init__(self, size: int, head: bytes, tail: bytes) -> None:
        self._size = size
        self._head = head
        self._tail = tail

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self._size)
        if offset < 0 or offset >= end:
            return b""
        if end <= len(self._head):
            return self._head[offset:end]
        tail_start = self._size - len(self._tail)
        if offset >= tail_start:
            return self._tail[offset - tail_start : end - tail_start]
        raise NotExaminedError(f"Bytes {offset}..{end} of the disk were not kept for its format probe.")


def _hand_on(window: ForwardWindow, offset: int, piece: bytes) -> None:
    """``piece`` into the window as data and zero runs."""
    for run in _runs(offset, piece):
        _put(window, *run)


def _put(window: ForwardWindow, offset: int, length: int, data: bytes | None) -> None:
    if data is None:
        window.put_zeros(offset, length)
    else:
        window.put(offset, data)


def _runs(offset: int, piece: bytes) -> Iterator[tuple[int, int, bytes | None]]:
    """``piece`` as data and zero runs (found at C speed): ``(offset, length, data or None)``."""
    position = 0
    for start, end in data_runs(piece):
        if start > position:
            yield offset + position, start - position, None
        yield offset + start, end - start, piece if start == 0 and end == len(piece) else piece[start:end]
        position = end
    if position < len(piece):
        yield offset + position, len(piece) - position, None


def segments(
    window: ForwardWindow, size: int, step: int = 4 * MiB
) -> Iterator[tuple[int, int, bytes | None]]:
    """Read ``window`` front to back: ``(offset, length, data or None for zeros)``."""
    position = 0
    while position < size:
        length = min(step, size - position)
        for segment in window.read(position, length):
            yield segment.offset, segment.length, segment.data
        position += length


def start_producer(stream: RawStream, window: ForwardWindow) -> threading.Thread:
    thread = threading.Thread(target=stream.produce, args=(window,), name="raw-stream", daemon=True)
    thread.start()
    return thread
