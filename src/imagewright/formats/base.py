"""What every disk-format reader in ``formats/`` hands back, and the limits it must obey.

Each format module (``qcow2``, ``vmdk``, ``vhd``, ``vhdx``, ``vdi``, ``raw``) exposes two
functions::

    def probe(src: ByteSource, head: bytes) -> bool
        # cheap magic check; ``head`` is the first HEAD_SIZE bytes (or fewer)
    def open_image(src: ByteSource, limits: Limits) -> OpenedImage
        # parse and validate every header field; ImageFormatError on anything out of bounds

A reader records *facts* (backing files, extents, feature bits) in ``OpenedImage`` and the
reasons it would refuse the image in ``problems``; ``formats.safety.judge`` turns that into
the verdict. A reader never opens another file: a reference to one is a fact, not an action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from imagewright.binary import ByteSource, GiB, MiB, TiB

#: How much of the start of an image ``probe`` gets to look at.
HEAD_SIZE = 64 * 1024

ReferenceKind = Literal["backing-file", "data-file", "parent", "extent"]


@dataclass(frozen=True)
class ExternalReference:
    """A file (or device, or URL) outside the image that the image asks a reader to open."""

    kind: ReferenceKind
    target: str
    detail: str = ""


@dataclass(frozen=True)
class Limits:
    """Bounds applied to untrusted images; every one is a reason to refuse when exceeded."""

    #: Largest virtual disk we accept (a 2^63-byte qcow2 header is a classic trick).
    max_virtual_size: int = 16 * TiB
    #: Largest single metadata table (qcow2 L1 / refcount table, VMDK GD, VHD BAT, VDI map).
    max_table_bytes: int = 32 * MiB
    #: Largest VMDK text descriptor.
    max_descriptor_bytes: int = 1 * MiB
    #: How much of a compressed stream inspect decompresses to look at what is inside.
    max_prefix_bytes: int = 8 * MiB
    #: Largest decompressed size we scan through for a compressed tar (rootfs, OVA).
    max_scan_bytes: int = 64 * GiB
    #: Most members an archive may have.
    max_archive_members: int = 200_000
    #: How deep containers may nest (ova → vmdk, tar.gz → tar → qcow2).
    max_nesting: int = 4


@dataclass
class OpenedImage:
    """A parsed disk image: its format facts and a way to read the guest's bytes."""

    #: qemu-img's driver name: raw, qcow, qcow2, vmdk, vpc, vhdx, vdi.
    format: str
    virtual_size: int
    #: The format's own typed dataclass of header fields (``Qcow2Details``, ``VmdkDetails`` ...).
    details: Any
    #: Guest-visible bytes through the format's own mapping (zeros where unallocated);
    #: ``None`` when they cannot be read from this file alone (e.g. descriptor-only VMDK).
    guest: ByteSource | None = None
    references: list[ExternalReference] = field(default_factory=list)
    #: One sentence per reason to refuse, found by the reader itself.
    problems: list[str] = field(default_factory=list)
    backing_file: str | None = None
    backing_format: str | None = None
    #: Human-readable subformat (``monolithicSparse``, ``dynamic``, ``v3`` ...).
    subformat: str | None = None
