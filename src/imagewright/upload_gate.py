"""What a Glance-compatible registry accepts: the safety gate, and the content matching its formats.

The registry (``service.images.upload``) judges every upload with ``judge_upload``; the client
(``imagewright.registry``: ``imagewright image upload``) judges the file with the same function
before it sends a byte, so it refuses what the server would, and names the formats to declare
with ``content_formats`` — one judgment, two doors.

After the bytes are in the store (and before the image turns ``active``), the blob is opened
as a ``ByteSource`` and judged by ``imagewright.gate.admit``, the gate every entry point of
imagewright uses (random access by ranged reads: a blob in S3 is never downloaded whole): backing
files, data files, external extents, hostile containers and everything else the inspection
refuses are refused here with the same reason. Then the content must be what the client
declared (``disk_format`` / ``container_format``): a qcow2 declared ``raw`` would make a cloud
hand qemu a qcow2 with raw semantics (or the reverse, a raw image whose first bytes an attacker
made look like a qcow2 header), so both directions are refused, as Glance's format inspection
does since the 2024 image-conversion CVEs (OSSA-2024-001/002).

Compressed containers (``container_format=compressed``: gzip, xz, zstd, bzip2) are stored as
they come, as Glance stores them, and judged like every upload: by the one inspection, on the
stored blob. The inspection examines a compressed stream as far as it may hold decompressed
data in memory (``Limits.max_held_bytes``, 32 MiB; zeros are free): a compressed image with more
data than that cannot be examined in full and is refused with a sentence that says so and what
to do (upload it uncompressed or as qcow2; ``imagewright image upload`` converts on the client).
The registry does not decompress uploads to a scratch disk (an S3-backed registry has none, and
the issue's promise is no temp disk beyond the store's own). When the streaming judge of the
convert room (``formats.containers.examine_stream`` with a streaming inner inspection) can judge
a whole decompressed image without random access, this is where it plugs in.

An OVA (``container_format=ova``) is checked as ``imagewright package verify`` checks it, by the
same code (``package.ova_verify.verify_ova_source``, on the blob by ranged reads): member order,
the manifest digest of every member, the ``.cert`` signature over the manifest with the key of
the certificate it carries. A package that fails is refused with the first problem, in one
sentence. Whether it was signed and by whom is recorded in properties the registry sets and no
client may write (``OVA_PROPERTIES``): ``imagewright_ova_signed`` (true/false),
``imagewright_ova_signer`` (the certificate's subject, RFC 4514), ``imagewright_ova_certificate_sha256``
(the certificate's fingerprint) and ``imagewright_ova_signer_chain`` (``self-signed`` or
``untrusted``: the registry holds no trusted CA, so the subject is what the certificate claims,
and the fingerprint is what a consumer can pin).

Names: the inspection speaks qemu's driver names, Glance its own (``vpc`` is ``vhd``,
``parallels`` is ``ploop``, an ISO 9660 filesystem is ``iso``; gzip/xz/zstd/bzip2 wrappers are
the ``compressed`` container, an OVA the ``ova`` container).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imagewright.binary import ByteSource
from imagewright.errors import UnsafeImageError
from imagewright.formats.containers.signature import probe_compression
from imagewright.gate import admit
from imagewright.inspection import NOT_EXAMINED, ImageReport

#: Glance's disk and container formats (the Image API's enums).
DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
#: qemu driver name (as the inspection reports it) → Glance disk_format.
GLANCE_DISK_FORMAT = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vpc": "vhd",
    "vhdx": "vhdx",
    "vdi": "vdi",
    "parallels": "ploop",
}
COMPRESSED_WRAPPERS = ("gzip", "xz", "zstd", "bzip2")
#: Glance's kernel/ramdisk/machine formats are raw bytes without a disk image header.
RAW_LIKE = ("raw", "ami", "aki", "ari")
#: What the registry records about a verified OVA (see the module docstring); no client writes them.
OVA_SIGNED = "imagewright_ova_signed"
OVA_SIGNER = "imagewright_ova_signer"
OVA_CERTIFICATE_SHA256 = "imagewright_ova_certificate_sha256"
OVA_SIGNER_CHAIN = "imagewright_ova_signer_chain"
OVA_PROPERTIES = (OVA_SIGNED, OVA_SIGNER, OVA_CERTIFICATE_SHA256, OVA_SIGNER_CHAIN)


def admit_blob(source: ByteSource, name: str) -> ImageReport:
    """Judge ``source`` with imagewright's one safety gate (``imagewright.gate.admit``).

    Raises UnsafeImageError naming every reason (up to four) when the blob is refused.
    """
    try:
        return admit(source, name=name).report
    except UnsafeImageError as err:
        reasons = err.reasons
        compression = probe_compression(source.pread(0, 64))
        if compression is not None and reasons and all(NOT_EXAMINED in reason for reason in reasons):
            # See the module docstring: a compressed upload is examined as far as memory allows.
            # Only when its size is all that is wrong: a bomb or a corrupt stream is said as such.
            raise UnsafeImageError(
                f"The image is refused: it is {compression}-compressed and {reasons[0]}; the registry "
                "examines every byte it accepts and does not decompress uploads to a scratch disk, so "
                "upload large images uncompressed or as qcow2 ('imagewright image upload --convert-to qcow2' "
                "does that for you).",
                reasons,
            ) from err
        more = f" (also: {'; '.join(reasons[1:4])})" if len(reasons) > 1 else ""
        raise UnsafeImageError(f"The image is refused: {reasons[0]}{more}.", reasons) from err


@dataclass(frozen=True)
class GateResult:
    report: ImageReport
    virtual_size: int | None
    #: The formats to declare (Glance's names): the declared ones, which matched the content.
    disk_format: str
    container_format: str
    #: Properties the registry records from what it checked (an OVA's signer, ``OVA_PROPERTIES``).
    properties: dict[str, str] = field(default_factory=dict)


def content_formats(report: ImageReport) -> tuple[str, str]:
    """(disk_format, container_format) in Glance's names for what the inspection found."""
    if report.container is not None:
        container = report.container
        if report.format in COMPRESSED_WRAPPERS:
            inner = container.inner
            return (content_formats(inner)[0] if inner is not None else "unknown"), "compressed"
        if report.format == "ova":
            # The disks the descriptor references; the descriptor and manifest are members too.
            ova = container.details.ova
            disks = set(ova.disk_files) if ova is not None else set()
            formats = {
                content_formats(member.report)[0] for member in container.images if member.name in disks
            }
            return (formats.pop() if len(formats) == 1 else "unknown"), "ova"
        return "unknown", report.format
    if (
        report.format == "raw"
        and report.filesystem is not None
        and getattr(report.filesystem, "type", None) == "iso9660"
    ):
        return "iso", "bare"
    return GLANCE_DISK_FORMAT.get(report.format, report.format), "bare"


def _describe(found_disk: str, found_container: str, wrapper: str) -> str:
    if found_container == "bare":
        return f"a bare {found_disk} image"
    return f"a {wrapper} container"


def _matches(declared: str, found: str) -> bool:
    if declared == found:
        return True
    if declared in RAW_LIKE:
        # An ISO is a valid raw disk; ami/aki/ari are raw bytes.
        return found in ("raw", "iso")
    return False


def judge_upload(
    source: ByteSource, name: str, disk_format: str | None = None, container_format: str | None = None
) -> GateResult:
    """Refuse (UnsafeImageError, one sentence) an unsafe image or one that is not what it claims.

    ``disk_format`` / ``container_format`` None: whatever the content is (a client that lets the
    inspection name the formats, as ``imagewright image upload`` and ``register-local`` do).
    An OVA is verified as a package too (``judge_ova``).
    """
    judged = judge_report(admit_blob(source, name), disk_format, container_format)
    if judged.container_format != "ova":
        return judged
    return GateResult(
        judged.report,
        judged.virtual_size,
        judged.disk_format,
        judged.container_format,
        judge_ova(source, name, judged.report),
    )


def judge_ova(source: ByteSource, name: str, report: ImageReport) -> dict[str, str]:
    """Verify the OVA ``source`` as ``package verify`` does; its signer's properties, or a refusal.

    Raises UnsafeImageError (one sentence: the first problem) when a member's digest, the
    manifest, the signature or the structure does not check out.
    """
    from imagewright.package.ova_verify import verify_ova_source

    verification = verify_ova_source(source, name, report=report)
    if verification.problems:
        problems = tuple(verification.problems)
        raise UnsafeImageError(f"The OVA package is refused: {problems[0]}.", problems)
    signature = verification.signature
    if signature is None:
        return {OVA_SIGNED: "false"}
    properties = {OVA_SIGNED: "true", OVA_SIGNER: signature.subject or ""}
    if signature.certificate_sha256:
        properties[OVA_CERTIFICATE_SHA256] = signature.certificate_sha256
    if signature.chain is not None:
        properties[OVA_SIGNER_CHAIN] = signature.chain.status
    return properties


def judge_report(
    report: ImageReport, disk_format: str | None = None, container_format: str | None = None
) -> GateResult:
    """``judge_upload`` for an image the gate already admitted (``admit_blob``)."""
    found_disk, found_container = content_formats(report)
    if container_format is None:
        container_format = found_container
    if disk_format is None:
        disk_format = "raw" if found_disk == "unknown" and found_container == "compressed" else found_disk
        if disk_format not in DISK_FORMATS:
            raise UnsafeImageError(
                f"The image is a {found_disk} image, which a Glance registry has no disk_format for; "
                "convert it first (for example to qcow2)."
            )
    if container_format in ("bare", "ami", "aki", "ari"):
        if found_container != "bare":
            raise UnsafeImageError(
                f"The image data is a {report.format} {found_container} container, but container_format "
                f"says {container_format}; declare container_format "
                f"{'compressed' if found_container == 'compressed' else found_container}."
            )
    elif container_format in ("compressed", "ova"):
        if found_container != container_format:
            raise UnsafeImageError(
                f"container_format says {container_format}, but the image data is "
                f"{_describe(found_disk, found_container, report.format)}."
            )
    else:
        raise UnsafeImageError(
            f"container_format {container_format} is not accepted for uploads here; "
            "use bare, compressed or ova."
        )
    if found_disk == "unknown" and container_format == "compressed":
        # The wrapper hides an inner format the inspection could not name from its prefix: only
        # a declared raw is consistent with "no known header".
        found_disk = "raw"
    if not _matches(disk_format, found_disk):
        raise UnsafeImageError(
            f"The image data is {found_disk}, but disk_format says {disk_format}; declare disk_format "
            f"{found_disk} (or convert the image)."
        )
    return GateResult(report, report.virtual_size, disk_format, container_format)
