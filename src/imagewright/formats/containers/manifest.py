"""OVF manifest (``.mf``) and certificate (``.cert``) files (DSP0243 section 5.1/5.2).

A manifest is one line per package file: ``ALG(name)= hexdigest``. Writers differ in
spacing (ovftool ``SHA256(disk.vmdk)= ab…``, VirtualBox ``SHA256 (disk.vmdk) = ab…``) and
line ends, so the parser tolerates blanks around every token and CRLF, as VirtualBox's
``RTManifestReadStandardEx`` does; the algorithm must be MD5, SHA1, SHA256 or SHA512 (or
VirtualBox's SIZE attribute) and the digest must have that algorithm's length.

A certificate is a manifest-style line signing the ``.mf`` (``SHA256(x.mf)= <hex RSA
signature>``) followed by a PEM X.509 certificate. Digests and signatures are *not*
verified here — that needs the members' data; ``manifest_entries`` is the entry point for
the package stage that streams the members and checks them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imagewright.binary import MiB
from imagewright.errors import ImageFormatError
from imagewright.formats.containers.problems import as_problem

#: Largest manifest we read (a line per file; chunked disks list every chunk).
MAX_MANIFEST_BYTES = 4 * MiB
#: Largest certificate file we read (a signature line and a certificate chain).
MAX_CERTIFICATE_BYTES = 1 * MiB
MAX_MANIFEST_LINES = 100_000

#: Hex digits per algorithm; SIZE is decimal.
DIGEST_LENGTHS = {"MD5": 32, "SHA1": 40, "SHA256": 64, "SHA512": 128}

_LINE = re.compile(r"^\s*([A-Za-z0-9]+)\s*\((.*)\)\s*=\s*([0-9A-Za-z]*)\s*$")
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"


@dataclass
class ManifestEntry:
    """One ``ALG(name)= value`` line. ``digest`` is lower-case hex (decimal for SIZE)."""

    algorithm: str
    name: str
    digest: str
    line: int


@dataclass
class ManifestSummary:
    """What a manifest lists (the entries themselves come from ``manifest_entries``)."""

    entries: int
    algorithms: list[str]
    names: list[str]


@dataclass
class CertificateInfo:
    """The signature line and certificate presence of a ``.cert`` file (not verified)."""

    signature_algorithm: str | None
    signed_file: str | None
    signature_bits: int | None
    certificates: int
    #: The signature, lower-case hex (None when the signature line is missing or malformed).
    signature: str | None = None


def _decode(data: bytes, what: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ImageFormatError(f"The {what} is not UTF-8 text.") from None
    return text.removeprefix("\ufeff")


def _parse_line(line: str, number: int) -> ManifestEntry:
    match = _LINE.match(line)
    if match is None:
        raise ImageFormatError(f"Manifest line {number} is not of the form ALG(name)= digest.")
    algorithm, name, value = match.group(1).upper(), match.group(2).strip(), match.group(3)
    if not name:
        raise ImageFormatError(f"Manifest line {number} names no file.")
    if algorithm == "SIZE":
        if not value.isdigit() or len(value) > 20:
            raise ImageFormatError(f"Manifest line {number} gives a SIZE that is not a decimal number.")
        return ManifestEntry(algorithm, name, value, number)
    expected = DIGEST_LENGTHS.get(algorithm)
    if expected is None:
        raise ImageFormatError(
            f"Manifest line {number} uses the digest algorithm {algorithm[:20]}; "
            "only MD5, SHA1, SHA256 and SHA512 are defined."
        )
    if len(value) != expected or not re.fullmatch(r"[0-9A-Fa-f]+", value):
        raise ImageFormatError(
            f"Manifest line {number} has a {algorithm} digest that is not {expected} hex digits."
        )
    return ManifestEntry(algorithm, name, value.lower(), number)


def _lines(text: str) -> list[str]:
    lines = text.splitlines()
    if len(lines) > MAX_MANIFEST_LINES:
        raise ImageFormatError(f"The manifest has more than {MAX_MANIFEST_LINES} lines.")
    return lines


def parse_manifest(data: bytes) -> tuple[list[ManifestEntry], list[str]]:
    """Every well-formed entry, and one problem sentence per malformed line (tolerant)."""
    if len(data) > MAX_MANIFEST_BYTES:
        return [], [f"the manifest is larger than {MAX_MANIFEST_BYTES // MiB} MiB"]
    try:
        lines = _lines(_decode(data, "manifest"))
    except ImageFormatError as err:
        return [], [as_problem(err)]
    entries: list[ManifestEntry] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = _parse_line(line, number)
        except ImageFormatError as err:
            problems.append(as_problem(err))
            continue
        key = (entry.algorithm, entry.name)
        if key in seen and seen[key] != entry.digest:
            problems.append(f"the manifest gives two different {entry.algorithm} values for '{entry.name}'")
        seen[key] = entry.digest
        entries.append(entry)
    return entries, problems


def manifest_entries(data: bytes) -> list[ManifestEntry]:
    """Every entry of a manifest, strictly: ImageFormatError on the first malformed line.

    For the package/verify stage, which digests each member and compares.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ImageFormatError(f"The manifest is larger than {MAX_MANIFEST_BYTES // MiB} MiB.")
    entries = []
    for number, line in enumerate(_lines(_decode(data, "manifest")), start=1):
        if line.strip():
            entries.append(_parse_line(line, number))
    return entries


def summarize_manifest(entries: list[ManifestEntry]) -> ManifestSummary:
    return ManifestSummary(
        entries=len(entries),
        algorithms=list(dict.fromkeys(e.algorithm for e in entries)),
        names=list(dict.fromkeys(e.name for e in entries)),
    )


def parse_certificate(data: bytes) -> tuple[CertificateInfo, list[str]]:
    """The signature line (first manifest-style line) and the number of PEM certificates."""
    problems: list[str] = []
    if len(data) > MAX_CERTIFICATE_BYTES:
        return CertificateInfo(None, None, None, 0), [
            f"the certificate file is larger than {MAX_CERTIFICATE_BYTES // MiB} MiB"
        ]
    try:
        text = _decode(data, "certificate file")
    except ImageFormatError as err:
        return CertificateInfo(None, None, None, 0), [as_problem(err)]
    algorithm = signed = signature = None
    bits = None
    head = text.split(_PEM_BEGIN, 1)[0]
    for number, line in enumerate(head.splitlines()[:1000], start=1):
        if not line.strip():
            continue
        try:
            entry = _parse_signature_line(line, number)
        except ImageFormatError as err:
            problems.append(as_problem(err))
            break
        algorithm, signed, bits = entry.algorithm, entry.name, len(entry.digest) * 4
        signature = entry.digest
        break
    if algorithm is None and not problems:
        problems.append("the certificate file has no signature line")
    certificates = text.count(_PEM_BEGIN)
    if certificates == 0:
        problems.append("the certificate file holds no PEM certificate")
    return CertificateInfo(algorithm, signed, bits, certificates, signature), problems


def _parse_signature_line(line: str, number: int) -> ManifestEntry:
    match = _LINE.match(line)
    if match is None:
        raise ImageFormatError("The certificate's signature line is not of the form ALG(name)= signature.")
    algorithm, name, value = match.group(1).upper(), match.group(2).strip(), match.group(3)
    if algorithm not in DIGEST_LENGTHS:
        raise ImageFormatError(f"The certificate's signature uses the unknown algorithm {algorithm[:20]}.")
    if not value or not re.fullmatch(r"[0-9A-Fa-f]+", value) or len(value) % 2:
        raise ImageFormatError("The certificate's signature is not hex digits.")
    return ManifestEntry(algorithm, name, value.lower(), number)
