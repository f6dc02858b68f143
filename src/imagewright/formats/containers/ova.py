"""An OVA: the OVF package (descriptor, manifest, certificate, disks) as members of a tar.

Judged against DSP0243 and what importers do (spec digest sections 2.1, 2.2, 2.6):
- the descriptor is the first ``*.ovf`` member (VirtualBox picks the first one too), and
  every other ``*.ovf`` member is judged the same way (another importer may pick it);
- every ``References/File`` must be a member of the archive (chunked files as
  ``href.000000000``, ``href.000000001`` …, every chunk but the last ``chunkSize`` bytes)
  with the size the descriptor states;
- which members are disks is a label only: the inspection examines every member by its
  content (an ISO only a CD-ROM item uses, a file no Disk references, a chunked disk as its
  joined chunks), because importers differ in what they pick;
- manifest and certificate are reported, not verified (that reads the members' data: the
  package stage does it with ``manifest.manifest_entries``);
- member order (descriptor, then manifest/certificate, then files in References order; or
  manifest/certificate at the very end) matters only to streaming importers: deviations are
  notes, not problems.
"""

from __future__ import annotations

from collections.abc import Callable

from imagewright.errors import ImageFormatError
from imagewright.formats.base import Limits
from imagewright.formats.containers.classify import is_ovf_name, normalize
from imagewright.formats.containers.manifest import (
    MAX_CERTIFICATE_BYTES,
    MAX_MANIFEST_BYTES,
    parse_certificate,
    parse_manifest,
    summarize_manifest,
)
from imagewright.formats.containers.model import ArchiveMember, OvaDetails
from imagewright.formats.containers.ovf import (
    MAX_DESCRIPTOR_BYTES,
    OvfDescriptor,
    OvfFile,
    href_problem,
    parse_descriptor,
)
from imagewright.formats.containers.problems import Findings, as_problem

#: Returns the whole content of a member if it is at most ``limit`` bytes and available, else None.
ReadMember = Callable[[ArchiveMember, int], bytes | None]


def _base(name: str) -> str:
    return name.rsplit(".", 1)[0].lower()


def _pick(candidates: list[ArchiveMember], base: str) -> ArchiveMember | None:
    for member in candidates:
        if _base(member.name) == base:
            return member
    return candidates[0] if candidates else None


def chunk_name(href: str, index: int) -> str:
    """DSP0243 5.4: chunk N of a file is ``href`` + "." + N as nine (or more) digits."""
    return f"{href}.{index:09d}"


def disk_hrefs(descriptor: OvfDescriptor) -> list[str]:
    """The hrefs of the files the descriptor's disks use (unchunked, safe hrefs only)."""
    by_id = {f.id: f for f in descriptor.references}
    hrefs: list[str] = []
    for disk in descriptor.disks:
        ref = by_id.get(disk.file_ref or "")
        if ref is not None and not ref.chunk_size and href_problem(ref.href) is None:
            hrefs.append(ref.href)
    return hrefs


def read_ova(
    members: list[ArchiveMember], read_member: ReadMember, limits: Limits, findings: Findings
) -> OvaDetails:
    files = [m for m in members if m.type == "file"]
    # The first descriptor at the top of the archive; a deeper one only if there is none.
    descriptors = sorted((m for m in files if is_ovf_name(m.name)), key=lambda m: "/" in normalize(m.name))
    if not descriptors:
        raise ImageFormatError("The archive holds no OVF descriptor.")
    descriptor_member = descriptors[0]
    details = OvaDetails(descriptor_name=descriptor_member.name, descriptor=None)
    if len(descriptors) > 1:
        findings.note(
            f"the archive holds {len(descriptors)} OVF descriptors; the first, "
            f"'{descriptor_member.name}', is used"
        )
    if "/" in normalize(descriptor_member.name):
        findings.note(f"the OVF descriptor '{descriptor_member.name}' is not at the top of the archive")
    base = _base(descriptor_member.name)
    manifest_member = _pick([m for m in files if m.name.lower().endswith(".mf")], base)
    certificate_member = _pick([m for m in files if m.name.lower().endswith(".cert")], base)

    descriptor = _read_descriptor(descriptor_member, read_member, limits, findings)
    details.descriptor = descriptor
    by_name = {normalize(m.name): m for m in files}
    if descriptor is not None:
        details.chunks = _check_references(descriptor, by_name, findings)
        details.disk_files = [by_name[h].name for h in disk_hrefs(descriptor) if h in by_name]
    # An importer may pick another descriptor than the first: each is judged (its hrefs, the
    # files it references), not only the one summarised.
    for other in descriptors[1:]:
        reading = _read_descriptor(other, read_member, limits, findings)
        if reading is not None:
            details.chunks.update(_check_references(reading, by_name, findings))

    if manifest_member is not None:
        details.manifest_name = manifest_member.name
        _read_manifest(manifest_member, read_member, by_name, findings, details)
        if _base(manifest_member.name) != base:
            findings.note(f"the manifest '{manifest_member.name}' is not named after the descriptor")
    if certificate_member is not None:
        details.certificate_name = certificate_member.name
        data = _read_small(certificate_member, read_member, MAX_CERTIFICATE_BYTES, "certificate", findings)
        if data is not None:
            info, problems = parse_certificate(data)
            details.certificate = info
            for problem in problems:
                findings.problem(f"certificate '{certificate_member.name}': {problem}")
            if manifest_member is None:
                findings.note("the certificate has no manifest to sign")
            elif info.signed_file is not None and info.signed_file != manifest_member.name:
                findings.note(
                    f"the certificate signs '{info.signed_file}', not the manifest '{manifest_member.name}'"
                )
    _check_order(
        files=files,
        descriptor=descriptor_member,
        manifest=manifest_member,
        certificate=certificate_member,
        summary=descriptor,
        findings=findings,
    )
    return details


def _read_small(
    member: ArchiveMember, read_member: ReadMember, limit: int, what: str, findings: Findings
) -> bytes | None:
    if member.size > limit:
        findings.problem(f"the {what} '{member.name}' is larger than {limit // (1024 * 1024)} MiB")
        return None
    data = read_member(member, limit)
    if data is None:
        findings.problem(f"the {what} '{member.name}' could not be read")
    return data


def _read_descriptor(
    member: ArchiveMember, read_member: ReadMember, limits: Limits, findings: Findings
) -> OvfDescriptor | None:
    data = _read_small(member, read_member, MAX_DESCRIPTOR_BYTES, "OVF descriptor", findings)
    if data is None:
        return None
    try:
        reading = parse_descriptor(data, limits.max_virtual_size)
    except ImageFormatError as err:
        findings.problem(as_problem(err))
        return None
    for problem in reading.problems:
        findings.problem(problem)
    for note in reading.notes:
        findings.note(note)
    return reading.descriptor


#: Most chunks one file may be stored in.
MAX_CHUNKS = 10_000


def _chunks(ref: OvfFile, by_name: dict[str, ArchiveMember], findings: Findings) -> list[str]:
    """The chunk members of a chunked file, in order (DSP0243 5.4), checked for size."""
    names: list[str] = []
    while len(names) < MAX_CHUNKS and chunk_name(ref.href, len(names)) in by_name:
        names.append(chunk_name(ref.href, len(names)))
    if not names:
        findings.problem(
            f"the OVF descriptor references the chunked file '{ref.href}', which is not in the archive"
        )
        return names
    if len(names) == MAX_CHUNKS:
        findings.problem(f"'{ref.href}' is stored in more than {MAX_CHUNKS} chunks")
    sizes = [by_name[name].size for name in names]
    chunk_size = ref.chunk_size or 0
    if any(size != chunk_size for size in sizes[:-1]) or sizes[-1] > chunk_size or not sizes[-1]:
        findings.problem(
            f"the chunks of '{ref.href}' are not {chunk_size} bytes each (the last one at most); "
            "importers would join them differently"
        )
    if ref.size is not None and sum(sizes) != ref.size:
        findings.problem(
            f"the chunks of '{ref.href}' hold {sum(sizes)} bytes, but the OVF descriptor says {ref.size}"
        )
    findings.note(f"'{ref.href}' is stored in {len(names)} chunks of {chunk_size} bytes")
    return [by_name[name].name for name in names]


def _check_references(
    descriptor: OvfDescriptor, by_name: dict[str, ArchiveMember], findings: Findings
) -> dict[str, list[str]]:
    file_ids = {f.id for f in descriptor.references}
    chunks: dict[str, list[str]] = {}
    for ref in descriptor.references:
        if href_problem(ref.href) is not None:
            continue  # already a problem of the descriptor
        if ref.chunk_size:
            chunks[ref.href] = _chunks(ref, by_name, findings)
            continue
        member = by_name.get(ref.href)
        if member is None:
            findings.problem(f"the OVF descriptor references '{ref.href}', which is not in the archive")
        elif ref.size is not None and ref.size != member.size:
            findings.problem(
                f"'{ref.href}' is {member.size} bytes in the archive, but the OVF descriptor says {ref.size}"
            )
    for disk in descriptor.disks:
        if disk.file_ref and disk.file_ref not in file_ids:
            findings.problem(
                f"disk '{disk.disk_id}' uses the file id '{disk.file_ref}', which References does not declare"
            )
    return chunks


def _read_manifest(
    member: ArchiveMember,
    read_member: ReadMember,
    by_name: dict[str, ArchiveMember],
    findings: Findings,
    details: OvaDetails,
) -> None:
    data = _read_small(member, read_member, MAX_MANIFEST_BYTES, "manifest", findings)
    if data is None:
        return
    entries, problems = parse_manifest(data)
    details.manifest = summarize_manifest(entries)
    for problem in problems:
        findings.problem(f"manifest '{member.name}': {problem}", "manifest line")
    listed = {entry.name for entry in entries}
    for name in details.manifest.names:
        if name not in by_name:
            findings.note(f"the manifest lists '{name}', which is not in the archive", "manifest extra")
    for name, other in by_name.items():
        if other is member or name.lower().endswith((".mf", ".cert")):
            continue
        if name not in listed:
            findings.note(f"'{name}' has no manifest entry", "manifest missing")


def _check_order(
    *,
    files: list[ArchiveMember],
    descriptor: ArchiveMember,
    manifest: ArchiveMember | None,
    certificate: ArchiveMember | None,
    summary: OvfDescriptor | None,
    findings: Findings,
) -> None:
    position = {id(m): i for i, m in enumerate(files)}
    if position[id(descriptor)] != 0:
        findings.note("the OVF descriptor is not the first member (streaming importers expect it first)")
    last = len(files) - 1
    signed = [m for m in (manifest, certificate) if m is not None]
    if signed:
        places = sorted(position[id(m)] for m in signed)
        after_descriptor = places == list(range(1, 1 + len(places)))
        at_end = places == list(range(last - len(places) + 1, last + 1))
        if not (after_descriptor or at_end):
            findings.note("the manifest/certificate neither follow the descriptor nor end the archive")
    if summary is None:
        return
    by_name = {normalize(m.name): m for m in files}
    order = [position[id(by_name[ref.href])] for ref in summary.references if ref.href in by_name]
    if order != sorted(order):
        findings.note("the files are not in the order the descriptor's References lists them")
    referenced = {ref.href for ref in summary.references}
    for member in files:
        name = normalize(member.name)
        if member is descriptor or any(member is m for m in signed):
            continue
        base = name.rsplit(".", 1)[0] if name.rsplit(".", 1)[-1].isdigit() else name
        if name not in referenced and base not in referenced:
            findings.note(f"member '{member.name}' is not referenced by the descriptor", "unreferenced")
