"""GNU sparse members: the map of data regions, and the file they expand to.

A sparse member stores only its data regions, back to back; the map says where each
region lies in the expanded file (everything else reads as zeros). GCE and others ship
disk images as ``tar --format=oldgnu -S`` archives, so a disk inside an archive is often
sparse. Maps come in four encodings (GNU tar manual, "Storing Sparse Files"):

- old GNU (type 'S'): 4 (offset, size) pairs of 12-byte numbers in the header at 386,
  ``isextended`` at 482, real size at 483; each extension block after the header holds 21
  more pairs and its own ``isextended`` at 504.
- pax 0.0: repeated ``GNU.sparse.offset`` / ``GNU.sparse.numbytes`` records.
- pax 0.1: ``GNU.sparse.map`` = "offset,size,offset,size,...".
- pax 1.0: the map is at the start of the member data: decimal count, then offset and
  size, one number per line, padded to a 512-byte block.

Regions are kept in two ``array('q')`` (16 bytes each), and their count is bounded.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable

from imagewright.binary import ByteSource
from imagewright.errors import ImageFormatError

MAX_SPARSE_REGIONS = 1 << 18
#: Largest expanded size (keeps every offset and sum inside a signed 64-bit array).
MAX_REAL_SIZE = 1 << 62
#: A decimal number in a pax 1.0 map (no value needs more than 20 digits).
_MAX_DIGITS = 20


class SparseMap:
    """Data regions (offset, size) in the expanded file, in increasing order, not overlapping."""

    def __init__(self, real_size: int) -> None:
        if not 0 <= real_size <= MAX_REAL_SIZE:
            raise ImageFormatError("A sparse member claims an impossible size.")
        self.real_size = real_size
        self.offsets = array("q")
        self.sizes = array("q")
        #: Where each region's data starts within the stored data.
        self.stored_starts = array("q")
        self.stored_size = 0

    def add(self, offset: int, size: int) -> None:
        if len(self.offsets) >= MAX_SPARSE_REGIONS:
            raise ImageFormatError(f"A sparse member lists more than {MAX_SPARSE_REGIONS} data regions.")
        if offset < 0 or size < 0 or offset + size > self.real_size:
            raise ImageFormatError("A sparse member's map names a region outside the file.")
        if self.offsets and offset < self.offsets[-1] + self.sizes[-1]:
            raise ImageFormatError("A sparse member's map lists overlapping or unordered regions.")
        if offset >= 1 << 63 or size >= 1 << 63:
            raise ImageFormatError("A sparse member's map holds a number that is too large.")
        self.offsets.append(offset)
        self.sizes.append(size)
        self.stored_starts.append(self.stored_size)
        self.stored_size += size

    def __len__(self) -> int:
        return len(self.offsets)


def parse_map_text(text: str, real_size: int) -> SparseMap:
    """A pax 0.1 ``GNU.sparse.map`` value."""
    numbers = text.split(",") if text else []
    if len(numbers) % 2 or len(numbers) > 2 * MAX_SPARSE_REGIONS:
        raise ImageFormatError("A pax GNU.sparse.map value is malformed.")
    sparse = SparseMap(real_size)
    for i in range(0, len(numbers), 2):
        sparse.add(_number(numbers[i]), _number(numbers[i + 1]))
    return sparse


def _number(text: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        raise ImageFormatError("A sparse map holds something that is not a number.")
    return int(text)


def read_map_v1(next_block: Callable[[], bytes], real_size: int) -> tuple[SparseMap, int]:
    """The pax 1.0 map at the start of member data; returns it and the bytes it took
    (whole 512-byte blocks). ``next_block`` returns the next 512 bytes (fewer at the end).
    """
    buffer = b""
    used = 0

    def line() -> int:
        nonlocal buffer, used
        while b"\n" not in buffer:
            if len(buffer) > _MAX_DIGITS:
                raise ImageFormatError("A sparse member's map holds a number that is too long.")
            block = next_block()
            if len(block) < 512:
                raise ImageFormatError("A sparse member's map is truncated.")
            buffer += block
            used += 512
        text, _, buffer = buffer.partition(b"\n")
        return _number(text.decode("ascii", "replace"))

    count = line()
    if count > MAX_SPARSE_REGIONS:
        raise ImageFormatError(f"A sparse member lists more than {MAX_SPARSE_REGIONS} data regions.")
    sparse = SparseMap(real_size)
    for _ in range(count):
        offset = line()
        sparse.add(offset, line())
    return sparse, used


class SparseMemberSource:
    """The expanded file of a sparse member of an uncompressed tar: data regions read from
    the archive, holes read as zeros.
    """

    def __init__(self, parent: ByteSource, data_offset: int, sparse: SparseMap) -> None:
        self._parent = parent
        self._data_offset = data_offset
        self._map = sparse

    @property
    def size(self) -> int:
        return self._map.real_size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        end = min(offset + length, self.size)
        out = bytearray(end - offset)
        sparse = self._map
        i = max(0, bisect.bisect_right(sparse.offsets, offset) - 1)
        while i < len(sparse) and sparse.offsets[i] < end:
            start = max(offset, sparse.offsets[i])
            stop = min(end, sparse.offsets[i] + sparse.sizes[i])
            if start < stop:
                stored = self._data_offset + sparse.stored_starts[i] + (start - sparse.offsets[i])
                data = self._parent.pread(stored, stop - start)
                out[start - offset : start - offset + len(data)] = data
            i += 1
        return bytes(out)


def expand_prefix(
    read: Callable[[int], bytes], skip: Callable[[int], int], sparse: SparseMap, limit: int
) -> bytes:
    """The first ``limit`` bytes of the expanded file, reading the stored data forward once.

    Returns the stored bytes consumed implicitly through ``read``/``skip`` of exactly the
    regions that start before ``limit`` — the caller skips the rest of the stored data.
    """
    limit = min(limit, sparse.real_size)
    out = bytearray(limit)
    for i in range(len(sparse)):
        offset, size = sparse.offsets[i], sparse.sizes[i]
        if offset >= limit:
            break
        wanted = min(size, limit - offset)
        data = read(wanted)
        out[offset : offset + len(data)] = data
        if len(data) < wanted:
            break
        skip(size - wanted)
    return bytes(out)
