"""Inspection: what an image is, what is inside it, and whether it is safe to touch.

Pure Python, no subprocess, reads only headers and metadata. The walk:

1. Peel containers (gzip/xz/bzip2/zstd, tar, OVA): a compressed wrapper is looked into
   through a bounded decompressed prefix; an archive is judged by every member, and the
   members that are disk images (the OVA's disks, a tarred disk.raw) are inspected in turn.
2. Identify the disk format (qcow2, qcow, vmdk, vdi, vhdx, vpc, qed, parallels, luks, raw)
   and open it: the reader validates every header field and records references to other
   files and its own reasons to refuse.
3. Survey the guest's bytes through the format's own mapping: partition table, filesystem
   per partition (or a flat filesystem), boot code.
4. Judge: any reference outside the file, any reader problem, any structural problem of the
   partition table, and any refused member refuses the whole image.

A malformed or hostile image never raises here: it yields a report whose verdict is
``refused`` with the reason. Only I/O problems with the file itself raise.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imagewright.binary import ByteSource, FileSource, PrefixExhaustedError, PrefixSource
from imagewright.disk.survey import DiskSurvey, survey_disk
from imagewright.errors import ImageFormatError, UnsafeImageError
from imagewright.formats import registry
from imagewright.formats.base import HEAD_SIZE, Limits, OpenedImage
from imagewright.formats.containers import OpenedContainer, open_container, probe_container
from imagewright.formats.safety import Verdict, judge


@dataclass
class ContainerReport:
    """A wrapper or archive around the image: what it is and what it holds."""

    format: str
    kind: str
    details: Any
    uncompressed_size: int | None
    members: list[MemberReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The report of the decompressed content of a compressed wrapper.
    inner: ImageReport | None = None


@dataclass
class MemberReport:
    """One archive member; ``image`` is set for members that are disk images."""

    name: str
    type: str
    size: int
    mode: int | None = None
    linkname: str | None = None
    image: ImageReport | None = None


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
    details: Any = None
    container: ContainerReport | None = None
    disk: DiskSurvey | None = None
    verdict: Verdict = field(default_factory=Verdict)
    #: True when part of the image could not be examined (beyond a compressed prefix).
    partial: bool = False
    notes: list[str] = field(default_factory=list)
    bytes_read: int = 0

    @property
    def safe(self) -> bool:
        return self.verdict.safe

    @property
    def partition_table(self) -> Any:
        return self.disk.partition_table if self.disk else None

    @property
    def filesystem(self) -> Any:
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
    #: A hook for tests and callers that want to see each image opened (format, depth).
    on_open: Callable[[str, int], None] | None = None


def inspect_image(path: str | os.PathLike[str], *, limits: Limits | None = None) -> ImageReport:
    """Inspect the image at ``path``. Never opens any other file.

    Raises ImageIOError when the file cannot be read at all; everything wrong *inside* the
    file is reported in the verdict instead.
    """
    limits = limits or Limits()
    with FileSource(path) as src:
        report = _inspect_source(src, os.fspath(path), _Walk(limits), depth=0)
        report.file_size = src.size
        report.allocated_size = src.allocated_size
        report.bytes_read = src.bytes_read
    return report


def require_safe(report: ImageReport) -> ImageReport:
    """Return ``report`` if its image is safe, else raise UnsafeImageError with the reason."""
    if not report.verdict.safe:
        raise UnsafeImageError(
            f"{report.path} is refused: {report.verdict.reasons[0]}", report.verdict.reasons
        )
    return report


def _inspect_source(src: ByteSource, name: str, walk: _Walk, depth: int) -> ImageReport:
    if depth > walk.limits.max_nesting:
        return ImageReport(
            path=name,
            format="unknown",
            verdict=Verdict((f"containers are nested more than {walk.limits.max_nesting} deep",)),
        )
    try:
        head = src.pread(0, HEAD_SIZE)
        kind = probe_container(src, head)
        if kind is not None:
            return _inspect_container(src, name, walk, depth)
        return _inspect_disk(src, head, name, walk)
    except PrefixExhaustedError as err:
        return ImageReport(path=name, format="unknown", partial=True, notes=[str(err)])
    except ImageFormatError as err:
        return ImageReport(path=name, format="unknown", verdict=Verdict((_reason(err),)))


def _reason(err: Exception) -> str:
    """Turn an error sentence into a verdict reason (lower-case start, no final period)."""
    text = str(err).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _inspect_disk(src: ByteSource, head: bytes, name: str, walk: _Walk) -> ImageReport:
    reader = registry.detect_disk_format(src, head)
    try:
        opened: OpenedImage = reader.module.open_image(src, walk.limits)
    except PrefixExhaustedError as err:
        return ImageReport(path=name, format=reader.name, partial=True, notes=[str(err)])
    except ImageFormatError as err:
        return ImageReport(path=name, format=reader.name, verdict=Verdict((_reason(err),)))
    opened.problems.extend(registry.probe_conflicts(src, head, reader))
    if walk.on_open:
        walk.on_open(opened.format, 0)
    report = _report_from_opened(name, opened, walk.limits)
    if opened.guest is not None and report.verdict.safe:
        _survey_guest(report, opened)
    return report


def _report_from_opened(name: str, opened: OpenedImage, limits: Limits) -> ImageReport:
    return ImageReport(
        path=name,
        format=opened.format,
        subformat=opened.subformat,
        virtual_size=opened.virtual_size,
        backing_file=opened.backing_file,
        backing_format=opened.backing_format,
        details=opened.details,
        verdict=judge(opened, limits),
    )


def _survey_guest(report: ImageReport, opened: OpenedImage) -> None:
    guest = opened.guest
    assert guest is not None
    try:
        survey = survey_disk(guest)
    except PrefixExhaustedError as err:
        report.partial = True
        report.notes.append(f"the guest disk was only partly examined: {_reason(err)}")
        return
    except ImageFormatError as err:
        report.verdict = Verdict((*report.verdict.reasons, _reason(err)))
        return
    report.disk = survey
    if survey.problems:
        report.verdict = Verdict((*report.verdict.reasons, *survey.problems))
    report.notes.extend(survey.warnings)
    if survey.partial:
        report.partial = True


def _inspect_container(src: ByteSource, name: str, walk: _Walk, depth: int) -> ImageReport:
    opened = open_container(src, walk.limits, name_hint=os.path.basename(name))
    if walk.on_open:
        walk.on_open(opened.format, depth)
    container = ContainerReport(
        format=opened.format,
        kind=opened.kind,
        details=opened.details,
        uncompressed_size=opened.uncompressed_size,
        notes=list(opened.notes),
    )
    reasons = list(opened.problems)
    report = ImageReport(path=name, format=opened.format, container=container, partial=opened.partial)
    if opened.inner is not None:
        inner = _inspect_source(opened.inner, f"{name} (decompressed)", walk, depth + 1)
        if inner.format == "raw" and _is_prefix_of_unknown(opened):
            # A raw disk's size is its length, which this wrapper does not record.
            inner.virtual_size = None
        container.inner = inner
        report.virtual_size = inner.virtual_size
        report.partial = report.partial or inner.partial
        reasons.extend(inner.verdict.reasons)
    # Archive members that are disk images (an OVA's disks, a tarred disk.raw) are judged in turn.
    image_members = set(opened.disk_members())
    for member in opened.members:
        member_report = MemberReport(
            name=member.name, type=member.type, size=member.size, mode=member.mode, linkname=member.linkname
        )
        if member.source is not None and member.name in image_members:
            image = _inspect_source(member.source, member.name, walk, depth + 1)
            member_report.image = image
            report.partial = report.partial or image.partial
            reasons.extend(f"member '{member.name}': {reason}" for reason in image.verdict.reasons)
        container.members.append(member_report)
    report.verdict = Verdict(tuple(dict.fromkeys(reasons)))
    return report


def _is_prefix_of_unknown(opened: OpenedContainer) -> bool:
    inner = opened.inner
    return isinstance(inner, PrefixSource) and not inner.total_size_known
