"""Which disk-format reader handles an image: the probe order, in one table.

Order matters the way it does for qemu's own probing: formats with a magic at offset 0
first, the footer-only fixed VHD late, raw last (it accepts everything).

NOTE (safety): ``probe_conflicts`` compares our choice with every other reader's probe and
with QEMU's own (``qemu_probe.py``): a file two readers claim, or one QEMU would probe as
another format, is read differently by someone, and is refused.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from imagewright.formats import probes
from imagewright.formats.qemu_probe import qemu_probe_choice, qemu_probe_scores

if TYPE_CHECKING:
    from types import ModuleType

    from imagewright.binary import ByteSource


class DiskFormatReader(NamedTuple):
    """A format module (``probe``/``open_image``) under qemu-img's name for it.

    The probe is the module's own (``probes``), held here so that probing every format does
    not import every reader: a reader's module is imported when a file is opened with it.
    """

    name: str
    module_name: str
    probe: Callable[[ByteSource, bytes], bool]

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(f"imagewright.formats.{self.module_name}")


#: Probe order. ``raw`` must stay last: its probe accepts anything.
DISK_FORMATS: tuple[DiskFormatReader, ...] = (
    DiskFormatReader("qcow2", "qcow2", probes.qcow2),
    DiskFormatReader("qcow", "qcow", probes.qcow),
    DiskFormatReader("vmdk", "vmdk", probes.vmdk),
    DiskFormatReader("vdi", "vdi", probes.vdi),
    DiskFormatReader("vhdx", "vhdx", probes.vhdx),
    DiskFormatReader("vpc", "vhd", probes.vhd),
    DiskFormatReader("qed", "qed", probes.qed),
    DiskFormatReader("parallels", "parallels", probes.parallels),
    DiskFormatReader("luks", "luks", probes.luks),
    DiskFormatReader("raw", "raw", probes.raw),
)


def detect_disk_format(src: ByteSource, head: bytes) -> DiskFormatReader:
    """The first reader whose probe accepts the image (raw at worst)."""
    for reader in DISK_FORMATS:
        if reader.probe(src, head):
            return reader
    raise AssertionError("the raw reader accepts every image")


def reader_for(name: str) -> DiskFormatReader:
    """The reader for a qemu-img format name (``vpc``, ``qcow2`` ...)."""
    for reader in DISK_FORMATS:
        if reader.name == name:
            return reader
    raise KeyError(name)


def probe_conflicts(src: ByteSource, head: bytes, chosen: DiskFormatReader) -> list[str]:
    """Reasons to refuse because readers would disagree on what ``src`` is (see module NOTE)."""
    claimed = [reader.name for reader in DISK_FORMATS[:-1] if reader.probe(src, head)]
    problems: list[str] = []
    if len(claimed) > 1:
        problems.append(
            f"the file carries the signatures of {' and '.join(claimed)} at once; readers would "
            "disagree on its format"
        )
    qemu_choice = qemu_probe_choice(qemu_probe_scores(head, src.size))
    if len(qemu_choice) > 1:
        problems.append(
            f"QEMU's own format probe scores {' and '.join(qemu_choice)} alike, so which format it "
            "picks depends on the order its drivers registered"
        )
    elif qemu_choice[0] != chosen.name and not (chosen.name == "vpc" and qemu_choice[0] == "raw"):
        # (A fixed VHD is raw to QEMU's probe: the same guest bytes followed by its footer.)
        problems.append(
            f"QEMU's own format probe would open this file as {qemu_choice[0]}, not as {chosen.name}; "
            "a cloud that lets QEMU probe it would see another disk"
        )
    return problems
