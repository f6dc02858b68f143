"""The raw file e2fsprogs works on, and putting the result back over the original image.

e2fsprogs reads and writes raw bytes only, so:

- a raw image opened read-only is used in place (through a plainly named symbolic link, since
  e2fsprogs splits device names at '?');
- a raw image opened for writing is copied first (a reflink when the filesystem can, else a
  sparse copy), edited, and renamed over the original at the end;
- any other format is converted to a raw working copy with qemu-img (explicit ``-f``), edited,
  and, when writable, converted back into the original format with the options that matter
  (qcow2 compat, cluster size, compression type and compressed clusters, refcount width, lazy
  refcounts, extended L2; VMDK subformat, adapter type, hardware and tools versions; VHD
  subformat; VHDX subformat; VDI static) into a temporary name, then renamed over the original.

So a failure at any point leaves the original image byte for byte as it was: nothing touches
it but the final ``rename``. The working directory sits next to the image so that the rename
stays within one filesystem (and so is atomic).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from imagewright.errors import ImageIOError, UnsupportedFormatError
from imagewright.programs import qemu_img

ProgressCallback = Callable[[int, int | None], None]

#: Formats imagewright can write back after editing a guest.
WRITABLE_FORMATS = frozenset({"raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi"})
#: Formats a raw working copy can be made from (for reading).
READABLE_FORMATS = WRITABLE_FORMATS | {"qcow", "qed", "parallels"}

_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_COPY_CHUNK = 8 * 1024 * 1024
_VMDK_SINGLE_FILE = ("monolithicSparse", "streamOptimized")
_VMDK_ADAPTERS = ("ide", "lsilogic", "buslogic", "legacyESX")


@dataclass(frozen=True)
class WriteBack:
    """How to turn the raw working copy back into the image's own format."""

    fmt: str
    options: dict[str, str | int | bool] = field(default_factory=dict)
    compress: bool = False


def write_back_plan(image: Path, fmt: str) -> WriteBack:
    """Read the options of ``image`` (already judged safe, format ``fmt``) that a rewrite keeps."""
    if fmt == "raw":
        return WriteBack("raw")
    if fmt not in WRITABLE_FORMATS:
        raise UnsupportedFormatError(
            f"imagewright can read {fmt} images but not write them back; convert the image to qcow2 first."
        )
    info = qemu_img.info(image, fmt)
    specific = info.get("format-specific", {})
    data = specific.get("data", {}) if isinstance(specific, dict) else {}
    if not isinstance(data, dict):
        data = {}
    if fmt == "qcow2":
        return _qcow2_plan(image, info, data)
    if fmt == "vmdk":
        return _vmdk_plan(image, data)
    if fmt == "vpc":
        return WriteBack("vpc", {"subformat": _vhd_subformat(image), "force_size": True})
    if fmt == "vhdx":
        # qemu-img info says nothing VHDX-specific; a file as large as its disk was fixed.
        actual = info.get("actual-size")
        virtual = info.get("virtual-size")
        fixed = isinstance(actual, int) and isinstance(virtual, int) and actual >= virtual
        return WriteBack("vhdx", {"subformat": "fixed" if fixed else "dynamic"})
    return WriteBack("vdi", {"static": _vdi_is_static(image)})


def _qcow2_plan(image: Path, info: dict[str, object], data: dict[str, object]) -> WriteBack:
    options: dict[str, str | int | bool] = {}
    compat = data.get("compat")
    if compat in ("0.10", "1.1"):
        options["compat"] = str(compat)
    cluster = info.get("cluster-size")
    if isinstance(cluster, int):
        options["cluster_size"] = cluster
    refcount_bits = data.get("refcount-bits")
    if isinstance(refcount_bits, int):
        options["refcount_bits"] = refcount_bits
    if compat == "1.1":
        if isinstance(data.get("lazy-refcounts"), bool):
            options["lazy_refcounts"] = bool(data["lazy-refcounts"])
        if data.get("extended-l2") is True:
            options["extended_l2"] = True
        compression = data.get("compression-type")
        if compression in ("zlib", "zstd"):
            options["compression_type"] = str(compression)
    # Cloud images are often shipped with compressed clusters; rewriting them uncompressed
    # would make the prepared image several times larger than the one the user gave us.
    checked = qemu_img.check(image, "qcow2")
    compressed = checked.compressed_clusters or 0
    allocated = checked.allocated_clusters or 0
    return WriteBack("qcow2", options, compress=compressed > 0 and compressed * 2 >= allocated)


def _vmdk_plan(image: Path, data: dict[str, object]) -> WriteBack:
    create_type = data.get("create-type")
    if create_type not in _VMDK_SINGLE_FILE:
        raise UnsupportedFormatError(
            f"imagewright writes back single-file VMDK images only, not '{create_type}'."
        )
    options: dict[str, str | int | bool] = {"subformat": str(create_type)}
    descriptor = _vmdk_descriptor(image)
    adapter = _descriptor_value(descriptor, "ddb.adapterType")
    if adapter in _VMDK_ADAPTERS:
        options["adapter_type"] = adapter
    hardware = _descriptor_value(descriptor, "ddb.virtualHWVersion")
    if hardware and hardware.isdigit() and hardware != "4":
        options["hwversion"] = hardware
    tools = _descriptor_value(descriptor, "ddb.toolsVersion")
    if tools and tools.isdigit():
        options["toolsversion"] = tools
    return WriteBack("vmdk", options)


def _vmdk_descriptor(image: Path) -> str:
    """The embedded descriptor of a hosted sparse VMDK (header: descriptor offset/size in sectors)."""
    with image.open("rb") as f:
        header = f.read(512)
        if len(header) < 44 or header[:4] != b"KDMV":
            return ""
        offset, size = struct.unpack_from("<QQ", header, 28)
        if not 0 < offset < 1 << 20 or not 0 < size <= 2048:
            return ""
        f.seek(offset * 512)
        return f.read(size * 512).split(b"\0", 1)[0].decode("latin-1")


def _descriptor_value(descriptor: str, key: str) -> str | None:
    match = re.search(rf'^\s*{re.escape(key)}\s*=\s*"([^"\n]*)"', descriptor, re.M)
    return match.group(1) if match else None


def _vhd_subformat(image: Path) -> str:
    """``fixed`` or ``dynamic`` from the VHD footer's disk type (u32 BE at 60: 2 fixed, 3 dynamic)."""
    with image.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        for where in (size - 512, size - 511, 0):  # footers of old tools may be 511 bytes
            if where < 0:
                continue
            f.seek(where)
            footer = f.read(512)
            if footer[:8] == b"conectix" and len(footer) >= 64:
                return "fixed" if struct.unpack_from(">I", footer, 60)[0] == 2 else "dynamic"
    return "dynamic"


def _vdi_is_static(image: Path) -> bool:
    """VDI header image type (u32 LE at 0x4C): 1 dynamic, 2 static."""
    with image.open("rb") as f:
        header = f.read(0x50)
    return len(header) >= 0x50 and struct.unpack_from("<I", header, 0x4C)[0] == 2


def _fingerprint(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class WorkingCopy:
    """The raw file to edit for ``image``; ``commit`` puts it back, ``cleanup`` forgets it.

    Use as a context manager: leaving the block without ``commit`` discards every change.
    """

    def __init__(
        self,
        image: Path,
        fmt: str,
        *,
        writable: bool,
        progress: ProgressCallback | None = None,
    ) -> None:
        if fmt not in READABLE_FORMATS:
            raise UnsupportedFormatError(
                f"imagewright cannot edit files inside a {fmt} image; convert it to raw or qcow2 first."
            )
        self.image = image
        self.fmt = fmt
        self.writable = writable
        self._progress = progress
        self._plan = write_back_plan(image, fmt) if writable else None
        self._fingerprint = _fingerprint(image)
        self._committed = False
        self._link_dir: Path | None = None
        self.workdir = self._make_workdir()
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

    def _make_workdir(self) -> Path:
        needs_space_here = self.writable or self.fmt != "raw"
        if needs_space_here:
            stem = re.sub(r"[^A-Za-z0-9._-]", "_", self.image.name[:80])
            candidate = self.image.parent / f".{stem}.imagewright-{secrets.token_hex(4)}"
            try:
                candidate.mkdir(mode=0o700)
                return candidate
            except PermissionError:
                if self.writable:
                    raise ImageIOError(
                        f"Cannot write next to {self.image}: the directory is not writable."
                    ) from None
        return Path(tempfile.mkdtemp(prefix="imagewright-work-"))

    def _prepare(self) -> Path:
        if self.fmt == "raw" and not self.writable:
            link = self.workdir / "disk"
            link.symlink_to(self.image.absolute())
            return link
        target = self.workdir / "disk.raw"
        if self.fmt == "raw":
            _sparse_copy(self.image, target, self._progress)
        else:
            qemu_img.convert(
                self.image,
                self.fmt,
                target,
                "raw",
                progress=self._progress,
                total_bytes=qemu_img.virtual_size(self.image, self.fmt) if self._progress else None,
            )
        return target

    def _plain_name(self, path: Path) -> Path:
        """``path``, or a link to it without '?' (e2fsprogs splits device names at '?')."""
        if "?" not in str(path):
            return path
        self._link_dir = Path(tempfile.mkdtemp(prefix="imagewright-link-"))
        link = self._link_dir / "disk"
        link.symlink_to(path.absolute())
        return link

    def commit(self) -> None:
        """Replace the original image with the edited working copy (atomic rename)."""
        if not self.writable or self._plan is None:
            raise ImageIOError("A read-only working copy cannot be committed.")
        if _fingerprint(self.image) != self._fingerprint:
            raise ImageIOError(
                f"{self.image} changed while imagewright was editing it; the edit was not saved."
            )
        if self._plan.fmt == "raw":
            result = self.path
        else:
            result = self.workdir / f"result.{self._plan.fmt}"
            qemu_img.convert(
                self.path,
                "raw",
                result,
                self._plan.fmt,
                options=self._plan.options,
                compress=self._plan.compress,
                progress=self._progress,
                total_bytes=self.path.stat().st_size if self._progress else None,
            )
        _fsync(result)
        original = self.image.stat()
        os.chmod(result, original.st_mode & 0o7777)
        with contextlib.suppress(PermissionError):
            os.chown(result, original.st_uid, original.st_gid)
        os.replace(result, self.image)
        _fsync_directory(self.image.parent)
        self._committed = True

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._link_dir is not None:
            shutil.rmtree(self._link_dir, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sparse_copy(source: Path, target: Path, progress: ProgressCallback | None) -> None:
    """Copy ``source`` to a new ``target``: a reflink if possible, else data ranges only."""
    try:
        with source.open("rb") as fin, target.open("xb") as fout:
            size = os.fstat(fin.fileno()).st_size
            with contextlib.suppress(OSError):
                fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
                if progress:
                    progress(size, size)
                return
            for start, end in _data_ranges(fin.fileno(), size):
                _copy_range(fin.fileno(), fout.fileno(), start, end)
                if progress:
                    progress(end, size)
            fout.truncate(size)
    except OSError as err:
        raise ImageIOError(f"Cannot make a working copy of {source}: {err.strerror}.") from None


def _data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges of a file that hold data (everything if holes are unknown)."""
    ranges: list[tuple[int, int]] = []
    position = 0
    try:
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # no data after position
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            ranges.append((start, end))
            position = end
    except OSError:
        return [(0, size)] if size else []
    return ranges


def _copy_range(fin: int, fout: int, start: int, end: int) -> None:
    position = start
    while position < end:
        length = min(_COPY_CHUNK, end - position)
        try:
            copied = os.copy_file_range(fin, fout, length, position, position)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            copied = 0
        if copied <= 0:
            chunk = os.pread(fin, length, position)
            if not chunk:
                raise OSError(errno.EIO, "the image file ended early")
            copied = os.pwrite(fout, chunk, position)
        position += copied
