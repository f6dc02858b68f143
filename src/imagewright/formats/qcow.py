"""qcow version 1 (the original QEMU copy-on-write format): header, backing file, guest view.

Source: QEMU 7.2 ``block/qcow.c`` (``qcow_open``, ``get_cluster_offset``,
``decompress_cluster``). All integers are big-endian. Header layout (48 bytes)::

    0  magic 'QFI\\xfb'   4  version (1)            8  backing_file_offset u64
    16 backing_file_size 20 mtime                  24 size (virtual, bytes) u64
    32 cluster_bits u8   33 l2_bits u8  34 pad u16 36 crypt_method (0 none, 1 AES)
    40 l1_table_offset u64

L1 entries are plain L2 table offsets; L2 entries are plain cluster offsets, except that
bit 63 marks a compressed cluster whose next ``cluster_bits`` bits (below bit 63) hold the
compressed size in bytes and whose low ``63 - cluster_bits`` bits hold the host offset.

NOTE (safety): a backing file name is a reference to another file (or URL) and is refused
by the policy. The L1 table is bounded by ``Limits.max_table_bytes``. As in ``qcow_open``, the
name is ``backing_file_size`` bytes at ``backing_file_offset`` (anywhere in the file) cut at
the first NUL; bytes hidden after that NUL, or an offset pointing at an empty name, are read
differently by other readers and refused.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from imagewright.binary import ByteSource, Layout, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats import probes
from imagewright.formats.base import ExternalReference, Limits, OpenedImage
from imagewright.formats.cluster_codecs import inflate_raw_cluster
from imagewright.formats.external_names import describe_external_name, stored_name, stored_name_problems
from imagewright.formats.mapped_guest import GuestRun, LruCache, MappedGuestSource
from imagewright.formats.qcow2_guest import be64_table
from imagewright.units import format_size

MAGIC = probes.QCOW_MAGIC
VERSION = probes.QCOW_VERSION
HEADER = Layout(
    "qcow header",
    ">",
    [
        ("magic", "4s"),
        ("version", "I"),
        ("backing_file_offset", "Q"),
        ("backing_file_size", "I"),
        ("mtime", "I"),
        ("size", "Q"),
        ("cluster_bits", "B"),
        ("l2_bits", "B"),
        ("padding", "H"),
        ("crypt_method", "I"),
        ("l1_table_offset", "Q"),
    ],
)
MAX_BACKING_FILE_NAME = 1023
CRYPT_NONE = 0
CRYPT_AES = 1
COMPRESSED = 1 << 63


@dataclass
class QcowDetails:
    """The qcow (version 1) header fields."""

    version: int
    backing_file_offset: int
    backing_file_size: int
    mtime: int
    size: int
    cluster_bits: int
    cluster_size: int
    l2_bits: int
    l2_entries: int
    crypt_method: int
    encryption: str
    l1_table_offset: int
    l1_size: int
    backing_file: str | None = None


#: The signature check lives in ``probes``: the registry probes every format without importing its reader.
probe = probes.qcow


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """Parse and validate a qcow header and its L1 table."""
    head = src.pread(0, HEADER.size)
    if len(head) < 8 or head[:4] != MAGIC:
        raise ImageFormatError("The file is not a qcow image (no QFI\\xfb magic).")
    problems: list[str] = []
    mapping_ok = True
    if len(head) < HEADER.size:
        problems.append(f"the qcow header is truncated: the file holds {len(head)} of its 48 bytes")
        mapping_ok = False
    hdr = HEADER.unpack(head.ljust(HEADER.size, b"\0"))
    if hdr["version"] != VERSION:
        problems.append(f"qcow version {hdr['version']} is not version 1")
        mapping_ok = False
    size = hdr["size"]
    cluster_bits, l2_bits = hdr["cluster_bits"], hdr["l2_bits"]
    if size <= 1:
        problems.append("the virtual size is smaller than 2 bytes")
        mapping_ok = False
    geometry_ok = 9 <= cluster_bits <= 16 and 6 <= l2_bits <= 13
    if not 9 <= cluster_bits <= 16:
        problems.append(f"the cluster size 2^{cluster_bits} is outside qcow's range of 512 bytes to 64 KiB")
    if not 6 <= l2_bits <= 13:
        problems.append(f"the L2 table size 2^{l2_bits} entries is outside qcow's range of 64 to 8192")
    mapping_ok = mapping_ok and geometry_ok
    crypt_method = hdr["crypt_method"]
    if crypt_method > CRYPT_AES:
        problems.append(f"the encryption method {crypt_method} is unknown (0 none, 1 AES)")
        mapping_ok = False

    l1_size = 0
    if geometry_ok:
        shift = cluster_bits + l2_bits
        l1_size = (size + (1 << shift) - 1) >> shift
    details = QcowDetails(
        version=hdr["version"],
        backing_file_offset=hdr["backing_file_offset"],
        backing_file_size=hdr["backing_file_size"],
        mtime=hdr["mtime"],
        size=size,
        cluster_bits=cluster_bits,
        cluster_size=1 << cluster_bits if geometry_ok else 0,
        l2_bits=l2_bits,
        l2_entries=1 << l2_bits if geometry_ok else 0,
        crypt_method=crypt_method,
        encryption={CRYPT_NONE: "none", CRYPT_AES: "aes"}.get(crypt_method, f"unknown ({crypt_method})"),
        l1_table_offset=hdr["l1_table_offset"],
        l1_size=l1_size,
    )

    references: list[ExternalReference] = []
    if details.backing_file_offset:
        length = details.backing_file_size
        if length > MAX_BACKING_FILE_NAME:
            problems.append(
                f"the backing file name is {length} bytes long, more than the "
                f"{MAX_BACKING_FILE_NAME} bytes allowed"
            )
            length = MAX_BACKING_FILE_NAME
        raw = src.pread(details.backing_file_offset, length)
        if len(raw) < length:
            problems.append("the backing file name lies beyond the end of the file")
        name, _ = stored_name(raw)
        problems.extend(stored_name_problems(raw, "backing file"))
        if name:
            details.backing_file = name
            references.append(ExternalReference("backing-file", name, describe_external_name(name)))

    l1_table: array[int] | None = None
    if mapping_ok:
        l1_bytes = l1_size * 8
        if l1_bytes > limits.max_table_bytes:
            problems.append(
                f"the L1 table has {l1_size} entries ({format_size(l1_bytes)}), more than the "
                f"{format_size(limits.max_table_bytes)} allowed"
            )
        elif details.l1_table_offset + l1_bytes > src.size:
            problems.append(
                f"the L1 table (offset {details.l1_table_offset:#x}, {l1_bytes} bytes) lies beyond "
                f"the end of the {src.size}-byte file"
            )
        else:
            l1_table = be64_table(read_exact(src, details.l1_table_offset, l1_bytes, "qcow L1 table"))
            l2_bytes = 8 << l2_bits
            outside = [index for index, entry in enumerate(l1_table) if entry and entry + l2_bytes > src.size]
            if outside:
                problems.append(
                    f"{len(outside)} L1 table entries point to L2 tables beyond the end of the file "
                    f"(first at index {outside[0]})"
                )
                l1_table = None

    guest = None
    if l1_table is not None and details.backing_file is None and crypt_method == CRYPT_NONE:
        guest = QcowGuest(src, size // 512 * 512, cluster_bits, l2_bits, l1_table)
    return OpenedImage(
        format="qcow",
        virtual_size=size // 512 * 512,
        details=details,
        encryption=None if details.encryption == "none" else details.encryption,
        guest=guest,
        references=references,
        problems=problems,
        backing_file=details.backing_file,
        subformat="v1",
    )


class QcowGuest(MappedGuestSource):
    """Guest bytes of a self-contained, unencrypted qcow image."""

    def __init__(
        self, image: ByteSource, size: int, cluster_bits: int, l2_bits: int, l1_table: array[int]
    ) -> None:
        super().__init__(image, size, "qcow")
        self._cluster_bits = cluster_bits
        self._cluster_size = 1 << cluster_bits
        self._l2_bits = l2_bits
        self._l1 = l1_table
        self._l2_cache: LruCache[int, array[int]] = LruCache(64)
        self._clusters: LruCache[int, bytes] = LruCache(4)

    def _load_l2(self, offset: int) -> array[int]:
        return be64_table(read_exact(self._image, offset, 8 << self._l2_bits, "qcow L2 table"))

    def map_run(self, offset: int, max_length: int) -> GuestRun:
        cluster_index = offset >> self._cluster_bits
        in_cluster = offset & (self._cluster_size - 1)
        length = min(max_length, self._cluster_size - in_cluster)
        l1_index = cluster_index >> self._l2_bits
        l2_offset = self._l1[l1_index] if l1_index < len(self._l1) else 0
        if l2_offset == 0:
            reach_end = (l1_index + 1) << (self._l2_bits + self._cluster_bits)
            return GuestRun(min(max_length, reach_end - offset))
        table = self._l2_cache.get_or_load(l2_offset, self._load_l2)
        entry = table[cluster_index & ((1 << self._l2_bits) - 1)]
        if entry == 0:
            return GuestRun(length)
        if entry & COMPRESSED:
            cluster = self._clusters.get_or_load(entry, self._decompress)
            return GuestRun(length, data=cluster[in_cluster : in_cluster + length])
        if entry & 511:
            raise ImageFormatError(
                f"A qcow L2 entry points to host offset {entry:#x}, which is not sector aligned."
            )
        return GuestRun(length, host_offset=entry + in_cluster)

    def _decompress(self, entry: int) -> bytes:
        shift = 63 - self._cluster_bits
        host = entry & ((1 << shift) - 1)
        compressed_size = (entry >> shift) & (self._cluster_size - 1)
        data = self.read_host(host, compressed_size) if compressed_size else b""
        return inflate_raw_cluster(data, self._cluster_size, f"qcow cluster at host offset {host:#x}")
