"""Reading a compressed file forward in bounded steps, member after member.

``DecompressedStream.read(n)`` returns at most ``n`` bytes (fewer only at the end) and
never asks a decoder for more: every decoder is driven through ``max_length`` (ISA-L, lzma,
bz2) or a stream reader's ``read(n)`` (zstandard), so a stream that inflates a thousand
times costs the caller exactly the output it asked for — memory stays at one chunk plus the
decoder's own window, however large the decompressed data claims to be.

Concatenated members (gzip ``cat a.gz b.gz``, xz streams with stream padding, pbzip2's
bzip2 streams, zstd frames) are read as one stream, as the reference tools do. The
decoders are the fastest this machine has for each format: ISA-L for gzip (``gzip.py``),
liblzma, libbz2 and libzstd; each releases the GIL while it works, so decompression runs
beside the thread that consumes it. What
follows the last member is recorded (``trailing_bytes``/``trailing_zeros``) for the caller
to judge: data after the end that the decompressor silently ignores is where a second
meaning can hide.
"""

from __future__ import annotations

import bz2
import lzma
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import zstandard
from isal import isal_zlib

from imagewright.binary import ByteSource, KiB, MiB
from imagewright.errors import ImageFormatError, ImagewrightError, UnsupportedFormatError
from imagewright.formats.containers import bzip2, gzip, xz, zstd

#: What ISA-L's inflater raises for a corrupt gzip member (bad data, CRC32 or ISIZE mismatch).
_INFLATE_ERROR = cast("type[Exception]", isal_zlib.error)  # (its stub calls it an instance)

CompressionFormat = Literal["gzip", "xz", "bzip2", "zstd"]

#: Compressed bytes pulled from the file per step.
INPUT_CHUNK = 64 * KiB
#: lzma refuses streams whose dictionary would need more memory than this.
XZ_MEMORY_LIMIT = 256 * MiB
#: Bytes after the last member that we look at to tell zero padding from data.
TRAILING_LOOK = 64 * KiB

_LABEL = {"gzip": "gzip", "xz": "xz", "bzip2": "bzip2", "zstd": "zstd"}


class MemberDecoder(Protocol):
    """The contract of ``lzma.LZMADecompressor``/``bz2.BZ2Decompressor`` we rely on."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


def _new_member_decoder(fmt: CompressionFormat) -> MemberDecoder:
    if fmt == "gzip":
        return gzip.GzipMemberDecoder()
    if fmt == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT)
    return bz2.BZ2Decompressor()


def _member_starts(fmt: CompressionFormat, head: bytes) -> bool:
    if fmt == "gzip":
        return head[:3] == gzip.MAGIC
    if fmt == "xz":
        return head[:6] == xz.HEADER_MAGIC
    return head[:3] == bzip2.MAGIC


def _decode_error(fmt: CompressionFormat, position: int, err: BaseException) -> ImageFormatError:
    text = str(err).strip().rstrip(".") or type(err).__name__
    if isinstance(err, lzma.LZMAError) and "memory" in text.lower():
        return UnsupportedFormatError(
            f"The xz stream needs more than {XZ_MEMORY_LIMIT // MiB} MiB of memory to decompress."
        )
    return ImageFormatError(
        f"The {_LABEL[fmt]} stream is corrupt after {position} decompressed bytes ({text[:200]})."
    )


@dataclass
class StreamEnd:
    """What the end of a fully read compressed file looked like."""

    members: int
    #: Bytes after the last member that are not another member.
    trailing_bytes: int = 0
    #: True when those bytes (as far as looked at) are all NUL.
    trailing_zeros: bool = True


class DecompressedStream:
    """The decompressed bytes of ``src`` in order; see the module docstring."""

    def __init__(self, src: ByteSource, fmt: CompressionFormat, *, zstd_end: int | None = None) -> None:
        self.format = fmt
        self._src = src
        #: Decompressed bytes returned so far.
        self.position = 0
        self.end: StreamEnd | None = None
        self._in_pos = 0
        self._pending = b""
        self._members = 0
        self._decoder: MemberDecoder | None = None
        self._zstd: Any = None
        if fmt == "zstd":
            self._zstd = zstd.open_reader(src, src.size if zstd_end is None else zstd_end)

    @property
    def finished(self) -> bool:
        return self.end is not None

    def read(self, n: int) -> bytes:
        """Up to ``n`` decompressed bytes; fewer only at the end of the last member."""
        if n <= 0 or self.end is not None:
            return b""
        try:
            data = self._read_zstd(n) if self._zstd is not None else self._read_members(n)
        except ImagewrightError:
            raise
        except (_INFLATE_ERROR, lzma.LZMAError, OSError, EOFError, ValueError, zstandard.ZstdError) as err:
            raise _decode_error(self.format, self.position, err) from None
        except MemoryError:
            raise ImageFormatError(
                f"The {_LABEL[self.format]} stream could not be decoded within the memory imagewright allows."
            ) from None
        self.position += len(data)
        return data

    def _read_zstd(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            piece = self._zstd.read(n - got)
            if not piece:
                self.end = StreamEnd(members=0)
                break
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def _pull(self) -> bytes:
        chunk = self._src.pread(self._in_pos, INPUT_CHUNK)
        self._in_pos += len(chunk)
        return chunk

    def _read_members(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        idle = 0
        while got < n:
            if self._decoder is None and not self._start_member():
                break
            decoder = self._decoder
            assert decoder is not None
            data = b""
            if decoder.needs_input:
                data, self._pending = self._pending, b""
                if not data:
                    data = self._pull()
                    if not data:
                        raise ImageFormatError(
                            f"The {_LABEL[self.format]} stream is truncated: the file ends after "
                            f"{self.position + got} decompressed bytes, inside a member."
                        )
            piece = decoder.decompress(data, n - got)
            if piece:
                parts.append(piece)
                got += len(piece)
                idle = 0
            else:
                idle += 1
                if idle > 10_000:
                    raise ImageFormatError(f"The {_LABEL[self.format]} stream makes no progress.")
            if decoder.eof:
                self._pending = decoder.unused_data + self._pending
                self._decoder = None
                self._members += 1
        return b"".join(parts)

    def _peek(self, length: int) -> bytes:
        while len(self._pending) < length:
            chunk = self._pull()
            if not chunk:
                break
            self._pending += chunk
        return self._pending[:length]

    def _start_member(self) -> bool:
        """Start the next member, or record the end of the stream and return False."""
        head = self._peek(8)
        if self._members == 0:
            if not _member_starts(self.format, head):
                raise ImageFormatError(f"The file does not start with a {_LABEL[self.format]} member.")
            self._decoder = _new_member_decoder(self.format)
            return True
        if not head:
            self.end = StreamEnd(self._members)
            return False
        if _member_starts(self.format, head):
            self._decoder = _new_member_decoder(self.format)
            return True
        if self.format == "xz" and head[:4] == b"\0\0\0\0":
            # Stream padding (xz spec 2.2): NULs in multiples of 4, then maybe another stream.
            skipped = self._skip_zero_words()
            head = self._peek(8)
            if head and _member_starts("xz", head):
                self._decoder = _new_member_decoder("xz")
                return True
            if not head:
                self.end = StreamEnd(self._members, trailing_bytes=skipped, trailing_zeros=True)
                return False
        remaining = len(self._pending) + max(0, self._src.size - self._in_pos)
        look = self._peek(TRAILING_LOOK)
        self.end = StreamEnd(
            self._members,
            trailing_bytes=remaining,
            trailing_zeros=not any(look) and remaining <= TRAILING_LOOK,
        )
        return False

    def _skip_zero_words(self) -> int:
        skipped = 0
        while skipped < xz.MAX_PADDING:
            head = self._peek(4)
            if head != b"\0\0\0\0":
                break
            self._pending = self._pending[4:]
            skipped += 4
        return skipped

    @property
    def members(self) -> int:
        return self._members
