"""FAT12/16/32 (blkid TYPE ``vfat``), following libblkid ``superblocks/vfat.c``.

The boot sector's BPB is checked before anything is believed (spec section 1.9): FAT count,
reserved sectors, media byte, power-of-two cluster and sector sizes, and a cluster count
that fits the FAT type. ``is_fat_boot_sector`` is the same test, used to tell a FAT boot
sector (a "superfloppy" or a partition's first sector) from an MBR that also ends in 55 AA.

Labels, as blkid 2.38 reports them: LABEL is the volume-label entry of the root directory
(searched with a bound: the FAT12/16 root directory's fixed entries, or at most 99 clusters
of the FAT32 root chain); the boot sector's own label is LABEL_FATBOOT (``details``).

``FatVolume`` reads directories and file contents (what ``inspect`` needs to see the boot
loaders on an EFI System Partition), after the same BPB check, following the FAT spec
(Microsoft "FAT: General Overview of On-Disk Format" 1.03, sections 3-7):

- the FAT12/16 root directory is a fixed region after the FATs (``BPB_RootEntCnt`` entries);
  FAT32's is a cluster chain from ``BPB_RootClus`` like any other directory;
- a directory entry is 32 bytes: 8.3 name (0x00 ends the directory, 0xE5 marks a deleted
  entry, 0x05 stands for a leading 0xE5), attributes at 11 (0x10 directory, 0x08 volume
  label, 0x0F a long-name entry), case flags at 12 (Windows NT: 0x08 lower-case base, 0x10
  lower-case extension), first cluster high/low at 20/26, size at 28;
- long names (section 7): entries before the short one, last piece first (order byte | 0x40),
  13 UTF-16 code units each at bytes 1, 14 and 28, every piece carrying the checksum of the
  short name. A long name whose order or checksum does not add up is ignored and the short
  name used, as Windows and Linux do;
- a cluster chain: FAT entry N names the next cluster (12, 16 or 28 bits); values from the
  "bad" mark up end it.

NOTE on hostile volumes: every count is bounded — entries per directory
(``MAX_DIRECTORY_ENTRIES``), the clusters walked in any chain (the volume's cluster count,
and a loop is caught by that bound), bytes read from a file per call, FAT bytes cached
(``_FAT_CACHE_BLOCKS``) — and a structure pointing outside the volume is an
ImageFormatError, never an IndexError.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagewright.binary import ByteSource, read_exact
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import (
    blkid_id_label,
    blkid_label,
    is_power_of_two,
    read_or_none,
    u16le,
    u32le,
)
from imagewright.errors import ImageFormatError

FAT12_MAX = 0xFF4
FAT16_MAX = 0xFFF4
FAT32_MAX = 0x0FFFFFF6
_NO_NAME = b"NO NAME    "
_DIR_ENTRY = 32
_ROOT_READ_CHUNK = 16 * 1024
_FAT32_MAX_CLUSTERS_SEARCHED = 99
#: A hostile FAT32 can chain 99 clusters of 512 KiB; stop after this many directory entries.
_FAT32_MAX_ENTRIES_SEARCHED = 65536

# (magic, offset) in libblkid's order; the one that matches decides how strict the check is.
_MAGICS = (
    (b"MSWIN", 0x52),
    (b"FAT32   ", 0x52),
    (b"MSDOS", 0x36),
    (b"FAT16   ", 0x36),
    (b"FAT12   ", 0x36),
    (b"FAT     ", 0x36),
    (b"\xeb", 0),
    (b"\xe9", 0),
    (b"\x55\xaa", 0x1FE),
)


class _Bpb:
    """The fields of a FAT boot sector that libblkid's validity check reads."""

    def __init__(self, sector: bytes) -> None:
        self.sector_size = u16le(sector, 0x0B)
        self.cluster_size = sector[0x0D]
        self.reserved = u16le(sector, 0x0E)
        self.fats = sector[0x10]
        self.dir_entries = u16le(sector, 0x11)
        sectors16 = u16le(sector, 0x13)
        self.media = sector[0x15]
        self.fat_length16 = u16le(sector, 0x16)
        self.fat32_length = u32le(sector, 0x24)
        self.total_sectors = sectors16 or u32le(sector, 0x20)
        self.fat_length = self.fat_length16 or self.fat32_length
        self.fat_size = self.fat_length * self.fats
        self.root_dir_sectors = (
            (self.dir_entries * _DIR_ENTRY + self.sector_size - 1) // self.sector_size
            if self.sector_size
            else 0
        )
        self.cluster_count = 0


def _matching_magic(sector: bytes) -> bytes | None:
    for magic, offset in _MAGICS:
        if sector[offset : offset + len(magic)] == magic:
            return magic
    return None


def _valid_bpb(sector: bytes) -> _Bpb | None:
    """libblkid's fat_valid_superblock(); None when this is not a FAT boot sector."""
    if len(sector) < 512:
        return None
    magic = _matching_magic(sector)
    if magic is None:
        return None
    if len(magic) <= 2:
        # No FAT type string: demand the 55 AA signature and rule out the FAT-like
        # pseudo-headers OS/2 tools put in front of JFS and HPFS.
        if sector[0x1FE:0x200] != b"\x55\xaa":
            return None
        if sector[0x36:0x3E] in (b"JFS     ", b"HPFS    "):
            return None
    bpb = _Bpb(sector)
    if not bpb.fats or not bpb.reserved:
        return None
    if not (bpb.media >= 0xF8 or bpb.media == 0xF0):
        return None
    if not is_power_of_two(bpb.cluster_size):
        return None
    if not is_power_of_two(bpb.sector_size) or not 512 <= bpb.sector_size <= 4096:
        return None
    # C computes this in uint32: a BPB whose metadata outgrows the volume wraps to a huge
    # count and is then rejected by the maximum below; Python's negative number must be too.
    data_sectors = bpb.total_sectors - (bpb.reserved + bpb.fat_size + bpb.root_dir_sectors)
    cluster_count = (data_sectors % (1 << 32)) // bpb.cluster_size
    if not bpb.fat_length16 and bpb.fat32_length:
        max_count = FAT32_MAX
    else:
        max_count = FAT16_MAX if cluster_count > FAT12_MAX else FAT12_MAX
    if cluster_count > max_count:
        return None
    if sector[3:11] == b"-FVE-FS-":
        return None  # BitLocker keeps a FAT-looking BPB.
    bpb.cluster_count = cluster_count
    return bpb


def is_fat_boot_sector(sector: bytes) -> bool:
    """True when ``sector`` is a valid FAT boot sector (so not an MBR), like blkid_probe_is_vfat()."""
    return _valid_bpb(sector) is not None


def _search_label(src: ByteSource, offset: int, entries: int) -> bytes | None:
    """The first volume-label entry of a directory region, read in bounded chunks."""
    remaining = entries
    position = offset
    while remaining > 0:
        count = min(remaining, _ROOT_READ_CHUNK // _DIR_ENTRY)
        chunk = read_or_none(src, position, count * _DIR_ENTRY, "FAT root directory")
        if chunk is None:
            return None
        for index in range(count):
            entry = chunk[index * _DIR_ENTRY : (index + 1) * _DIR_ENTRY]
            if entry[0] == 0x00:
                return None
            attr = entry[11]
            cluster_high = u16le(entry, 20)
            cluster_low = u16le(entry, 26)
            if entry[0] == 0xE5 or cluster_high or cluster_low or (attr & 0x3F) == 0x0F:
                continue
            if attr & (0x08 | 0x10) == 0x08:
                name = entry[:11]
                # 0x05 stands for a leading 0xE5 (which would mark the entry deleted).
                return b"\xe5" + name[1:] if name[0] == 0x05 else name
        remaining -= count
        position += count * _DIR_ENTRY
    return None


def _boot_sector(src: ByteSource) -> tuple[bytes, _Bpb] | None:
    """The first sector of ``src`` and its BPB, when it is a valid FAT boot sector."""
    sector = read_or_none(src, 0, 512)
    bpb = _valid_bpb(sector) if sector is not None else None
    return (sector, bpb) if sector is not None and bpb is not None else None


def probe(src: ByteSource) -> FilesystemInfo | None:
    found = _boot_sector(src)
    if found is None:
        return None
    sector, bpb = found
    vol_label: bytes | None = None
    boot_label: bytes | None = None
    serial: bytes | None = None
    version: str | None = None
    details: dict[str, object] = {}

    if bpb.fat_length16:
        root_start = (bpb.reserved + bpb.fat_size) * bpb.sector_size
        vol_label = _search_label(src, root_start, bpb.dir_entries)
        if sector[0x26] == 0x29:
            boot_label = sector[0x2B:0x36]
        if sector[0x26] in (0x28, 0x29):
            serial = sector[0x27:0x2B]
        details["sec_type"] = "msdos"
        if bpb.cluster_count < FAT12_MAX:
            version = "FAT12"
        elif bpb.cluster_count < FAT16_MAX:
            version = "FAT16"
    elif bpb.fat32_length:
        vol_label = _search_fat32_root(src, bpb, sector)
        version = "FAT32"
        if sector[0x42] == 0x29:
            boot_label = sector[0x47:0x52]
        serial = sector[0x43:0x47]
        fsinfo_sector = u16le(sector, 0x30)
        if fsinfo_sector:
            fsinfo = read_or_none(src, fsinfo_sector * bpb.sector_size, 512, "FAT32 FSInfo sector")
            if fsinfo is None:
                return None
            if fsinfo[0:4] not in (b"RRaA", b"RRdA", b"\0\0\0\0"):
                return None
            if fsinfo[484:488] not in (b"rrAa", b"\0\0\0\0"):
                return None

    info = FilesystemInfo(type="vfat", version=version, block_size=bpb.sector_size)
    if vol_label is not None:
        info.label = blkid_label(vol_label)
    if boot_label is not None and boot_label != _NO_NAME:
        details["label_fatboot"] = blkid_id_label(boot_label)
    if serial is not None and any(serial):
        info.uuid = f"{serial[3]:02X}{serial[2]:02X}-{serial[1]:02X}{serial[0]:02X}"
    info.size_bytes = bpb.total_sectors * bpb.sector_size
    details.update(
        {
            "fat_type": "FAT32"
            if version == "FAT32"
            else ("FAT12" if bpb.cluster_count < FAT12_MAX else "FAT16"),
            "oem_id": sector[3:11].decode("latin-1").rstrip(),
            "cluster_count": bpb.cluster_count,
            "cluster_size": bpb.cluster_size * bpb.sector_size,
            "fats": bpb.fats,
        }
    )
    info.details = details
    return info


def _search_fat32_root(src: ByteSource, bpb: _Bpb, sector: bytes) -> bytes | None:
    """Walk at most 99 clusters of the FAT32 root directory chain looking for the label."""
    cluster_bytes = bpb.cluster_size * bpb.sector_size
    data_start = bpb.reserved + bpb.fat_size
    fat_entries = bpb.fat32_length * bpb.sector_size // 4
    cluster = u32le(sector, 0x2C)
    seen: set[int] = set()
    entries_per_cluster = max(1, cluster_bytes // _DIR_ENTRY)
    budget = min(_FAT32_MAX_CLUSTERS_SEARCHED, max(1, _FAT32_MAX_ENTRIES_SEARCHED // entries_per_cluster))
    for _ in range(budget):
        if not cluster or cluster >= fat_entries or cluster < 2 or cluster in seen:
            return None
        seen.add(cluster)
        offset = (data_start + (cluster - 2) * bpb.cluster_size) * bpb.sector_size
        label = _search_label(src, offset, cluster_bytes // _DIR_ENTRY)
        if label is not None:
            return label
        entry = read_or_none(src, bpb.reserved * bpb.sector_size + cluster * 4, 4, "FAT32 allocation table")
        if entry is None:
            return None
        cluster = u32le(entry, 0) & 0x0FFFFFFF
    return None


# --- directories and files --------------------------------------------------------------------

#: Entries read from one directory before giving up on it (a real ESP directory has a handful).
MAX_DIRECTORY_ENTRIES = 4096
#: Bytes one ``read_file`` call may return.
MAX_FILE_READ = 1 << 20
#: FAT lookups one volume may make in all (a hostile chain costs time, not only memory): a
#: real ESP's boot loaders take a few tens of thousands at 512-byte clusters.
MAX_CLUSTER_LOOKUPS = 1 << 20
_FAT_BLOCK = 4096
_FAT_CACHE_BLOCKS = 256
_ATTR_VOLUME = 0x08
_ATTR_DIRECTORY = 0x10
_ATTR_LONG_NAME = 0x0F
_LFN_LAST = 0x40
_LFN_OFFSETS = ((1, 10), (14, 12), (28, 4))
_MAX_LFN_PIECES = 20  # 255 characters


class ClusterChain:
    """The clusters of one chain found so far (and which, to catch a loop)."""

    __slots__ = ("clusters", "ended", "seen")

    def __init__(self) -> None:
        self.clusters: list[int] = []
        self.seen: set[int] = set()
        self.ended = False

    def add(self, cluster: int) -> None:
        self.clusters.append(cluster)
        self.seen.add(cluster)


@dataclass(frozen=True)
class FatEntry:
    """One file or directory: its name (the long name when there is a valid one) and where it lies."""

    name: str
    short_name: str
    is_directory: bool
    size: int
    first_cluster: int


def _short_name(raw: bytes, case_flags: int) -> str:
    base = raw[:8].rstrip(b" ")
    ext = raw[8:11].rstrip(b" ")
    if base[:1] == b"\x05":
        base = b"\xe5" + base[1:]
    base_text = base.decode("cp437")
    ext_text = ext.decode("cp437")
    if case_flags & 0x08:
        base_text = base_text.lower()
    if case_flags & 0x10:
        ext_text = ext_text.lower()
    return f"{base_text}.{ext_text}" if ext_text else base_text


def _short_name_checksum(raw: bytes) -> int:
    total = 0
    for byte in raw[:11]:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def _long_name(pieces: list[bytes], short_raw: bytes) -> str | None:
    """The long name from its entries (in disk order: last piece first), or None if they do not add up."""
    if not pieces or len(pieces) > _MAX_LFN_PIECES:
        return None
    checksum = _short_name_checksum(short_raw)
    count = len(pieces)
    units = bytearray()
    for index, entry in enumerate(pieces):
        order = entry[0]
        expected = count - index
        if (order & 0x3F) != expected or bool(order & _LFN_LAST) != (index == 0) or entry[13] != checksum:
            return None
    for entry in reversed(pieces):
        for start, length in _LFN_OFFSETS:
            units += entry[start : start + length]
    text = units.decode("utf-16-le", "replace")
    end = text.find("\0")
    name = text if end < 0 else text[:end]
    return name or None


class FatVolume:
    """Read-only access to the directories and files of a FAT12/16/32 volume (see the module docstring)."""

    def __init__(self, src: ByteSource, bpb: _Bpb, fat32_root: int) -> None:
        self._src = src
        self._bpb = bpb
        self.sector_size = bpb.sector_size
        self.cluster_bytes = bpb.cluster_size * bpb.sector_size
        self.cluster_count = bpb.cluster_count
        self.fat_bits = (
            32
            if (not bpb.fat_length16 and bpb.fat32_length)
            else (12 if bpb.cluster_count <= FAT12_MAX else 16)
        )
        self._fat_offset = bpb.reserved * bpb.sector_size
        self._fat_bytes = bpb.fat_length * bpb.sector_size
        self._root_dir_offset = (bpb.reserved + bpb.fat_size) * bpb.sector_size
        self._data_offset = (bpb.reserved + bpb.fat_size + bpb.root_dir_sectors) * bpb.sector_size
        self._fat32_root = fat32_root
        self._fat_cache: dict[int, bytes] = {}
        self.max_lookups = MAX_CLUSTER_LOOKUPS
        self._lookups = 0

    @classmethod
    def open(cls, src: ByteSource) -> FatVolume | None:
        """The volume at the start of ``src``, or None when it holds no valid FAT boot sector."""
        found = _boot_sector(src)
        if found is None:
            return None
        sector, bpb = found
        fat32_root = u32le(sector, 0x2C) if (not bpb.fat_length16 and bpb.fat32_length) else 0
        return cls(src, bpb, fat32_root)

    # -- the allocation table

    def _fat_entry(self, cluster: int) -> int:
        offset = cluster + cluster // 2 if self.fat_bits == 12 else cluster * (self.fat_bits // 8)
        width = 2 if self.fat_bits in (12, 16) else 4
        if offset + width > self._fat_bytes:
            raise ImageFormatError(f"The FAT entry of cluster {cluster} lies beyond the allocation table.")
        raw = self._fat_bytes_at(offset, width)
        value = int.from_bytes(raw, "little")
        if self.fat_bits == 12:
            return (value >> 4) if cluster & 1 else (value & 0xFFF)
        if self.fat_bits == 32:
            return value & 0x0FFFFFFF
        return value

    def _fat_bytes_at(self, offset: int, width: int) -> bytes:
        data = b""
        while len(data) < width:
            block = (offset + len(data)) // _FAT_BLOCK
            cached = self._fat_cache.get(block)
            if cached is None:
                start = block * _FAT_BLOCK
                length = min(_FAT_BLOCK, self._fat_bytes - start)
                cached = read_exact(self._src, self._fat_offset + start, length, "FAT allocation table")
                if len(self._fat_cache) >= _FAT_CACHE_BLOCKS:
                    self._fat_cache.pop(next(iter(self._fat_cache)))
                self._fat_cache[block] = cached
            inner = (offset + len(data)) % _FAT_BLOCK
            data += cached[inner : inner + width - len(data)]
        return data

    def _end_of_chain(self, value: int) -> bool:
        bad = {12: 0xFF7, 16: 0xFFF7, 32: 0x0FFFFFF7}[self.fat_bits]
        return value >= bad

    def _check_cluster(self, cluster: int, what: str) -> None:
        if not 2 <= cluster < self.cluster_count + 2:
            raise ImageFormatError(f"The FAT {what} points at cluster {cluster}, outside the volume.")

    def _extend_chain(self, chain: ClusterChain, first: int, needed: int, what: str) -> None:
        """Extend ``chain`` (the clusters from ``first`` found so far) to ``needed`` clusters, or
        to the chain's end if it is shorter. Every FAT lookup counts against the volume's budget;
        a cluster met twice is a loop."""
        if not chain.clusters:
            self._check_cluster(first, what)
            chain.add(first)
        while len(chain.clusters) < needed and not chain.ended:
            self._lookups += 1
            if self._lookups > self.max_lookups:
                raise ImageFormatError(
                    f"Reading the FAT volume takes more than {self.max_lookups} cluster lookups; "
                    "it was not examined further."
                )
            following = self._fat_entry(chain.clusters[-1])
            if self._end_of_chain(following) or following in (0, 1):
                chain.ended = True
                return
            self._check_cluster(following, what)
            if following in chain.seen:
                raise ImageFormatError(f"The FAT cluster chain of {what} loops.")
            chain.add(following)

    def _cluster_offset(self, cluster: int) -> int:
        return self._data_offset + (cluster - 2) * self.cluster_bytes

    # -- directories

    def _directory_chunks(self, first_cluster: int, what: str) -> list[tuple[int, int]]:
        """(offset, length) regions holding a directory's entries, at most MAX_DIRECTORY_ENTRIES."""
        if first_cluster == 0:
            if self.fat_bits == 32:
                first_cluster = self._fat32_root
            else:
                entries = min(self._bpb.dir_entries, MAX_DIRECTORY_ENTRIES)
                return [(self._root_dir_offset, entries * _DIR_ENTRY)]
        per_cluster = max(1, self.cluster_bytes // _DIR_ENTRY)
        chain = ClusterChain()
        self._extend_chain(chain, first_cluster, max(1, MAX_DIRECTORY_ENTRIES // per_cluster), what)
        return [(self._cluster_offset(c), self.cluster_bytes) for c in chain.clusters]

    def list_directory(self, first_cluster: int = 0, *, what: str = "root directory") -> list[FatEntry]:
        """The entries of the directory starting at ``first_cluster`` (0: the root directory).

        Deleted entries, the volume label, ``.`` and ``..`` are left out.
        """
        found: list[FatEntry] = []
        pieces: list[bytes] = []
        seen = 0
        for offset, length in self._directory_chunks(first_cluster, what):
            data = read_exact(
                self._src, offset, min(length, MAX_DIRECTORY_ENTRIES * _DIR_ENTRY), f"FAT {what}"
            )
            for position in range(0, len(data) - _DIR_ENTRY + 1, _DIR_ENTRY):
                seen += 1
                if seen > MAX_DIRECTORY_ENTRIES:
                    return found
                entry = data[position : position + _DIR_ENTRY]
                if entry[0] == 0x00:
                    return found
                if entry[0] == 0xE5:
                    pieces = []
                    continue
                attr = entry[11]
                if attr & 0x3F == _ATTR_LONG_NAME:
                    if entry[0] & _LFN_LAST:
                        pieces = []
                    if len(pieces) < _MAX_LFN_PIECES:
                        pieces.append(entry)
                    continue
                lfn, pieces = pieces, []
                if attr & _ATTR_VOLUME:
                    continue
                short = _short_name(entry[:11], entry[12])
                if short in (".", ".."):
                    continue
                cluster = (
                    (u16le(entry, 20) << 16 | u16le(entry, 26)) if self.fat_bits == 32 else u16le(entry, 26)
                )
                name = _long_name(lfn, entry[:11]) or short
                is_dir = bool(attr & _ATTR_DIRECTORY)
                found.append(FatEntry(name, short, is_dir, 0 if is_dir else u32le(entry, 28), cluster))
        return found

    def lookup(self, path: str) -> FatEntry | None:
        """The entry at ``path`` ("EFI/BOOT/BOOTX64.EFI"), names compared case-insensitively as FAT does."""
        parts = [part for part in path.split("/") if part]
        if not parts:
            return None
        directory = 0
        entry: FatEntry | None = None
        for index, part in enumerate(parts):
            if index and (entry is None or not entry.is_directory):
                return None
            listing = self.list_directory(directory, what=f"directory /{'/'.join(parts[:index])}")
            wanted = part.casefold()
            entry = next(
                (e for e in listing if e.name.casefold() == wanted or e.short_name.casefold() == wanted), None
            )
            if entry is None:
                return None
            directory = entry.first_cluster
            if entry.is_directory and directory == 0:
                return None  # a subdirectory pointing at the root: nothing real lives there
        return entry

    # -- files

    def read_file(
        self, entry: FatEntry, offset: int, length: int, chain: ClusterChain | None = None
    ) -> bytes:
        """Up to ``length`` bytes of a file from ``offset`` (fewer at its end); at most MAX_FILE_READ.

        ``chain``: the file's clusters found by earlier reads (extended in place), so reading
        a file piece by piece walks its chain once.
        """
        if entry.is_directory:
            raise ImageFormatError(f"{entry.name} is a directory, not a file.")
        if offset < 0 or length < 0 or length > MAX_FILE_READ:
            raise ImageFormatError(f"A read of {length} bytes at {offset} in a FAT file is out of bounds.")
        end = min(entry.size, offset + length)
        if offset >= end:
            return b""
        if entry.first_cluster == 0:
            raise ImageFormatError(f"The FAT file {entry.name} has a size but no clusters.")
        first_index = offset // self.cluster_bytes
        last_index = (end - 1) // self.cluster_bytes
        chain = ClusterChain() if chain is None else chain
        self._extend_chain(chain, entry.first_cluster, last_index + 1, f"file {entry.name}")
        clusters = chain.clusters
        if len(clusters) <= last_index:
            raise ImageFormatError(f"The FAT file {entry.name} is shorter than its size says.")
        data = bytearray()
        for index in range(first_index, last_index + 1):
            cluster_start = index * self.cluster_bytes
            lo = max(offset, cluster_start) - cluster_start
            hi = min(end, cluster_start + self.cluster_bytes) - cluster_start
            data += read_exact(
                self._src, self._cluster_offset(clusters[index]) + lo, hi - lo, f"FAT file {entry.name}"
            )
        return bytes(data)


class FatFileSource:
    """One file of a FAT volume as a ``ByteSource`` (reads bounded by ``FatVolume.read_file``;
    its cluster chain is walked once, however many reads)."""

    def __init__(self, volume: FatVolume, entry: FatEntry) -> None:
        self._volume = volume
        self._entry = entry
        self._chain = ClusterChain()

    @property
    def size(self) -> int:
        return self._entry.size

    def pread(self, offset: int, length: int) -> bytes:
        return self._volume.read_file(self._entry, offset, length, self._chain)
