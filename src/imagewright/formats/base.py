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
from typing import TYPE_CHECKING, Literal, TypeAlias

from imagewright.binary import ByteSource, GiB, MiB, NotExaminedError, TiB
from imagewright.units import format_size

if TYPE_CHECKING:
    from imagewright.formats.luks import LuksDetails
    from imagewright.formats.parallels import ParallelsDetails
    from imagewright.formats.qcow import QcowDetails
    from imagewright.formats.qcow2 import Qcow2Details
    from imagewright.formats.qed import QedDetails
    from imagewright.formats.raw import RawDetails
    from imagewright.formats.vdi import VdiDetails
    from imagewright.formats.vhd import VhdDetails
    from imagewright.formats.vhdx import VhdxDetails
    from imagewright.formats.vmdk import VmdkDetails

#: The header facts of one disk format: each reader's own typed dataclass.
FormatDetails: TypeAlias = (
    "Qcow2Details | QcowDetails | VmdkDetails | VdiDetails | VhdxDetails | VhdDetails | QedDetails"
    " | ParallelsDetails | LuksDetails | RawDetails"
)

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
    #: Most decompressed data one inspection keeps in memory to examine (blocks of zeros
    #: cost nothing): a compressed image, the members of a compressed archive.
    max_held_bytes: int = 32 * MiB
    #: Largest decompressed size we scan through for a compressed tar (rootfs, OVA).
    max_scan_bytes: int = 64 * GiB
    #: Decompressed bytes one inspection may produce: this much, plus ...
    examine_base_bytes: int = 64 * MiB
    #: ... this many per byte of its input (time per input byte stays bounded).
    examine_bytes_per_input_byte: int = 8
    #: Most members an archive may have.
    max_archive_members: int = 200_000
    #: Archive members one inspection may list: this many, plus ...
    members_base: int = 16_384
    #: ... one per this many bytes of its input (a 2 MB .tar.gz of 200 000 empty members is refused).
    input_bytes_per_member: int = 64
    #: Most members of an image package (OVA, disk archive) inspected as images.
    max_examined_members: int = 64
    #: Most bytes the members of one archive may read while they are inspected (their
    #: metadata tables, descriptors, partition tables): 64 members of sparse zeros each with
    #: a 32 MiB table cost 13 s to read (red-team finding); real packages read a few MiB.
    max_member_read_bytes: int = 128 * MiB
    #: How deep containers may nest (ova → vmdk, tar.gz → tar → qcow2).
    max_nesting: int = 4


class Budget:
    """The work one inspection may still do, in proportion to the size of its input.

    NOTE: a small file must not buy a long inspection: a 2 MB ``.tar.gz`` may list 200 000
    empty members, a 400-byte ``.bz2`` decompresses to 512 MiB. Every decompressed byte
    and every archive member is charged here, across all nested containers, and the first
    charge that does not fit raises ``NotExaminedError`` — the input is refused, saying so.
    """

    def __init__(self, limits: Limits, input_size: int) -> None:
        self.input_size = max(0, input_size)
        self.decompressed_total = min(
            limits.max_scan_bytes,
            limits.examine_base_bytes + limits.examine_bytes_per_input_byte * self.input_size,
        )
        self.members_total = min(
            limits.max_archive_members,
            limits.members_base + self.input_size // max(1, limits.input_bytes_per_member),
        )
        self.held_total = limits.max_held_bytes
        self.limits = limits
        self.decompressed = 0
        self.members = 0
        self.held = 0

    @property
    def decompressed_left(self) -> int:
        return self.decompressed_total - self.decompressed

    @property
    def held_left(self) -> int:
        return self.held_total - self.held

    def charge_decompressed(self, count: int, what: str = "the input") -> None:
        self.decompressed += count
        if self.decompressed > self.decompressed_total:
            raise NotExaminedError(self.decompressed_sentence(what))

    def decompressed_sentence(self, what: str) -> str:
        limits = self.limits
        if self.decompressed_total == limits.max_scan_bytes:
            bound = "the most imagewright decompresses"
        else:
            bound = (
                f"{format_size(limits.examine_base_bytes)} plus {limits.examine_bytes_per_input_byte} "
                f"bytes per byte of the {format_size(self.input_size)} input"
            )
        return (
            f"{_capital(what)} could not be examined within the limit: it decompresses to more than "
            f"{format_size(self.decompressed_total)} ({bound}; a decompression bomb, or too large to "
            "inspect)."
        )

    def charge_member(self) -> None:
        self.members += 1
        if self.members > self.members_total:
            limits = self.limits
            if self.members_total == limits.max_archive_members:
                bound = "the most imagewright examines"
            else:
                bound = (
                    f"{limits.members_base} plus one per {limits.input_bytes_per_member} bytes of the "
                    f"{format_size(self.input_size)} input"
                )
            raise NotExaminedError(
                f"The archive could not be examined within the limit: it holds more than "
                f"{self.members_total} members ({bound})."
            )

    def charge_held(self, count: int) -> bool:
        """Reserve ``count`` bytes of memory for examined data; False (none reserved) if they do not fit."""
        if self.held + count > self.held_total:
            return False
        self.held += count
        return True

    def release_held(self, count: int) -> None:
        self.held = max(0, self.held - count)

    def held_sentence(self, what: str) -> str:
        return (
            f"{_capital(what)} could not be examined within the limit: it holds more than "
            f"{format_size(self.held_total)} of data, the most imagewright keeps in memory to examine "
            "a compressed image or the members of a compressed archive."
        )


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass
class OpenedImage:
    """A parsed disk image: its format facts and a way to read the guest's bytes."""

    #: qemu-img's driver name: raw, qcow, qcow2, vmdk, vpc, vhdx, vdi.
    format: str
    virtual_size: int
    #: The format's own typed dataclass of header fields (``Qcow2Details``, ``VmdkDetails`` ...).
    details: FormatDetails
    #: How the guest data is encrypted (``aes``, ``luks``, ``unknown (N)`` for a method no
    #: reader knows); None when it is not. Every reader states it: an encrypted guest is read
    #: only by whoever holds the key, so nothing here judged what it holds.
    encryption: str | None
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
