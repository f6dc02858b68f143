"""Judging a scanned tar, compressed or not: its kind, its members' faults, its OVA package."""

from __future__ import annotations

from imagewright.binary import read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats.base import Limits
from imagewright.formats.containers.classify import classify, judge_members
from imagewright.formats.containers.model import ArchiveMember, ContainerKind, OvaDetails
from imagewright.formats.containers.ova import ReadMember, read_ova
from imagewright.formats.containers.problems import Findings, as_problem
from imagewright.units import format_size

#: ``NAME_MAX``: the longest file name (one path component, in bytes) ext4 and every Linux
#: file system imagewright builds hold. (A whole path over ``PATH_MAX`` is refused by the tar
#: reader itself.) A root filesystem member with a longer one stopped ``build`` half way.
NAME_MAX = 255


def _longest_component(name: str) -> bytes:
    return max((part.encode("utf-8", "replace") for part in name.split("/")), key=len, default=b"")


def judge_archive(
    members: list[ArchiveMember],
    read_member: ReadMember,
    limits: Limits,
    findings: Findings,
    name_hint: str | None,
) -> tuple[ContainerKind, OvaDetails | None]:
    kind = classify(members)
    judge_members(kind, members, findings)
    if kind == "rootfs-archive":
        # A sparse member's size costs the archive nothing; no disk imagewright builds holds it.
        for member in members:
            if member.type == "file" and member.size > limits.max_virtual_size:
                findings.problem(
                    f"member '{member.name[:200]}' claims {format_size(member.size)}, more than the "
                    f"{format_size(limits.max_virtual_size)} of the largest disk imagewright builds",
                    "member too large",
                )
            component = _longest_component(member.name)
            if len(component) > NAME_MAX:
                findings.problem(
                    f"member '{member.name[:200]}' has a name component of {len(component)} bytes, "
                    f"more than the {NAME_MAX} a Linux file system holds; the root filesystem cannot "
                    "be built from it",
                    "name too long",
                )
    ova: OvaDetails | None = None
    if kind == "ova":
        try:
            ova = read_ova(members, read_member, limits, findings)
        except ImageFormatError as err:
            findings.problem(as_problem(err))
    elif name_hint and name_hint.lower().endswith(".ova"):
        findings.note(f"'{name_hint}' is named like an OVA but holds no OVF descriptor")
    return kind, ova


def read_from_source(member: ArchiveMember, limit: int) -> bytes | None:
    """Whole content of a member of an uncompressed tar (its ``source``), if small enough."""
    if member.source is None or member.size > limit:
        return None
    try:
        return read_exact(member.source, 0, member.size, f"member '{member.name[:200]}'")
    except ImageFormatError:
        return None
