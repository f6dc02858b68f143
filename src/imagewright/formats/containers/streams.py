"""Forward-only byte streams: the input a tar scan walks — a file (skips cost nothing) or a
decompressed stream (skips decompress and discard, every byte charged to the inspection's
``Budget``) — and ``StreamCapture``, the regions of a streamed disk kept for a parser that
comes after them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from imagewright.binary import ByteSource, MiB, NotExaminedError, PrefixExhaustedError, zeros
from imagewright.formats.base import Budget
from imagewright.formats.containers.decompress import DecompressedStream

#: Decompressed bytes discarded per step while skipping member data.
SKIP_CHUNK = 1 * MiB


class ScanLimitError(NotExaminedError):
    """A decompressed archive is larger than its inspection may decompress; the scan stops there."""


class SequentialInput(Protocol):
    """Bytes read front to back. ``read``/``skip`` return less only at the end."""

    @property
    def position(self) -> int: ...

    @property
    def limit(self) -> int | None:
        """The position the input may not pass (the scan limit), or None."""
        ...

    def read(self, n: int) -> bytes: ...

    def skip(self, n: int) -> int: ...


class SourceInput:
    """An uncompressed archive file: skips only move the position; small reads (512-byte
    headers) are served from a read-ahead buffer, so 200 000 headers are not 200 000 preads.
    """

    def __init__(self, src: ByteSource, start: int = 0) -> None:
        self._src = src
        self._pos = start
        self._buffer = b""
        self._buffer_start = start
        #: How much to read ahead: nothing right after a long skip (the next header is
        #: followed by another long member, most likely), more and more after short ones.
        self._ahead = _FIRST_AHEAD

    @property
    def position(self) -> int:
        return self._pos

    @property
    def limit(self) -> int | None:
        return None

    def read(self, n: int) -> bytes:
        if n <= 0:
            return b""
        offset = self._pos - self._buffer_start
        if offset >= 0 and offset + n <= len(self._buffer):
            data = self._buffer[offset : offset + n]
        elif n >= self._ahead:
            data = self._src.pread(self._pos, n)
        else:
            self._buffer = self._src.pread(self._pos, self._ahead)
            self._buffer_start = self._pos
            data = self._buffer[:n]
            self._ahead = min(READ_AHEAD, 2 * self._ahead)
        self._pos += len(data)
        return data

    def skip(self, n: int) -> int:
        step = max(0, min(n, self._src.size - self._pos))
        self._pos += step
        self._ahead = min(READ_AHEAD, max(2 * self._ahead, _FIRST_AHEAD)) if step < READ_AHEAD else 0
        return step


#: Bytes fetched at once for small reads (tar headers), at most ...
READ_AHEAD = 64 * 1024
#: ... and at first.
_FIRST_AHEAD = 4 * 1024


class DecompressedInput:
    """A compressed archive, decompressed as it is walked; every byte charged to ``budget``.

    Small reads (512-byte headers) are served from a read-ahead buffer of ``READ_AHEAD``.
    """

    def __init__(self, stream: DecompressedStream, budget: Budget, what: str = "the archive") -> None:
        self.stream = stream
        self._budget = budget
        self._what = what
        self._buffer = b""
        self._offset = 0

    @property
    def position(self) -> int:
        return self.stream.position - (len(self._buffer) - self._offset)

    @property
    def limit(self) -> int | None:
        """The position the input may not pass: what the budget still allows."""
        return self.stream.position + self._budget.decompressed_left

    def _check(self, n: int) -> None:
        if self.position + n > self.stream.position + self._budget.decompressed_left:
            raise ScanLimitError(self._budget.decompressed_sentence(self._what))

    def _pull(self, n: int) -> bytes:
        data = self.stream.read(n)
        self._budget.decompressed += len(data)
        return data

    def read(self, n: int) -> bytes:
        self._check(n)
        available = len(self._buffer) - self._offset
        if n <= available:
            data = self._buffer[self._offset : self._offset + n]
            self._offset += n
            return data
        head = self._buffer[self._offset :]
        self._buffer, self._offset = b"", 0
        wanted = n - len(head)
        if wanted >= READ_AHEAD:
            return head + self._pull(wanted)
        # Read ahead, but never past what the budget allows.
        ahead = min(READ_AHEAD, max(wanted, self._budget.decompressed_left))
        self._buffer = self._pull(ahead)
        self._offset = min(wanted, len(self._buffer))
        return head + self._buffer[: self._offset]

    def skip(self, n: int) -> int:
        self._check(n)
        available = len(self._buffer) - self._offset
        if n <= available:
            self._offset += n
            return n
        done = available
        self._buffer, self._offset = b"", 0
        while done < n:
            piece = self._pull(min(SKIP_CHUNK, n - done))
            if not piece:
                break
            done += len(piece)
        return done


#: The unit ``StreamCapture`` keeps: a superblock read keeps the 64 KiB around it.
CAPTURE_BLOCK = 64 * 1024


class StreamCapture:
    """Chosen regions of a forward-only stream of ``size`` bytes, kept as they go by: a
    ``ByteSource`` for parsers that look at a disk streamed past them once.

    ``want`` names regions before they pass; ``feed`` gives the stream in order and keeps the
    wanted ``CAPTURE_BLOCK``-sized blocks (blocks of zeros cost nothing; the rest counts
    against ``budget`` bytes). ``pread`` answers from what was kept:

    - bytes still ahead of the stream: while ``speculative``, they read as zeros and become
      wanted (``pending`` is set; ``on_pending`` is called as soon as the first of them has
      been kept, so the caller can look again while the rest is still ahead);
    - bytes that went by without being kept (or over the budget): ``PrefixExhaustedError``,
      "could not be examined" — a parser reports that, it never guesses.
    """

    def __init__(self, size: int, budget: int) -> None:
        self._size = size
        self._budget = budget
        self.held = 0
        self.position = 0
        self.speculative = True
        self._wanted: set[int] = set()
        self._pending: set[int] = set()
        self._blocks: dict[int, bytes | None] = {}
        self.on_pending: Callable[[], None] | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def want(self, offset: int, length: int) -> None:
        """Keep ``[offset, offset + length)`` when it goes by (what has gone by is not recalled)."""
        first = max(offset, self.position) // CAPTURE_BLOCK
        last = (min(offset + length, self._size) - 1) // CAPTURE_BLOCK
        self._wanted.update(range(first, last + 1))

    def feed(self, offset: int, data: bytes) -> None:
        """The stream's next bytes (``offset`` == ``position``)."""
        end = offset + len(data)
        first, last = offset // CAPTURE_BLOCK, (end - 1) // CAPTURE_BLOCK
        while self._wanted:
            # (Re-read after each look: a look may want more of this very piece.)
            candidates = [b for b in self._wanted if first <= b <= last]
            if not candidates:
                break
            block = min(candidates)
            first = block + 1
            start = block * CAPTURE_BLOCK
            if start < offset or min(start + CAPTURE_BLOCK, self._size) > end:
                self._wanted.discard(block)  # straddles the piece's ends (pieces are aligned)
                continue
            self._keep(block, data[start - offset : start - offset + CAPTURE_BLOCK])
            if block in self._pending:
                self._pending.discard(block)
                self.position = start + CAPTURE_BLOCK
                if self.on_pending is not None:
                    self.on_pending()
        self.position = end
        self._wanted = {b for b in self._wanted if b * CAPTURE_BLOCK >= end}

    def recall(self, size: int, start: int, pieces: Iterable[tuple[int, bytes]]) -> None:
        """The stream ended at ``size`` (unknown until then): keep its blocks from ``start`` on
        out of ``pieces`` (its last ``(offset, data)``, aligned as ``feed``'s were), which went
        by before anything could ask for them — a streamed disk's tail (GPT backup, footers)."""
        self._size = size
        self._wanted = set()
        self._pending = set()
        for offset, data in pieces:
            end = offset + len(data)
            for block in range(max(start, offset) // CAPTURE_BLOCK, -(-end // CAPTURE_BLOCK)):
                begin = block * CAPTURE_BLOCK
                if begin < offset or block in self._blocks or min(begin + CAPTURE_BLOCK, size) > end:
                    continue
                self._keep(block, data[begin - offset : begin - offset + CAPTURE_BLOCK])
        self.position = size

    def _keep(self, block: int, data: bytes) -> None:
        self._wanted.discard(block)
        if data == zeros(len(data)):
            self._blocks[block] = None
        elif self.held + len(data) <= self._budget:
            self._blocks[block] = data
            self.held += len(data)

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self._size:
            return b""
        end = min(offset + length, self._size)
        parts: list[bytes] = []
        for block in range(offset // CAPTURE_BLOCK, (end - 1) // CAPTURE_BLOCK + 1):
            start = block * CAPTURE_BLOCK
            lo, hi = max(offset, start), min(end, start + CAPTURE_BLOCK)
            if block in self._blocks:
                data = self._blocks[block]
                parts.append(bytes(hi - lo) if data is None else data[lo - start : hi - start])
            elif start >= self.position and self.speculative:
                self._wanted.add(block)
                self._pending.add(block)
                parts.append(bytes(hi - lo))
            else:
                raise PrefixExhaustedError(
                    f"Bytes {lo}..{hi} of the streamed disk could not be examined within the limit: "
                    "they had gone by before anything asked for them."
                )
        return b"".join(parts)
