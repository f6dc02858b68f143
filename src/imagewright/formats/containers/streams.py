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

    def read(self, n: int) -> bytes:
        data = self._src.pread(self._pos, n) if n > 0 else b""
        self._pos += len(data)
        return data

    def skip(self, n: int) -> int:
        step = max(0, min(n, self._src.size - self._pos))
        self._pos += step
        return step


class DecompressedInput:
    """A compressed archive, decompressed as it is walked; never more than ``limit`` bytes."""

    def __init__(self, stream: DecompressedStream, limit: int) -> None:
        self.stream = stream
        self._limit = limit

    @property
    def position(self) -> int:
        return self.stream.position

    def _check(self, n: int) -> None:
        if self.stream.position + n > self._limit:
            raise ScanLimitError(
                f"The archive decompresses to more than {format_size(self._limit)}, the most imagewright "
                "scans (a decompression bomb, or an archive too large to inspect)."
            )

    def read(self, n: int) -> bytes:
        self._check(n)
        return self.stream.read(n)

    def skip(self, n: int) -> int:
        self._check(n)
        done = 0
        while done < n:
            piece = self.stream.read(min(SKIP_CHUNK, n - done))
            if not piece:
                break
            done += len(piece)
        return done
