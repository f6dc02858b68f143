"""Inspection: what an image is, what is inside it, and whether it is safe to touch.

Pure Python, no subprocess, reads only headers and metadata. The walk:

1. Peel containers (gzip/xz/bzip2/zstd, tar, OVA): a compressed disk image is decompressed
   into memory (blocks of zeros cost nothing); an archive is judged by every member header,
   and every regular member of an image package (OVA, disk archive, any other archive but a
   root filesystem) is inspected in turn *by its content* — whatever its name, whatever the
   OVF descriptor says of it; nested containers too, up to ``Limits.max_nesting``.
2. Identify the disk format (qcow2, qcow, vmdk, vdi, vhdx, vpc, qed, parallels, luks, raw)
   and open it: the reader validates every header field and records references to other
   files and its own reasons to refuse.
3. Survey the guest's bytes through the format's own mapping: partition table, filesystem
   per partition (or a flat filesystem), boot code.
4. Judge: any reference outside the file, any reader problem, any structural problem of the
   partition table, and any refused member refuses the whole image.

NOTE: the verdict is ``safe`` only when every byte a later step could interpret was judged.
Whatever could not be examined — past the decompressed data a budget allows, a member whose
content was not kept, containers nested too deep, more members than are examined — is a
reason to refuse that says "could not be examined within the limit". The work is paid for
by the input (``formats.base.Budget``): decompressed bytes and archive members in proportion
to its size, so a small hostile file costs little time and memory.

A malformed or hostile image never raises here: it yields a report whose verdict is
``refused`` with the reason. Only I/O problems with the file itself raise.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagewright.binary import ByteSource, ConcatSource, CountingSource, FileSource, PrefixSource
from imagewright.disk.survey import DiskSurvey, survey_disk
from imagewright.errors import ImageFormatError, as_clause
from imagewright.formats import registry
from imagewright.formats.base import HEAD_SIZE, Budget, FormatDetails, Limits, OpenedImage
from imagewright.formats.containers import open_container, probe_container
from imagewright.formats.safety import Verdict, judge
from imagewright.units import format_size

if TYPE_CHECKING:
    from imagewright.disk.filesystems import FilesystemInfo
    from imagewright.disk.table import PartitionTable

    # Annotations only: the container model is loaded when an image is a container.
    from imagewright.formats.containers import (
        ArchiveMember,
        ContainerDetails,
        ContainerFormat,
        ContainerKind,
        OpenedContainer,
    )

#: The phrase every reason to refuse something not examined carries (users and tests look for it).
NOT_EXAMINED = "could not be examined within the limit"


@dataclass
class MemberImage:
    """An archive member inspected as an image (or the joined chunks of an OVA file)."""

    name: str
    report: ImageReport


@dataclass
class ContainerReport:
    """A wrapper or archive around the image: what it is and what it holds."""

    format: ContainerFormat
    kind: ContainerKind
    #: The formats from the outside in (``["gzip", "ova"]``).
    layers: list[str]
    details: ContainerDetails
    uncompressed_size: int | None
    members: list[ArchiveMember] = field(default_factory=list)
    #: The members inspected by their content, in archive order.
    images: list[MemberImage] = field(default_factory=list)
    #: The container's own reasons to refuse (also in the image's verdict).
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The report of the decompressed content of a compressed wrapper.
    inner: ImageReport | None = None

    @classmethod
    def of(cls, opened: OpenedContainer) -> ContainerReport:
        """The report of what a container reader found (members and images not inspected yet)."""
        return cls(
            format=opened.format,
            kind=opened.kind,
            layers=list(opened.layers),
            details=opened.details,
            uncompressed_size=opened.uncompressed_size,
            members=opened.members,
            problems=list(opened.problems),
            notes=list(opened.notes),
        )

    def image_of(self, name: str) -> ImageReport | None:
        """The inspection of member ``name`` (None if it was not inspected as an image)."""
        for image in self.images:
            if image.name == name:
                return image.report
        return None


@dataclass
class ImageReport:
    """Everything ``inspect`` learned about one image (JSON-serialisable via ``to_dict``)."""

    path: str
    #: qemu-img's driver name (raw, qcow2, vmdk, vpc, vhdx, vdi ...) or the container format.
    format: str
    subformat: str | None = None
    virtual_size: int | None = None
    file_size: int = 0
    allocated_size: int | None = None
    backing_file: str | None = None
    backing_format: str | None = None
    #: The disk format's own header facts (``Qcow2Details``, ``VmdkDetails`` ...).
    details: FormatDetails | None = None
    container: ContainerReport | None = None
    disk: DiskSurvey | None = None
    verdict: Verdict = field(default_factory=Verdict)
    notes: list[str] = field(default_factory=list)
    bytes_read: int = 0

    @property
    def safe(self) -> bool:
        return self.verdict.safe

    @property
    def partition_table(self) -> PartitionTable | None:
        return self.disk.partition_table if self.disk else None

    @property
    def filesystem(self) -> FilesystemInfo | None:
        """The filesystem of an unpartitioned ("flat") image, if any."""
        return self.disk.filesystem if self.disk else None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Verdict):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict") and not isinstance(value, ImageReport):
            return _jsonable(value.to_dict())
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


@dataclass
class _Walk:
    limits: Limits
    #: The work the whole inspection may still do (shared by nested containers).
    budget: Budget
    #: A hook for tests and callers that want to see each image opened (format, depth).
    on_open: Callable[[str, int], None] | None = None


def inspect_image(path: str | os.PathLike[str], *, limits: Limits | None = None) -> ImageReport:
    """Inspect the image at ``path``. Never opens any other file.

    Raises ImageIOError when the file cannot be read at all; everything wrong *inside* the
    file is reported in the verdict instead.
    """
    with FileSource(path) as src:
        report = inspect_source(src, os.fspath(path), limits=limits)
        report.allocated_size = src.allocated_size
        report.bytes_read = src.bytes_read
    return report


def inspect_source(src: ByteSource, name: str, *, limits: Limits | None = None) -> ImageReport:
    """Inspect the image ``src`` (any ``ByteSource``: a file, a blob read by ranges) called ``name``."""
    limits = limits or Limits()
    report = _inspect_source(src, name, _Walk(limits, Budget(limits, src.size)), depth=0)
    report.file_size = src.size
    return report


def _refused(name: str, fmt: str, reason: str, earlier: tuple[str, ...] = ()) -> ImageReport:
    return ImageReport(path=name, format=fmt, verdict=Verdict((*earlier, reason)))


def _inspect_source(src: ByteSource, name: str, walk: _Walk, depth: int) -> ImageReport:
    if depth > walk.limits.max_nesting:
        return _refused(
            name,
            "unknown",
            f"containers are nested more than {walk.limits.max_nesting} deep; what is inside {NOT_EXAMINED}",
        )
    try:
        head = src.pread(0, HEAD_SIZE)
        kind = probe_container(src, head)
        if kind is not None:
            report = _inspect_container(src, name, walk, depth)
            conflict = registry.container_probe_conflict(src, head, kind)
            if conflict is not None:
                report.verdict = Verdict((conflict, *report.verdict.reasons))
            return report
        return _inspect_disk(src, head, name, walk)
    except ImageFormatError as err:
        # NotExaminedError (a read past what was decompressed, a budget) is one of these.
        return _refused(name, "unknown", as_clause(err))


def _inspect_disk(src: ByteSource, head: bytes, name: str, walk: _Walk) -> ImageReport:
    reader = registry.detect_disk_format(src, head)
    # Readers disagreeing on what the file is comes first: every other reason follows from
    # which reader looked, and it stands even when that reader cannot open the file at all.
    conflicts = registry.probe_conflicts(src, head, reader, os.path.basename(name))
    try:
        opened: OpenedImage = reader.module.open_image(src, walk.limits)
    except ImageFormatError as err:
        return _refused(name, reader.name, as_clause(err), tuple(conflicts))
    opened.problems[:0] = conflicts
    if walk.on_open:
        walk.on_open(opened.format, 0)
    report = ImageReport(
        path=name,
        format=opened.format,
        subformat=opened.subformat,
        virtual_size=opened.virtual_size,
        backing_file=opened.backing_file,
        backing_format=opened.backing_format,
        details=opened.details,
        verdict=judge(opened, walk.limits),
    )
    if report.verdict.safe:
        if opened.guest is not None:
            _survey_guest(report, opened.guest)
        elif opened.virtual_size > 0:
            report.verdict = Verdict((*report.verdict.reasons, _unread_guest_reason(opened)))
    return report


def _unread_guest_reason(opened: OpenedImage) -> str:
    """Why a disk whose guest bytes no reader here can read is not safe.

    ``safe`` promises that every byte a later step could interpret was judged. An encrypted
    guest (LUKS, qcow2 LUKS/AES, qcow AES) is read by whoever holds the key, and what they
    read (a partition table, or a qcow2 naming a backing file) was never seen here.
    """
    if opened.encryption is not None:
        return f"its guest data is encrypted ({opened.encryption}), so what it holds could not be examined"
    return "its guest data could not be read here, so what it holds could not be examined"


def _survey_guest(report: ImageReport, guest: ByteSource) -> None:
    try:
        conflict = registry.guest_probe_conflict(guest, report.format)
        if conflict is not None:
            report.verdict = Verdict((*report.verdict.reasons, conflict))
            return
        survey = survey_disk(guest)
    except ImageFormatError as err:
        report.verdict = Verdict((*report.verdict.reasons, as_clause(err)))
        return
    report.disk = survey
    reasons = list(survey.problems)
    if survey.partial:
        reasons.append(
            f"part of the guest disk {NOT_EXAMINED} (it lies beyond the decompressed data examined)"
        )
    if reasons:
        report.verdict = Verdict((*report.verdict.reasons, *reasons))
    report.notes.extend(survey.warnings)


def _inspect_container(src: ByteSource, name: str, walk: _Walk, depth: int) -> ImageReport:
    opened = open_container(src, walk.limits, name_hint=os.path.basename(name), budget=walk.budget)
    if walk.on_open:
        walk.on_open(opened.format, depth)
    container = ContainerReport.of(opened)
    reasons = list(opened.problems)
    if opened.partial and not opened.problems:
        # A reader that stopped early must say why; if it did not, the stop is still a refusal.
        reasons.append(f"the {opened.format} container {NOT_EXAMINED} to its end")
    report = ImageReport(path=name, format=opened.format, container=container)
    if opened.inner is not None:
        inner = _inspect_source(opened.inner, f"{name} (decompressed)", walk, depth + 1)
        if inner.format == "raw" and opened.uncompressed_size is None:
            # A raw disk's size is its length, which this wrapper does not record.
            inner.virtual_size = None
        container.inner = inner
        report.virtual_size = inner.virtual_size
        reasons.extend(inner.verdict.reasons)
    if opened.kind != "rootfs-archive":
        reasons.extend(_inspect_members(opened, container, walk, depth))
    report.verdict = Verdict(tuple(dict.fromkeys(reasons)))
    return report


def _member_targets(opened: OpenedContainer) -> list[tuple[str, ByteSource | None]]:
    """What an importer could hand on from the archive: every regular member with data,
    and each chunked OVA file as its joined chunks (instead of the chunks one by one)."""
    chunks = opened.details.ova.chunks if opened.details.ova is not None else {}
    in_chunks = {name for names in chunks.values() for name in names}
    by_name: dict[str, ArchiveMember] = {}
    targets: list[tuple[str, ByteSource | None]] = []
    for member in opened.members:
        if member.type != "file" or not member.size:
            continue
        if member.name in in_chunks:
            by_name[member.name] = member
            continue
        targets.append((member.name, member.source))
    for href, names in chunks.items():
        sources = [by_name[name].source for name in names if name in by_name]
        parts = [s for s in sources if s is not None and _complete(s)]
        joined = ConcatSource(parts) if parts and len(parts) == len(names) else None
        targets.append((f"{href} (joined from {len(names)} chunks)", joined))
    return targets


def _complete(src: ByteSource) -> bool:
    return not isinstance(src, PrefixSource) or src.complete


def _inspect_members(
    opened: OpenedContainer, container: ContainerReport, walk: _Walk, depth: int
) -> list[str]:
    """Inspect every member by its content; the reasons to refuse the archive for them."""
    targets = _member_targets(opened)
    most = walk.limits.max_examined_members
    if len(targets) > most:
        return [
            f"the archive holds {len(targets)} files, more than the {most} of an image package "
            f"imagewright examines; they {NOT_EXAMINED}"
        ]
    reasons: list[str] = []
    compressed = opened.format not in ("tar", "ova")  # a .tar.gz: members were kept in memory
    read_limit = walk.limits.max_member_read_bytes
    read = 0
    declared = _ovf_declared_formats(opened)
    for name, source in targets:
        if read > read_limit:
            reasons.append(
                f"member '{name[:200]}' {NOT_EXAMINED}: the members before it read more than the "
                f"{format_size(read_limit)} one archive's inspection may read"
            )
            continue
        if source is None or not _complete(source):
            why = (
                f"imagewright keeps at most {format_size(walk.limits.max_held_bytes)} of the member data "
                "of a compressed archive in memory"
                if compressed
                else "its data could not be read"
            )
            reasons.append(f"member '{name[:200]}' {NOT_EXAMINED}: {why}")
            continue
        counting = CountingSource(source)
        image = _inspect_source(counting, name, walk, depth + 1)
        read += counting.bytes_read
        container.images.append(MemberImage(name, image))
        mismatch = _declared_format_mismatch(name, image, declared.get(name))
        if mismatch is not None:
            reasons.append(mismatch)
        reasons.extend(f"member '{name[:200]}': {reason}" for reason in image.verdict.reasons)
    return reasons


#: What a member's name says it is: an importer that goes by the name hands it to this driver.
_SUFFIX_FORMATS = {
    ".vmdk": "vmdk",
    ".qcow2": "qcow2",
    ".vhd": "vpc",
    ".vhdx": "vhdx",
    ".vdi": "vdi",
    ".qed": "qed",
}
#: Words in an OVF ``Disk/@ovf:format`` URI, and the driver an importer picks for them
#: (VMware's ``vmdk.html#streamOptimized``, the qcow/VHD specification URLs ...).
_OVF_FORMAT_WORDS = (("vmdk", "vmdk"), ("qcow", "qcow2"), ("vhdx", "vhdx"), ("vhd", "vpc"), ("vdi", "vdi"))


def _ovf_declared_formats(opened: OpenedContainer) -> dict[str, tuple[str, bool]]:
    """Member name -> (the driver its OVF ``Disk`` declares or "", whether its File is
    compressed: ``ovf:compression``, which an importer undoes first)."""
    ova = opened.details.ova
    if ova is None or ova.descriptor is None:
        return {}
    files = {ref.id: ref for ref in ova.descriptor.references}
    declared: dict[str, tuple[str, bool]] = {}
    for disk in ova.descriptor.disks:
        ref = files.get(disk.file_ref or "")
        uri = (disk.format or "").lower()
        driver = next((fmt for word, fmt in _OVF_FORMAT_WORDS if word in uri), None)
        if ref is not None and (driver is not None or ref.compression):
            declared[ref.href] = (driver or "", bool(ref.compression))
    return declared


def _declared_format_mismatch(name: str, image: ImageReport, declared: tuple[str, bool] | None) -> str | None:
    """A reason to refuse a member whose OVF ``Disk`` or file name says another format.

    NOTE (safety): an importer that trusts the descriptor or the name runs ``qemu-img -f
    vmdk`` (say) on the member; QEMU's vmdk driver then reads any file that is not a sparse
    VMDK as descriptor text — a raw disk starting with a byte-order mark and extent lines, or
    a gzip whose header's file name holds them — and opens the files it names (red-team
    finding). So the content must be what it is declared to be.
    """
    expected, compressed = declared if declared is not None else ("", False)
    why = "its OVF descriptor declares it"
    if not expected:
        expected = _SUFFIX_FORMATS.get(os.path.splitext(name)[1].lower(), "")
        why = "its name says it is"
    if not expected:
        return None
    found = image
    if compressed and image.container is not None and image.container.inner is not None:
        found = image.container.inner  # the File is compressed (ovf:compression): judge what is inside
    if found.format == expected:
        return None
    return (
        f"member '{name[:200]}' is {found.format} but {why} {expected}; an importer that trusts that "
        f"would read it with QEMU's {expected} driver, by rules imagewright did not judge"
    )
