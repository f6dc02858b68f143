"""tar (POSIX ustar, GNU, pax; old v7): headers parsed by hand, every field bounded.

Header block (512 bytes; numbers are octal ASCII, or GNU base-256 when the first byte has
its top bit set)::

    0 name[100]  100 mode[8]  108 uid[8]  116 gid[8]  124 size[12]  136 mtime[12]
    148 chksum[8]  156 typeflag  157 linkname[100]  257 magic[6]  263 version[2]
    265 uname[32]  297 gname[32]  329 devmajor[8]  337 devminor[8]
    ustar: 345 prefix[155]        GNU: 345 atime, 357 ctime, 369 offset, 381 longnames,
                                       386 sparse[4] (offset[12], numbytes[12]),
                                       482 isextended, 483 realsize[12]

    magic "ustar\\0" + "00" = POSIX ustar/pax; "ustar " + " \\0" = GNU; zeros = v7.
    chksum: sum of the 512 bytes with the chksum field read as 8 spaces (unsigned, or
    signed as some old tars computed it).

Extension headers apply to the member that follows: pax 'x' (records ``"%d key=value\\n"``),
pax 'g' (global, all following members), GNU 'L' (long name) and 'K' (long link name).

NOTE: the scan never reads member data of an uncompressed archive (it skips by position),
so listing a 10 GiB OVA costs a few header reads. Wherever tar readers disagree — a lone
zero block followed by more headers, data claimed by a symlink or directory (GNU tar skips
it, Python's tarfile reads it as the next header), a NUL inside a long name — the archive
means different things to different tools, and that is reported as a problem. A bad
checksum, a truncated header or a limit stops the scan; everything before it is kept.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from imagewright.binary import ByteSource, HeldBytes, MiB, SliceSource
from imagewright.errors import ImageFormatError
from imagewright.formats.base import Budget, Limits
from imagewright.formats.containers.model import ArchiveMember, MemberType, TarDetails, TarFormat
from imagewright.formats.containers.problems import Findings, as_problem
from imagewright.formats.containers.sparse import (
    MAX_SPARSE_REGIONS,
    SparseMap,
    SparseMemberSource,
    parse_map_text,
    read_map_v1,
)
from imagewright.formats.containers.streams import ScanLimitError, SequentialInput
from imagewright.formats.containers.tar_header import (
    BLOCK,
    ZERO_BLOCK,
    TarHeaderError,
    _magic,
    _number,
    checksum_matches,
)
from imagewright.units import format_size

#: Longest member or link name (PATH_MAX).
MAX_NAME_BYTES = 4096
#: Largest pax extended header.
MAX_PAX_BYTES = 1 * MiB
MAX_PAX_RECORDS = 10_000
#: Most extension headers ('x', 'L', 'K', 'g') in front of one member.
MAX_EXTENSION_HEADERS = 16
#: Largest member size field we accept at all (the format allows 2^95 in base-256).
MAX_MEMBER_SIZE = 1 << 62

_TYPES: dict[bytes, MemberType] = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",
    b"S": "file",
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "chardev",
    b"4": "blockdev",
    b"5": "dir",
    b"D": "dir",
    b"6": "fifo",
}
#: Types that carry no data: a size on them is skipped by GNU tar and not by Python's tarfile.
_NO_DATA_TYPES = {b"1", b"2", b"3", b"4", b"5", b"6"}
#: The refusal for data after the end-of-archive marker (``where``: how much, or where).
#: NOTE (safety): GNU tar stops at the marker, but ``tar --ignore-zeros``, Python's
#: ``tarfile.open(ignore_zeros=True)`` and concatenated-archive readers go on reading headers
#: there: a member hidden after it is one that an importer may extract and imagewright never
#: examined. Zero padding (tar's record blocking) is all that may follow.
TRAILING_DATA = (
    "data follows the end-of-archive marker{where}; readers that go on past it (tar "
    "--ignore-zeros, concatenated archives) would find members imagewright never examined"
)
#: The pax records of a member that has none (never written to).
_NO_PAX: dict[str, bytes] = {}
_PAX_NUMBER = re.compile(rb"^\d{1,20}$")
_PAX_TIME = re.compile(rb"^-?\d{1,20}(\.\d{0,20})?$")


@dataclass
class TarHeader:
    """One parsed 512-byte header block."""

    name: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    typeflag: bytes
    linkname: bytes
    uname: bytes
    gname: bytes
    devmajor: int
    devminor: int
    format: TarFormat
    block: bytes


#: The fields of a header block, in order (see the layout at the top), in one unpack.
_HEADER_FIELDS = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s")


def parse_header(block: bytes) -> TarHeader:
    """Parse one header block; TarHeaderError on a bad checksum, magic or number."""
    kind = _magic(block)
    if kind is None:
        raise TarHeaderError("A tar header has an unknown magic.")
    if not checksum_matches(block):
        raise TarHeaderError("A tar header fails its checksum.")
    (name, mode, uid, gid, size_field, mtime, _checksum, typeflag, linkname, _magic_field, uname, gname,
     devmajor, devminor, prefix) = _HEADER_FIELDS.unpack_from(block)  # fmt: skip
    name = name.partition(b"\0")[0]
    if kind == "ustar":
        prefix = prefix.partition(b"\0")[0]
        if prefix:
            name = prefix + b"/" + name
    size = _number(size_field, "size")
    if size < 0 or size > MAX_MEMBER_SIZE:
        raise TarHeaderError("A tar header claims an impossible member size.")
    return TarHeader(
        name=name,
        mode=_number(mode, "mode") & 0o7777,
        uid=_number(uid, "uid"),
        gid=_number(gid, "gid"),
        size=size,
        mtime=_number(mtime, "mtime"),
        typeflag=typeflag,
        linkname=linkname.partition(b"\0")[0],
        uname=uname.partition(b"\0")[0],
        gname=gname.partition(b"\0")[0],
        devmajor=_number(devmajor, "devmajor") if kind != "v7" else 0,
        devminor=_number(devminor, "devminor") if kind != "v7" else 0,
        format=kind,
        block=block,
    )


def parse_pax_records(data: bytes) -> list[tuple[str, bytes]]:
    """``"%d key=value\\n"`` records (POSIX pax); the length counts the whole record."""
    records: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(data):
        if not data[pos:].strip(b"\0"):
            break
        space = data.find(b" ", pos, pos + 21)
        if space < 0 or not data[pos:space].isdigit():
            raise ImageFormatError("A pax extended header record has no valid length.")
        length = int(data[pos:space])
        end = pos + length
        if length < space - pos + 3 or end > len(data) or data[end - 1 : end] != b"\n":
            raise ImageFormatError("A pax extended header record is malformed.")
        key, equals, value = data[space + 1 : end - 1].partition(b"=")
        if not equals or not key:
            raise ImageFormatError("A pax extended header record has no key=value.")
        records.append((key.decode("utf-8", "backslashreplace"), value))
        if len(records) > MAX_PAX_RECORDS:
            raise ImageFormatError(f"A pax extended header holds more than {MAX_PAX_RECORDS} records.")
        pos = end
    return records


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _pax_int(value: bytes, what: str) -> int:
    if not _PAX_NUMBER.match(value):
        raise ImageFormatError(f"A pax extended header gives a {what} that is not a number.")
    return int(value)


def _pax_time(value: bytes) -> int:
    if not _PAX_TIME.match(value):
        raise ImageFormatError("A pax extended header gives an mtime that is not a number.")
    return int(value.split(b".", 1)[0])


#: Told each regular member before its data is read; True to capture its (expanded) content.
CaptureHook = Callable[[ArchiveMember], bool]
#: Receives the captured content of a member (zeros not stored), or None when it did not fit
#: in the inspection's memory budget.
StoreHook = Callable[[ArchiveMember, HeldBytes | None], None]
#: Decompressed bytes moved per step while capturing a member.
CAPTURE_CHUNK = 1 * MiB


@dataclass
class _Pending:
    """Extension headers seen before the next member."""

    pax: list[tuple[str, bytes]] = field(default_factory=list)
    long_name: bytes | None = None
    long_link: bytes | None = None
    count: int = 0


#: The extension headers of a member that has none (shared, never written to).
_NO_PENDING = _Pending()


@dataclass
class TarScan:
    """Everything a scan found."""

    members: list[ArchiveMember]
    details: TarDetails
    findings: Findings
    #: False when the scan stopped before the end of the archive.
    complete: bool


class TarScanner:
    """Walk an archive from ``inp`` header by header.

    ``file_source``: the uncompressed archive itself, when there is one — then members get
    a ``source`` onto their bytes and sizes are checked against the file. Otherwise
    (a decompressed stream), ``capture``/``store`` keep the content of chosen members, as far
    as ``budget`` allows. Every member is charged to ``budget`` (members per input byte).
    """

    def __init__(
        self,
        inp: SequentialInput,
        limits: Limits,
        *,
        budget: Budget,
        file_source: ByteSource | None = None,
        capture: CaptureHook | None = None,
        store: StoreHook | None = None,
        findings: Findings | None = None,
    ) -> None:
        self._inp = inp
        self._limits = limits
        self._budget = budget
        self._file = file_source
        self._capture = capture
        self._store = store
        self.findings = findings if findings is not None else Findings()
        self.members: list[ArchiveMember] = []
        self._formats: set[str] = set()
        self._global_pax: dict[str, bytes] = {}
        self._global_headers = 0
        self._end_marker = False
        self._archive_size = 0

    def scan(self) -> TarScan:
        complete = False
        try:
            complete = self._walk()
        except ImageFormatError as err:
            self.findings.problem(as_problem(err), "scan")
        self._archive_size = self._archive_size or self._inp.position
        return TarScan(self.members, self._details(), self.findings, complete)

    def _details(self) -> TarDetails:
        if "pax" in self._formats:
            fmt: TarFormat = "pax"
        elif "gnu" in self._formats:
            fmt = "gnu"
        elif "ustar" in self._formats:
            fmt = "ustar"
        else:
            fmt = "v7"
        types: dict[str, int] = {}
        for member in self.members:
            types[member.type] = types.get(member.type, 0) + 1
        return TarDetails(
            format=fmt,
            member_count=len(self.members),
            total_size=sum(m.size for m in self.members if m.type == "file"),
            archive_size=self._archive_size,
            end_marker=self._end_marker,
            sparse_members=sum(1 for m in self.members if m.sparse),
            global_headers=self._global_headers,
            types=types,
        )

    def _read_block(self, what: str) -> bytes:
        block = self._inp.read(BLOCK)
        if len(block) != BLOCK:
            raise ImageFormatError(f"The archive is truncated inside {what}.")
        return block

    def _walk(self) -> bool:
        pending = _NO_PENDING
        while True:
            header_offset = self._inp.position
            block = self._inp.read(BLOCK)
            if not block:
                if pending.count:
                    raise ImageFormatError("The archive ends after an extension header, before its member.")
                self.findings.note("the archive has no end-of-archive marker (two zero blocks)")
                return True
            if len(block) < BLOCK:
                raise ImageFormatError(
                    f"The archive is truncated inside the header at offset {header_offset}."
                )
            if block == ZERO_BLOCK:
                following = self._inp.read(BLOCK)
                if following == ZERO_BLOCK or not following:
                    self._end_marker = True
                    self._archive_size = self._inp.position
                    if not following:
                        self.findings.note("the archive ends with a single zero block instead of two")
                    return True
                if len(following) < BLOCK:
                    raise ImageFormatError(
                        f"The archive is truncated inside the header at offset {header_offset}."
                    )
                self.findings.problem(
                    f"a lone zero block at offset {header_offset} is followed by more headers; tar readers "
                    "disagree on whether those members belong to the archive",
                    "lone zero block",
                )
                header_offset += BLOCK
                block = following
            try:
                header = parse_header(block)
            except TarHeaderError as err:
                raise TarHeaderError(f"{str(err).rstrip('.')} (at offset {header_offset}).") from None
            self._formats.add(header.format)
            if header.typeflag in (b"x", b"g", b"L", b"K"):
                if pending is _NO_PENDING:
                    pending = _Pending()
                pending.count += 1
                if pending.count > MAX_EXTENSION_HEADERS:
                    raise ImageFormatError(
                        f"More than {MAX_EXTENSION_HEADERS} extension headers precede one member "
                        f"(at offset {header_offset})."
                    )
                self._extension(header, pending)
                continue
            self._budget.charge_member()
            self._member(header, pending, header_offset)
            pending = _NO_PENDING

    def _read_extension_data(self, header: TarHeader, limit: int, what: str) -> bytes:
        if header.size > limit:
            raise ImageFormatError(f"A {what} claims {header.size} bytes, more than the {limit} allowed.")
        data = self._inp.read(header.size)
        if len(data) < header.size:
            raise ImageFormatError(f"The archive is truncated inside a {what}.")
        self._skip_exact((-header.size) % BLOCK, f"a {what}")
        return data

    def _extension(self, header: TarHeader, pending: _Pending) -> None:
        flag = header.typeflag
        if flag in (b"x", b"g"):
            self._formats.add("pax")
            records = parse_pax_records(
                self._read_extension_data(header, MAX_PAX_BYTES, "pax extended header")
            )
            if flag == b"g":
                self._global_headers += 1
                self._global_pax.update(records)
            else:
                pending.pax.extend(records)
            return
        self._formats.add("gnu")
        data = self._read_extension_data(header, MAX_NAME_BYTES + BLOCK, "GNU long name header")
        if flag == b"L":
            pending.long_name = data
        else:
            pending.long_link = data

    def _skip_exact(self, count: int, what: str) -> None:
        if count and self._inp.skip(count) != count:
            raise ImageFormatError(f"The archive is truncated inside {what}.")

    def _long_name(self, raw: bytes, what: str) -> bytes:
        name = raw.rstrip(b"\0")
        if b"\0" in name:
            name = name.split(b"\0", 1)[0]
            self.findings.problem(
                f"a {what} contains a NUL byte after '{_text(name)[:200]}'; tar readers disagree on "
                "where it ends",
                "NUL in name",
            )
        if len(name) > MAX_NAME_BYTES:
            raise ImageFormatError(f"A {what} is longer than {MAX_NAME_BYTES} bytes.")
        return name

    def _member(self, header: TarHeader, pending: _Pending, header_offset: int) -> None:
        pax: dict[str, bytes] = dict(self._global_pax) if self._global_pax or pending.pax else _NO_PAX
        sparse_offsets: list[tuple[int, int]] = []
        sparse_offset: int | None = None
        for key, value in pending.pax:
            pax[key] = value
            # pax sparse 0.0 repeats these two keys, in order, once per region.
            if key == "GNU.sparse.offset":
                sparse_offset = _pax_int(value, "sparse offset")
            elif key == "GNU.sparse.numbytes" and sparse_offset is not None:
                sparse_offsets.append((sparse_offset, _pax_int(value, "sparse size")))
                sparse_offset = None

        name = header.name
        if pending.long_name is not None:
            name = self._long_name(pending.long_name, "GNU long member name")
        if "path" in pax:
            name = self._long_name(pax["path"], "pax member name")
        if "GNU.sparse.name" in pax:
            name = self._long_name(pax["GNU.sparse.name"], "pax sparse member name")
        linkname = header.linkname
        if pending.long_link is not None:
            linkname = self._long_name(pending.long_link, "GNU long link name")
        if "linkpath" in pax:
            linkname = self._long_name(pax["linkpath"], "pax link name")

        stored = _pax_int(pax["size"], "size") if "size" in pax else header.size
        if stored > MAX_MEMBER_SIZE:
            raise ImageFormatError("A pax extended header claims an impossible member size.")
        flag = header.typeflag
        member_type: MemberType = _TYPES.get(flag, "other")
        if flag == b"\0" and header.format == "v7" and name.endswith(b"/"):
            member_type = "dir"
        text_name = _text(name)

        if flag in _NO_DATA_TYPES and stored:
            raise ImageFormatError(
                f"Member '{text_name[:200]}' is a {member_type} but claims {stored} bytes of data; "
                "tar readers disagree on whether to skip them"
            )

        sparse_map: SparseMap | None = None
        if flag == b"S":
            sparse_map = self._old_gnu_sparse(header.block)
        elif member_type == "file" and (
            "GNU.sparse.map" in pax or sparse_offsets or "GNU.sparse.major" in pax
        ):
            sparse_map = self._pax_sparse(pax, sparse_offsets, text_name)

        data_offset = self._inp.position
        map_bytes = 0
        if sparse_map is None and "GNU.sparse.major" in pax and member_type == "file":
            real = _pax_int(pax.get("GNU.sparse.realsize", b"0"), "sparse real size")
            sparse_map, map_bytes = read_map_v1(lambda: self._inp.read(BLOCK), real)
            data_offset += map_bytes
        data_size = stored - map_bytes
        if data_size < 0:
            raise ImageFormatError(f"Member '{text_name[:200]}' has a sparse map larger than its data.")

        mtime = _pax_time(pax["mtime"]) if "mtime" in pax else header.mtime
        member = ArchiveMember(
            name=text_name,
            type=member_type,
            size=sparse_map.real_size if sparse_map is not None else stored,
            mode=header.mode,
            uid=_pax_int(pax["uid"], "uid") if "uid" in pax else header.uid,
            gid=_pax_int(pax["gid"], "gid") if "gid" in pax else header.gid,
            # Interned: 200 000 members owned by "root" share one string.
            uname=sys.intern(_text(pax.get("uname", header.uname))[:256]),
            gname=sys.intern(_text(pax.get("gname", header.gname))[:256]),
            mtime=mtime,
            linkname=_text(linkname) if member_type in ("symlink", "hardlink") else None,
            data_offset=data_offset,
            stored_size=data_size,
            typeflag=_text(flag) if flag != b"\0" else "0",
            sparse=sparse_map is not None,
            devmajor=header.devmajor if member_type in ("chardev", "blockdev") else None,
            devminor=header.devminor if member_type in ("chardev", "blockdev") else None,
            header_offset=header_offset,
        )
        if sparse_map is not None and sparse_map.stored_size != data_size:
            self.findings.problem(
                f"sparse member '{text_name[:200]}' stores {data_size} bytes but its map lists "
                f"{sparse_map.stored_size}",
                "sparse map",
            )
            sparse_map = None
        self.members.append(member)
        self._data(member, sparse_map)

    def _old_gnu_sparse(self, block: bytes) -> SparseMap:
        sparse = SparseMap(_number(block[483:495], "real size"))
        entries = [block[386 + 24 * i : 410 + 24 * i] for i in range(4)]
        extended = block[482]
        blocks = 0
        while True:
            for entry in entries:
                if entry[0] == 0:
                    break
                sparse.add(_number(entry[:12], "sparse offset"), _number(entry[12:], "sparse size"))
            if not extended:
                return sparse
            blocks += 1
            if blocks * 21 > MAX_SPARSE_REGIONS:
                raise ImageFormatError(f"A sparse member lists more than {MAX_SPARSE_REGIONS} data regions.")
            ext = self._read_block("a sparse map extension block")
            entries = [ext[24 * i : 24 * i + 24] for i in range(21)]
            extended = ext[504]

    def _pax_sparse(
        self, pax: dict[str, bytes], regions: list[tuple[int, int]], name: str
    ) -> SparseMap | None:
        if "GNU.sparse.major" in pax:
            major = pax["GNU.sparse.major"]
            if major != b"1" or pax.get("GNU.sparse.minor", b"0") != b"0":
                raise ImageFormatError(f"Member '{name[:200]}' uses an unknown GNU sparse version.")
            return None  # 1.0: the map is in the data; read by the caller
        real = _pax_int(pax.get("GNU.sparse.size", pax.get("GNU.sparse.realsize", b"0")), "sparse real size")
        if "GNU.sparse.map" in pax:
            return parse_map_text(pax["GNU.sparse.map"].decode("ascii", "replace"), real)
        sparse = SparseMap(real)
        for offset, size in regions:
            sparse.add(offset, size)
        return sparse

    def _data(self, member: ArchiveMember, sparse: SparseMap | None) -> None:
        """Attach a source or capture the content of the member, then move past its data."""
        size = member.stored_size
        padded = size + (-size) % BLOCK
        if self._file is not None:
            available = self._file.size - member.data_offset
            if size > available:
                raise ImageFormatError(
                    f"Member '{member.name[:200]}' claims {size} bytes of data, but the archive ends "
                    f"{max(available, 0)} bytes after its header."
                )
            if member.type == "file" and sparse is not None:
                member.source = SparseMemberSource(self._file, member.data_offset, sparse)
            elif member.type == "file" and not member.sparse and size:
                # (An empty member needs no window: 200 000 of them would cost 40 MiB.)
                member.source = SliceSource(self._file, member.data_offset, size)
        elif self._inp.limit is not None and member.data_offset + padded > self._inp.limit:
            # Refuse before decompressing any of it: the member alone is past what may be decompressed.
            raise self._past_scan_limit(member)
        elif (
            member.type == "file"
            and member.size
            and self._capture is not None
            and self._store is not None
            and (not member.sparse or sparse is not None)
            and self._capture(member)
        ):
            self._store(member, self._capture_content(member, sparse))
        consumed = self._inp.position - member.data_offset
        if consumed > padded:
            raise ImageFormatError(f"Member '{member.name[:200]}' has a sparse map beyond its data.")
        try:
            self._skip_exact(padded - consumed, f"member '{member.name[:200]}'")
        except ScanLimitError:
            raise self._past_scan_limit(member) from None

    def _past_scan_limit(self, member: ArchiveMember) -> ScanLimitError:
        sentence = self._budget.decompressed_sentence("the archive").rstrip(".")
        return ScanLimitError(
            f"{sentence}; member '{member.name[:200]}' alone claims {format_size(member.stored_size)} "
            "of data."
        )

    def _capture_content(self, member: ArchiveMember, sparse: SparseMap | None) -> HeldBytes | None:
        """The member's expanded content read forward once, or None when it does not fit in
        the memory budget (then the rest of its data is left for the caller to skip)."""
        held = HeldBytes()
        regions = (
            [(0, member.stored_size)]
            if sparse is None
            else list(zip(sparse.offsets, sparse.sizes, strict=True))
        )
        for offset, length in regions:
            held.extend_zeros(offset - held.length)
            left = length
            while left > 0:
                piece = self._inp.read(min(CAPTURE_CHUNK, left))
                if not piece:
                    self._budget.release_held(held.held)
                    return None  # truncated: the skip that follows says so
                before = held.held
                held.append(piece)
                left -= len(piece)
                if not self._budget.charge_held(held.held - before):
                    self._budget.release_held(before)
                    return None
        held.extend_zeros(member.size - held.length)
        return held
