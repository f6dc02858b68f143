"""Installed rpm packages from the Berkeley DB ``/var/lib/rpm/Packages`` of RHEL/CentOS 8 and
before (and SUSE before 15.4), read without Berkeley DB or rpm.

Sources: Berkeley DB 5.3 ``dbinc/db_page.h`` (the on-disk layout) and rpm's own reader of it,
``lib/backend/bdb_ro.c``. The file is a hash database of fixed-size pages, in the byte order
of the machine that wrote it (the magic tells which):

    page 0, the hash metadata page (HMETA):
      0  lsn[8] | 8 pgno u32 | 12 magic u32 = 0x00061561 | 16 version u32 (8..10) |
      20 pagesize u32 | 24 encrypt_alg u8 | 25 type u8 = 8 | ... | 32 last_pgno u32 | ...
      72 max_bucket u32 | 76 high_mask u32 | 80 low_mask u32 | ... | 96 spares u32[32]
    every other page (PAGE, 26 bytes of header):
      0 lsn[8] | 8 pgno u32 | 12 prev_pgno u32 | 16 next_pgno u32 | 20 entries u16 |
      22 hf_offset u16 | 24 level u8 | 25 type u8
    hash pages (type 13 P_HASH, 2 P_HASH_UNSORTED): ``entries`` u16 item offsets from byte 26,
      alternating key and data; items grow down from the page's end, so item ``i`` ends where
      item ``i-1`` starts (item 0 at the page's end). An item's first byte is its kind:
      1 H_KEYDATA (the bytes follow), 3 H_OFFPAGE (pad[3], pgno u32, tlen u32: the value is on
      an overflow chain).
    overflow pages (type 7 P_OVERFLOW): ``hf_offset`` bytes of the value from byte 26; the chain
      continues at ``next_pgno``.
    bucket ``b`` starts at page ``b + spares[bit_length(b)]``; its pages chain by ``next_pgno``.

rpm's Packages database maps a header number (u32, in the writer's order; 0 is rpm's own
counter record) to a stored header, the same bytes ``rpmdb.header_fields`` reads from sqlite.

NOTE: the file is untrusted. Only the metadata page's facts within bounds are believed (page
size a power of two from 512 to 64 KiB, a last page within the file, buckets within the
pages); each page is read once at most (a chain that loops, or two chains that share pages,
end there); an overflow value is read only up to ``rpmdb.MAX_HEADER`` bytes and only when
its chain's pages hold exactly its length; at most ``most`` packages are read.
"""

from __future__ import annotations

import struct
from pathlib import Path

from imagewright.binary import FileSource
from imagewright.errors import ImagewrightError
from imagewright.ops.inspect_os.model import Package
from imagewright.ops.inspect_os.rpmdb import MAX_HEADER, RpmDatabaseError, package_of

HASH_MAGIC = 0x00061561
HASH_VERSIONS = range(8, 11)
PAGE_HEADER = 26
P_HASH_UNSORTED, P_OVERFLOW, P_HASHMETA, P_HASH = 2, 7, 8, 13
H_KEYDATA, H_OFFPAGE = 1, 3
MIN_PAGE, MAX_PAGE = 512, 65536


class _Pages:
    """The pages of one database file, each handed out once."""

    def __init__(self, source: FileSource, order: str, pagesize: int, last: int) -> None:
        self.source = source
        self.order = order
        self.pagesize = pagesize
        self.last = last
        self.seen: set[int] = set()

    def read(self, number: int, types: tuple[int, ...]) -> bytes | None:
        """Page ``number`` if it is within the file, not read before, and of one of ``types``."""
        if not 0 < number <= self.last or number in self.seen:
            return None
        self.seen.add(number)
        page = self.source.pread(number * self.pagesize, self.pagesize)
        if len(page) != self.pagesize or page[25] not in types:
            return None
        if struct.unpack_from(self.order + "I", page, 8)[0] != number:
            return None
        return page

    def overflow(self, first: int, length: int) -> bytes | None:
        """The value of an overflow chain, when its pages hold exactly ``length`` bytes."""
        if not 0 < length <= MAX_HEADER:
            return None
        value = bytearray()
        number = first
        while len(value) < length:
            page = self.read(number, (P_OVERFLOW,))
            if page is None:
                return None
            held = struct.unpack_from(self.order + "H", page, 22)[0]
            if PAGE_HEADER + held > self.pagesize or len(value) + held > length:
                return None
            value += page[PAGE_HEADER : PAGE_HEADER + held]
            number = struct.unpack_from(self.order + "I", page, 16)[0]
        return bytes(value)


def read_rpm_berkeley(path: Path, most: int) -> tuple[list[Package], int, bool]:
    """``(packages, count, truncated)`` of an rpm Berkeley DB Packages database (a host file):
    ``count`` headers were found (a header too damaged to name still counts), at most ``most``."""
    try:
        with FileSource(str(path)) as source:
            return _read(source, most)
    except ImagewrightError as err:
        raise RpmDatabaseError(f"it cannot be read ({err})") from None


def _read(source: FileSource, most: int) -> tuple[list[Package], int, bool]:
    meta = source.pread(0, 512)
    if len(meta) < 512:
        raise RpmDatabaseError("it is too short for a Berkeley DB database")
    order = next((o for o in ("<", ">") if struct.unpack_from(o + "I", meta, 12)[0] == HASH_MAGIC), None)
    if order is None:
        raise RpmDatabaseError("it is not a Berkeley DB hash database")
    version, pagesize = struct.unpack_from(order + "II", meta, 16)
    last, max_bucket = (
        struct.unpack_from(order + "I", meta, 32)[0],
        struct.unpack_from(order + "I", meta, 72)[0],
    )
    spares = struct.unpack_from(order + "32I", meta, 96)
    if version not in HASH_VERSIONS or meta[25] != P_HASHMETA:
        raise RpmDatabaseError(f"its hash version {version} is not one Berkeley DB 4 or 5 writes")
    if pagesize < MIN_PAGE or pagesize > MAX_PAGE or pagesize & (pagesize - 1):
        raise RpmDatabaseError(f"its page size {pagesize} is not a power of two from 512 to 65536")
    if (last + 1) * pagesize > source.size or max_bucket > last:
        raise RpmDatabaseError("its metadata names more pages than the file holds")
    pages = _Pages(source, order, pagesize, last)
    packages: list[Package] = []
    count = 0
    for bucket in range(max_bucket + 1):
        number = bucket + spares[bucket.bit_length()]
        while (page := pages.read(number, (P_HASH, P_HASH_UNSORTED))) is not None:
            for key, value in _pairs(page, pages):
                if key is None or len(key) != 4 or struct.unpack(order + "I", key)[0] == 0:
                    continue  # header number 0 is rpm's counter, not a package
                if count >= most:
                    return packages, count, True
                count += 1
                package = package_of(value) if value else None
                if package is not None:
                    packages.append(package)
            number = struct.unpack_from(order + "I", page, 16)[0]
    return packages, count, False


def _pairs(page: bytes, pages: _Pages) -> list[tuple[bytes | None, bytes | None]]:
    """The (key, value) pairs of a hash page; an item that cannot be read is None."""
    order, size = pages.order, pages.pagesize
    entries = min(struct.unpack_from(order + "H", page, 20)[0], (size - PAGE_HEADER) // 2)
    offsets = struct.unpack_from(f"{order}{entries}H", page, PAGE_HEADER)
    low = PAGE_HEADER + 2 * entries

    def item(index: int) -> bytes | None:
        start, end = offsets[index], size if index == 0 else offsets[index - 1]
        if not low <= start < end <= size:
            return None
        if page[start] == H_KEYDATA:
            return page[start + 1 : end]
        if page[start] == H_OFFPAGE and end - start >= 12:
            first, length = struct.unpack_from(order + "II", page, start + 4)
            return pages.overflow(first, length)
        return None

    return [(item(index), item(index + 1)) for index in range(0, entries - 1, 2)]
