"""Which disk-format reader handles an image: the probe order, in one table.

Order matters the way it does for qemu's own probing: formats with a magic at offset 0
first, the footer-only fixed VHD late, raw last (it accepts everything).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from imagewright.binary import ByteSource


@dataclass(frozen=True)
class DiskFormatReader:
    """A format module (``probe``/``open_image``) under qemu-img's name for it."""

    name: str
    module_name: str

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(f"imagewright.formats.{self.module_name}")


#: Probe order. ``raw`` must stay last: its probe accepts anything.
DISK_FORMATS: tuple[DiskFormatReader, ...] = (
    DiskFormatReader("qcow2", "qcow2"),
    DiskFormatReader("qcow", "qcow"),
    DiskFormatReader("vmdk", "vmdk"),
    DiskFormatReader("vdi", "vdi"),
    DiskFormatReader("vhdx", "vhdx"),
    DiskFormatReader("vpc", "vhd"),
    DiskFormatReader("qed", "qed"),
    DiskFormatReader("parallels", "parallels"),
    DiskFormatReader("luks", "luks"),
    DiskFormatReader("raw", "raw"),
)


def detect_disk_format(src: ByteSource, head: bytes) -> DiskFormatReader:
    """The first reader whose probe accepts the image (raw at worst)."""
    for reader in DISK_FORMATS:
        if reader.module.probe(src, head):
            return reader
    raise AssertionError("the raw reader accepts every image")


def reader_for(name: str) -> DiskFormatReader:
    """The reader for a qemu-img format name (``vpc``, ``qcow2`` ...)."""
    for reader in DISK_FORMATS:
        if reader.name == name:
            return reader
    raise KeyError(name)
