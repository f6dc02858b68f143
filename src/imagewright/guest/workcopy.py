"""The raw file e2fsprogs works on, and putting the result back over the original image.

e2fsprogs reads and writes raw bytes only, so:

- a raw image opened read-only is used in place (through a plainly named symbolic link when
  its path holds a '?', at which e2fsprogs splits device names);
- a raw image opened for writing is copied first (``files.copy_sparse``: a reflink when the
  filesystem can, else a sparse copy), edited, and renamed over the original at the end;
- any other format is converted to a raw working copy with qemu-img (explicit ``-f``), edited,
  and, when writable, converted back into the original format with the options that matter
  (``write_back_plan``) into a temporary name, then renamed over the original.

The options come from the inspection report, read by ``formats/`` (no header is parsed again
here): qcow2 compat, cluster size, refcount width, lazy refcounts, extended L2, compression
type (and compressed clusters kept compressed, counted by ``qemu-img check``); VMDK subformat,
adapter type, hardware and tools versions (the embedded descriptor); VHD fixed or dynamic, and
``force_size`` exactly when QEMU sizes the source by its footer's current size rather than by
its CHS geometry (``VhdDetails.size_source``: a CHS-sized VHD written with ``force_size`` would
come back with another geometry and, for some readers, another size); VHDX fixed or dynamic,
block size and log size; VDI static or dynamic.

So a failure at any point leaves the original image byte for byte as it was: nothing touches
it but the final ``rename`` of a ``files.AtomicOutput`` in its place, which also refuses when
the image changed meanwhile. Working files sit next to the image (same filesystem: the rename
is atomic) under the one temporary naming scheme of ``imagewright.files``; a read-only
working copy goes to ``$TMPDIR`` when the image's directory is not writable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from imagewright.errors import ImageFormatError, ImageIOError, UnsupportedFormatError
from imagewright.files import AtomicOutput, ScratchFiles, copy_sparse
from imagewright.formats.qcow2 import Qcow2Details
from imagewright.formats.vdi import VdiDetails
from imagewright.formats.vhd import FIXED, VhdDetails
from imagewright.formats.vhdx import VhdxDetails
from imagewright.formats.vmdk import VmdkDetails
from imagewright.inspection import ImageReport
from imagewright.programs import qemu_img

ProgressCallback = Callable[[int, int | None], None]

#: Formats imagewright can write back after editing a guest.
WRITABLE_FORMATS = frozenset({"raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi"})
#: Formats a raw working copy can be made from (for reading).
READABLE_FORMATS = WRITABLE_FORMATS | {"qcow", "qed", "parallels"}

_VMDK_SINGLE_FILE = ("monolithicSparse", "streamOptimized")
_VMDK_ADAPTERS = ("ide", "lsilogic", "buslogic", "legacyESX")
_VDI_STATIC = 2  # VDI header image type: 1 normal (dynamic), 2 fixed (static)
_MiB = 1024 * 1024


@dataclass(frozen=True)
class WriteBack:
    """How to turn the raw working copy back into the image's own format."""

    fmt: str
    options: dict[str, str | int | bool] = field(default_factory=dict)
    compress: bool = False


def write_back_plan(report: ImageReport) -> WriteBack:
    """How a raw copy of the image ``report`` describes (judged safe) becomes that image again."""
    fmt = report.format
    details = report.details
    if fmt == "raw":
        return WriteBack("raw")
    if fmt not in WRITABLE_FORMATS:
        raise UnsupportedFormatError(
            f"imagewright can read {fmt} images but not write them back; convert the image to qcow2 first."
        )
    if fmt == "qcow2" and isinstance(details, Qcow2Details):
        return _qcow2_plan(Path(report.path), details)
    if fmt == "vmdk" and isinstance(details, VmdkDetails):
        return _vmdk_plan(details, report.subformat)
    if fmt == "vpc" and isinstance(details, VhdDetails):
        return WriteBack(
            "vpc",
            {
                "subformat": "fixed" if details.disk_type == FIXED else "dynamic",
                "force_size": details.size_source != "chs",
            },
        )
    if fmt == "vhdx" and isinstance(details, VhdxDetails):
        options: dict[str, str | int | bool] = {
            "subformat": "fixed" if details.leave_blocks_allocated else "dynamic"
        }
        if _MiB <= details.block_size <= 256 * _MiB:
            options["block_size"] = details.block_size
        if details.log_length >= _MiB and details.log_length % _MiB == 0:
            options["log_size"] = details.log_length
        return WriteBack("vhdx", options)
    if fmt == "vdi" and isinstance(details, VdiDetails):
        return WriteBack("vdi", {"static": details.image_type == _VDI_STATIC})
    raise ImageFormatError(
        f"The inspection of {report.path} did not read the {fmt} header needed to write it back."
    )


def _qcow2_plan(image: Path, details: Qcow2Details) -> WriteBack:
    compat = "1.1" if details.version >= 3 else "0.10"
    options: dict[str, str | int | bool] = {
        "compat": compat,
        "cluster_size": details.cluster_size,
        "refcount_bits": details.refcount_bits,
    }
    if compat == "1.1":
        options["lazy_refcounts"] = details.lazy_refcounts
        if details.extended_l2:
            options["extended_l2"] = True
        if details.compression in ("zlib", "zstd"):
            options["compression_type"] = details.compression
    # Cloud images are often shipped with compressed clusters; rewriting them uncompressed
    # would make the prepared image several times larger than the one the user gave us.
    checked = qemu_img.check(image, "qcow2")
    compressed = checked.compressed_clusters or 0
    allocated = checked.allocated_clusters or 0
    return WriteBack("qcow2", options, compress=compressed > 0 and compressed * 2 >= allocated)


def _vmdk_plan(details: VmdkDetails, subformat: str | None) -> WriteBack:
    create_type = details.create_type or subformat
    if details.kind != "sparse" or create_type not in _VMDK_SINGLE_FILE:
        raise UnsupportedFormatError(
            f"imagewright writes back single-file VMDK images only, not '{create_type}'."
        )
    options: dict[str, str | int | bool] = {"subformat": str(create_type)}
    descriptor = details.descriptor
    if descriptor is not None:
        if descriptor.adapter_type in _VMDK_ADAPTERS:
            options["adapter_type"] = descriptor.adapter_type
        hardware = descriptor.virtual_hw_version
        if hardware and hardware.isdigit() and hardware != "4":
            options["hwversion"] = hardware
        tools = descriptor.tools_version
        if tools and tools.isdigit():
            options["toolsversion"] = tools
    return WriteBack("vmdk", options)


def copy_to_raw(
    image: Path,
    fmt: str,
    raw: Path,
    virtual_size: int | None,
    progress: ProgressCallback | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write the guest bytes of ``image`` (format ``fmt``, already judged safe) into the raw
    file ``raw``, sparse: a reflink or sparse copy of a raw image, qemu-img for the others.
    ``durable`` False: not flushed to disk (a scratch copy read back at once)."""
    if fmt == "raw":
        copy_sparse(image, raw, progress, durable=durable)
        return
    qemu_img.convert(
        image,
        fmt,
        raw,
        "raw",
        progress=progress,
        total_bytes=virtual_size if progress else None,
        durable=durable,
    )


def plain_name(path: Path) -> tuple[ScratchFiles | None, Path]:
    """``path``, or a link to it without '?' (e2fsprogs splits device names at '?'), with the
    scratch files holding the link (the caller cleans them up)."""
    if "?" not in str(path):
        return None, path
    links = ScratchFiles(path, Path(tempfile.gettempdir()))
    link = links.scratch_directory("link") / "disk"
    link.symlink_to(path.absolute())
    return links, link


class WorkingCopy:
    """The raw file to edit for ``image``; ``commit`` puts it back, ``cleanup`` forgets it.

    Use as a context manager: leaving the block without ``commit`` discards every change.
    ``report`` is the image's inspection report (already judged safe).
    """

    def __init__(
        self,
        image: Path,
        report: ImageReport,
        *,
        writable: bool,
        progress: ProgressCallback | None = None,
    ) -> None:
        fmt = report.format
        if fmt not in READABLE_FORMATS:
            raise UnsupportedFormatError(
                f"imagewright cannot edit files inside a {fmt} image; convert it to raw or qcow2 first."
            )
        self.image = image
        self.fmt = fmt
        self.writable = writable
        self._progress = progress
        self._virtual_size = report.virtual_size
        self._plan = write_back_plan(report) if writable else None
        self._output = AtomicOutput(image, in_place=True, doing="editing") if writable else None
        self._scratch = self._output or self._read_only_scratch()
        self._links: ScratchFiles | None = None
        try:
            self.path = self._prepare()
            self.e2fs_path = self._plain_name(self.path)
        except BaseException:
            self.cleanup()
            raise

    def __enter__(self) -> WorkingCopy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _read_only_scratch(self) -> ScratchFiles:
        """Beside the image when its directory is writable (the space is there), else in $TMPDIR."""
        if self.fmt != "raw" and os.access(self.image.parent, os.W_OK):
            return ScratchFiles(self.image)
        return ScratchFiles(self.image, Path(tempfile.gettempdir()))

    def _prepare(self) -> Path:
        if self.fmt == "raw" and self._output is None:
            return self.image  # read-only: used where it is
        raw = (
            self._output.path
            if self._output is not None and self.fmt == "raw"
            else self._scratch.scratch("raw")
        )
        copy_to_raw(self.image, self.fmt, raw, self._virtual_size, self._progress)
        return raw

    def _plain_name(self, path: Path) -> Path:
        self._links, link = plain_name(path)
        return link

    def commit(self) -> None:
        """Replace the original image with the edited working copy (atomic rename)."""
        if self._output is None or self._plan is None:
            raise ImageIOError("A read-only working copy cannot be committed.")
        if self._plan.fmt != "raw":
            qemu_img.convert(
                self.path,
                "raw",
                self._output.path,
                self._plan.fmt,
                options=self._plan.options,
                compress=self._plan.compress,
                progress=self._progress,
                total_bytes=self.path.stat().st_size if self._progress else None,
            )
        self._output.commit()

    def cleanup(self) -> None:
        self._scratch.cleanup()
        if self._links is not None:
            self._links.cleanup()
