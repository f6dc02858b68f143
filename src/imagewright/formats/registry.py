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
from imagewright.formats.qemu_probe import PROBE_BUFFER_SIZE, qemu_probe_choice, qemu_probe_scores

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


def probe_conflicts(src: ByteSource, head: bytes, chosen: DiskFormatReader, name: str = "") -> list[str]:
    """Reasons to refuse because readers would disagree on what ``src`` is (see module NOTE).

    ``name``: the file's name, when known: QEMU probes a raw file named ``*.dmg`` as dmg.
    """
    claimed = [reader.name for reader in DISK_FORMATS[:-1] if reader.probe(src, head)]
    problems: list[str] = []
    if len(claimed) > 1:
        problems.append(
            f"the file carries the signatures of {' and '.join(claimed)} at once; readers would "
            "disagree on its format"
        )
    qemu_choice = qemu_probe_choice(qemu_probe_scores(head, src.size, name))
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


def guest_probe_conflict(guest: ByteSource, fmt: str) -> str | None:
    """A reason to refuse a ``fmt`` image whose guest disk QEMU would itself probe as an image.

    NOTE (safety): the guest's bytes become a file of their own whenever the image is
    converted to raw or written to a volume, and QEMU probes such a file by its first 2 KiB:
    a qcow2 whose guest disk begins with a qcow2 header naming a backing file is harmless as
    itself, and a backing-file attack once converted (the raw file is refused by this gate, so
    the converted output of an accepted image must not be). Only a raw guest is passed.
    """
    if fmt == "raw" or guest.size == 0:
        return None
    choice = _probed_as_image(guest.pread(0, min(PROBE_BUFFER_SIZE, guest.size)), guest.size)
    if not choice:
        return None
    return (
        f"the guest disk inside this {fmt} image begins with a {' or '.join(choice)} image header; "
        f"converted to raw or written to a volume, QEMU's format probe would open it as {choice[0]}"
    )


def container_probe_conflict(src: ByteSource, head: bytes, container: str) -> str | None:
    """A reason to refuse a file imagewright reads as a ``container`` (tar, gzip ...) that
    QEMU's own format probe would open as a disk image.

    NOTE (safety): a tar header's name field is 100 free bytes at offset 0, and gzip, xz and
    zstd headers carry free bytes too, so one file can be a valid archive and a valid qcow2
    (backing file name in the tar link name field) or VMDK descriptor (extent lines in the
    member name) at once: imagewright would judge the archive's members while a cloud that
    lets QEMU probe the file opens the disk and the file it names (red-team finding). A real
    archive probes as raw.
    """
    choice = _probed_as_image(head, src.size)
    if not choice:
        return None
    return (
        f"the file is a {container} to imagewright, but QEMU's own format probe would open it as "
        f"{' or '.join(choice)}; the two would read different things"
    )


def _probed_as_image(head: bytes, size: int) -> list[str]:
    """The drivers QEMU's probe would pick for a file of ``size`` starting with ``head``,
    unless it picks raw (then empty)."""
    choice = qemu_probe_choice(qemu_probe_scores(head, size))
    return [] if choice == ["raw"] else choice
