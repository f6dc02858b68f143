"""The forward-only byte input a tar scan walks: a file (skips cost nothing) or a
decompressed stream (skips decompress and discard, every byte charged to the inspection's
``Budget``).
"""

from __future__ import annotations

from typing import Protocol

from imagewright.binary import ByteSource, MiB, NotExaminedError
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
