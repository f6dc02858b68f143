"""The OVF descriptor of a one-disk virtual machine (DMTF DSP0243 1.x and 2.x).

Shape (spec digest sections 2.3-2.5; the reader is ``formats/containers/ovf.py``)::

    Envelope (default namespace = the OVF envelope namespace, also bound to ovf:)
      References / File        ovf:href ovf:id ovf:size
      DiskSection              Info, Disk ovf:capacity (bytes) ovf:capacityAllocationUnits
                               ovf:diskId ovf:fileRef ovf:format (streamOptimized) ovf:populatedSize
      NetworkSection           Info, Network ovf:name + Description
      VirtualSystem ovf:id     Info, Name,
        OperatingSystemSection ovf:id (CIM OsType) vmw:osType + Info, Description
        VirtualHardwareSection Info, System (vssd: ElementName, InstanceID,
                               VirtualSystemIdentifier, VirtualSystemType), Items: CPU (3),
                               memory (4), disk controller (5/6/20), [IDE for the CD-ROM],
                               disk (17), [CD-ROM (15)], NIC (10)
        ProductSection         Info, Product, Vendor, Version       (when given)
        EulaSection            Info, License                        (when given)

Element order inside ``rasd:``/``vssd:`` items is the CIM schemas' (alphabetical), and every
section starts with ``Info``, as the DMTF schemas require. Attribute and text values are
escaped by ``_Element`` (the one serializer here): user-given names, products and licences
cannot inject markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

from imagewright.errors import InvalidArgumentError

OVF_NS = {"1.0": "http://schemas.dmtf.org/ovf/envelope/1", "2.0": "http://schemas.dmtf.org/ovf/envelope/2"}
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
CIM_NS = "http://schemas.dmtf.org/wbem/wscim/1/common"
VMW_NS = "http://www.vmware.com/schema/ovf"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"

OvfVersion = Literal["1.0", "2.0"]


@dataclass(frozen=True)
class OsType:
    """A guest OS as OVF says it: CIM_OperatingSystem.OsType and VMware's guest id."""

    cim_id: int
    vmware: str
    description: str


#: ``--os`` names (spec digest section 2.5).
OS_TYPES: dict[str, OsType] = {
    "other": OsType(1, "otherGuest", "Other"),
    "other64": OsType(102, "otherGuest64", "Other 64-bit"),
    "linux64": OsType(101, "other3xLinux64Guest", "Linux 64-bit"),
    "debian": OsType(95, "debian10Guest", "Debian"),
    "debian64": OsType(96, "debian10_64Guest", "Debian 64-bit"),
    "ubuntu": OsType(93, "ubuntuGuest", "Ubuntu"),
    "ubuntu64": OsType(94, "ubuntu64Guest", "Ubuntu 64-bit"),
    "rhel": OsType(79, "rhel7Guest", "Red Hat Enterprise Linux"),
    "rhel64": OsType(80, "rhel8_64Guest", "Red Hat Enterprise Linux 64-bit"),
    "sles64": OsType(85, "sles15_64Guest", "SUSE Linux Enterprise Server 64-bit"),
    "freebsd64": OsType(78, "freebsd12_64Guest", "FreeBSD 64-bit"),
}


@dataclass(frozen=True)
class Controller:
    """A disk controller: rasd ResourceType and ResourceSubType, VMDK adapter type."""

    resource_type: int
    subtype: str
    label: str
    vmdk_adapter: str


#: ``--disk-controller`` names (spec digest section 2.4).
CONTROLLERS: dict[str, Controller] = {
    "scsi": Controller(6, "lsilogic", "SCSI Controller", "lsilogic"),
    "ide": Controller(5, "PIIX4", "IDE Controller", "ide"),
    # ResourceType 20 is what VirtualBox accepts only for an AHCI controller; VMware has no
    # SATA adapter type for a VMDK and uses "ide" there.
    "sata": Controller(20, "AHCI", "SATA Controller", "ide"),
}

#: ``--nic`` names → rasd:ResourceSubType.
NICS: dict[str, str] = {"e1000": "E1000", "vmxnet3": "VmxNet3", "virtio": "virtio"}

_VIRTUAL_SYSTEM_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-. ")


@dataclass(frozen=True)
class MachineSpec:
    """What the descriptor says about the machine (everything the ``package ova`` options set)."""

    name: str
    cpus: int = 1
    memory_mib: int = 1024
    nic: str = "e1000"
    controller: str = "scsi"
    os: str = "other64"
    ovf_version: OvfVersion = "1.0"
    cdrom: bool = False
    network: str = "VM Network"
    virtual_system_type: str = "vmx-10"
    product: str | None = None
    vendor: str | None = None
    version: str | None = None
    eula: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.cpus <= 768:
            raise InvalidArgumentError(f"--cpus must be between 1 and 768, not {self.cpus}.")
        if not 4 <= self.memory_mib <= 24 * 1024 * 1024:
            raise InvalidArgumentError(f"--memory must be between 4 and 25165824 MiB, not {self.memory_mib}.")
        for option, value, choices in (
            ("--nic", self.nic, NICS),
            ("--disk-controller", self.controller, CONTROLLERS),
            ("--os", self.os, OS_TYPES),
            ("--ovf-version", self.ovf_version, OVF_NS),
        ):
            if value not in choices:
                raise InvalidArgumentError(
                    f"'{value}' is not a choice for {option}; choose one of {', '.join(choices)}."
                )
        if not set(self.virtual_system_type) <= _VIRTUAL_SYSTEM_TYPE_CHARS or not self.virtual_system_type:
            raise InvalidArgumentError(f"'{self.virtual_system_type[:40]}' is not a virtual system type.")
        for option, text in (
            ("--name", self.name),
            ("--product", self.product),
            ("--vendor", self.vendor),
            ("--version", self.version),
            ("--eula", self.eula),
        ):
            if text is not None and not _xml_text_ok(text):
                raise InvalidArgumentError(f"The {option} text contains characters XML cannot hold.")


def _xml_text_ok(text: str) -> bool:
    """XML 1.0 Char: tab, newline, carriage return and everything from space up (no surrogates)."""
    return all(
        ch in "\t\n\r" or (" " <= ch <= "\ud7ff") or ("\ue000" <= ch <= "\ufffd") or ch >= "\U00010000"
        for ch in text
    )


@dataclass(frozen=True)
class DiskFacts:
    """What the descriptor says about the disk file, known once the disk is written."""

    href: str
    file_size: int
    capacity: int
    populated_size: int


class _Element:
    """A minimal element tree with explicit prefixes, serialized with two-space indentation."""

    def __init__(self, tag: str, attrs: dict[str, str] | None = None, text: str | None = None) -> None:
        self.tag = tag
        self.attrs = attrs or {}
        self.text = text
        self.children: list[_Element] = []

    def add(self, tag: str, attrs: dict[str, str] | None = None, text: str | None = None) -> _Element:
        child = _Element(tag, attrs, text)
        self.children.append(child)
        return child

    def serialize(self, lines: list[str], depth: int = 0) -> None:
        pad = "  " * depth
        attrs = "".join(f" {name}={quoteattr(value)}" for name, value in self.attrs.items())
        if self.text is not None:
            lines.append(f"{pad}<{self.tag}{attrs}>{escape(self.text)}</{self.tag}>")
        elif not self.children:
            lines.append(f"{pad}<{self.tag}{attrs}/>")
        else:
            lines.append(f"{pad}<{self.tag}{attrs}>")
            for child in self.children:
                child.serialize(lines, depth + 1)
            lines.append(f"{pad}</{self.tag}>")


def _item(parent: _Element, values: dict[str, str]) -> None:
    """A VirtualHardwareSection Item; rasd elements in the CIM schema's (alphabetical) order."""
    item = parent.add("Item")
    for name in sorted(values):
        item.add(f"rasd:{name}", text=values[name])


def build_descriptor(spec: MachineSpec, disk: DiskFacts) -> str:
    """The descriptor text (UTF-8 XML with its declaration)."""
    os_type = OS_TYPES[spec.os]
    controller = CONTROLLERS[spec.controller]
    envelope = _Element(
        "Envelope",
        {
            "xmlns": OVF_NS[spec.ovf_version],
            "xmlns:cim": CIM_NS,
            "xmlns:ovf": OVF_NS[spec.ovf_version],
            "xmlns:rasd": RASD_NS,
            "xmlns:vmw": VMW_NS,
            "xmlns:vssd": VSSD_NS,
            "xmlns:xsi": XSI_NS,
        },
    )
    references = envelope.add("References")
    references.add("File", {"ovf:href": disk.href, "ovf:id": "file1", "ovf:size": str(disk.file_size)})

    disks = envelope.add("DiskSection")
    disks.add("Info", text="Virtual disk information")
    disks.add(
        "Disk",
        {
            "ovf:capacity": str(disk.capacity),
            "ovf:capacityAllocationUnits": "byte",
            "ovf:diskId": "vmdisk1",
            "ovf:fileRef": "file1",
            "ovf:format": STREAM_OPTIMIZED,
            "ovf:populatedSize": str(disk.populated_size),
        },
    )

    networks = envelope.add("NetworkSection")
    networks.add("Info", text="The list of logical networks")
    network = networks.add("Network", {"ovf:name": spec.network})
    network.add("Description", text=f"The {spec.network} network")

    system = envelope.add("VirtualSystem", {"ovf:id": spec.name})
    system.add("Info", text="A virtual machine")
    system.add("Name", text=spec.name)

    os_section = system.add(
        "OperatingSystemSection", {"ovf:id": str(os_type.cim_id), "vmw:osType": os_type.vmware}
    )
    os_section.add("Info", text="The kind of installed guest operating system")
    os_section.add("Description", text=os_type.description)

    hardware = system.add("VirtualHardwareSection")
    hardware.add("Info", text="Virtual hardware requirements")
    vssd = hardware.add("System")
    vssd.add("vssd:ElementName", text="Virtual Hardware Family")
    vssd.add("vssd:InstanceID", text="0")
    vssd.add("vssd:VirtualSystemIdentifier", text=spec.name)
    vssd.add("vssd:VirtualSystemType", text=spec.virtual_system_type)
    _item(
        hardware,
        {
            "AllocationUnits": "hertz * 10^6",
            "Description": "Number of Virtual CPUs",
            "ElementName": f"{spec.cpus} virtual CPU(s)",
            "InstanceID": "1",
            "ResourceType": "3",
            "VirtualQuantity": str(spec.cpus),
        },
    )
    _item(
        hardware,
        {
            "AllocationUnits": "byte * 2^20",
            "Description": "Memory Size",
            "ElementName": f"{spec.memory_mib}MB of memory",
            "InstanceID": "2",
            "ResourceType": "4",
            "VirtualQuantity": str(spec.memory_mib),
        },
    )
    _item(
        hardware,
        {
            "Address": "0",
            "Description": controller.label,
            "ElementName": f"{controller.label} 0",
            "InstanceID": "3",
            "ResourceSubType": controller.subtype,
            "ResourceType": str(controller.resource_type),
        },
    )
    cdrom_parent = "3"
    if spec.cdrom and spec.controller == "scsi":
        # A CD-ROM sits on an IDE controller next to a SCSI disk (as VMware and VirtualBox do).
        _item(
            hardware,
            {
                "Address": "1",
                "Description": "IDE Controller",
                "ElementName": "IDE Controller 1",
                "InstanceID": "4",
                "ResourceSubType": "PIIX4",
                "ResourceType": "5",
            },
        )
        cdrom_parent = "4"
    _item(
        hardware,
        {
            "AddressOnParent": "0",
            "ElementName": "Hard Disk 1",
            "HostResource": "ovf:/disk/vmdisk1",
            "InstanceID": "5",
            "Parent": "3",
            "ResourceType": "17",
        },
    )
    if spec.cdrom:
        _item(
            hardware,
            {
                "AddressOnParent": "0" if cdrom_parent == "4" else "1",
                "AutomaticAllocation": "false",
                "ElementName": "CD-ROM 1",
                "InstanceID": "6",
                "Parent": cdrom_parent,
                "ResourceType": "15",
            },
        )
    _item(
        hardware,
        {
            "AddressOnParent": "7",
            "AutomaticAllocation": "true",
            "Connection": spec.network,
            "Description": f"{NICS[spec.nic]} ethernet adapter on {spec.network}",
            "ElementName": "Network adapter 1",
            "InstanceID": "7",
            "ResourceSubType": NICS[spec.nic],
            "ResourceType": "10",
        },
    )
    if spec.product or spec.vendor or spec.version:
        product = system.add("ProductSection")
        product.add("Info", text="Information about the installed software")
        if spec.product:
            product.add("Product", text=spec.product)
        if spec.vendor:
            product.add("Vendor", text=spec.vendor)
        if spec.version:
            product.add("Version", text=spec.version)
    if spec.eula is not None:
        eula = system.add("EulaSection")
        eula.add("Info", text="End User License Agreement")
        eula.add("License", text=spec.eula)

    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    envelope.serialize(lines)
    return "\n".join(lines) + "\n"
