"""Zstandard (RFC 8878): frame headers, a walk over the block headers, a bounded decoder.

Byte layout (all integers little endian)::

    Frame:            magic 28 B5 2F FD | Frame_Header_Descriptor (1) | [Window_Descriptor (1)]
                      | [Dictionary_ID (0/1/2/4)] | [Frame_Content_Size (0/1/2/4/8)]
                      | blocks ... | [Content_Checksum (4)]
      FHD bits:       7-6 FCS flag, 5 Single_Segment, 4 unused, 3 reserved (0),
                      2 Content_Checksum, 1-0 Dictionary_ID flag
      Window:         exponent (bits 7-3), mantissa (2-0): 2^(10+e) + 2^(10+e)/8 * m
      FCS field size: flag 0 → 0 (1 if Single_Segment), 1 → 2 (value + 256), 2 → 4, 3 → 8
    Block header (3): bit 0 Last_Block, bits 1-2 type (0 raw, 1 RLE, 2 compressed,
                      3 reserved), bits 3-23 size (RLE: regenerated size, 1 byte stored)
    Skippable frame:  magic 0x184D2A50..5F | u32 size | data

Frames may be concatenated (``cat a.zst b.zst``, ``zstd -T0 --long`` never splits, pzstd
does). ``python-zstandard``'s stream reader stops silently at a truncated frame, so the
block walk here is what proves a file complete — the same walk ``zstd -lv`` does. The walk
reads only 3-byte block headers (buffered), never block contents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any, cast

from imagewright.binary import ByteSource, KiB, MiB
from imagewright.errors import ImageFormatError
from imagewright.formats.containers import signature

MAGIC = signature.ZSTD_MAGIC
_SKIPPABLE_LOW = signature.ZSTD_SKIPPABLE_LOW
_BLOCK_MAX = 128 * KiB

#: Largest window we decode with: the zstd CLI's own default limit (larger needs --memory).
MAX_WINDOW_SIZE = 128 * MiB
#: Most blocks the walk visits before giving up on an exact total (then: size unknown).
MAX_WALK_BLOCKS = 1_000_000
#: Most frames (data and skippable) the walk visits.
MAX_WALK_FRAMES = 100_000


@dataclass
class ZstdDetails:
    """The first frame's header and, when the walk finished, totals over every frame."""

    #: Frame_Content_Size of the first frame (None when the compressor did not record it).
    content_size: int | None
    window_size: int
    dictionary_id: int
    has_checksum: bool
    single_segment: bool
    #: Data frames and skippable frames found by the block walk (None if it was cut short).
    frames: int | None = None
    skippable_frames: int | None = None
    #: Sum of every frame's content size when every frame records one (what ``zstd -l`` shows).
    total_content_size: int | None = None
    #: Frames that do not record their content size.
    frames_without_content_size: int | None = None
    #: Bytes taken by frames (where the last one ends).
    compressed_size: int | None = None


#: The signature check lives in ``signature``: probing an image does not import this module.
probe = signature.zstd


@dataclass
class _FrameHeader:
    size: int
    content_size: int | None
    window_size: int
    dictionary_id: int
    has_checksum: bool
    single_segment: bool


def _parse_frame_header(data: bytes) -> _FrameHeader:
    """Parse a frame header; ``data`` starts at the magic and holds at least 18 bytes or EOF."""
    if len(data) < 5:
        raise ImageFormatError("The zstd frame header is truncated.")
    fhd = data[4]
    if fhd & 0x08:
        raise ImageFormatError("The zstd frame header sets its reserved bit.")
    fcs_flag = fhd >> 6
    single_segment = bool(fhd & 0x20)
    did_size = (0, 1, 2, 4)[fhd & 0x03]
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    pos = 5
    window_size = 0
    if not single_segment:
        if len(data) < pos + 1:
            raise ImageFormatError("The zstd frame header is truncated.")
        descriptor = data[pos]
        window_log = 10 + (descriptor >> 3)
        base = 1 << window_log
        window_size = base + (base // 8) * (descriptor & 0x07)
        pos += 1
    if len(data) < pos + did_size + fcs_size:
        raise ImageFormatError("The zstd frame header is truncated.")
    dictionary_id = int.from_bytes(data[pos : pos + did_size], "little")
    pos += did_size
    content_size: int | None = None
    if fcs_size:
        content_size = int.from_bytes(data[pos : pos + fcs_size], "little")
        if fcs_size == 2:
            content_size += 256
        pos += fcs_size
    if single_segment:
        window_size = content_size or 0
    return _FrameHeader(pos, content_size, window_size, dictionary_id, bool(fhd & 0x04), single_segment)


class _BufferedReader:
    """Small reads at increasing offsets served from one 64 KiB window (block headers)."""

    def __init__(self, src: ByteSource) -> None:
        self._src = src
        self._start = 0
        self._data = b""

    def read(self, offset: int, length: int) -> bytes:
        end = self._start + len(self._data)
        if not (self._start <= offset and offset + length <= end):
            self._start = offset
            self._data = self._src.pread(offset, max(length, 64 * KiB))
        rel = offset - self._start
        return self._data[rel : rel + length]


@dataclass
class ZstdWalk:
    """The result of walking every frame's block headers."""

    complete: bool
    end: int
    frames: int
    skippable_frames: int
    total_content_size: int | None
    frames_without_content_size: int
    #: Bytes after the last frame that are not a frame.
    trailing_bytes: int
    #: The largest window any frame asks for.
    largest_window: int = 0


def walk_frames(src: ByteSource) -> ZstdWalk:
    """Visit every frame and block header; raise on truncation or a malformed structure.

    ``complete`` is False when the walk stopped at ``MAX_WALK_BLOCKS``/``MAX_WALK_FRAMES``.
    """
    reader = _BufferedReader(src)
    size = src.size
    pos = 0
    frames = skippable = blocks = without_size = largest_window = 0
    total: int | None = 0
    while pos < size:
        if frames + skippable >= MAX_WALK_FRAMES or blocks >= MAX_WALK_BLOCKS:
            return ZstdWalk(False, pos, frames, skippable, None, without_size, 0, largest_window)
        magic = reader.read(pos, 4)
        if len(magic) < 4:
            return ZstdWalk(True, pos, frames, skippable, total, without_size, size - pos, largest_window)
        number = int.from_bytes(magic, "little")
        if number & 0xFFFFFFF0 == _SKIPPABLE_LOW:
            length = reader.read(pos + 4, 4)
            if len(length) < 4:
                raise ImageFormatError("The zstd file is truncated inside a skippable frame header.")
            pos += 8 + int.from_bytes(length, "little")
            if pos > size:
                raise ImageFormatError("The zstd file is truncated inside a skippable frame.")
            skippable += 1
            continue
        if magic != MAGIC:
            if frames == 0 and skippable == 0:
                raise ImageFormatError("The file does not start with a zstd frame.")
            return ZstdWalk(True, pos, frames, skippable, total, without_size, size - pos, largest_window)
        header = _parse_frame_header(reader.read(pos, 18))
        largest_window = max(largest_window, header.window_size)
        block_max = min(header.window_size, _BLOCK_MAX) if header.window_size else _BLOCK_MAX
        pos += header.size
        while True:
            if blocks >= MAX_WALK_BLOCKS:
                return ZstdWalk(False, pos, frames, skippable, None, without_size, 0, largest_window)
            raw = reader.read(pos, 3)
            if len(raw) < 3:
                raise ImageFormatError("The zstd stream is truncated: a frame ends before its last block.")
            block = int.from_bytes(raw, "little")
            block_type = (block >> 1) & 0x03
            block_size = block >> 3
            if block_type == 3:
                raise ImageFormatError(f"The zstd block at offset {pos} has the reserved block type.")
            if block_size > block_max:
                raise ImageFormatError(f"The zstd block at offset {pos} is larger than the format allows.")
            pos += 3 + (1 if block_type == 1 else block_size)
            blocks += 1
            if pos > size:
                raise ImageFormatError(
                    "The zstd stream is truncated: its last block runs past the end of the file."
                )
            if block & 1:
                break
        if header.has_checksum:
            pos += 4
            if pos > size:
                raise ImageFormatError("The zstd stream is truncated: a frame's checksum is missing.")
        frames += 1
        if header.content_size is None:
            without_size += 1
            total = None
        elif total is not None:
            total += header.content_size
    return ZstdWalk(True, pos, frames, skippable, total, without_size, 0, largest_window)


def read_details(src: ByteSource) -> ZstdDetails:
    """The first frame header (skippable frames before it are passed over)."""
    pos = 0
    for _ in range(MAX_WALK_FRAMES):
        magic = src.pread(pos, 8)
        number = int.from_bytes(magic[:4], "little") if len(magic) >= 4 else 0
        if len(magic) == 8 and number & 0xFFFFFFF0 == _SKIPPABLE_LOW:
            pos += 8 + int.from_bytes(magic[4:8], "little")
            continue
        if magic[:4] != MAGIC:
            raise ImageFormatError("The file does not start with a zstd frame.")
        header = _parse_frame_header(src.pread(pos, 18))
        return ZstdDetails(
            content_size=header.content_size,
            window_size=header.window_size,
            dictionary_id=header.dictionary_id,
            has_checksum=header.has_checksum,
            single_segment=header.single_segment,
        )
    raise ImageFormatError("The zstd file holds only skippable frames.")


class _SourceFile:
    """The file-like object ``ZstdDecompressor.stream_reader`` pulls compressed bytes from."""

    def __init__(self, src: ByteSource, end: int) -> None:
        self._src = src
        self._end = end
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = 1 * MiB
        size = min(size, self._end - self.position)
        data = self._src.pread(self.position, size) if size > 0 else b""
        self.position += len(data)
        return data


def open_reader(src: ByteSource, end: int) -> Any:
    """A zstandard stream reader over ``src[0:end]``, across frames, window capped.

    ``read(n)`` never returns more than ``n`` bytes, whatever the frame claims.
    """
    import zstandard  # only here: reading headers (and inspecting anything else) needs no decompressor

    decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
    source = cast(IO[bytes], _SourceFile(src, end))
    return decompressor.stream_reader(source, read_size=64 * KiB, read_across_frames=True)
