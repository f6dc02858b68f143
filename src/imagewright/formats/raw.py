"""raw: no header at all; the file is the disk (QEMU's "raw" driver, the fallback format).

Every file is a valid raw image, so ``probe`` accepts anything and the registry asks it
last. What lives inside (partition tables, filesystems) is surveyed by
``imagewright.disk``, not here.

The virtual size is the file size rounded up to whole 512-byte sectors: QEMU's block layer
counts a file in sectors (``bdrv_nb_sectors`` rounds up), so ``qemu-img info`` reports
10000384 bytes for a 10000001-byte file and ``qemu-img convert`` pads the tail with zeros.
The guest view is the file itself, with the same zero padding when the size is not a
multiple of 512.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagewright.binary import ByteSource
from imagewright.formats import probes
from imagewright.formats.base import Limits, OpenedImage

SECTOR = 512


@dataclass(frozen=True)
class RawDetails:
    file_size: int


class ZeroPaddedSource:
    """``src`` followed by zeros up to ``size`` (the sector QEMU completes at the end)."""

    def __init__(self, src: ByteSource, size: int) -> None:
        self._src = src
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self._size:
            return b""
        length = min(length, self._size - offset)
        data = self._src.pread(offset, length) if offset < self._src.size else b""
        return data + bytes(length - len(data))


#: The signature check lives in ``probes``: the registry probes every format without importing its reader.
probe = probes.raw


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """The file as a disk: virtual size = file size in whole sectors, guest bytes = file bytes."""
    virtual_size = -(-src.size // SECTOR) * SECTOR
    guest: ByteSource = src if virtual_size == src.size else ZeroPaddedSource(src, virtual_size)
    return OpenedImage(
        format="raw", virtual_size=virtual_size, details=RawDetails(src.size), encryption=None, guest=guest
    )
