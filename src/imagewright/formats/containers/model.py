"""What a container reader hands back: ``OpenedContainer`` and its members.

JSON: ``OpenedContainer.to_dict()`` and ``ArchiveMember.to_dict()`` give plain data. The
byte sources (``OpenedContainer.inner``, ``ArchiveMember.source``) are declared with
``repr=False, compare=False`` and left out of ``to_dict``; do not call
``dataclasses.asdict`` on an ``OpenedContainer`` (it would deep-copy open files).

Layers: ``layers`` lists the formats from the outside in, e.g. ``["gzip"]`` (a compressed
disk image: ``inner`` reads its decompressed bytes), ``["xz", "tar"]`` (a ``.tar.xz``:
``format`` is ``"xz"``, ``kind`` is the tar's kind, ``members`` are the tar's members and
``inner`` is None because the archive is judged member by member), ``["ova"]`` (an OVA),
``["gzip", "ova"]`` (a gzipped OVA).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from imagewright.binary import ByteSource
from imagewright.formats.containers.bzip2 import Bzip2Details
from imagewright.formats.containers.gzip import GzipDetails
from imagewright.formats.containers.manifest import CertificateInfo, ManifestSummary
from imagewright.formats.containers.ovf import OvfDescriptor
from imagewright.formats.containers.xz import XzDetails
from imagewright.formats.containers.zstd import ZstdDetails

ContainerFormat = Literal["gzip", "xz", "bzip2", "zstd", "tar", "ova"]
ContainerKind = Literal["compressed", "ova", "disk-archive", "rootfs-archive", "archive"]
MemberType = Literal["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "other"]
TarFormat = Literal["ustar", "gnu", "pax", "v7"]


@dataclass(slots=True)
class ArchiveMember:
    """One tar member as a reader of the archive would see it (pax/GNU extensions applied).

    ``source``: for an uncompressed tar, a window onto the member's bytes in the file (for a
    sparse member, a view that fills the holes with zeros); for a compressed tar, a
    ``PrefixSource`` of the member's whole content captured during the scan; None for an
    empty or non-regular member, a member of a root filesystem tarball, and a member whose
    content did not fit in the inspection's budget (which the inspection then refuses).

    Slotted: an archive may list 200 000 of them.
    """

    name: str
    type: MemberType
    #: Apparent size (for a sparse member, the size of the file it expands to).
    size: int
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    mtime: int
    linkname: str | None
    #: Offset of the member's stored data in the (decompressed) tar stream.
    data_offset: int
    #: Bytes of data stored in the archive (differs from ``size`` for sparse members).
    stored_size: int
    #: The raw type flag ('0', '5', 'S', ...).
    typeflag: str = "0"
    sparse: bool = False
    devmajor: int | None = None
    devminor: int | None = None
    #: Offset of the member's own header block in the tar stream.
    header_offset: int = 0
    source: ByteSource | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}


@dataclass
class TarDetails:
    """Facts about the tar layer."""

    #: "pax" if any pax header was used, else "gnu" (GNU/oldgnu magic), "ustar" or "v7".
    format: TarFormat
    member_count: int
    #: Sum of the apparent sizes of regular files.
    total_size: int
    #: Bytes of the tar stream up to and including the end-of-archive marker (or where the scan stopped).
    archive_size: int
    end_marker: bool
    sparse_members: int = 0
    global_headers: int = 0
    #: How many members of each type ({"file": 3, "dir": 2}).
    types: dict[str, int] = field(default_factory=dict)


@dataclass
class OvaDetails:
    """The OVF package inside an OVA: descriptor summary, manifest and certificate."""

    descriptor_name: str | None
    descriptor: OvfDescriptor | None
    manifest_name: str | None = None
    manifest: ManifestSummary | None = None
    certificate_name: str | None = None
    certificate: CertificateInfo | None = None
    #: Member names holding the disks the descriptor's DiskSection uses (a label: every
    #: member is inspected by its content, whatever the descriptor says of it).
    disk_files: list[str] = field(default_factory=list)
    #: Files stored in chunks (``ovf:chunkSize``): href -> the chunk members, in order. An
    #: importer joins them, so the inspection judges the joined file.
    chunks: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ContainerDetails:
    """Typed facts per layer; the fields of layers that are absent are None."""

    compression: GzipDetails | XzDetails | Bzip2Details | ZstdDetails | None = None
    archive: TarDetails | None = None
    ova: OvaDetails | None = None


@dataclass
class OpenedContainer:
    """A compressed wrapper or an archive: what it is, what it holds, what is wrong with it."""

    format: ContainerFormat
    kind: ContainerKind
    details: ContainerDetails
    layers: list[str]
    #: Exact decompressed size when the container records it or it was decompressed to the end;
    #: None for an uncompressed archive (its stream size is ``details.archive.archive_size``).
    uncompressed_size: int | None = None
    members: list[ArchiveMember] = field(default_factory=list)
    #: One sentence per reason to refuse (lower-case start, no final period).
    problems: list[str] = field(default_factory=list)
    #: Observations that are not reasons to refuse.
    notes: list[str] = field(default_factory=list)
    #: True when part of the container was not examined (a stream or scan cut short by a
    #: fault or a limit); ``problems`` then says why, so the container is refused.
    partial: bool = False
    #: Compressed disk image: a PrefixSource of the decompressed bytes (all of them unless
    #: ``partial``), sized by the container's record when there is one.
    inner: ByteSource | None = field(default=None, repr=False, compare=False)

    def member(self, name: str) -> ArchiveMember | None:
        for member in self.members:
            if member.name == name:
                return member
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "kind": self.kind,
            "layers": list(self.layers),
            "details": dataclasses.asdict(self.details),
            "uncompressed_size": self.uncompressed_size,
            "members": [m.to_dict() for m in self.members],
            "problems": list(self.problems),
            "notes": list(self.notes),
            "partial": self.partial,
        }
