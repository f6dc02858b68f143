"""The guest view of a qcow2 image: L1 → L2 → cluster, as QEMU 7.2 reads it.

Source: qemu ``docs/interop/qcow2.txt`` ("Cluster mapping", "Extended L2 Entries",
"Compressed Clusters Descriptor") and ``block/qcow2-cluster.c`` / ``block/qcow2.h``
(``qcow2_get_subcluster_type``, ``qcow2_parse_compressed_l2_entry``).

Only images that need nothing but this file get a guest view: no backing file, no external
data file, no encryption (``qcow2.open_image`` decides). Unallocated clusters read as zeros.

NOTE: every L2 table offset and host cluster offset comes from the untrusted file; each is
checked for alignment and against the file size before use, and L2 tables are cached in a
bounded LRU so a hostile access pattern cannot grow memory.
"""

from __future__ import annotations

import sys
from array import array

from imagewright.binary import ByteSource, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats.cluster_codecs import inflate_raw_cluster, unzstd_cluster
from imagewright.formats.mapped_guest import GuestRun, LruCache, MappedGuestSource

#: Bits 9..55 of L1 and standard L2 entries hold the (cluster-aligned) host offset.
L1E_OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00
L2E_OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00
QCOW_OFLAG_COPIED = 1 << 63
QCOW_OFLAG_COMPRESSED = 1 << 62
QCOW_OFLAG_ZERO = 1
SUBCLUSTERS_PER_CLUSTER = 32
_ALL_ALLOC = 0xFFFF_FFFF

COMPRESSION_ZLIB = 0
COMPRESSION_ZSTD = 1

#: L2 tables kept in memory: 64 tables of at most 2 MiB would be 128 MiB, so the count
#: shrinks with the cluster size to keep the cache near 16 MiB.
_L2_CACHE_BYTES = 16 * 1024 * 1024
_DECOMPRESSED_CLUSTERS_CACHED = 4


def be64_table(data: bytes) -> array[int]:
    """Big-endian u64 entries as an ``array`` of native integers."""
    table = array("Q")
    table.frombytes(data)
    if sys.byteorder == "little":
        table.byteswap()
    return table


class Qcow2Guest(MappedGuestSource):
    """Guest bytes of a self-contained, unencrypted qcow2 image."""

    def __init__(
        self,
        image: ByteSource,
        *,
        virtual_size: int,
        cluster_bits: int,
        l1_table: array[int],
        version: int,
        extended_l2: bool,
        compression_type: int,
    ) -> None:
        super().__init__(image, virtual_size, "qcow2")
        self._cluster_bits = cluster_bits
        self._cluster_size = 1 << cluster_bits
        self._entry_words = 2 if extended_l2 else 1
        self._l2_entries = self._cluster_size // (8 * self._entry_words)
        self._l2_bits = self._l2_entries.bit_length() - 1
        self._subcluster_size = self._cluster_size // SUBCLUSTERS_PER_CLUSTER if extended_l2 else 0
        self._l1 = l1_table
        self._version = version
        self._extended_l2 = extended_l2
        self._compression_type = compression_type
        self._l2_cache: LruCache[int, array[int]] = LruCache(max(2, _L2_CACHE_BYTES >> cluster_bits))
        self._clusters: LruCache[int, bytes] = LruCache(_DECOMPRESSED_CLUSTERS_CACHED)

    # -- metadata -------------------------------------------------------------------------
    def _load_l2(self, l2_offset: int) -> array[int]:
        return be64_table(read_exact(self._image, l2_offset, self._cluster_size, "qcow2 L2 table"))

    def _l2_table(self, l1_index: int) -> array[int] | None:
        if l1_index >= len(self._l1):
            return None
        l2_offset = self._l1[l1_index] & L1E_OFFSET_MASK
        if l2_offset == 0:
            return None
        if l2_offset & (self._cluster_size - 1):
            raise ImageFormatError(
                f"The qcow2 L1 entry {l1_index} points to an L2 table at offset {l2_offset:#x}, "
                "which is not cluster aligned."
            )
        return self._l2_cache.get_or_load(l2_offset, self._load_l2)

    # -- mapping --------------------------------------------------------------------------
    def map_run(self, offset: int, max_length: int) -> GuestRun:
        cluster_size = self._cluster_size
        cluster_index = offset >> self._cluster_bits
        in_cluster = offset & (cluster_size - 1)
        l1_index = cluster_index >> self._l2_bits
        table = self._l2_table(l1_index)
        if table is None:
            # Everything up to the end of this L1 entry's reach is unallocated.
            l1_reach_end = (l1_index + 1) << (self._l2_bits + self._cluster_bits)
            return GuestRun(min(max_length, l1_reach_end - offset))
        l2_index = cluster_index & (self._l2_entries - 1)
        entry = table[l2_index * self._entry_words]
        if entry & QCOW_OFLAG_COMPRESSED:
            length = min(max_length, cluster_size - in_cluster)
            cluster = self._compressed_cluster(entry)
            return GuestRun(length, data=cluster[in_cluster : in_cluster + length])
        if self._extended_l2:
            return self._map_subcluster(entry, table[l2_index * 2 + 1], offset, max_length)
        return self._map_standard(table, l2_index, offset, max_length)

    def _map_standard(self, table: array[int], l2_index: int, offset: int, max_length: int) -> GuestRun:
        cluster_size = self._cluster_size
        in_cluster = offset & (cluster_size - 1)
        entry = table[l2_index]
        host = self._standard_host_offset(entry, l2_index)
        # Extend the run over following entries of the same kind in this L2 table, so one
        # iteration covers many clusters (contiguous data, or a stretch of zeros).
        length = cluster_size - in_cluster
        index = l2_index + 1
        while length < max_length and index < self._l2_entries:
            following = table[index]
            if following & QCOW_OFLAG_COMPRESSED:
                break
            next_host = self._standard_host_offset(following, index)
            if host is None:
                if next_host is not None:
                    break
            elif next_host != host + (index - l2_index) * cluster_size:
                break
            length += cluster_size
            index += 1
        length = min(length, max_length)
        if host is None:
            return GuestRun(length)
        return GuestRun(length, host_offset=host + in_cluster)

    def _standard_host_offset(self, entry: int, l2_index: int) -> int | None:
        """Host offset of a standard (non-extended) L2 entry's cluster, None if it reads as zeros."""
        if entry & QCOW_OFLAG_ZERO:
            if self._version < 3:
                raise ImageFormatError(
                    f"The qcow2 version 2 image has a zero-cluster L2 entry (index {l2_index}), "
                    "which only version 3 allows."
                )
            return None
        host = entry & L2E_OFFSET_MASK
        if host == 0:
            return None
        if host & (self._cluster_size - 1):
            raise ImageFormatError(
                f"A qcow2 L2 entry points to host offset {host:#x}, which is not cluster aligned."
            )
        if host >= self._image.size:
            raise ImageFormatError(
                f"A qcow2 L2 entry points to host offset {host:#x}, beyond the end of the "
                f"{self._image.size}-byte file."
            )
        return host

    def _map_subcluster(self, entry: int, bitmap: int, offset: int, max_length: int) -> GuestRun:
        subcluster_size = self._subcluster_size
        in_cluster = offset & (self._cluster_size - 1)
        sc_index = in_cluster // subcluster_size
        length = min(max_length, subcluster_size - (in_cluster & (subcluster_size - 1)))
        host = entry & L2E_OFFSET_MASK
        if host == 0:
            if bitmap & _ALL_ALLOC:
                raise ImageFormatError(
                    "A qcow2 extended L2 entry marks subclusters allocated in an unallocated cluster."
                )
            return GuestRun(length)
        if (bitmap >> 32) & bitmap:
            raise ImageFormatError(
                "A qcow2 extended L2 entry marks subclusters both allocated and reading as zeros."
            )
        if host & (self._cluster_size - 1):
            raise ImageFormatError(
                f"A qcow2 L2 entry points to host offset {host:#x}, which is not cluster aligned."
            )
        if bitmap & (1 << (32 + sc_index)) or not bitmap & (1 << sc_index):
            # Reads as zeros, or allocated-but-unwritten (which reads the backing file: none here).
            return GuestRun(length)
        return GuestRun(length, host_offset=host + in_cluster)

    # -- compressed clusters --------------------------------------------------------------
    def _compressed_cluster(self, entry: int) -> bytes:
        return self._clusters.get_or_load(entry & ~QCOW_OFLAG_COPIED, self._decompress)

    def _decompress(self, entry: int) -> bytes:
        # Compressed cluster descriptor (qcow2.txt): x = 62 - (cluster_bits - 8); bits 0..x-1
        # are the host byte offset, bits x..61 the number of additional 512-byte sectors.
        shift = 62 - (self._cluster_bits - 8)
        host = entry & ((1 << shift) - 1)
        sectors = ((entry >> shift) & ((1 << (self._cluster_bits - 8)) - 1)) + 1
        span = sectors * 512 - (host & 511)
        # The span is bounded by the descriptor's width (at most two clusters); the part
        # past the end of the file reads as zeros, as it does in QEMU.
        data = self.read_host(host, span)
        what = f"qcow2 cluster at host offset {host:#x}"
        if self._compression_type == COMPRESSION_ZSTD:
            return unzstd_cluster(data, self._cluster_size, what)
        return inflate_raw_cluster(data, self._cluster_size, what)
