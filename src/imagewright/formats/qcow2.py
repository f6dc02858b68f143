"""qcow2 (QEMU copy-on-write, versions 2 and 3): header, extensions, snapshots, guest view.

Source: qemu ``docs/interop/qcow2.txt`` (digest: /work/shared/specs section 1.1) and the
checks of ``qcow2_do_open`` / ``qcow2_read_extensions`` / ``qcow2_read_snapshots`` in QEMU 7.2
``block/qcow2*.c``. All integers are big-endian.

Header layout (bytes)::

    0  magic 'QFI\\xfb'      4  version (2|3)         8  backing_file_offset u64
    16 backing_file_size    20 cluster_bits (9..21)  24 size (virtual, bytes) u64
    32 crypt_method         36 l1_size               40 l1_table_offset u64
    48 refcount_table_offset u64                     56 refcount_table_clusters
    60 nb_snapshots         64 snapshots_offset u64  -- version 2 ends at 72 --
    72 incompatible_features u64   80 compatible_features u64   88 autoclear_features u64
    96 refcount_order      100 header_length        104 compression_type u8 (+7 pad)

Header extensions (u32 type, u32 length, data padded to 8) follow the header inside
cluster 0, up to the backing file name (or the end of the cluster).

NOTE (safety): a backing file (any name: a path, ``json:{...}``, ``nbd://``, ``http://`` ...)
or an external data file makes a converter read another file; both are recorded as
``ExternalReference`` and the policy refuses them. Every offset and count is bounded:
extensions by cluster 0, the backing name by 1023 bytes, the L1 and refcount tables by
``Limits.max_table_bytes``, snapshots by QEMU's 65536 entries and 64 MiB.

NOTE (safety): as in ``qcow2_do_open``, the backing file name is ``backing_file_size`` bytes
at ``backing_file_offset`` (inside cluster 0) copied as a C string, and the data file name
extension likewise: QEMU stops at the first NUL. A name field with bytes hidden after that
NUL, or a backing file offset pointing at a name QEMU reads as empty, is read differently by
a reader that takes the whole field, and is refused.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from imagewright.binary import MAX_SINGLE_READ, ByteSource, Layout, PrefixExhaustedError, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats import probes
from imagewright.formats.base import ExternalReference, Limits, OpenedImage
from imagewright.formats.external_names import describe_external_name, stored_name_problems
from imagewright.formats.qcow2_guest import (
    COMPRESSION_ZLIB,
    COMPRESSION_ZSTD,
    L1E_OFFSET_MASK,
    Qcow2Guest,
    be64_table,
)
from imagewright.units import format_size

MAGIC = probes.QCOW_MAGIC

HEADER_V2 = Layout(
    "qcow2 header",
    ">",
    [
        ("magic", "4s"),
        ("version", "I"),
        ("backing_file_offset", "Q"),
        ("backing_file_size", "I"),
        ("cluster_bits", "I"),
        ("size", "Q"),
        ("crypt_method", "I"),
        ("l1_size", "I"),
        ("l1_table_offset", "Q"),
        ("refcount_table_offset", "Q"),
        ("refcount_table_clusters", "I"),
        ("nb_snapshots", "I"),
        ("snapshots_offset", "Q"),
    ],
)
HEADER_V3_TAIL = Layout(
    "qcow2 version 3 header",
    ">",
    [
        ("incompatible_features", "Q"),
        ("compatible_features", "Q"),
        ("autoclear_features", "Q"),
        ("refcount_order", "I"),
        ("header_length", "I"),
    ],
)
EXTENSION_HEADER = Layout("qcow2 header extension", ">", [("magic", "I"), ("length", "I")])
SNAPSHOT_HEADER = Layout(
    "qcow2 snapshot table entry",
    ">",
    [
        ("l1_table_offset", "Q"),
        ("l1_size", "I"),
        ("id_str_size", "H"),
        ("name_size", "H"),
        ("date_sec", "I"),
        ("date_nsec", "I"),
        ("vm_clock_nsec", "Q"),
        ("vm_state_size", "I"),
        ("extra_data_size", "I"),
    ],
)

V2_HEADER_LENGTH = 72
V3_MIN_HEADER_LENGTH = 104
COMPRESSION_TYPE_OFFSET = 104
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
MAX_BACKING_FILE_NAME = 1023
#: QEMU's own ceilings (block/qcow2.h): we never accept more than QEMU would.
QCOW_MAX_L1_SIZE = 32 * 1024 * 1024
QCOW_MAX_REFTABLE_SIZE = 8 * 1024 * 1024
QCOW_MAX_SNAPSHOTS = 65536
QCOW_MAX_SNAPSHOTS_SIZE = 1024 * QCOW_MAX_SNAPSHOTS
QCOW_MAX_SNAPSHOT_EXTRA_DATA = 1024
QCOW2_MAX_BITMAPS = 65535
QCOW2_MAX_BITMAP_DIRECTORY_SIZE = 1024 * QCOW2_MAX_BITMAPS
#: ``bs->backing_format`` is a 16-byte buffer in QEMU.
MAX_BACKING_FORMAT = 15

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_CRYPTO_HEADER = 0x0537BE77
EXT_BITMAPS = 0x23852875
EXT_DATA_FILE = 0x44415441
EXTENSION_NAMES = {
    EXT_BACKING_FORMAT: "backing file format",
    EXT_FEATURE_TABLE: "feature name table",
    EXT_CRYPTO_HEADER: "full disk encryption header",
    EXT_BITMAPS: "bitmaps",
    EXT_DATA_FILE: "external data file name",
}

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = (
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2
)
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

FEATURE_KINDS = ("incompatible", "compatible", "autoclear")
KNOWN_FEATURE_NAMES: dict[str, dict[int, str]] = {
    "incompatible": {
        0: "dirty",
        1: "corrupt",
        2: "external data file",
        3: "compression type",
        4: "extended L2 entries",
    },
    "compatible": {0: "lazy refcounts"},
    "autoclear": {0: "bitmaps", 1: "raw external data"},
}

CRYPT_NONE = 0
CRYPT_AES = 1
CRYPT_LUKS = 2
ENCRYPTION_NAMES = {CRYPT_NONE: "none", CRYPT_AES: "aes", CRYPT_LUKS: "luks"}
COMPRESSION_NAMES = {COMPRESSION_ZLIB: "zlib", COMPRESSION_ZSTD: "zstd"}

#: How many bad L1 entries a problem sentence names before it just counts them.
_MAX_LISTED = 3


#: L1 entries compared at once to skip a run of unallocated ones (``_read_l1``).
_L1_CHUNK = 4096
_ZERO_L1_CHUNK = bytes(_L1_CHUNK * 8)


@dataclass(frozen=True)
class Qcow2FeatureName:
    """One entry of the feature name table extension."""

    kind: str
    bit: int
    name: str


@dataclass(frozen=True)
class Qcow2Extension:
    """A header extension as found in cluster 0 (type as hex, e.g. ``0xe2792aca``)."""

    magic: str
    name: str
    offset: int
    length: int


@dataclass(frozen=True)
class Qcow2Snapshot:
    """An internal snapshot (``qemu-img snapshot -l`` lists the same id, name and sizes)."""

    id: str
    name: str
    l1_table_offset: int
    l1_size: int
    vm_state_size: int
    disk_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    extra_data_size: int


@dataclass
class Qcow2Details:
    """Every qcow2 header field that matters, plus what the extensions and snapshots say."""

    version: int
    header_length: int
    cluster_bits: int
    cluster_size: int
    size: int
    crypt_method: int
    encryption: str
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    refcount_order: int
    refcount_bits: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible_features: int
    incompatible_feature_names: list[str]
    compatible_features: int
    compatible_feature_names: list[str]
    autoclear_features: int
    autoclear_feature_names: list[str]
    compression_type: int
    compression: str
    extended_l2: bool
    dirty: bool
    corrupt: bool
    lazy_refcounts: bool
    backing_file_offset: int
    backing_file_size: int
    backing_file: str | None = None
    backing_format: str | None = None
    data_file: str | None = None
    data_file_raw: bool = False
    crypto_header_offset: int | None = None
    crypto_header_length: int | None = None
    bitmap_count: int | None = None
    bitmap_directory_offset: int | None = None
    bitmap_directory_size: int | None = None
    feature_table: list[Qcow2FeatureName] = field(default_factory=list)
    extensions: list[Qcow2Extension] = field(default_factory=list)
    snapshots: list[Qcow2Snapshot] = field(default_factory=list)


#: The signature check lives in ``probes``: the registry probes every format without importing its reader.
probe = probes.qcow2


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """Parse and validate a qcow2 header; see the module docstring for what is checked."""
    return _Qcow2Reader(src, limits).read()


def decode_name(raw: bytes) -> str:
    """A name stored in an image, as QEMU sees it (up to the first NUL), made printable."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="backslashreplace")


def feature_names(kind: str, bits: int, table: list[Qcow2FeatureName]) -> list[str]:
    """Names of the set bits: QEMU's own names first, then the image's feature table."""
    from_table = {entry.bit: entry.name for entry in table if entry.kind == kind}
    names: list[str] = []
    for bit in range(64):
        if bits & (1 << bit):
            known = KNOWN_FEATURE_NAMES[kind].get(bit)
            names.append(known or from_table.get(bit) or f"unknown bit {bit}")
    return names


class _SequentialReader:
    """Reads consecutive records from ``src`` through a bounded buffer (snapshot table)."""

    def __init__(self, src: ByteSource, offset: int, what: str) -> None:
        self._src = src
        self.offset = offset
        self._what = what
        self._buffer = b""
        self._buffer_start = offset

    def align(self, alignment: int) -> None:
        self.offset = (self.offset + alignment - 1) // alignment * alignment

    def read(self, length: int) -> bytes:
        start = self.offset - self._buffer_start
        if start < 0 or start + length > len(self._buffer):
            chunk = min(max(length, 64 * 1024), MAX_SINGLE_READ)
            chunk = min(chunk, max(length, self._src.size - self.offset))
            self._buffer = read_exact(self._src, self.offset, chunk, self._what)
            self._buffer_start = self.offset
            start = 0
        self.offset += length
        return self._buffer[start : start + length]


class _Qcow2Reader:
    """One parse of one image: accumulates facts, references and problems."""

    def __init__(self, src: ByteSource, limits: Limits) -> None:
        self.src = src
        self.limits = limits
        self.problems: list[str] = []
        self.references: list[ExternalReference] = []
        #: False once a problem makes the cluster mapping untrustworthy.
        self.mapping_ok = True

    def problem(self, sentence: str, *, breaks_mapping: bool = True) -> None:
        self.problems.append(sentence)
        if breaks_mapping:
            self.mapping_ok = False

    # ------------------------------------------------------------------------------------
    def read(self) -> OpenedImage:
        src = self.src
        head = src.pread(0, 112)
        if len(head) < 8 or head[:4] != MAGIC:
            raise ImageFormatError("The file is not a qcow2 image (no QFI\\xfb magic).")
        version = int.from_bytes(head[4:8], "big")
        if version not in (2, 3):
            self.problem(f"qcow2 version {version} is not supported (only versions 2 and 3 exist)")
        fixed_length = V2_HEADER_LENGTH if version < 3 else V3_MIN_HEADER_LENGTH
        if len(head) < fixed_length:
            self.problem(
                f"the qcow2 header is truncated: the file holds {len(head)} of its {fixed_length} bytes"
            )
        padded = head.ljust(112, b"\0")
        hdr = HEADER_V2.unpack(padded)
        if version >= 3:
            tail = HEADER_V3_TAIL.unpack(padded, V2_HEADER_LENGTH)
        else:
            tail = {
                "incompatible_features": 0,
                "compatible_features": 0,
                "autoclear_features": 0,
                "refcount_order": 4,
                "header_length": V2_HEADER_LENGTH,
            }
        incompatible = tail["incompatible_features"]
        header_length = tail["header_length"]
        cluster_bits = hdr["cluster_bits"]
        cluster_ok = MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS
        if not cluster_ok:
            self.problem(
                f"the cluster size 2^{cluster_bits} is outside the range QEMU accepts "
                "(512 bytes to 2 MiB, cluster_bits 9 to 21)"
            )
        cluster_size = 1 << cluster_bits if cluster_ok else 0

        truncated = len(head) < fixed_length
        if version >= 3 and header_length < V3_MIN_HEADER_LENGTH and not truncated:
            self.problem(f"the version 3 header length {header_length} is shorter than 104 bytes")
        if cluster_ok and header_length > cluster_size:
            self.problem(f"the header length {header_length} exceeds the {cluster_size}-byte cluster")
        if not truncated and src.size < header_length:
            self.problem(
                f"the qcow2 header is truncated: the file holds {src.size} of its {header_length} bytes"
            )

        compression_type = COMPRESSION_ZLIB
        if header_length > COMPRESSION_TYPE_OFFSET:
            compression_type = padded[COMPRESSION_TYPE_OFFSET]
        self._check_compression(compression_type, incompatible)

        unknown_incompatible = incompatible & ~INCOMPAT_KNOWN
        extended_l2 = bool(incompatible & INCOMPAT_EXTL2)
        if extended_l2 and cluster_ok and cluster_bits < 14:
            self.problem(
                f"extended L2 entries need clusters of at least 16 KiB, but this image has "
                f"{cluster_size}-byte clusters"
            )
        if incompatible & INCOMPAT_CORRUPT:
            self.problem("the image is marked corrupt (incompatible feature bit 1)", breaks_mapping=False)

        refcount_order = tail["refcount_order"]
        if refcount_order > 6:
            self.problem(f"the refcount order {refcount_order} is larger than 6 (64-bit refcounts)")

        crypt_method = hdr["crypt_method"]
        if crypt_method not in ENCRYPTION_NAMES:
            self.problem(f"the encryption method {crypt_method} is unknown (0 none, 1 AES, 2 LUKS)")

        virtual_size = hdr["size"] // 512 * 512

        details = Qcow2Details(
            version=version,
            header_length=header_length,
            cluster_bits=cluster_bits,
            cluster_size=cluster_size,
            size=hdr["size"],
            crypt_method=crypt_method,
            encryption=ENCRYPTION_NAMES.get(crypt_method, f"unknown ({crypt_method})"),
            l1_size=hdr["l1_size"],
            l1_table_offset=hdr["l1_table_offset"],
            refcount_table_offset=hdr["refcount_table_offset"],
            refcount_table_clusters=hdr["refcount_table_clusters"],
            refcount_order=refcount_order,
            refcount_bits=1 << refcount_order if refcount_order <= 6 else 0,
            nb_snapshots=hdr["nb_snapshots"],
            snapshots_offset=hdr["snapshots_offset"],
            incompatible_features=incompatible,
            incompatible_feature_names=[],
            compatible_features=tail["compatible_features"],
            compatible_feature_names=[],
            autoclear_features=tail["autoclear_features"],
            autoclear_feature_names=[],
            compression_type=compression_type,
            compression=COMPRESSION_NAMES.get(compression_type, f"unknown ({compression_type})"),
            extended_l2=extended_l2,
            dirty=bool(incompatible & INCOMPAT_DIRTY),
            corrupt=bool(incompatible & INCOMPAT_CORRUPT),
            lazy_refcounts=bool(tail["compatible_features"] & 1),
            backing_file_offset=hdr["backing_file_offset"],
            backing_file_size=hdr["backing_file_size"],
            data_file_raw=bool(tail["autoclear_features"] & AUTOCLEAR_DATA_FILE_RAW),
        )

        l1_table: array[int] | None = None
        if cluster_ok:
            self._read_cluster_zero(details, header_length)
            if not truncated:
                self._check_refcount_table(details)
                # An image over the size limit is refused anyway (safety.judge says why):
                # do not spend time and memory on tables sized to match it.
                if virtual_size <= self.limits.max_virtual_size:
                    l1_table = self._read_l1(details, virtual_size)
                self._read_snapshots(details, virtual_size)

        for kind in FEATURE_KINDS:
            bits = getattr(details, f"{kind}_features")
            setattr(details, f"{kind}_feature_names", feature_names(kind, bits, details.feature_table))
        if unknown_incompatible:
            names = feature_names("incompatible", unknown_incompatible, details.feature_table)
            self.problem(
                f"the image uses unknown incompatible features ({', '.join(names)}; "
                f"bits {unknown_incompatible:#x}) that no reader may ignore"
            )
        self._check_data_file(details)

        guest = None
        if (
            self.mapping_ok
            and l1_table is not None
            and details.backing_file is None
            and crypt_method == CRYPT_NONE
            and not incompatible & INCOMPAT_DATA_FILE
        ):
            guest = Qcow2Guest(
                self.src,
                virtual_size=virtual_size,
                cluster_bits=cluster_bits,
                l1_table=l1_table,
                version=version,
                extended_l2=extended_l2,
                compression_type=compression_type,
            )
        return OpenedImage(
            format="qcow2",
            virtual_size=virtual_size,
            details=details,
            encryption=None if details.encryption == "none" else details.encryption,
            guest=guest,
            references=self.references,
            problems=self.problems,
            backing_file=details.backing_file,
            backing_format=details.backing_format if details.backing_file is not None else None,
            subformat=f"v{version}",
        )

    # ------------------------------------------------------------------------------------
    def _check_compression(self, compression_type: int, incompatible: int) -> None:
        if compression_type not in COMPRESSION_NAMES:
            self.problem(f"the compression type {compression_type} is unknown (0 zlib, 1 zstd)")
        elif compression_type == COMPRESSION_ZLIB and incompatible & INCOMPAT_COMPRESSION:
            self.problem(
                "the compression-type feature bit is set but the header names no compression type "
                "other than zlib"
            )
        elif compression_type != COMPRESSION_ZLIB and not incompatible & INCOMPAT_COMPRESSION:
            self.problem(
                f"the compression type {COMPRESSION_NAMES[compression_type]} is recorded without the "
                "compression-type feature bit"
            )

    def _read_cluster_zero(self, details: Qcow2Details, header_length: int) -> None:
        """Header extensions and the backing file name, both confined to cluster 0."""
        cluster_size = details.cluster_size
        backing_offset = details.backing_file_offset
        if backing_offset > cluster_size:
            self.problem(
                f"the backing file name offset {backing_offset} lies outside the first cluster",
                breaks_mapping=False,
            )
        cluster0 = self.src.pread(0, cluster_size)
        extensions_end = backing_offset if 0 < backing_offset <= cluster_size else cluster_size
        self._read_extensions(details, cluster0, header_length, extensions_end)
        if backing_offset and backing_offset <= cluster_size:
            length = details.backing_file_size
            if length > min(MAX_BACKING_FILE_NAME, cluster_size - backing_offset):
                self.problem(
                    f"the backing file name is {length} bytes long, more than the "
                    f"{min(MAX_BACKING_FILE_NAME, cluster_size - backing_offset)} bytes allowed",
                    breaks_mapping=False,
                )
                # Still refuse it as a reference: whatever it names, it names another file.
                length = min(MAX_BACKING_FILE_NAME, cluster_size - backing_offset)
            raw = cluster0[backing_offset : backing_offset + length]
            if len(raw) < length:
                self.problem("the backing file name lies beyond the end of the file", breaks_mapping=False)
            name = decode_name(raw)
            for sentence in stored_name_problems(raw, "backing file"):
                self.problem(sentence, breaks_mapping=False)
            if name:
                details.backing_file = name
                self.references.append(ExternalReference("backing-file", name, describe_external_name(name)))

    def _read_extensions(self, details: Qcow2Details, cluster0: bytes, start: int, end: int) -> None:
        offset = start
        seen: set[int] = set()
        while offset < end:
            if offset + 8 > end:
                self.problem(f"a header extension at offset {offset} overruns the header area ({end} bytes)")
                return
            if offset + 8 > len(cluster0):
                self.problem("the header extensions are truncated by the end of the file")
                return
            ext = EXTENSION_HEADER.unpack(cluster0, offset)
            magic, length = ext["magic"], ext["length"]
            data_offset = offset + 8
            if magic == EXT_END:
                return
            if length > end - data_offset:
                self.problem(
                    f"header extension {magic:#010x} ({length} bytes at offset {data_offset}) overruns "
                    f"the header area, which ends at offset {end}"
                )
                return
            if data_offset + length > len(cluster0):
                self.problem("the header extensions are truncated by the end of the file")
                return
            data = cluster0[data_offset : data_offset + length]
            name = EXTENSION_NAMES.get(magic, "unknown")
            details.extensions.append(Qcow2Extension(f"{magic:#010x}", name, data_offset, length))
            if magic in seen and magic in EXTENSION_NAMES:
                self.problem(f"the {name} header extension appears more than once")
            seen.add(magic)
            self._read_extension(details, magic, data)
            offset = data_offset + (length + 7) // 8 * 8

    def _read_extension(self, details: Qcow2Details, magic: int, data: bytes) -> None:
        if magic == EXT_BACKING_FORMAT:
            if len(data) > MAX_BACKING_FORMAT:
                self.problem(
                    f"the backing format name is {len(data)} bytes long, more than QEMU's "
                    f"{MAX_BACKING_FORMAT}",
                    breaks_mapping=False,
                )
            details.backing_format = decode_name(data[:MAX_BACKING_FORMAT])
        elif magic == EXT_FEATURE_TABLE:
            for index in range(len(data) // 48):
                entry = data[index * 48 : index * 48 + 48]
                kind = FEATURE_KINDS[entry[0]] if entry[0] < len(FEATURE_KINDS) else f"type {entry[0]}"
                details.feature_table.append(Qcow2FeatureName(kind, entry[1], decode_name(entry[2:48])))
        elif magic == EXT_CRYPTO_HEADER:
            self._read_crypto_extension(details, data)
        elif magic == EXT_BITMAPS:
            self._read_bitmaps_extension(details, data)
        elif magic == EXT_DATA_FILE:
            details.data_file = decode_name(data)
            for sentence in stored_name_problems(data, "external data file"):
                self.problem(sentence, breaks_mapping=False)

    def _read_crypto_extension(self, details: Qcow2Details, data: bytes) -> None:
        if details.crypt_method != CRYPT_LUKS:
            self.problem("a full disk encryption header extension is present without LUKS encryption")
        if len(data) != 16:
            self.problem(f"the full disk encryption header extension is {len(data)} bytes, not 16")
            return
        offset = int.from_bytes(data[:8], "big")
        length = int.from_bytes(data[8:], "big")
        details.crypto_header_offset, details.crypto_header_length = offset, length
        if offset % details.cluster_size:
            self.problem(f"the encryption header offset {offset} is not cluster aligned")
        elif offset + length > self.src.size:
            self.problem("the encryption header lies beyond the end of the file")

    def _read_bitmaps_extension(self, details: Qcow2Details, data: bytes) -> None:
        if len(data) != 24:
            self.problem(f"the bitmaps header extension is {len(data)} bytes, not 24", breaks_mapping=False)
            return
        count = int.from_bytes(data[0:4], "big")
        reserved = int.from_bytes(data[4:8], "big")
        directory_size = int.from_bytes(data[8:16], "big")
        directory_offset = int.from_bytes(data[16:24], "big")
        details.bitmap_count = count
        details.bitmap_directory_size = directory_size
        details.bitmap_directory_offset = directory_offset
        if not details.autoclear_features & AUTOCLEAR_BITMAPS:
            # QEMU ignores (and drops) a bitmaps extension another program left stale.
            return
        if reserved:
            self.problem("the bitmaps header extension has a non-zero reserved field", breaks_mapping=False)
        if not 1 <= count <= QCOW2_MAX_BITMAPS:
            self.problem(
                f"the image claims {count} bitmaps (1 to {QCOW2_MAX_BITMAPS} allowed)", breaks_mapping=False
            )
        if directory_offset % details.cluster_size:
            self.problem(
                f"the bitmap directory offset {directory_offset} is not cluster aligned", breaks_mapping=False
            )
        if directory_size > QCOW2_MAX_BITMAP_DIRECTORY_SIZE:
            self.problem(f"the bitmap directory claims {directory_size} bytes", breaks_mapping=False)
        elif directory_offset + directory_size > self.src.size:
            self.problem("the bitmap directory lies beyond the end of the file", breaks_mapping=False)

    def _check_data_file(self, details: Qcow2Details) -> None:
        has_bit = bool(details.incompatible_features & INCOMPAT_DATA_FILE)
        if has_bit or details.data_file is not None:
            name = details.data_file or ""
            if name:
                detail = describe_external_name(name)
                if not has_bit:
                    detail += "; recorded although the external-data-file feature bit is clear"
            else:
                name = "(not named in the image)"
                detail = "guest data lives in a separate file the caller would have to supply"
            self.references.append(ExternalReference("data-file", name, detail))
        if details.data_file_raw and not has_bit:
            self.problem("the raw-external-data bit is set but the image has no external data file")

    def _check_table(self, what: str, offset: int, length: int, cluster_size: int) -> bool:
        if offset % cluster_size:
            self.problem(f"the {what} offset {offset:#x} is not cluster aligned")
            return False
        if offset + length > self.src.size:
            self.problem(
                f"the {what} (offset {offset:#x}, {length} bytes) lies beyond the end of the "
                f"{self.src.size}-byte file"
            )
            return False
        return True

    def _check_refcount_table(self, details: Qcow2Details) -> None:
        clusters = details.refcount_table_clusters
        if clusters == 0:
            self.problem("the image has no reference count table", breaks_mapping=False)
            return
        length = clusters * details.cluster_size
        ceiling = min(QCOW_MAX_REFTABLE_SIZE, self.limits.max_table_bytes)
        if length > ceiling:
            self.problem(
                f"the reference count table takes {format_size(length)}, more than the "
                f"{format_size(ceiling)} allowed",
                breaks_mapping=False,
            )
            return
        self._check_table(
            "reference count table", details.refcount_table_offset, length, details.cluster_size
        )

    def _read_l1(self, details: Qcow2Details, virtual_size: int) -> array[int] | None:
        cluster_bits = details.cluster_bits
        l2_bits = cluster_bits - (4 if details.extended_l2 else 3)
        reach_bits = cluster_bits + l2_bits
        needed = (details.size + (1 << reach_bits) - 1) >> reach_bits
        l1_size = details.l1_size
        ceiling = min(QCOW_MAX_L1_SIZE, self.limits.max_table_bytes)
        ok = True
        if l1_size * 8 > ceiling:
            self.problem(
                f"the L1 table has {l1_size} entries ({format_size(l1_size * 8)}), more than the "
                f"{format_size(ceiling)} allowed"
            )
            ok = False
        if needed > 0x7FFF_FFFF:
            self.problem(f"the virtual size {format_size(details.size)} is too big for any L1 table")
            ok = False
        elif l1_size < needed:
            self.problem(
                f"the L1 table is too small: {l1_size} entries cannot map the virtual size of "
                f"{format_size(virtual_size)}, which needs {needed}"
            )
            ok = False
        if not ok or not self._check_table(
            "L1 table", details.l1_table_offset, l1_size * 8, 1 << cluster_bits
        ):
            return None
        # Entries past the virtual size only ever map QEMU's saved VM state, never guest data:
        # read (and check) just the ones the guest view can use.
        used = min(l1_size, needed)
        if used == 0:
            return array("Q")
        raw = read_exact(self.src, details.l1_table_offset, used * 8, "qcow2 L1 table")
        table = be64_table(raw)
        cluster_size = 1 << cluster_bits
        unaligned: list[int] = []
        outside: list[int] = []
        # Runs of unallocated entries (zeros: most of a large, sparse table) are skipped by
        # comparing bytes, not entry by entry in Python.
        for start in range(0, used, _L1_CHUNK):
            if raw[start * 8 : (start + _L1_CHUNK) * 8] == _ZERO_L1_CHUNK[: min(_L1_CHUNK, used - start) * 8]:
                continue
            for index in range(start, min(start + _L1_CHUNK, used)):
                l2_offset = table[index] & L1E_OFFSET_MASK
                if l2_offset == 0:
                    continue
                if l2_offset % cluster_size:
                    unaligned.append(index)
                elif l2_offset + cluster_size > self.src.size:
                    outside.append(index)
        if unaligned:
            self.problem(
                f"{len(unaligned)} L1 table entries point to L2 tables that are not cluster aligned "
                f"(first at index {unaligned[0]})"
            )
        if outside:
            self.problem(
                f"{len(outside)} L1 table entries point to L2 tables beyond the end of the file "
                f"(first at index {outside[0]})"
            )
        return table

    def _read_snapshots(self, details: Qcow2Details, virtual_size: int) -> None:
        count = details.nb_snapshots
        if count == 0:
            return
        if count > QCOW_MAX_SNAPSHOTS:
            self.problem(
                f"the image claims {count} internal snapshots, more than QEMU's limit of "
                f"{QCOW_MAX_SNAPSHOTS}",
                breaks_mapping=False,
            )
            return
        if details.snapshots_offset % details.cluster_size:
            self.problem(
                f"the snapshot table offset {details.snapshots_offset:#x} is not cluster aligned",
                breaks_mapping=False,
            )
            return
        ceiling = min(QCOW_MAX_SNAPSHOTS_SIZE, self.limits.max_table_bytes)
        reader = _SequentialReader(self.src, details.snapshots_offset, "qcow2 snapshot table")
        try:
            for _ in range(count):
                reader.align(8)
                entry = SNAPSHOT_HEADER.unpack(reader.read(SNAPSHOT_HEADER.size))
                extra_size = entry["extra_data_size"]
                if extra_size > QCOW_MAX_SNAPSHOT_EXTRA_DATA:
                    self.problem(
                        f"a snapshot table entry carries {extra_size} bytes of extra data, more than "
                        f"QEMU's {QCOW_MAX_SNAPSHOT_EXTRA_DATA}",
                        breaks_mapping=False,
                    )
                    return
                extra = reader.read(extra_size)
                vm_state_size = entry["vm_state_size"]
                if extra_size >= 8:
                    vm_state_size = int.from_bytes(extra[0:8], "big")
                disk_size = int.from_bytes(extra[8:16], "big") if extra_size >= 16 else virtual_size
                snapshot_id = decode_name(reader.read(entry["id_str_size"]))
                snapshot_name = decode_name(reader.read(entry["name_size"]))
                if reader.offset - details.snapshots_offset > ceiling:
                    self.problem(
                        f"the snapshot table is larger than the {format_size(ceiling)} allowed",
                        breaks_mapping=False,
                    )
                    return
                details.snapshots.append(
                    Qcow2Snapshot(
                        id=snapshot_id,
                        name=snapshot_name,
                        l1_table_offset=entry["l1_table_offset"],
                        l1_size=entry["l1_size"],
                        vm_state_size=vm_state_size,
                        disk_size=disk_size,
                        date_sec=entry["date_sec"],
                        date_nsec=entry["date_nsec"],
                        vm_clock_nsec=entry["vm_clock_nsec"],
                        extra_data_size=extra_size,
                    )
                )
        except PrefixExhaustedError:
            raise
        except ImageFormatError:
            self.problem("the snapshot table lies beyond the end of the file", breaks_mapping=False)
            return
        bad = [
            snapshot.id
            for snapshot in details.snapshots
            if snapshot.l1_table_offset % details.cluster_size
            or snapshot.l1_size * 8 > QCOW_MAX_L1_SIZE
            or snapshot.l1_table_offset + snapshot.l1_size * 8 > self.src.size
        ]
        if bad:
            listed = ", ".join(repr(snapshot_id) for snapshot_id in bad[:_MAX_LISTED])
            self.problem(
                f"{len(bad)} internal snapshots have L1 tables that are misaligned, too large or "
                f"beyond the end of the file (ids {listed})",
                breaks_mapping=False,
            )
