"""Filesystem and container signatures (blkid-like), one module per family.

``probe_filesystem`` runs the probes in libblkid's order (``superblocks/superblocks.c``):
volume managers and encryption first, then filesystems. Like ``blkid -p`` it keeps going
after the first match to notice a second, conflicting signature (an "ambivalent" result,
which blkid refuses to report); we report the first and record the conflict as a problem.
Every read is bounded; only ImagewrightError subclasses leave this package.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from imagewright.binary import ByteSource, SliceSource
from imagewright.disk.filesystems import (
    btrfs,
    ext,
    fat,
    iso9660,
    luks,
    lvm,
    ntfs,
    reiserfs,
    squashfs,
    swap,
    xfs,
)
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.errors import ImageFormatError

__all__ = ["PROBES", "FilesystemInfo", "SignatureProbe", "probe_filesystem"]

ProbeFunction = Callable[[ByteSource], FilesystemInfo | None]


class SignatureProbe(NamedTuple):
    """One family's probe. ``tolerant`` signatures (ISO 9660) may coexist with another one."""

    family: str
    probe: ProbeFunction
    tolerant: bool = False


#: In libblkid's order; RAID and crypto signatures end the search at once.
PROBES: tuple[SignatureProbe, ...] = (
    SignatureProbe("lvm2", lvm.probe),
    SignatureProbe("luks", luks.probe),
    SignatureProbe("vfat", fat.probe),
    SignatureProbe("swap", swap.probe),
    SignatureProbe("xfs", xfs.probe),
    SignatureProbe("ext", ext.probe),
    SignatureProbe("reiserfs", reiserfs.probe),
    SignatureProbe("iso9660", iso9660.probe, tolerant=True),
    SignatureProbe("ntfs", ntfs.probe),
    SignatureProbe("squashfs", squashfs.probe),
    SignatureProbe("btrfs", btrfs.probe),
)

#: blkid ignores regions this small (extended-partition stubs and the like).
_MIN_REGION = 1025


def probe_filesystem(disk: ByteSource, offset: int = 0, size: int | None = None) -> FilesystemInfo | None:
    """The signature at ``offset`` of ``disk`` (a window of ``size`` bytes), or None.

    Raises only ImagewrightError: a hostile superblock is "not recognised" or a problem in
    the result, never an exception of another kind.
    """
    if offset < 0 or (size is not None and size < 0):
        raise ImageFormatError("A filesystem probe was asked for a negative offset or size.")
    available = max(0, disk.size - offset)
    window_size = available if size is None else min(size, available)
    region: ByteSource = (
        disk if offset == 0 and window_size == disk.size else SliceSource(disk, offset, window_size)
    )
    if region.size < _MIN_REGION:
        return None
    found: FilesystemInfo | None = None
    found_tolerant = False
    for entry in PROBES:
        info = _run(entry, region)
        if info is None:
            continue
        if found is None:
            found = info
            found_tolerant = entry.tolerant
            if info.usage in ("raid", "crypto"):
                break
            continue
        if not (entry.tolerant and found_tolerant) and info.usage not in ("raid", "crypto"):
            found.problems.append(
                f"Signatures of both {found.type} and {info.type} are present; blkid would refuse to "
                "name this filesystem (ambivalent result)."
            )
            also = found.details.get("also_found")
            found.details["also_found"] = [*also, info.type] if isinstance(also, list) else [info.type]
    if found is not None:
        found.offset = offset
    return found


def _run(entry: SignatureProbe, region: ByteSource) -> FilesystemInfo | None:
    try:
        return entry.probe(region)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as err:
        # A probe that trips over hostile bytes has found no valid superblock; say so in one
        # sentence rather than let a parser detail escape.
        raise ImageFormatError(f"The {entry.family} superblock could not be parsed ({err}).") from None
