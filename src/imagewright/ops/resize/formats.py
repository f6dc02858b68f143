"""Which image formats can be resized, and how each one is written back.

qemu-img 7.2 resizes only raw and qcow2 (``qemu-img resize`` on vmdk, vdi, vhdx and vpc says
"Image format driver does not support resize", checked by the tests). Those four go through
a raw working copy that is converted back with the options that make the image what it was
(``guest.workcopy.write_back_plan``, from the inspection report, shared with guest edits):

- vmdk: subformat (monolithicSparse / streamOptimized), adapter type, hardware and tools
  versions (from the embedded descriptor);
- vhdx: fixed or dynamic, block size and log size (from inspect's VHDX metadata);
- vdi: static or dynamic (the header's image type);
- vpc: fixed or dynamic, and ``force_size`` exactly when the source is sized by its footer's
  current size rather than by CHS geometry (see ``sizes.py``).

qcow2 stays in place whenever only sectors are written (qemu-io writes them through qemu's
own driver); when a filesystem must be grown it too goes through a raw working copy and is
converted back with its options (compat, cluster size, refcount width, lazy refcounts,
extended L2, compression type, compressed clusters kept compressed).
"""

from __future__ import annotations

from imagewright.errors import UnsupportedFormatError
from imagewright.formats.qcow2 import Qcow2Details
from imagewright.formats.vhd import VhdDetails
from imagewright.formats.vhdx import VhdxDetails
from imagewright.guest.workcopy import WriteBack
from imagewright.inspection import ImageReport

#: qemu-img resize works on these (qemu 7.2).
RESIZED_IN_PLACE = frozenset({"raw", "qcow2"})
#: These are resized through a raw working copy and converted back.
RESIZED_THROUGH_RAW = frozenset({"vmdk", "vhdx", "vdi", "vpc"})
SUPPORTED = RESIZED_IN_PLACE | RESIZED_THROUGH_RAW


def check_supported(report: ImageReport) -> None:
    """UnsupportedFormatError in one sentence for anything but raw, qcow2, vmdk, vhdx, vdi, vpc."""
    container = report.container
    if container is not None:
        if container.kind == "compressed":
            raise UnsupportedFormatError(
                f"{report.path} is compressed ({container.format}); decompress it first with "
                "`imagewright convert`, then resize the result."
            )
        raise UnsupportedFormatError(
            f"{report.path} is a {container.format} archive, not a disk image; extract the disk first."
        )
    if report.format not in SUPPORTED:
        raise UnsupportedFormatError(
            f"imagewright does not resize {report.format} images; convert it to qcow2 or raw first "
            "with `imagewright convert`."
        )
    if report.virtual_size is None:
        raise UnsupportedFormatError(f"{report.path} does not say how large its disk is.")
    details = report.details
    if report.format == "vhdx" and isinstance(details, VhdxDetails) and details.logical_sector_size != 512:
        raise UnsupportedFormatError(
            f"{report.path} uses {details.logical_sector_size}-byte sectors, and qemu-img writes VHDX "
            "with 512-byte sectors only; resizing it would move every partition."
        )


def check_convertible(report: ImageReport) -> None:
    """Refuse a round trip through raw that would lose something qemu-img convert does not carry."""
    details = report.details
    if report.format == "qcow2" and isinstance(details, Qcow2Details) and details.nb_snapshots:
        raise UnsupportedFormatError(
            f"{report.path} has {details.nb_snapshots} internal snapshot(s), which growing its filesystem "
            "through a raw copy would drop; resize without growing the filesystem (--no-partition) or "
            "delete the snapshots first."
        )


def vhd_size_source(report: ImageReport) -> str | None:
    """``chs`` or ``current_size`` for a VHD (how qemu sizes it), else None."""
    details = report.details
    return details.size_source if isinstance(details, VhdDetails) else None


def preallocates(plan: WriteBack) -> bool:
    """Whether the written-back file takes the whole virtual size on disk (fixed/static kinds)."""
    options = plan.options
    return options.get("subformat") == "fixed" or options.get("static") is True
