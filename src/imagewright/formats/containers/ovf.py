"""The OVF descriptor (DMTF DSP0243 1.x/2.x and VMware's pre-standard 0.9), read safely.

NOTE: XInclude (``<xi:include href="/etc/passwd"/>``) pulls another file into the document
for any consumer that processes it (libxml2 with XML_PARSE_XINCLUDE, xmllint --xinclude);
no OVF writer uses it, so an element in the XInclude namespace is refused as well.

NOTE: an XML document type declaration is where every XML attack lives — entity expansion
("billion laughs"), external entities (``SYSTEM "file:///etc/passwd"``), external DTD
fetches. No OVF writer emits one, so a descriptor containing ``<!DOCTYPE`` or ``<!ENTITY``
is refused *before* any parser sees it. The text is decoded by us (BOM / declared encoding),
checked, and the same decoded text is what the parser gets, so no encoding trick can hide
a declaration from the check. Parsing is incremental with a cap on elements and depth,
so a 16 MiB descriptor of empty elements cannot build a gigabyte tree.

The summary keeps what an importer acts on (spec digest section 2.3): References, the
DiskSection with capacities in bytes, networks, and per VirtualSystem its OS and hardware.
``href`` values are judged here (a package may only reference its own members, by plain
name); whether they exist in the archive is judged by ``ova``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from imagewright.binary import MiB
from imagewright.errors import ImageFormatError
from imagewright.units import format_size

#: Largest descriptor read.
MAX_DESCRIPTOR_BYTES = 16 * MiB
MAX_ELEMENTS = 100_000
MAX_DEPTH = 64
#: Longest text kept for a name or description (the report is not a copy of the file).
MAX_TEXT = 1024

OVF_NAMESPACES = {
    "http://schemas.dmtf.org/ovf/envelope/1": "1.x",
    "http://schemas.dmtf.org/ovf/envelope/2": "2.x",
    "http://www.vmware.com/schema/ovf/1/envelope": "0.9",
}

XINCLUDE_NAMESPACES = ("http://www.w3.org/2001/XInclude", "http://www.w3.org/2003/XInclude")
_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SAFE_ENCODINGS = {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"}

#: rasd:ResourceType values (CIM_ResourceAllocationSettingData) that name controllers.
CONTROLLER_TYPES = {5: "IDE", 6: "SCSI", 7: "FC", 8: "iSCSI", 9: "IB", 20: "SATA", 23: "USB"}
_NIC_TYPES = {10, 11}
_DISK_TYPES = {17, 31, 32}
_CDROM_TYPES = {15, 16}


@dataclass
class OvfFile:
    """``References/File``."""

    id: str
    href: str
    size: int | None = None
    compression: str | None = None
    chunk_size: int | None = None


@dataclass
class OvfDisk:
    """``DiskSection/Disk``; ``capacity`` in bytes after applying the allocation units."""

    disk_id: str
    file_ref: str | None
    capacity: int | None
    capacity_text: str
    capacity_units: str | None
    populated_size: int | None
    format: str | None
    parent_ref: str | None = None


@dataclass
class OvfController:
    instance_id: str | None
    kind: str
    resource_type: int
    subtype: str | None


@dataclass
class OvfNic:
    instance_id: str | None
    subtype: str | None
    connection: str | None


@dataclass
class OvfHardware:
    """Best effort: what ``VirtualHardwareSection`` items say."""

    system_types: list[str] = field(default_factory=list)
    cpus: int | None = None
    memory_mib: int | None = None
    controllers: list[OvfController] = field(default_factory=list)
    nics: list[OvfNic] = field(default_factory=list)
    #: ``rasd:HostResource`` of disk drives (``ovf:/disk/<diskId>``).
    disks: list[str] = field(default_factory=list)
    cdroms: int = 0


@dataclass
class OvfVirtualSystem:
    id: str | None
    name: str | None
    os_id: int | None
    os_description: str | None
    os_type: str | None
    hardware: OvfHardware


@dataclass
class OvfDescriptor:
    """The summary of one descriptor."""

    #: "1.x", "2.x" or "0.9" (from the envelope namespace).
    version: str
    references: list[OvfFile] = field(default_factory=list)
    disks: list[OvfDisk] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    virtual_systems: list[OvfVirtualSystem] = field(default_factory=list)


def _local(tag: object) -> str:
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]


def _attr(element: ET.Element, name: str) -> str | None:
    """An attribute by local name, namespaced (``ovf:href``) or not."""
    value = element.get(name)
    if value is not None:
        return value
    for key, val in element.attrib.items():
        if _local(key) == name:
            return val
    return None


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return _clip((child.text or "").strip())
    return None


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def _int(text: str | None, digits: int = 20) -> int | None:
    if text is None:
        return None
    text = text.strip()
    # isascii: "²".isdigit() is True but int("²") fails.
    if not (text.isascii() and text.isdigit()) or len(text) > digits:
        return None
    return int(text)


_UNIT_WORDS = {
    "byte": 1,
    "bytes": 1,
    "kb": 2**10,
    "kilobytes": 2**10,
    "mb": 2**20,
    "megabytes": 2**20,
    "gb": 2**30,
    "gigabytes": 2**30,
    "tb": 2**40,
    "terabytes": 2**40,
}
_PROGRAMMATIC_UNIT = re.compile(r"^byte\s*(?:\*\s*(\d{1,4})\s*\^\s*(\d{1,3}))?$", re.ASCII)


def allocation_multiplier(units: str | None) -> int | None:
    """Bytes per unit for ``byte * 2^30``-style (DSP0004 programmatic units) or word units.

    The base and exponent are bounded (no ``2^99999999``); unknown units give None.
    """
    if units is None:
        return 1
    text = " ".join(units.strip().lower().split())
    if text in _UNIT_WORDS:
        return _UNIT_WORDS[text]
    match = _PROGRAMMATIC_UNIT.match(text)
    if match is None:
        return None
    if match.group(1) is None:
        return 1
    base, exponent = int(match.group(1)), int(match.group(2))
    if base not in (2, 10) or exponent > 80:
        return None
    return int(base**exponent)


def decode_descriptor(data: bytes) -> str:
    """Descriptor bytes to text: BOM first, else the declared encoding (a safe few), else UTF-8."""
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            encoding = codec
            break
    else:
        match = _XML_ENCODING.match(data[:200])
        encoding = match.group(1).decode("ascii").lower() if match else "utf-8"
        if encoding not in _SAFE_ENCODINGS:
            raise ImageFormatError(
                f"The OVF descriptor uses the text encoding '{encoding[:40]}'; UTF-8 is expected."
            )
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        raise ImageFormatError(f"The OVF descriptor is not valid {encoding} text.") from None


class _BoundedTreeBuilder(ET.TreeBuilder):
    """A TreeBuilder that refuses more than MAX_ELEMENTS elements or MAX_DEPTH nesting."""

    def __init__(self) -> None:
        super().__init__()
        self._elements = 0
        self._depth = 0

    def start(self, tag: str, attrs: dict[str, str], /) -> ET.Element:
        self._elements += 1
        self._depth += 1
        if self._elements > MAX_ELEMENTS:
            raise ImageFormatError(f"The OVF descriptor has more than {MAX_ELEMENTS} elements.")
        if self._depth > MAX_DEPTH:
            raise ImageFormatError(f"The OVF descriptor nests elements more than {MAX_DEPTH} deep.")
        if tag.startswith("{") and tag[1:].split("}", 1)[0] in XINCLUDE_NAMESPACES:
            raise ImageFormatError(
                "The OVF descriptor contains an XInclude element, which imagewright refuses "
                "(it would pull another file into the descriptor)."
            )
        return super().start(tag, attrs)

    def end(self, tag: str, /) -> ET.Element:
        self._depth -= 1
        return super().end(tag)


def _parse_xml(text: str) -> ET.Element:
    if "\0" in text:
        # XML forbids U+0000; it is what UTF-16 without a byte order mark looks like here.
        raise ImageFormatError("The OVF descriptor contains NUL characters; UTF-8 text is expected.")
    if _DECLARATION.search(text):
        raise ImageFormatError(
            "The OVF descriptor contains a DOCTYPE or ENTITY declaration, which imagewright refuses "
            "(entity expansion and external entities)."
        )
    # NOTE: expat is told the encoding (UTF-8, of the very text checked above), so a declared
    # encoding="UTF-16" cannot make it read the bytes any other way than the check did.
    builder = _BoundedTreeBuilder()
    # S314: the DTD attacks defusedxml guards against are refused above, before this parser
    # sees a byte; expat then has no DTD to expand or fetch.
    parser = ET.XMLParser(target=builder, encoding="utf-8")  # noqa: S314
    data = text.encode("utf-8")
    step = 1 * MiB
    try:
        for start in range(0, len(data), step):
            parser.feed(data[start : start + step])
        root = parser.close()
    except ET.ParseError as err:
        raise ImageFormatError(f"The OVF descriptor is not well-formed XML ({err}).") from None
    if not isinstance(root, ET.Element):
        raise ImageFormatError("The OVF descriptor is empty.")
    return root


def href_problem(href: str) -> str | None:
    """Why an ``ovf:href`` may not be used, or None: a package references its own members only."""
    if not href:
        return "an empty href"
    if "\0" in href:
        return "a NUL byte"
    if href.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[/\\]", href):
        return "an absolute path"
    if _URL_SCHEME.match(href):
        return "a URL"
    parts = re.split(r"[/\\]", href)
    if ".." in parts:
        return "a '..' component"
    if len(parts) > 1:
        return "a directory separator"
    return None


@dataclass
class OvfReading:
    """A parsed descriptor with the problems and notes found while summarising it."""

    descriptor: OvfDescriptor
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_descriptor(data: bytes, max_virtual_size: int) -> OvfReading:
    """Parse and summarise a descriptor; ImageFormatError when it cannot be read safely."""
    if len(data) > MAX_DESCRIPTOR_BYTES:
        raise ImageFormatError(f"The OVF descriptor is larger than {MAX_DESCRIPTOR_BYTES // MiB} MiB.")
    root = _parse_xml(decode_descriptor(data))
    if _local(root.tag) != "Envelope":
        raise ImageFormatError(
            f"The OVF descriptor's root element is <{_local(root.tag)[:60]}>, not <Envelope>."
        )
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    reading = OvfReading(OvfDescriptor(version=OVF_NAMESPACES.get(namespace, "unknown")))
    if namespace not in OVF_NAMESPACES:
        reading.notes.append(f"the OVF envelope namespace '{namespace[:120]}' is not a known OVF version")
    _read_references(root, reading)
    _read_disks(root, reading, max_virtual_size)
    for section in _children(root, "NetworkSection"):
        for network in _children(section, "Network"):
            name = _attr(network, "name")
            if name is not None:
                reading.descriptor.networks.append(_clip(name) or "")
    for system in root.iter():
        if _local(system.tag) == "VirtualSystem":
            reading.descriptor.virtual_systems.append(_read_virtual_system(system))
    if not reading.descriptor.virtual_systems:
        reading.notes.append("the OVF descriptor describes no VirtualSystem")
    return reading


def _read_references(root: ET.Element, reading: OvfReading) -> None:
    ids: set[str] = set()
    for references in _children(root, "References"):
        for element in _children(references, "File"):
            file_id = _attr(element, "id") or ""
            href = _attr(element, "href") or ""
            entry = OvfFile(
                id=_clip(file_id) or "",
                href=_clip(href) or "",
                size=_int(_attr(element, "size")),
                compression=_clip(_attr(element, "compression")),
                chunk_size=_int(_attr(element, "chunkSize")),
            )
            reading.descriptor.references.append(entry)
            why = href_problem(href)
            if why is not None:
                reading.problems.append(
                    f"the OVF descriptor references '{entry.href}', which has {why}; "
                    "a package may only reference its own members"
                )
            if file_id in ids:
                reading.problems.append(f"the OVF descriptor declares the file id '{entry.id}' twice")
            ids.add(file_id)
            if _attr(element, "size") is not None and entry.size is None:
                reading.problems.append(f"the OVF size of '{entry.href}' is not a number")
            if entry.compression not in (None, "", "identity", "gzip"):
                reading.problems.append(
                    f"the OVF descriptor compresses '{entry.href}' with '{entry.compression}'; "
                    "only gzip is defined"
                )


def _read_disks(root: ET.Element, reading: OvfReading, max_virtual_size: int) -> None:
    for section in _children(root, "DiskSection") + _children(root, "VirtualDiskDescSection"):
        for element in _children(section, "Disk"):
            disk_id = _clip(_attr(element, "diskId")) or ""
            capacity_text = (_attr(element, "capacity") or "").strip()
            units = _attr(element, "capacityAllocationUnits")
            multiplier = allocation_multiplier(units)
            number = _int(capacity_text, digits=30)
            capacity = number * multiplier if number is not None and multiplier is not None else None
            disk = OvfDisk(
                disk_id=disk_id,
                file_ref=_clip(_attr(element, "fileRef")),
                capacity=capacity,
                capacity_text=_clip(capacity_text) or "",
                capacity_units=_clip(units),
                populated_size=_int(_attr(element, "populatedSize")),
                format=_clip(_attr(element, "format")),
                parent_ref=_clip(_attr(element, "parentRef")),
            )
            reading.descriptor.disks.append(disk)
            if multiplier is None:
                reading.problems.append(
                    f"disk '{disk_id}' gives its capacity in unknown units '{disk.capacity_units}'"
                )
            elif number is None:
                if capacity_text.startswith("${"):
                    reading.notes.append(
                        f"disk '{disk_id}' takes its capacity from the property {disk.capacity_text}"
                    )
                else:
                    reading.problems.append(f"disk '{disk_id}' has a capacity that is not a number")
            if capacity is not None and capacity > max_virtual_size:
                reading.problems.append(
                    f"disk '{disk_id}' claims a capacity of {format_size(capacity)}, more than the limit of "
                    f"{format_size(max_virtual_size)}"
                )
            if disk.parent_ref:
                reading.notes.append(f"disk '{disk_id}' is a delta of disk '{disk.parent_ref}'")


def _read_virtual_system(system: ET.Element) -> OvfVirtualSystem:
    os_id = os_description = os_type = None
    for section in _children(system, "OperatingSystemSection"):
        os_id = _int(_attr(section, "id"), digits=6)
        os_description = _child_text(section, "Description")
        os_type = _clip(_attr(section, "osType") or _attr(section, "OSType"))
        break
    hardware = OvfHardware()
    for section in _children(system, "VirtualHardwareSection"):
        _read_hardware(section, hardware)
        break
    return OvfVirtualSystem(
        id=_clip(_attr(system, "id")),
        name=_child_text(system, "Name"),
        os_id=os_id,
        os_description=os_description,
        os_type=os_type,
        hardware=hardware,
    )


def _read_hardware(section: ET.Element, hardware: OvfHardware) -> None:
    for system in _children(section, "System"):
        kind = _child_text(system, "VirtualSystemType")
        if kind:
            hardware.system_types.extend(kind.split())
    for item in section:
        if _local(item.tag) not in ("Item", "StorageItem", "EthernetPortItem"):
            continue
        resource_type = _int(_child_text(item, "ResourceType"), digits=6)
        if resource_type is None:
            continue
        quantity = _int(_child_text(item, "VirtualQuantity"))
        instance_id = _child_text(item, "InstanceID")
        subtype = _child_text(item, "ResourceSubType")
        if resource_type == 3 and quantity is not None:
            hardware.cpus = quantity
        elif resource_type == 4 and quantity is not None:
            multiplier = allocation_multiplier(_child_text(item, "AllocationUnits") or "byte * 2^20")
            if multiplier is not None:
                hardware.memory_mib = quantity * multiplier // MiB
        elif resource_type in CONTROLLER_TYPES:
            hardware.controllers.append(
                OvfController(instance_id, CONTROLLER_TYPES[resource_type], resource_type, subtype)
            )
        elif resource_type in _NIC_TYPES:
            hardware.nics.append(OvfNic(instance_id, subtype, _child_text(item, "Connection")))
        elif resource_type in _DISK_TYPES:
            host = _child_text(item, "HostResource")
            if host:
                hardware.disks.append(host)
        elif resource_type in _CDROM_TYPES:
            hardware.cdroms += 1
