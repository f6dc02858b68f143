"""A qcow2 (version 3, compat 1.1) written front to back from the grains of one pass.

``publish`` made its qcow2 by writing a sparse raw scratch file during the pass and handing
it to ``qemu-img convert`` afterwards: the data was written twice more and read once more
than needed. The grains are 64 KiB, exactly the qcow2 cluster qemu-img uses by default, so
each data grain becomes one data cluster, appended in guest order; zero grains are left
unallocated (they read as zeros: the image has no backing file).

Layout (QEMU ``docs/interop/qcow2.txt``; all numbers big-endian)::

    cluster 0          header (104 bytes, version 3, refcount_order 4) + end-of-extensions
                       -- reserved now, written last: it names where the tables ended up
    clusters 1..       data clusters in guest order; after the last data cluster of each
                       L2 range (8192 clusters = 512 MiB of guest), that range's L2 table
                       (entries: host offset | QCOW_OFLAG_COPIED, 0 = unallocated)
    then               the L1 table (one entry per L2 range: the L2's offset | COPIED, or 0)
    then               the refcount blocks (16-bit entries, every cluster of the file at 1)
                       and the refcount table (their offsets), sized together so the blocks
                       also count themselves and the table

Memory stays flat: one L2 table (64 KiB) is held at a time, plus the L1 table (8 bytes per
512 MiB of guest). ``qemu-img check`` finds no leaks and no errors in what this writes, and
``qemu-img compare`` finds it identical to the source (tests/package/test_publish.py).

**A header known in advance** (``possible_data``). The header names where the tables end up,
so a digest of the file (``publish``'s SHA256SUMS) could only be taken by reading the whole
file back once the header was written: a second pass over every data byte, after all the
other outputs were done. When the caller knows beforehand which guest ranges may hold data
(a raw file's data extents; everything else reads as zeros), the number of clusters in front
of the L1 table has an upper bound: one per grain those ranges touch, plus one L2 table per
512 MiB range they touch. The L1 table is then put at that bound, whatever the data turns
out to be: clusters the bound counted but the data did not need (zero grains inside a data
extent, a range left without data) stay a hole in the file, counted 0 in the refcounts
(free: ``qemu-img check`` reports no leak), and the header is known before the first data
byte — so the file is hashed as it is written (``checksum``), and the hole's zeros and the
tables at the end. The plan is given up, and the file laid out and read back as without it,
when more data arrives than it allowed (the source changed under the pass) or when the hole
would exceed ``MAX_HOLE`` and a sixteenth of the data (a raw file allocated throughout but
mostly zeros): the file never grows by more than that for it, and the hole takes no disk space.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence

from imagewright.errors import InvalidArgumentError
from imagewright.package.deflate import GRAIN
from imagewright.package.grains import GrainBatch

CLUSTER = GRAIN
CLUSTER_BITS = 16
L2_ENTRIES = CLUSTER // 8
#: refcount_order 4: 16-bit refcounts, 32768 per refcount block.
REFCOUNT_ORDER = 4
REFCOUNTS_PER_BLOCK = CLUSTER * 8 // (1 << REFCOUNT_ORDER)
COPIED = 1 << 63
HEADER_LENGTH = 104
#: The largest image qemu accepts (QCOW_MAX_L1_SIZE bounds the L1 table to 32 MiB).
MAX_VIRTUAL_SIZE = (32 << 20) // 8 * L2_ENTRIES * CLUSTER

_HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQII")
#: The largest hole a planned layout may leave in front of the tables (beyond a sixteenth of
#: the data clusters): past it, the file is laid out tight and read back for its digest.
MAX_HOLE = 64 << 20


def _clusters(length: int) -> int:
    return -(-length // CLUSTER)


def planned_clusters(possible_data: Sequence[tuple[int, int]]) -> int:
    """Clusters in front of the L1 table at most (header, data, L2 tables) when the data lies
    within ``possible_data`` (guest ``(offset, length)`` ranges, in ascending order)."""
    grains = 0
    last_grain = last_range = -1
    ranges = 0
    for offset, length in possible_data:
        if length <= 0:
            continue
        first, end = offset // CLUSTER, (offset + length - 1) // CLUSTER
        first = max(first, last_grain + 1)
        if first <= end:
            grains += end - first + 1
            last_grain = end
        first_range = max(offset // CLUSTER // L2_ENTRIES, last_range + 1)
        end_range = end // L2_ENTRIES
        if first_range <= end_range:
            ranges += end_range - first_range + 1
            last_range = end_range
    return 1 + grains + ranges


class Qcow2StreamWriter:
    """A ``GrainTarget`` appending a qcow2 of ``virtual_size`` bytes through ``write``.

    The file starts with one reserved cluster (its writer starts appending at ``CLUSTER``);
    after ``finish``, ``header()`` is the cluster to put at offset 0 and ``size`` the file's
    length.

    ``possible_data`` and ``write_at`` (both or neither): plan the layout so that the header
    is known in advance (see the module docstring); ``write_at(offset, data)`` puts the tables
    after the hole. ``checksum``: the file's digest is taken as it is written while the plan
    holds (``digest()``: None when it did not, or without a plan).
    """

    def __init__(
        self,
        write: Callable[[bytes | memoryview], None],
        virtual_size: int,
        *,
        possible_data: Sequence[tuple[int, int]] | None = None,
        write_at: Callable[[int, bytes], None] | None = None,
        checksum: str | None = None,
    ) -> None:
        if not 0 < virtual_size <= MAX_VIRTUAL_SIZE:
            raise InvalidArgumentError("A qcow2 image holds from one byte to 32 PiB.")
        self._write = write
        self.virtual_size = virtual_size
        self.l1_size = -(-_clusters(virtual_size) // L2_ENTRIES)
        self._l1 = [0] * self.l1_size
        self._l2: list[int] = [0] * L2_ENTRIES
        self._l2_index = 0
        self._l2_used = False
        #: Next free host offset (cluster 0 is the header's).
        self.size = CLUSTER
        self._l1_offset = 0
        self._refcount_table_offset = 0
        self._refcount_table_clusters = 0
        self.data_clusters = 0
        self._write_at = write_at
        #: Clusters in front of the L1 table by the plan (None: no plan, or given up).
        self.planned: int | None = None
        self._hasher: hashlib._Hash | None = None
        if possible_data is not None and write_at is not None:
            self.planned = planned_clusters(possible_data)
            if checksum is not None:
                self._hasher = hashlib.new(checksum)
                self._hasher.update(self._header(self.planned))

    def _emit(self, data: bytes | memoryview) -> int:
        offset = self.size
        if self.planned is not None and offset + len(data) > self.planned * CLUSTER:
            self._give_up_plan()  # more than it allowed for: the source changed under the pass
        self._write(data)
        if self._hasher is not None:
            self._hasher.update(data)
        self.size += len(data)
        return offset

    def _give_up_plan(self) -> None:
        self.planned = None
        self._hasher = None

    def digest(self) -> str | None:
        """The file's digest taken as it was written (after ``finish``); None when it was not."""
        return self._hasher.hexdigest() if self._hasher is not None and self.planned is not None else None

    def batch(self, batch: GrainBatch) -> None:
        """Each data run of the batch becomes consecutive data clusters (zero grains stay
        unallocated), written in one piece per L2 range it falls in."""
        for run in batch.runs:
            if run.data is None:
                continue
            data = run.data
            if len(data) % CLUSTER:
                # Only the image's last grain can be short: its cluster is filled up with zeros.
                data = bytes(data) + bytes(-len(data) % CLUSTER)
            view = memoryview(data)
            index = run.offset // CLUSTER
            done = 0
            while done < len(data):
                l2_index, entry = divmod(index, L2_ENTRIES)
                if l2_index != self._l2_index:
                    self._flush_l2()
                    self._l2_index = l2_index
                count = min((len(data) - done) // CLUSTER, L2_ENTRIES - entry)
                host = self._emit(view[done : done + count * CLUSTER])
                self._l2[entry : entry + count] = [(host + i * CLUSTER) | COPIED for i in range(count)]
                self._l2_used = True
                self.data_clusters += count
                index += count
                done += count * CLUSTER

    def _flush_l2(self) -> None:
        if not self._l2_used:
            return
        offset = self._emit(struct.pack(f">{L2_ENTRIES}Q", *self._l2))
        self._l1[self._l2_index] = offset | COPIED
        self._l2 = [0] * L2_ENTRIES
        self._l2_used = False

    def finish(self) -> None:
        self._flush_l2()
        used = self.size // CLUSTER
        if self.planned is not None:
            hole = (self.planned - used) * CLUSTER
            if hole > MAX_HOLE + self.data_clusters * CLUSTER // 16:
                self._give_up_plan()  # mostly zeros where data could have been: laid out tight
        start = used if self.planned is None else self.planned
        self._l1_offset, blocks, table = self._tables(start)
        l1 = struct.pack(f">{self.l1_size}Q", *self._l1)
        tail = [l1 + bytes(_clusters(len(l1)) * CLUSTER - len(l1))]
        # The refcount blocks and table count every cluster of the file, themselves included;
        # the hole's clusters (used .. start) are free (0).
        total = start + _clusters(len(l1)) + blocks + table
        first_block = self._l1_offset + len(tail[0])
        for index in range(blocks):
            begin = index * REFCOUNTS_PER_BLOCK
            counts = bytearray(CLUSTER)
            for first, end in ((0, used), (start, total)):
                low, high = max(first, begin), min(end, begin + REFCOUNTS_PER_BLOCK)
                if low < high:
                    counts[(low - begin) * 2 : (high - begin) * 2] = b"\x00\x01" * (high - low)
            tail.append(bytes(counts))
        offsets = struct.pack(f">{blocks}Q", *(first_block + i * CLUSTER for i in range(blocks)))
        tail.append(offsets + bytes(table * CLUSTER - len(offsets)))
        self._refcount_table_offset = first_block + blocks * CLUSTER
        self._refcount_table_clusters = table
        tables = b"".join(tail)
        if start == used:
            self._write(tables)
        else:
            assert self._write_at is not None
            self._write_at(start * CLUSTER, tables)
        if self._hasher is not None:
            hole = (start - used) * CLUSTER
            zeros = memoryview(bytes(min(hole, 16 << 20)))
            for done in range(0, hole, max(1, len(zeros))):
                self._hasher.update(zeros[: hole - done])
            self._hasher.update(tables)
        self.size = start * CLUSTER + len(tables)

    def _tables(self, start: int) -> tuple[int, int, int]:
        """Where the L1 table goes and how many refcount blocks and table clusters follow it,
        when ``start`` clusters precede it."""
        l1_clusters = _clusters(self.l1_size * 8)
        used = start + l1_clusters
        blocks, table = 1, 1
        while True:
            total = used + blocks + table
            need_blocks = -(-total // REFCOUNTS_PER_BLOCK)
            need_table = _clusters(need_blocks * 8)
            if (need_blocks, need_table) == (blocks, table):
                return start * CLUSTER, blocks, table
            blocks, table = need_blocks, need_table

    def header(self) -> bytes:
        """Cluster 0, once ``finish`` ran."""
        return self._pack_header(self._l1_offset, self._refcount_table_offset, self._refcount_table_clusters)

    def _header(self, start: int) -> bytes:
        """Cluster 0 of the file whose L1 table follows ``start`` clusters."""
        l1_offset, blocks, table = self._tables(start)
        refcount_table_offset = l1_offset + _clusters(self.l1_size * 8) * CLUSTER + blocks * CLUSTER
        return self._pack_header(l1_offset, refcount_table_offset, table)

    def _pack_header(self, l1_offset: int, refcount_table_offset: int, refcount_table_clusters: int) -> bytes:
        fields = _HEADER.pack(
            b"QFI\xfb",
            3,  # version (compat 1.1)
            0,  # backing_file_offset
            0,  # backing_file_size
            CLUSTER_BITS,
            self.virtual_size,
            0,  # crypt_method
            self.l1_size,
            l1_offset,
            refcount_table_offset,
            refcount_table_clusters,
            0,  # nb_snapshots
            0,  # snapshots_offset
            0,  # incompatible_features
            0,  # compatible_features
            0,  # autoclear_features
            REFCOUNT_ORDER,
            HEADER_LENGTH,
        )
        # Then the end-of-extensions marker (type 0, length 0) and zeros to the cluster's end.
        return fields + bytes(CLUSTER - len(fields))
