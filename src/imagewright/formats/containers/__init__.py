"""Container readers: compressed wrappers (gzip, xz, bzip2, zstd) and archives (tar, OVA).

Peeled without extracting anything, and judged by what they contain::

    probe_container(src, head) -> "gzip" | "xz" | "bzip2" | "zstd" | "tar" | "ova" | None
    open_container(src, limits, name_hint=None, budget=None) -> OpenedContainer
    examine_stream(src, compression, limits, sink) -> OpenedContainer   # spool a whole stream, judged
    JudgedStream(src, compression, limits).pieces() -> decompressed pieces, judged as they pass

``probe_container`` is cheap: magic bytes, and for a tar the first headers (``"ova"`` when
one of the first ``PROBE_MEMBERS`` members is a ``.ovf`` at the top of the archive). ``open_container`` is
authoritative: it reads the whole header structure and may answer ``"ova"`` for a tar whose
descriptor comes later. See ``model`` for what it returns (and how to turn it into JSON),
``compressed`` for how a wrapper is looked into, ``tar``/``classify``/``ova`` for archives.

Modules: ``gzip``, ``xz``, ``bzip2``, ``zstd`` (per-format headers), ``decompress``
(bounded forward decompression), ``tar`` (headers and the scan), ``sparse`` (GNU sparse
members), ``classify`` (archive kinds and member rules), ``ovf`` (descriptor), ``manifest``
(``.mf``/``.cert``; ``manifest_entries`` for the package stage), ``ova`` (the package checks).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

from imagewright.binary import ByteSource
from imagewright.errors import ImageFormatError
from imagewright.formats.base import HEAD_SIZE, Budget, Limits
from imagewright.formats.containers.signature import probe_compression
from imagewright.formats.containers.tar_header import looks_like_tar

if TYPE_CHECKING:
    from imagewright.formats.containers.compressed import JudgedStream, examine_stream
    from imagewright.formats.containers.manifest import ManifestEntry, manifest_entries, parse_manifest
    from imagewright.formats.containers.model import (
        ArchiveMember,
        ContainerDetails,
        ContainerFormat,
        ContainerKind,
        OpenedContainer,
        OvaDetails,
        TarDetails,
    )

#: Names this package exports from its modules, loaded on first use: every inspection asks
#: ``probe_container``, and only a container needs the readers, the model and the OVF parser.
_EXPORTED = {
    "ArchiveMember": "model",
    "ContainerDetails": "model",
    "ContainerFormat": "model",
    "ContainerKind": "model",
    "OpenedContainer": "model",
    "OvaDetails": "model",
    "TarDetails": "model",
    "ManifestEntry": "manifest",
    "manifest_entries": "manifest",
    "parse_manifest": "manifest",
    "examine_stream": "compressed",
    "JudgedStream": "compressed",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTED[name]}"), name)


__all__ = [
    "PROBE_MEMBERS",
    "ArchiveMember",
    "ContainerDetails",
    "ContainerFormat",
    "ContainerKind",
    "JudgedStream",
    "ManifestEntry",
    "OpenedContainer",
    "OvaDetails",
    "TarDetails",
    "examine_stream",
    "manifest_entries",
    "open_container",
    "parse_manifest",
    "probe_container",
]

#: How many members ``probe_container`` looks at to tell an OVA from a plain tar.
PROBE_MEMBERS = 64
#: Bytes after the end-of-archive marker read at a time to check they are zero padding.
_TRAILING_STEP = 64 * 1024


def probe_container(src: ByteSource, head: bytes) -> str | None:
    """The container format at the start of ``src`` (``head`` = its first bytes), or None."""
    compression = probe_compression(head)
    if compression is not None:
        return compression
    if not looks_like_tar(head[:512]):
        return None
    from imagewright.formats.containers.classify import is_top_level_ovf
    from imagewright.formats.containers.streams import SourceInput
    from imagewright.formats.containers.tar import TarScanner

    limits = dataclasses.replace(Limits(), max_archive_members=PROBE_MEMBERS)
    scan = TarScanner(SourceInput(src), limits, budget=Budget(limits, src.size), file_source=src).scan()
    return "ova" if any(is_top_level_ovf(m) for m in scan.members) else "tar"


def _data_after_end(src: ByteSource, end: int) -> bool:
    """True when anything but zero bytes follows the end-of-archive marker at ``end``."""
    position = end
    while position < src.size:
        piece = src.pread(position, min(_TRAILING_STEP, src.size - position))
        if not piece or any(piece):
            return bool(piece)
        position += len(piece)
    return False


def open_container(
    src: ByteSource, limits: Limits, name_hint: str | None = None, budget: Budget | None = None
) -> OpenedContainer:
    """Open the container at the start of ``src``; ImageFormatError if there is none or its
    headers cannot be read at all. Everything wrong inside is in ``problems``.

    ``budget``: the work the whole inspection may still do (nested containers share one);
    by default, what ``src``'s own size pays for.
    """
    from imagewright.formats.containers.compressed import open_compressed

    budget = budget if budget is not None else Budget(limits, src.size)
    head = src.pread(0, HEAD_SIZE)
    compression = probe_compression(head)
    if compression is not None:
        return open_compressed(src, compression, limits, name_hint, budget)
    if looks_like_tar(head[:512]):
        return open_tar(src, limits, name_hint, budget)
    raise ImageFormatError("The file is neither a compressed stream nor a tar archive.")


def open_tar(
    src: ByteSource, limits: Limits, name_hint: str | None = None, budget: Budget | None = None
) -> OpenedContainer:
    """An uncompressed tar (or OVA): headers only; members get a window onto their bytes."""
    from imagewright.formats.containers.archive import judge_archive, read_from_source
    from imagewright.formats.containers.model import ContainerDetails, OpenedContainer
    from imagewright.formats.containers.problems import Findings
    from imagewright.formats.containers.streams import SourceInput
    from imagewright.formats.containers.tar import TRAILING_DATA, TarScanner

    findings = Findings()
    budget = budget if budget is not None else Budget(limits, src.size)
    scan = TarScanner(SourceInput(src), limits, budget=budget, file_source=src, findings=findings).scan()
    if scan.complete and _data_after_end(src, scan.details.archive_size):
        findings.problem(TRAILING_DATA.format(where=f" ({src.size - scan.details.archive_size} bytes)"))
    kind, ova = judge_archive(scan.members, read_from_source, limits, findings, name_hint)
    findings.finish()
    fmt: ContainerFormat = "ova" if kind == "ova" else "tar"
    return OpenedContainer(
        format=fmt,
        kind=kind,
        details=ContainerDetails(archive=scan.details, ova=ova),
        layers=[fmt],
        uncompressed_size=None,
        members=scan.members,
        problems=findings.problems,
        notes=findings.notes,
        partial=not scan.complete,
    )
