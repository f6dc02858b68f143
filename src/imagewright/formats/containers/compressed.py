"""Compressed wrappers (gzip, xz, bzip2, zstd): look inside without extracting.

The walk:
1. Read what the container records without decompressing: the gzip header and ISIZE, the
   xz indexes (exact size), the zstd frame headers and block walk (content size,
   truncation), the bzip2 level.
2. Decompress a bounded prefix (``Limits.max_prefix_bytes``). A bomb costs that much memory
   and the time to produce it, nothing more.
3. If the prefix starts with a tar header, the content is an archive: decompress it again
   from the start and stream the *whole* tar (bounded by ``Limits.max_scan_bytes`` and
   ``Limits.max_archive_members``), judging every member — a hostile member deep inside a
   ``.tar.gz`` is found wherever it is. Disk-image members keep their first bytes
   (a few members, ``Limits.max_prefix_bytes`` in all) so they can be inspected in turn.
4. Otherwise the content is a disk image: ``inner`` is a ``PrefixSource`` of the prefix,
   sized by the container's record (xz index, zstd content sizes) or, when nothing records
   it, of unknown size (``Limits.max_virtual_size``).

NOTE: compression inside compression (a gzip holding an xz ...) has no use for an image
and is how recursive decompression bombs are built: it is refused. A stream whose recorded
size exceeds the virtual-size limit (or, for an archive, the scan limit) is refused before
any decompression.
"""

from __future__ import annotations

from imagewright.binary import ByteSource, PrefixSource
from imagewright.errors import ImageFormatError
from imagewright.formats.base import Limits
from imagewright.formats.containers import bzip2, gzip, xz, zstd
from imagewright.formats.containers.archive import judge_archive
from imagewright.formats.containers.classify import (
    is_disk_name,
    is_ovf_name,
    normalize,
    top_component,
    tops_look_like_rootfs,
)
from imagewright.formats.containers.decompress import CompressionFormat, DecompressedStream
from imagewright.formats.containers.manifest import MAX_CERTIFICATE_BYTES, MAX_MANIFEST_BYTES
from imagewright.formats.containers.model import (
    ArchiveMember,
    ContainerDetails,
    OpenedContainer,
)
from imagewright.formats.containers.ova import disk_hrefs
from imagewright.formats.containers.ovf import MAX_DESCRIPTOR_BYTES, parse_descriptor
from imagewright.formats.containers.problems import Findings, as_problem
from imagewright.formats.containers.streams import DecompressedInput, ScanLimitError
from imagewright.formats.containers.tar import TarScanner, looks_like_tar
from imagewright.units import format_size

_STEP = 1024 * 1024
#: Most archive members whose first bytes are kept from a compressed archive.
MAX_CAPTURED_MEMBERS = 4
#: Most small package files (.mf/.cert) kept whole from a compressed OVA.
MAX_CAPTURED_PACKAGE_FILES = 4

Details = gzip.GzipDetails | xz.XzDetails | bzip2.Bzip2Details | zstd.ZstdDetails


def probe_compression(head: bytes) -> CompressionFormat | None:
    if gzip.probe(head):
        return "gzip"
    if xz.probe(head):
        return "xz"
    if bzip2.probe(head):
        return "bzip2"
    if zstd.probe(head):
        return "zstd"
    return None


class _Recorded:
    """What the container says about itself before any decompression."""

    def __init__(self, details: Details, size: int | None, zstd_end: int | None = None) -> None:
        self.details = details
        self.size = size
        self.zstd_end = zstd_end


def _describe(src: ByteSource, fmt: CompressionFormat, findings: Findings) -> _Recorded:
    if fmt == "gzip":
        return _Recorded(gzip.read_details(src), None)
    if fmt == "xz":
        try:
            details = xz.read_details(src)
        except ImageFormatError as err:
            # The streams may still decompress up to the damage: report both.
            findings.problem(as_problem(err))
            return _Recorded(xz.XzDetails(0, 0, 0, 0, 0, []), None)
        return _Recorded(details, details.uncompressed_size)
    if fmt == "bzip2":
        return _Recorded(bzip2.read_details(src), None)
    zdetails = zstd.read_details(src)
    try:
        walk = zstd.walk_frames(src)
    except ImageFormatError as err:
        findings.problem(as_problem(err))
        return _Recorded(zdetails, None)
    if not walk.complete:
        findings.note("the zstd file has too many frames or blocks to total their sizes")
        return _Recorded(zdetails, None)
    zdetails.frames = walk.frames
    zdetails.skippable_frames = walk.skippable_frames
    zdetails.total_content_size = walk.total_content_size
    zdetails.frames_without_content_size = walk.frames_without_content_size
    zdetails.compressed_size = walk.end
    if walk.largest_window > zstd.MAX_WINDOW_SIZE:
        findings.problem(
            f"a zstd frame needs a {format_size(walk.largest_window)} window, more than the "
            f"{format_size(zstd.MAX_WINDOW_SIZE)} imagewright decodes with"
        )
    if walk.trailing_bytes:
        findings.problem(
            f"{walk.trailing_bytes} bytes after the last zstd frame are not a frame; decompressors ignore "
            "or reject them"
        )
    return _Recorded(zdetails, walk.total_content_size, walk.end)


def _read_prefix(stream: DecompressedStream, limit: int, findings: Findings) -> bytes:
    """Up to ``limit`` decompressed bytes; a decoding error ends the prefix and is a problem."""
    buffer = bytearray()
    while len(buffer) < limit:
        try:
            piece = stream.read(min(_STEP, limit - len(buffer)))
        except ImageFormatError as err:
            findings.problem(as_problem(err))
            break
        if not piece:
            break
        buffer += piece
    return bytes(buffer)


def _judge_end(stream: DecompressedStream, recorded: _Recorded, findings: Findings) -> None:
    """A fully decompressed stream: members, trailing bytes, size against the record."""
    end = stream.end
    if end is None:
        return
    details = recorded.details
    if isinstance(details, gzip.GzipDetails):
        details.members = end.members
        if end.members > 1:
            findings.note(f"the gzip file holds {end.members} concatenated members")
    elif isinstance(details, bzip2.Bzip2Details):
        details.streams = end.members
    if end.trailing_bytes:
        label = {"gzip": "gzip", "xz": "xz", "bzip2": "bzip2", "zstd": "zstd"}[stream.format]
        if end.trailing_zeros:
            findings.note(f"{end.trailing_bytes} zero bytes of padding follow the {label} stream")
        else:
            findings.problem(
                f"{end.trailing_bytes} bytes after the end of the {label} stream are not part of it; "
                "decompressors ignore or reject them, so the file can mean two things"
            )
    if recorded.size is not None and recorded.size != stream.position:
        findings.problem(
            f"the {stream.format} stream records {recorded.size} uncompressed bytes but holds "
            f"{stream.position}"
        )


def open_compressed(
    src: ByteSource, fmt: CompressionFormat, limits: Limits, name_hint: str | None = None
) -> OpenedContainer:
    findings = Findings()
    recorded = _describe(src, fmt, findings)
    stream = DecompressedStream(src, fmt, zstd_end=recorded.zstd_end)
    prefix_findings = Findings()
    # A first small piece tells an archive from a disk image without decompressing 8 MiB.
    prefix = _read_prefix(stream, min(_STEP, limits.max_prefix_bytes), prefix_findings)
    if looks_like_tar(prefix[:512]):
        # The archive is scanned from the start again; its faults are found (and reported) there.
        return _open_compressed_tar(
            src=src, fmt=fmt, recorded=recorded, limits=limits, findings=findings, name_hint=name_hint
        )
    if not prefix_findings.problems:
        prefix += _read_prefix(stream, limits.max_prefix_bytes - len(prefix), prefix_findings)
    findings.extend(prefix_findings)
    _judge_end(stream, recorded, findings)

    exact = stream.position if stream.finished else None
    size = exact if exact is not None else recorded.size
    nested = probe_compression(prefix[:64])
    if nested is not None:
        findings.problem(
            f"the decompressed {fmt} stream is itself compressed ({nested}); compression inside compression "
            "is how recursive decompression bombs are built"
        )
    if size is not None and size > limits.max_virtual_size:
        findings.problem(
            f"the {fmt} stream claims {format_size(size)} of uncompressed data, more than the limit of "
            f"{format_size(limits.max_virtual_size)} (a decompression bomb)"
        )
    elif not stream.finished:
        findings.note(
            f"only the first {format_size(len(prefix))} of the decompressed data were examined"
            + ("" if size is not None else "; the uncompressed size is not recorded")
        )
    findings.finish()
    inner = PrefixSource(prefix, size, limits.max_virtual_size)
    return OpenedContainer(
        format=fmt,
        kind="compressed",
        details=ContainerDetails(compression=recorded.details),
        layers=[fmt],
        uncompressed_size=size,
        problems=findings.problems,
        notes=findings.notes,
        partial=not stream.finished,
        inner=inner,
    )


class _CapturePolicy:
    """Which members of a compressed archive keep their first bytes, and how many.

    The descriptor, manifest and certificate of an OVA are kept whole (bounded by their
    own limits) so the package can be judged; the first few disk-image members keep a
    prefix — the first one half of ``max_prefix_bytes``, each next one half the rest.
    """

    def __init__(self, limits: Limits) -> None:
        self._budget = limits.max_prefix_bytes
        self._limits = limits
        self.heads: dict[int, bytes] = {}
        self.whole: dict[int, bytes] = {}
        self._descriptor_seen = False
        self._package_files = 0
        self._disk_hrefs: set[str] = set()
        self._tops: set[str] = set()

    def want(self, member: ArchiveMember) -> int:
        self._tops.add(top_component(member.name))
        name = member.name.lower()
        if is_ovf_name(name) and not self._descriptor_seen:
            self._descriptor_seen = True
            return member.size if member.size <= MAX_DESCRIPTOR_BYTES else 0
        if name.endswith((".mf", ".cert")) and self._package_files < MAX_CAPTURED_PACKAGE_FILES:
            self._package_files += 1
            limit = MAX_MANIFEST_BYTES if name.endswith(".mf") else MAX_CERTIFICATE_BYTES
            return member.size if member.size <= limit else 0
        is_disk = normalize(member.name) in self._disk_hrefs or is_disk_name(member.name)
        if not is_disk or len(self.heads) >= MAX_CAPTURED_MEMBERS or self._budget <= 0:
            return 0
        if tops_look_like_rootfs(self._tops):
            return 0
        last = len(self.heads) == MAX_CAPTURED_MEMBERS - 1
        return self._budget if last else max(1, self._budget // 2)

    def store(self, member: ArchiveMember, data: bytes) -> None:
        name = member.name.lower()
        if is_ovf_name(name) or name.endswith((".mf", ".cert")):
            self.whole[id(member)] = data
            if is_ovf_name(name):
                try:
                    reading = parse_descriptor(data, self._limits.max_virtual_size)
                except ImageFormatError:
                    return  # judged again, and reported, after the scan
                self._disk_hrefs.update(disk_hrefs(reading.descriptor))
            return
        self.heads[id(member)] = data
        self._budget -= len(data)

    def read(self, member: ArchiveMember, limit: int) -> bytes | None:
        data = self.whole.get(id(member))
        return data if data is not None and len(data) <= limit else None


def _drain(inp: DecompressedInput, findings: Findings) -> None:
    """Read what follows the end-of-archive marker (normally zero padding) to the stream's end."""
    nonzero = False
    while True:
        try:
            piece = inp.read(_STEP)
        except ScanLimitError as err:
            findings.problem(as_problem(err))
            return
        except ImageFormatError as err:
            findings.problem(as_problem(err))
            return
        if not piece:
            break
        nonzero = nonzero or any(piece)
    if nonzero:
        findings.note("data follows the end-of-archive marker inside the compressed stream")


def _open_compressed_tar(
    *,
    src: ByteSource,
    fmt: CompressionFormat,
    recorded: _Recorded,
    limits: Limits,
    findings: Findings,
    name_hint: str | None,
) -> OpenedContainer:
    details = ContainerDetails(compression=recorded.details)
    if recorded.size is not None and recorded.size > limits.max_scan_bytes:
        findings.problem(
            f"the {fmt} stream holds a {format_size(recorded.size)} archive, more than the "
            f"{format_size(limits.max_scan_bytes)} imagewright decompresses to scan one "
            "(a decompression bomb, or an archive too large to inspect)"
        )
        findings.finish()
        return OpenedContainer(
            format=fmt,
            kind="archive",
            details=details,
            layers=[fmt, "tar"],
            uncompressed_size=recorded.size,
            problems=findings.problems,
            notes=findings.notes,
            partial=True,
        )
    stream = DecompressedStream(src, fmt, zstd_end=recorded.zstd_end)
    inp = DecompressedInput(stream, limits.max_scan_bytes)
    policy = _CapturePolicy(limits)
    scan = TarScanner(inp, limits, capture=policy.want, store=policy.store, findings=findings).scan()
    if scan.complete:
        _drain(inp, findings)
        _judge_end(stream, recorded, findings)
    for member in scan.members:
        head = policy.heads.get(id(member))
        if head is not None:
            member.source = PrefixSource(head, member.size, member.size)
    kind, ova = judge_archive(scan.members, policy.read, limits, findings, name_hint)
    details.archive = scan.details
    details.ova = ova
    findings.finish()
    return OpenedContainer(
        format=fmt,
        kind=kind,
        details=details,
        layers=[fmt, "ova" if kind == "ova" else "tar"],
        uncompressed_size=stream.position if stream.finished else recorded.size,
        members=scan.members,
        problems=findings.problems,
        notes=findings.notes,
        partial=not (scan.complete and stream.finished),
    )
