"""QED (QEMU Enhanced Disk): header, backing file, L1/L2 tables and guest view.

Source: QEMU 7.2 ``block/qed.c`` (``bdrv_qed_do_open``, ``qed_check_table_offset``,
``qed_check_cluster_offset``, ``qed_is_image_size_valid``) and ``block/qed.h``; the QED
specification on the QEMU wiki. All integers are little-endian. Header (64 bytes)::

     0 magic 'QED\\0'      4 cluster size       8 table size (clusters)  12 header size (clusters)
    16 features u64       24 compat features   32 autoclear features     40 L1 table offset u64
    48 image size u64     56 backing file name offset u32                60 backing file name size u32

Features: 0x1 backing file, 0x2 needs check (not closed cleanly), 0x4 backing file is raw
(no probing). A table has ``table size x cluster size / 8`` u64 entries: the L1 entry is an
L2 table offset, the L2 entry a cluster offset; 0 = unallocated (backing file or zeros),
1 = zero cluster.

NOTE (safety): the backing file name is a reference to another file and is refused by the
policy; an image with a backing file gets no guest view (its unallocated clusters live in
the backing file). Tables are bounded by ``Limits.max_table_bytes`` and every offset must be
cluster-aligned and lie past the header and inside the file, as QEMU demands.

NOTE (safety): mirrored from ``bdrv_qed_do_open``: QEMU reads the name (``qed_read_string``,
a C string cut at the first NUL) only when feature bit 0x1 is set. A name field with bytes
hidden after its NUL, an empty name, or name fields filled in while the bit is clear are
read differently by a reader that trusts the fields alone, and are refused.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from imagewright.binary import ByteSource, Layout, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats import probes
from imagewright.formats.base import ExternalReference, Limits, OpenedImage
from imagewright.formats.external_names import describe_external_name, stored_name, stored_name_problems
from imagewright.formats.mapped_guest import GuestRun, LruCache, MappedGuestSource
from imagewright.units import format_size

MAGIC = probes.QED_MAGIC
FEATURE_BACKING_FILE = 0x1
FEATURE_NEED_CHECK = 0x2
FEATURE_BACKING_FORMAT_NO_PROBE = 0x4
KNOWN_FEATURES = FEATURE_BACKING_FILE | FEATURE_NEED_CHECK | FEATURE_BACKING_FORMAT_NO_PROBE
MIN_CLUSTER_SIZE = 4 * 1024
MAX_CLUSTER_SIZE = 64 * 1024 * 1024
MAX_TABLE_SIZE = 16
#: QEMU reads the backing file name into a PATH_MAX buffer.
MAX_BACKING_FILE_NAME = 4095
ZERO_CLUSTER = 1
SECTOR = 512

HEADER = Layout(
    "QED header",
    "<",
    [
        ("magic", "4s"),
        ("cluster_size", "I"),
        ("table_size", "I"),
        ("header_size", "I"),
        ("features", "Q"),
        ("compat_features", "Q"),
        ("autoclear_features", "Q"),
        ("l1_table_offset", "Q"),
        ("image_size", "Q"),
        ("backing_filename_offset", "I"),
        ("backing_filename_size", "I"),
    ],
)


@dataclass(frozen=True)
class QedDetails:
    cluster_size: int
    table_size: int
    header_size: int
    features: int
    compat_features: int
    autoclear_features: int
    needs_check: bool
    l1_table_offset: int
    image_size: int
    backing_filename_offset: int
    backing_filename_size: int
    backing_file: str | None
    backing_format_no_probe: bool


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


#: The signature check lives in ``probes``: the registry probes every format without importing its reader.
probe = probes.qed


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """Validate the header like QEMU's ``bdrv_qed_do_open``; read the L1 table."""
    fields = HEADER.unpack(read_exact(src, 0, HEADER.size, "QED header"))
    if fields["magic"] != MAGIC:
        raise ImageFormatError("The file is not a QED image (no 'QED\\0' magic).")
    features = fields["features"]
    if features & ~KNOWN_FEATURES:
        raise ImageFormatError(f"The QED image uses unknown feature bits 0x{features & ~KNOWN_FEATURES:x}.")
    cluster_size, table_size = fields["cluster_size"], fields["table_size"]
    if not (_power_of_two(cluster_size) and MIN_CLUSTER_SIZE <= cluster_size <= MAX_CLUSTER_SIZE):
        raise ImageFormatError(
            f"The QED cluster size {cluster_size} is not a power of two from 4 KiB to 64 MiB."
        )
    if not (_power_of_two(table_size) and table_size <= MAX_TABLE_SIZE):
        raise ImageFormatError(
            f"The QED table size {table_size} is not a power of two from 1 to 16 clusters."
        )
    header_bytes = fields["header_size"] * cluster_size
    if fields["header_size"] == 0 or header_bytes >= 2**32:
        raise ImageFormatError(f"The QED header size of {fields['header_size']} clusters is invalid.")
    table_entries = table_size * cluster_size // 8
    image_size = fields["image_size"]
    max_image_size = table_entries * table_entries * cluster_size
    if image_size % SECTOR or image_size > max_image_size:
        raise ImageFormatError(
            f"The QED image size {image_size} is not a multiple of 512 bytes up to "
            f"{format_size(max_image_size)}."
        )
    # QEMU rounds the file size down to whole clusters for its offset checks.
    file_end = src.size // cluster_size * cluster_size
    layout = _QedLayout(cluster_size, table_size * cluster_size, header_bytes, file_end)
    l1_offset = fields["l1_table_offset"]
    if not layout.table_offset_ok(l1_offset):
        raise ImageFormatError(
            f"The QED L1 table offset {l1_offset} is not a cluster inside the file past the header."
        )

    problems: list[str] = []
    references: list[ExternalReference] = []
    backing_file: str | None = None
    no_probe = bool(features & FEATURE_BACKING_FORMAT_NO_PROBE)
    if features & FEATURE_BACKING_FILE:
        name_offset, name_size = fields["backing_filename_offset"], fields["backing_filename_size"]
        if name_offset + name_size > header_bytes or name_size > MAX_BACKING_FILE_NAME:
            raise ImageFormatError("The QED backing file name lies outside the header or is too long.")
        raw_name = read_exact(src, name_offset, name_size, "QED backing file name")
        backing_file, _ = stored_name(raw_name)
        problems.extend(stored_name_problems(raw_name, "backing file"))
        references.append(
            ExternalReference("backing-file", backing_file, describe_external_name(backing_file))
        )
    elif fields["backing_filename_offset"] or fields["backing_filename_size"]:
        # QEMU reads the name only with the feature bit set; a reader that trusts the
        # offset and size alone would still open it.
        name_offset, name_size = fields["backing_filename_offset"], fields["backing_filename_size"]
        stale = b""
        if name_offset + name_size <= header_bytes and name_size <= MAX_BACKING_FILE_NAME:
            stale = src.pread(name_offset, name_size)
        shown, _ = stored_name(stale)
        problems.append(
            f"the header names a backing file '{shown}' (offset {name_offset}, {name_size} bytes) "
            "although its backing-file feature bit is clear; QEMU ignores it, other readers may not"
        )

    table_bytes = table_size * cluster_size
    guest: ByteSource | None = None
    if table_bytes > limits.max_table_bytes:
        problems.append(
            f"the QED tables are {format_size(table_bytes)} each, more than the "
            f"{format_size(limits.max_table_bytes)} allowed for a metadata table"
        )
    else:
        l1 = array("Q", read_exact(src, l1_offset, table_bytes, "QED L1 table"))
        if l1.itemsize != 8:
            raise AssertionError("array('Q') must hold 64-bit entries")
        bad = next((i for i, entry in enumerate(l1) if entry and not layout.table_offset_ok(entry)), None)
        if bad is not None:
            problems.append(f"QED L1 entry {bad} points to {l1[bad]}, not an L2 table inside the file")
        elif backing_file is None:
            guest = QedGuest(src, image_size, l1, layout)

    details = QedDetails(
        cluster_size=cluster_size,
        table_size=table_size,
        header_size=fields["header_size"],
        features=features,
        compat_features=fields["compat_features"],
        autoclear_features=fields["autoclear_features"],
        needs_check=bool(features & FEATURE_NEED_CHECK),
        l1_table_offset=l1_offset,
        image_size=image_size,
        backing_filename_offset=fields["backing_filename_offset"],
        backing_filename_size=fields["backing_filename_size"],
        backing_file=backing_file,
        backing_format_no_probe=no_probe,
    )
    return OpenedImage(
        format="qed",
        encryption=None,
        virtual_size=image_size,
        details=details,
        guest=guest,
        references=references,
        problems=problems,
        backing_file=backing_file,
        # QEMU records a format only when the image says the backing file is raw.
        backing_format="raw" if backing_file is not None and no_probe else None,
    )


@dataclass(frozen=True)
class _QedLayout:
    cluster_size: int
    table_bytes: int
    header_bytes: int
    file_end: int

    def cluster_offset_ok(self, offset: int) -> bool:
        """QEMU's ``qed_check_cluster_offset``: aligned, past the header, inside the file."""
        return offset % self.cluster_size == 0 and self.header_bytes <= offset < self.file_end

    def table_offset_ok(self, offset: int) -> bool:
        """QEMU's ``qed_check_table_offset``: the table's first and last cluster are valid.

        QEMU's overflow guard (``end_offset <= offset``) also rejects every one-cluster
        table, so images made with ``table_size=1`` cannot be opened by QEMU; nor here.
        """
        end = offset + self.table_bytes - self.cluster_size
        return end > offset and self.cluster_offset_ok(offset) and self.cluster_offset_ok(end)


class QedGuest(MappedGuestSource):
    """Guest bytes through the two-level table; L2 tables are read on demand and cached."""

    def __init__(self, image: ByteSource, size: int, l1: array[int], layout: _QedLayout) -> None:
        super().__init__(image, size, "QED")
        self._l1 = l1
        self._layout = layout
        self._entries = layout.table_bytes // 8
        self._l2_cache: LruCache[int, array[int]] = LruCache(8)

    def _l2(self, offset: int) -> array[int]:
        table = array("Q", read_exact(self._image, offset, self._layout.table_bytes, "QED L2 table"))
        if table.itemsize != 8:
            raise AssertionError("array('Q') must hold 64-bit entries")
        return table

    def map_run(self, offset: int, max_length: int) -> GuestRun:
        cluster_size = self._layout.cluster_size
        cluster, within = divmod(offset, cluster_size)
        length = min(max_length, cluster_size - within)
        l1_index, l2_index = divmod(cluster, self._entries)
        l2_offset = self._l1[l1_index] if l1_index < len(self._l1) else 0
        if l2_offset == 0:
            return GuestRun(length)
        entry = self._l2_cache.get_or_load(l2_offset, self._l2)[l2_index]
        if entry in (0, ZERO_CLUSTER):
            return GuestRun(length)
        if not self._layout.cluster_offset_ok(entry):
            raise ImageFormatError(
                f"The QED L2 table maps guest offset {offset} to {entry}, outside the file."
            )
        return GuestRun(length, host_offset=entry + within)
