"""Reading an OVA back: ``package verify``, and the one-pass extraction ``convert`` uses.

What is checked (the reasons to refuse, in the order they are found):

1. **Structure and the disks' own safety** — ``inspect`` (the safety gate's inspection): a
   tar whose members are regular files with flat names, no duplicates; a descriptor that is
   well-formed XML without DTD, entities or XInclude, referencing only its own members, by
   plain names, with the sizes the archive holds; every disk member judged by the disk
   readers (a qcow2 with a backing file inside an OVA is refused there).
2. **Member order** (DSP0243 5.3): the descriptor first; manifest and certificate right
   after it or at the very end; the referenced files in References order.
3. **Every digest** — one sequential read of the archive hashes each member with the
   algorithms its manifest lines name; a member the manifest does not list, or a line that
   names no member, is refused too (an importer would either skip the check or fail).
4. **The signature** — the ``.cert`` signs the ``.mf`` bytes (RSA PKCS#1 v1.5 with the named
   digest) with the key of the certificate that follows it; the certificate chain against
   ``--ca`` (a self-signed certificate without ``--ca`` is a warning, as VirtualBox has it).
5. **Descriptor against the disks** — every Disk's capacity equals its image's virtual size,
   and a disk declared streamOptimized VMDK is one.

The readers are ``formats/containers`` (tar scan, OVF descriptor, manifest and certificate
lines) and ``inspection``; this module only adds what needs the members' bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from imagewright.binary import ByteSource, FileSource, read_exact
from imagewright.errors import (
    ImageFormatError,
    ImageIOError,
    ImagewrightError,
    UnsafeImageError,
    UnsupportedFormatError,
)
from imagewright.files import io_error
from imagewright.formats.base import Limits
from imagewright.formats.containers import ArchiveMember, OpenedContainer, OvaDetails, open_container
from imagewright.formats.containers.manifest import (
    MAX_CERTIFICATE_BYTES,
    MAX_MANIFEST_BYTES,
    ManifestEntry,
    manifest_entries,
    parse_certificate,
)
from imagewright.formats.containers.ovf import OvfDescriptor
from imagewright.inspection import ImageReport, inspect_source
from imagewright.package.ovf_descriptor import STREAM_OPTIMIZED
from imagewright.package.signing import ChainCheck, check_chain, load_certificates, verify_signature

_READ = 4 << 20
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
#: ``progress(done, total)``: archive bytes read.
ByteProgress = Callable[[int, int], None]


@dataclass
class MemberCheck:
    """One member's digests: what the manifest says and what its bytes give."""

    name: str
    size: int
    #: algorithm → (expected, actual)
    digests: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.digests) and all(expected == actual for expected, actual in self.digests.values())


@dataclass
class SignatureCheck:
    algorithm: str
    signed_file: str
    valid: bool
    subject: str | None
    chain: ChainCheck | None
    #: SHA-256 of the signing certificate (DER), hex: what a consumer can pin, the subject
    #: being only what the certificate claims.
    certificate_sha256: str | None = None


@dataclass
class OvaVerification:
    """Everything ``package verify`` found; ``ok`` when there is no problem."""

    path: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    descriptor: str | None = None
    manifest: str | None = None
    certificate: str | None = None
    members: list[MemberCheck] = field(default_factory=list)
    signature: SignatureCheck | None = None
    #: Disk member name → its inspection verdict and virtual size.
    disks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Where extracted members were written (``extract_ova_disk``).
    extracted: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        for member, check in zip(data["members"], self.members, strict=True):
            member["ok"] = check.ok
        return data

    def refuse(self) -> None:
        """UnsafeImageError naming the first problem (and carrying all), if there is one."""
        if self.problems:
            raise UnsafeImageError(f"{self.path} is refused: {self.problems[0]}", tuple(self.problems))


def verify_ova(
    path: str | Path,
    *,
    trusted: list[x509.Certificate] | None = None,
    limits: Limits | None = None,
    progress: ByteProgress | None = None,
    extract: Callable[[str], Path | None] | None = None,
) -> OvaVerification:
    """Check the OVA at ``path`` (see the module docstring); never raises for what is inside.

    ``extract(member_name)`` may return a path to copy that member's bytes to during the
    digest pass (the extraction ``convert`` does); the copies are only to be used when the
    verification is ``ok``.
    """
    path = Path(path)
    with FileSource(path) as src:
        return verify_ova_source(
            src, str(path), trusted=trusted, limits=limits, progress=progress, extract=extract
        )


def verify_ova_source(
    src: ByteSource,
    name: str,
    *,
    report: ImageReport | None = None,
    trusted: list[x509.Certificate] | None = None,
    limits: Limits | None = None,
    progress: ByteProgress | None = None,
    extract: Callable[[str], Path | None] | None = None,
) -> OvaVerification:
    """``verify_ova`` on any ``ByteSource`` called ``name`` (a registry blob read by ranges).

    ``report``: the source's inspection when the caller has it already (the upload gate's),
    so the archive is not inspected twice.
    """
    limits = limits or Limits()
    result = OvaVerification(path=name)
    if report is None:
        report = inspect_source(src, name, limits=limits)
    container = report.container
    if container is None or container.format != "ova":
        kind = container.format if container is not None else report.format
        result.problems.append(f"it is a {kind} file, not an OVA (a tar holding an OVF descriptor)")
        return result
    result.problems.extend(report.verdict.reasons)
    opened = open_container(src, limits, name_hint=Path(name).name)
    ova = opened.details.ova
    if ova is None or ova.descriptor is None:
        if not result.problems:
            result.problems.append("the OVF descriptor could not be read")
        return result
    result.descriptor, result.manifest, result.certificate = (
        ova.descriptor_name,
        ova.manifest_name,
        ova.certificate_name,
    )
    files = [m for m in opened.members if m.type == "file"]
    _check_order(files, ova, ova.descriptor, result)
    entries = _manifest(files, ova, src, result)
    _digest_pass(src, files, ova, entries, result, progress, extract)
    _check_signature(files, ova, src, trusted, result)
    _check_disks(report, ova.descriptor, opened, result)
    result.problems = list(dict.fromkeys(result.problems))
    return result


# --- structure -------------------------------------------------------------------------------


def _by_name(files: list[ArchiveMember], name: str | None) -> ArchiveMember | None:
    for member in files:
        if member.name == name:
            return member
    return None


def _check_order(
    files: list[ArchiveMember], ova: OvaDetails, descriptor: OvfDescriptor, result: OvaVerification
) -> None:
    names = [m.name for m in files]
    if not names or names[0] != ova.descriptor_name:
        result.problems.append(
            f"the descriptor '{ova.descriptor_name}' is not the first member of the archive"
        )
    signed = sorted(names.index(n) for n in (ova.manifest_name, ova.certificate_name) if n in names)
    if signed:
        after_descriptor = signed == list(range(1, 1 + len(signed)))
        at_end = signed == list(range(len(names) - len(signed), len(names)))
        if not (after_descriptor or at_end):
            result.problems.append(
                "the manifest and certificate neither follow the descriptor nor end the archive"
            )
    positions = [names.index(ref.href) for ref in descriptor.references if ref.href in names]
    if positions != sorted(positions):
        result.problems.append("the files are not in the order the descriptor's References lists them")


def _read_member(src: ByteSource, member: ArchiveMember, limit: int, what: str) -> bytes:
    if member.size > limit:
        raise ImageFormatError(f"The {what} '{member.name}' is larger than {limit >> 20} MiB.")
    return read_exact(src, member.data_offset, member.size, f"the {what} '{member.name}'")


def _manifest(
    files: list[ArchiveMember], ova: OvaDetails, src: ByteSource, result: OvaVerification
) -> list[ManifestEntry]:
    member = _by_name(files, ova.manifest_name)
    if member is None:
        result.problems.append("the package has no manifest (.mf), so nothing vouches for its members")
        return []
    try:
        entries = manifest_entries(_read_member(src, member, MAX_MANIFEST_BYTES, "manifest"))
    except ImageFormatError as err:
        result.problems.append(f"manifest '{member.name}': {_reason(err)}")
        return []
    names = {m.name for m in files}
    for entry in entries:
        if entry.algorithm == "SIZE":
            continue
        if entry.name not in names:
            result.problems.append(f"the manifest lists '{entry.name}', which is not in the archive")
        elif entry.name in (ova.manifest_name, ova.certificate_name):
            result.problems.append(f"the manifest lists its own package's '{entry.name}'")
    listed = {entry.name for entry in entries if entry.algorithm != "SIZE"}
    for name in names - listed - {ova.manifest_name, ova.certificate_name}:
        result.problems.append(f"'{name}' has no manifest entry")
    return entries


def _reason(err: Exception) -> str:
    text = str(err).strip().rstrip(".")
    return text[:1].lower() + text[1:]


# --- the digest pass -------------------------------------------------------------------------


def _digest_pass(
    src: ByteSource,
    files: list[ArchiveMember],
    ova: OvaDetails,
    entries: list[ManifestEntry],
    result: OvaVerification,
    progress: ByteProgress | None,
    extract: Callable[[str], Path | None] | None,
) -> None:
    wanted: dict[str, dict[str, str]] = {}
    sizes: dict[str, str] = {}
    for entry in entries:
        if entry.algorithm == "SIZE":
            sizes[entry.name] = entry.digest
        else:
            wanted.setdefault(entry.name, {})[entry.algorithm] = entry.digest
    total = sum(m.size for m in files)
    done = 0
    for member in sorted(files, key=lambda m: m.data_offset):
        algorithms = wanted.get(member.name, {})
        target = extract(member.name) if extract is not None else None
        if not algorithms and target is None:
            done += member.size
            continue
        hashers = {name: hashlib.new(name.lower()) for name in algorithms}
        out = _open_copy(target)
        try:
            position = member.data_offset
            end = member.data_offset + member.size
            while position < end:
                chunk = src.pread(position, min(_READ, end - position))
                if not chunk:
                    raise ImageIOError(f"{result.path} ended inside the member '{member.name}'.")
                for hasher in hashers.values():
                    hasher.update(chunk)
                if out is not None:
                    _write(out, chunk, target)
                position += len(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        finally:
            if out is not None:
                out.close()
        if target is not None:
            result.extracted[member.name] = str(target)
        check = MemberCheck(member.name, member.size)
        for name, hasher in hashers.items():
            check.digests[name] = (algorithms[name], hasher.hexdigest())
            if hasher.hexdigest() != algorithms[name]:
                result.problems.append(f"the {name} digest of '{member.name}' does not match the manifest")
        if member.name in sizes and sizes[member.name] != str(member.size):
            result.problems.append(f"the manifest gives '{member.name}' a size it does not have")
        if algorithms:
            result.members.append(check)


def _open_copy(target: Path | None) -> BinaryIO | None:
    if target is None:
        return None
    try:
        return target.open("wb")
    except OSError as err:
        raise io_error(err, target, "extracting") from None


def _write(out: BinaryIO, data: bytes, target: Path | None) -> None:
    try:
        out.write(data)
    except OSError as err:
        raise io_error(err, target or Path("?"), "extracting") from None


# --- the signature ---------------------------------------------------------------------------


def _check_signature(
    files: list[ArchiveMember],
    ova: OvaDetails,
    src: ByteSource,
    trusted: list[x509.Certificate] | None,
    result: OvaVerification,
) -> None:
    cert_member = _by_name(files, ova.certificate_name)
    if cert_member is None:
        if trusted:
            result.problems.append("the package is not signed, but a trusted certificate (--ca) was given")
        else:
            result.warnings.append("the package is not signed")
        return
    manifest_member = _by_name(files, ova.manifest_name)
    try:
        data = _read_member(src, cert_member, MAX_CERTIFICATE_BYTES, "certificate")
    except ImageFormatError as err:
        result.problems.append(_reason(err))
        return
    info, problems = parse_certificate(data)
    if problems or info.signature is None or info.signature_algorithm is None or info.signed_file is None:
        result.problems.extend(f"certificate '{cert_member.name}': {p}" for p in problems or ["no signature"])
        return
    if manifest_member is None or info.signed_file != manifest_member.name:
        result.problems.append(f"the certificate signs '{info.signed_file}', not the package's manifest")
        return
    if info.signature_algorithm not in ("SHA1", "SHA256", "SHA512"):
        result.problems.append(
            f"the certificate's signature uses {info.signature_algorithm}, which is not accepted"
        )
        return
    try:
        certificates = load_certificates(data[data.index(_PEM_BEGIN) :], "certificate file")
    except (ValueError, ImagewrightError) as err:
        result.problems.append(f"certificate '{cert_member.name}': {_reason(err)}")
        return
    manifest = _read_member(src, manifest_member, MAX_MANIFEST_BYTES, "manifest")
    leaf = certificates[0]
    valid = verify_signature(leaf, bytes.fromhex(info.signature), manifest, info.signature_algorithm)
    chain = check_chain(leaf, certificates[1:], trusted or []) if valid else None
    result.signature = SignatureCheck(
        info.signature_algorithm,
        info.signed_file,
        valid,
        leaf.subject.rfc4514_string(),
        chain,
        leaf.fingerprint(hashes.SHA256()).hex(),
    )
    if not valid:
        result.problems.append("the manifest's signature does not verify with the certificate's key")
        return
    assert chain is not None
    if chain.status == "trusted":
        return
    if trusted:
        result.problems.append(f"the signing certificate is not trusted: {chain.detail}")
    else:
        result.warnings.append(f"{chain.detail}; give --ca to check it against a trusted certificate")


# --- descriptor against the disks ------------------------------------------------------------


def _check_disks(
    report: ImageReport, descriptor: OvfDescriptor, opened: OpenedContainer, result: OvaVerification
) -> None:
    container = report.container
    assert container is not None
    by_id = {ref.id: ref for ref in descriptor.references}
    for disk in descriptor.disks:
        ref = by_id.get(disk.file_ref or "")
        if ref is None:
            continue
        image = container.image_of(ref.href)
        if image is None:
            continue
        result.disks[ref.href] = {
            "format": image.format,
            "subformat": image.subformat,
            "virtual_size": image.virtual_size,
            "safe": image.verdict.safe,
        }
        if (
            disk.capacity is not None
            and image.virtual_size is not None
            and disk.capacity != image.virtual_size
        ):
            result.problems.append(
                f"disk '{disk.disk_id}' has a capacity of {disk.capacity} bytes in the descriptor, but "
                f"'{ref.href}' holds {image.virtual_size}"
            )
        if disk.format == STREAM_OPTIMIZED and (image.format, image.subformat) != ("vmdk", "streamOptimized"):
            result.problems.append(
                f"disk '{disk.disk_id}' is declared a streamOptimized VMDK, but '{ref.href}' is "
                f"{image.format}{f' ({image.subformat})' if image.subformat else ''}"
            )


# --- extraction for convert ------------------------------------------------------------------


def extract_ova_disk(
    path: str | Path,
    scratch: Callable[[str], Path],
    *,
    limits: Limits | None = None,
    progress: ByteProgress | None = None,
    trusted: list[x509.Certificate] | None = None,
) -> tuple[Path, OvaVerification]:
    """Copy the OVA's one disk to a scratch file while verifying everything (one read).

    Raises UnsafeImageError when the package fails verification (nothing it extracted may
    be used), UnsupportedFormatError when it holds no disk or several.
    """
    path = Path(path)
    limits = limits or Limits()
    with FileSource(path) as src:
        opened = open_container(src, limits, name_hint=path.name)
    ova = opened.details.ova
    disks = list(ova.disk_files) if ova is not None else []
    if ova is not None and ova.descriptor is not None:
        chunked = [r.href for r in ova.descriptor.references if r.chunk_size]
        compressed = [r.href for r in ova.descriptor.references if r.compression == "gzip"]
        if chunked or compressed:
            raise UnsupportedFormatError(
                f"{path} stores its disk {'in chunks' if chunked else 'gzip-compressed'}; imagewright "
                "extracts only whole, uncompressed disk files."
            )
    if opened.format == "ova" and len(disks) != 1 and not opened.problems:
        raise UnsupportedFormatError(
            f"{path} holds {len(disks)} disks; imagewright converts an OVA with exactly one disk."
        )
    wanted = disks[0] if disks else None
    target = scratch("disk")

    def copy(name: str) -> Path | None:
        return target if name == wanted else None

    verification = verify_ova(path, trusted=trusted, limits=limits, progress=progress, extract=copy)
    verification.refuse()
    if wanted is None or wanted not in verification.extracted:
        raise UnsupportedFormatError(f"{path} holds no disk image to convert.")
    return target, verification
