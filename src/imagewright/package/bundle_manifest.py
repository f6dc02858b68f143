"""The EC2 image bundle manifest (``PREFIX.manifest.xml``), written and read.

Element order (spec digest section 3.3; euca2ools after its "element order in AMI manifest"
fix, and Amazon's ec2-ami-tools — EC2 refuses other orders)::

    manifest: version, bundler(name, version, release), machine_configuration, image, signature
    machine_configuration: architecture, block_device_mapping(mapping(virtual, device)...),
                           product_codes(product_code...), kernel_id, ramdisk_id
    image: name, user, type, digest[algorithm=SHA1], size, bundled_size,
           ec2_encrypted_key[algorithm], user_encrypted_key[algorithm], ec2_encrypted_iv,
           user_encrypted_iv, parts[count](part[index](filename, digest[algorithm])...)

The signature (section 3.4) is the user's RSA key's PKCS#1 v1.5 SHA-1 signature over the
serialized ``<machine_configuration>…</machine_configuration>`` followed by the serialized
``<image>…</image>`` — compact, as lxml's ``tostring`` writes them (double-quoted
attributes, no white space between elements) — in hex. The manifest is written in that
same compact form, so a verifier checks the bytes exactly as they stand in the file.

Reading: the manifest is untrusted XML. NOTE: as for OVF descriptors, a document type
declaration (entity expansion, external entities) is refused before any parser sees the
text; the size is bounded; every number and hex field is checked; part file names must be
plain names in the manifest's own directory (a ``../`` name would make an unbundler read
outside it).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from imagewright.errors import ImageFormatError, InvalidArgumentError

VERSION = "2007-10-10"
ARCHITECTURES = ("i386", "x86_64", "armhf", "ppc", "ppc64", "ppc64le")
IMAGE_TYPES = ("machine", "kernel", "ramdisk")
ENCRYPTION = "AES-128-CBC"
#: Largest manifest read (a part line is ~150 bytes: 1 MiB lists ~7000 parts = 70 GiB).
MAX_MANIFEST_BYTES = 4 << 20
MAX_PARTS = 100_000

_HEX = re.compile(r"^[0-9a-f]*$")
_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_TOKEN = re.compile(r"^[A-Za-z0-9/._:-]{1,128}$")


@dataclass(frozen=True)
class BundlePart:
    filename: str
    sha1: str
    size: int = 0


@dataclass
class BundleManifest:
    """Everything a manifest says (key and IV as their RSA-encrypted hex)."""

    name: str
    user: str
    image_type: str
    architecture: str
    image_digest: str
    image_size: int
    bundled_size: int
    ec2_encrypted_key: str
    user_encrypted_key: str
    ec2_encrypted_iv: str
    user_encrypted_iv: str
    parts: list[BundlePart]
    block_device_mappings: list[tuple[str, str]] = field(default_factory=list)
    product_codes: list[str] = field(default_factory=list)
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    bundler: tuple[str, str, str] = ("imagewright", "0", "0")
    signature: str | None = None

    def machine_configuration_xml(self) -> str:
        parts = [f"<architecture>{escape(self.architecture)}</architecture>"]
        if self.block_device_mappings and self.image_type == "machine":
            mappings = "".join(
                f"<mapping><virtual>{escape(virtual)}</virtual><device>{escape(device)}</device></mapping>"
                for virtual, device in self.block_device_mappings
            )
            parts.append(f"<block_device_mapping>{mappings}</block_device_mapping>")
        if self.product_codes and self.image_type == "machine":
            codes = "".join(f"<product_code>{escape(code)}</product_code>" for code in self.product_codes)
            parts.append(f"<product_codes>{codes}</product_codes>")
        if self.kernel_id:
            parts.append(f"<kernel_id>{escape(self.kernel_id)}</kernel_id>")
        if self.ramdisk_id:
            parts.append(f"<ramdisk_id>{escape(self.ramdisk_id)}</ramdisk_id>")
        return f"<machine_configuration>{''.join(parts)}</machine_configuration>"

    def image_xml(self) -> str:
        algorithm = quoteattr(ENCRYPTION)
        parts = "".join(
            f'<part index="{index}"><filename>{escape(part.filename)}</filename>'
            f'<digest algorithm="SHA1">{part.sha1}</digest></part>'
            for index, part in enumerate(self.parts)
        )
        return (
            "<image>"
            f"<name>{escape(self.name)}</name>"
            f"<user>{escape(self.user)}</user>"
            f"<type>{self.image_type}</type>"
            f'<digest algorithm="SHA1">{self.image_digest}</digest>'
            f"<size>{self.image_size}</size>"
            f"<bundled_size>{self.bundled_size}</bundled_size>"
            f"<ec2_encrypted_key algorithm={algorithm}>{self.ec2_encrypted_key}</ec2_encrypted_key>"
            f"<user_encrypted_key algorithm={algorithm}>{self.user_encrypted_key}</user_encrypted_key>"
            f"<ec2_encrypted_iv>{self.ec2_encrypted_iv}</ec2_encrypted_iv>"
            f"<user_encrypted_iv>{self.user_encrypted_iv}</user_encrypted_iv>"
            f'<parts count="{len(self.parts)}">{parts}</parts>'
            "</image>"
        )

    def signed_bytes(self) -> bytes:
        """What the signature covers (section 3.4)."""
        return (self.machine_configuration_xml() + self.image_xml()).encode("utf-8")

    def to_xml(self) -> bytes:
        name, version, release = (escape(value) for value in self.bundler)
        return (
            "<?xml version='1.0' encoding='UTF-8'?>\n"
            f"<manifest><version>{VERSION}</version>"
            f"<bundler><name>{name}</name><version>{version}</version><release>{release}</release></bundler>"
            f"{self.machine_configuration_xml()}{self.image_xml()}"
            f"<signature>{self.signature or 'UNSIGNED'}</signature></manifest>\n"
        ).encode()


def check_plain_name(name: str, what: str) -> str:
    if not _PLAIN.match(name) or ".." in name:
        raise InvalidArgumentError(
            f"'{name[:80]}' cannot be {what}: use letters, digits, '.', '_', '+' and '-' (no paths)."
        )
    return name


def check_token(value: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise InvalidArgumentError(f"'{value[:80]}' is not a valid {what}.")
    return value


# --- reading ---------------------------------------------------------------------------------


@dataclass
class ReadManifest:
    """A parsed manifest and the exact bytes its signature should cover, as they stand."""

    manifest: BundleManifest
    signed_bytes_as_written: bytes


def _text(element: ET.Element | None, what: str) -> str:
    if element is None:
        raise ImageFormatError(f"The bundle manifest has no <{what}>.")
    return (element.text or "").strip()


def _hex(element: ET.Element | None, what: str, length: int | None = None) -> str:
    value = _text(element, what).lower()
    if not _HEX.match(value) or (length is not None and len(value) != length):
        raise ImageFormatError(
            f"The bundle manifest's <{what}> is not {'' if length is None else length} hex digits."
        )
    return value


def _number(element: ET.Element | None, what: str) -> int:
    value = _text(element, what)
    if not value.isascii() or not value.isdigit() or len(value) > 20:
        raise ImageFormatError(f"The bundle manifest's <{what}> is not a number.")
    return int(value)


def _span(text: str, tag: str) -> str:
    """The element ``tag`` exactly as written (first occurrence; the parse checked there is one)."""
    start = text.find(f"<{tag}>")
    end = text.find(f"</{tag}>")
    if start < 0 or end < start:
        return ""
    return text[start : end + len(tag) + 3]


def read_manifest(data: bytes) -> ReadManifest:
    """Parse an untrusted manifest; ImageFormatError with one sentence when it is not one."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ImageFormatError(f"The bundle manifest is larger than {MAX_MANIFEST_BYTES >> 20} MiB.")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise ImageFormatError("The bundle manifest is not UTF-8 text.") from None
    if _DECLARATION.search(text) or "\0" in text:
        raise ImageFormatError(
            "The bundle manifest contains a DOCTYPE or ENTITY declaration (or NUL bytes), which "
            "imagewright refuses."
        )
    try:
        # S314: the DTD attacks are refused above; expat has no DTD left to expand or fetch.
        root = ET.fromstring(text.encode("utf-8"))  # noqa: S314
    except ET.ParseError as err:
        raise ImageFormatError(f"The bundle manifest is not well-formed XML ({err}).") from None
    if root.tag != "manifest":
        raise ImageFormatError(f"The bundle manifest's root element is <{root.tag[:40]}>, not <manifest>.")
    for tag in ("machine_configuration", "image", "signature"):
        if len(root.findall(tag)) != 1:
            raise ImageFormatError(f"The bundle manifest must hold exactly one <{tag}>.")
    config = root.find("machine_configuration")
    image = root.find("image")
    assert config is not None and image is not None
    architecture = _text(config.find("architecture"), "architecture")
    if architecture not in ARCHITECTURES:
        raise ImageFormatError(f"The bundle manifest names the unknown architecture '{architecture[:40]}'.")
    mappings: list[tuple[str, str]] = []
    # euca2ools writes block_device_mapping/mapping; its reader looked for block_device_mappings.
    for wrapper in ("block_device_mapping", "block_device_mappings"):
        for mapping in config.findall(f"{wrapper}/mapping") + config.findall(
            f"{wrapper}/block_device_mapping"
        ):
            mappings.append(
                (_text(mapping.find("virtual"), "virtual"), _text(mapping.find("device"), "device"))
            )
    image_type = _text(image.find("type"), "type")
    if image_type not in IMAGE_TYPES:
        raise ImageFormatError(
            f"The bundle manifest's image type '{image_type[:40]}' is not machine, kernel or ramdisk."
        )
    parts_element = image.find("parts")
    if parts_element is None:
        raise ImageFormatError("The bundle manifest lists no parts.")
    declared = parts_element.get("count", "")
    part_elements = parts_element.findall("part")
    if (
        not declared.isdigit()
        or int(declared) != len(part_elements)
        or not 0 < len(part_elements) <= MAX_PARTS
    ):
        raise ImageFormatError("The bundle manifest's part count does not match the parts it lists.")
    parts: list[BundlePart | None] = [None] * len(part_elements)
    for element in part_elements:
        index = element.get("index", "")
        if not index.isdigit() or int(index) >= len(parts) or parts[int(index)] is not None:
            raise ImageFormatError("The bundle manifest's part indexes are not 0 to count-1, each once.")
        filename = _text(element.find("filename"), "filename")
        if not _PLAIN.match(filename) or ".." in filename:
            raise ImageFormatError(
                f"The bundle manifest names the part '{filename[:80]}', which is not a plain file name "
                "beside the manifest."
            )
        parts[int(index)] = BundlePart(filename, _hex(element.find("digest"), "digest", 40))
    digest = image.find("digest")
    if digest is None or digest.get("algorithm", "").upper() != "SHA1":
        raise ImageFormatError("The bundle manifest's image digest is not a SHA1 digest.")
    manifest = BundleManifest(
        name=_text(image.find("name"), "name"),
        user=_text(image.find("user"), "user"),
        image_type=image_type,
        architecture=architecture,
        image_digest=_hex(digest, "digest", 40),
        image_size=_number(image.find("size"), "size"),
        bundled_size=_number(image.find("bundled_size"), "bundled_size"),
        ec2_encrypted_key=_hex(image.find("ec2_encrypted_key"), "ec2_encrypted_key"),
        user_encrypted_key=_hex(image.find("user_encrypted_key"), "user_encrypted_key"),
        ec2_encrypted_iv=_hex(image.find("ec2_encrypted_iv"), "ec2_encrypted_iv"),
        user_encrypted_iv=_hex(image.find("user_encrypted_iv"), "user_encrypted_iv"),
        parts=[part for part in parts if part is not None],
        block_device_mappings=mappings,
        product_codes=[(e.text or "").strip() for e in config.findall("product_codes/product_code")],
        kernel_id=_optional(config.find("kernel_id")),
        ramdisk_id=_optional(config.find("ramdisk_id")),
        signature=_text(root.find("signature"), "signature"),
    )
    signed = (_span(text, "machine_configuration") + _span(text, "image")).encode("utf-8")
    return ReadManifest(manifest, signed)


def _optional(element: ET.Element | None) -> str | None:
    return None if element is None else (element.text or "").strip() or None
