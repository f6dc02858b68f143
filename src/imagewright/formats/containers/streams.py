"""The forward-only byte input a tar scan walks: a file (skips cost nothing) or a
decompressed stream (skips decompress and discard, bounded by ``Limits.max_scan_bytes``).
"""

from __future__ import annotations

from typing import Protocol

from imagewright.binary import ByteSource, MiB
from imagewright.errors import ImageFormatError
from imagewright.formats.containers.decompress import DecompressedStream
from imagewright.units import format_size

#: Decompressed bytes discarded per step while skipping member data.
SKIP_CHUNK = 1 * MiB


class ScanLimitError(ImageFormatError):
    """A decompressed archive is larger than the scan limit; the scan stops there."""


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
    """An uncompressed archive file: reads are ``pread``s, skips only move the position."""

    def __init__(self, src: ByteSource, start: int = 0) -> None:
        self._src = src
        self._pos = start

    @property
    def position(self) -> int:
        return self._pos

    @property
    def limit(self) -> int | None:
        return None

    def read(self, n: int) -> bytes:
        data = self._src.pread(self._pos, n) if n > 0 else b""
        self._pos += len(data)
        return data

    def skip(self, n: int) -> int:
        step = max(0, min(n, self._src.size - self._pos))
        self._pos += step
        return step


#: Decompressed bytes fetched at once for small reads (tar headers).
READ_AHEAD = 64 * 1024


class DecompressedInput:
    """A compressed archive, decompressed as it is walked; never more than ``limit`` bytes.

    Small reads (512-byte headers) are served from a read-ahead buffer of ``READ_AHEAD``.
    """

    def __init__(self, stream: DecompressedStream, limit: int) -> None:
        self.stream = stream
        self._limit = limit
        self._buffer = b""
        self._offset = 0

    @property
    def position(self) -> int:
        return self.stream.position - (len(self._buffer) - self._offset)

    @property
    def limit(self) -> int | None:
        return self._limit

    def _check(self, n: int) -> None:
        if self.position + n > self._limit:
            raise ScanLimitError(
                f"The archive decompresses to more than {format_size(self._limit)}, the most imagewright "
                "scans (a decompression bomb, or an archive too large to inspect)."
            )

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
            return head + self.stream.read(wanted)
        # Read ahead, but never past the scan limit.
        ahead = min(READ_AHEAD, max(wanted, self._limit - self.stream.position))
        self._buffer = self.stream.read(ahead)
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
            piece = self.stream.read(min(SKIP_CHUNK, n - done))
            if not piece:
                break
            done += len(piece)
        return done
