"""raw: no header at all; the file is the disk (QEMU's "raw" driver, the fallback format).

Every file is a valid raw image, so ``probe`` accepts anything and the registry asks it
last. The virtual size is the file size, as ``qemu-img info`` reports it, and the guest
view is the file itself. What lives inside (partition tables, filesystems) is surveyed by
``imagewright.disk``, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagewright.binary import ByteSource
from imagewright.formats.base import Limits, OpenedImage


@dataclass(frozen=True)
class RawDetails:
    file_size: int


def probe(src: ByteSource, head: bytes) -> bool:
    """Always True: raw is what a file is when it is nothing else."""
    return True


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """The file as a disk: virtual size = file size, guest bytes = file bytes."""
    return OpenedImage(format="raw", virtual_size=src.size, details=RawDetails(src.size), guest=src)
