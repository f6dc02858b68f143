"""The guest view of a sparse image format: guest offsets mapped onto host bytes.

qcow, qcow2 and VMDK sparse extents all answer the same question for a guest offset: is it
unallocated (zeros), stored plainly at some host offset, or stored compressed somewhere?
``MappedGuestSource`` turns such answers into a ``ByteSource`` (``pread`` in guest space),
merging runs of host-contiguous clusters into one read so that a large read of a freshly
converted image costs a few system calls, not one per cluster.

``LruCache`` keeps the recently used metadata tables (qcow2 L2 tables, VMDK grain tables)
and decompressed clusters, bounded by entry count so memory stays flat whatever the image.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from imagewright.binary import ByteSource
from imagewright.errors import ImageFormatError

K = TypeVar("K")
V = TypeVar("V")

#: Merged host reads are split at this size so one guest read never buffers too much at once.
_MAX_MERGED_READ = 8 * 1024 * 1024
#: Zero runs are merged (and split) up to this: a streaming reader checks whether to stop
#: between runs, and a run hands that much work to whoever hashes it.
_MAX_MERGED_ZEROS = 64 * 1024 * 1024


class LruCache(Generic[K, V]):
    """A small least-recently-used cache bounded by its number of entries."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("an LRU cache needs room for at least one entry")
        self._max_entries = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_load(self, key: K, load: Callable[[K], V]) -> V:
        """The cached value for ``key``, loading (and caching) it on a miss."""
        try:
            value = self._entries[key]
        except KeyError:
            value = load(key)
            self._entries[key] = value
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
            return value
        self._entries.move_to_end(key)
        return value


@dataclass(frozen=True, slots=True)
class GuestRun:
    """What a run of guest bytes starting at some guest offset is made of.

    Exactly one of: ``host_offset`` (the bytes are stored plainly in the image file there),
    ``data`` (already materialised bytes, e.g. a slice of a decompressed cluster), or
    neither (the run reads as zeros).
    """

    length: int
    host_offset: int | None = None
    data: bytes | None = None


class MappedGuestSource:
    """A ``ByteSource`` over guest bytes; subclasses implement ``map_run``.

    Host reads are checked against the image file: a run that *starts* beyond the end of the
    file is an ``ImageFormatError`` (a hostile or truncated image), while the tail of a run
    that crosses the end reads as zeros, as QEMU's block layer does for short files.
    """

    def __init__(self, image: ByteSource, size: int, what: str) -> None:
        self._image = image
        self._size = size
        self._what = what

    @property
    def size(self) -> int:
        return self._size

    def map_run(self, offset: int, max_length: int) -> GuestRun:
        """Describe the guest bytes at ``offset``: a run of 1..``max_length`` bytes."""
        raise NotImplementedError

    def runs(self, offset: int = 0, end: int | None = None) -> Iterator[tuple[int, GuestRun]]:
        """``(guest offset, run)`` from ``offset`` to ``end`` (default: the whole disk), in order.

        Host-contiguous runs are merged into one, and longer ones split, so that each is one
        read of at most ``_MAX_MERGED_READ`` bytes (memory stays flat); adjacent zero runs are
        merged, and longer ones split (``_MAX_MERGED_ZEROS``); a run of materialised ``data`` is
        passed as it is.
        What a reader that streams the whole guest (a conversion) walks, and what ``pread`` reads.
        """
        end = self._size if end is None else min(end, self._size)
        pending: tuple[int, GuestRun] | None = None
        position = offset
        while position < end:
            run = self.map_run(position, end - position)
            if run.length <= 0 or run.length > end - position:
                raise AssertionError(f"map_run returned a run of {run.length} bytes")
            if run.host_offset is not None and run.length > _MAX_MERGED_READ:
                run = GuestRun(_MAX_MERGED_READ, host_offset=run.host_offset)  # one read at a time
            elif run.host_offset is None and run.data is None and run.length > _MAX_MERGED_ZEROS:
                run = GuestRun(_MAX_MERGED_ZEROS)
            if pending is not None:
                start, last = pending
                if run.host_offset is not None and last.host_offset is not None:
                    if (
                        last.host_offset + last.length == run.host_offset
                        and last.length + run.length <= _MAX_MERGED_READ
                    ):
                        pending = (start, GuestRun(last.length + run.length, host_offset=last.host_offset))
                        position += run.length
                        continue
                elif (
                    run.host_offset is None
                    and run.data is None
                    and last.host_offset is None
                    and last.data is None
                    and last.length + run.length <= _MAX_MERGED_ZEROS
                ):
                    pending = (start, GuestRun(last.length + run.length))
                    position += run.length
                    continue
                yield pending
            pending = (position, run)
            position += run.length
        if pending is not None:
            yield pending

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self._size:
            return b""
        out = bytearray()
        for _, run in self.runs(offset, offset + length):
            if run.host_offset is not None:
                out += self.read_host(run.host_offset, run.length)
            else:
                out += run.data if run.data is not None else bytes(run.length)
        return bytes(out)

    def read_host(self, host_offset: int, length: int) -> bytes:
        """``length`` bytes of the image file at ``host_offset``, zero-filled past its end."""
        available = self.host_bytes(host_offset, length)
        data = self._image.pread(host_offset, length)
        if len(data) < length:
            self.check_host_read(host_offset, len(data), available)
            data += bytes(length - len(data))
        return data

    def host_bytes(self, host_offset: int, length: int) -> int:
        """How many of the ``length`` bytes at ``host_offset`` the image file holds (the rest
        reads as zeros); ImageFormatError when the run starts beyond its end."""
        if host_offset < 0 or host_offset >= self._image.size:
            raise ImageFormatError(
                f"The {self._what} maps guest data to offset {host_offset}, beyond the end of the "
                f"{self._image.size}-byte image file."
            )
        return min(length, self._image.size - host_offset)

    def check_host_read(self, host_offset: int, got: int, available: int) -> None:
        """A read of the image file that returned ``got`` of the ``available`` bytes it holds."""
        if got < available:
            raise ImageFormatError(f"The {self._what} image file is truncated at offset {host_offset}.")
