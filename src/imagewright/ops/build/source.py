"""What ``build --from SOURCE`` was given, judged before anything is written.

Three kinds of source, told apart without trusting names:

- **a filesystem image**: a file ``inspect`` finds no partition table in but a filesystem at
  byte 0 (the EC2/Eucalyptus "flat" image), raw or in any format qemu-img reads (qcow2, vmdk
  ...), possibly compressed (``.img.gz``). ext2/3/4 is copied as it is; other filesystems need
  libguestfs.
- **a directory** holding a root filesystem tree.
- **a rootfs tarball** (``.tar``, ``.tar.gz``, ``.tar.xz``, ``.tar.zst``, ``.tar.bz2``): a file
  ``inspect`` reads as a ``rootfs-archive``. inspect has walked every member header already and
  refused the archive for absolute paths, '..' components, paths through symbolic-link members
  and hard links to files outside it — before build writes a single byte.

Every file passes the safety gate (``imagewright.gate.admit``); a compressed filesystem image
is decompressed by it into a scratch file (``spool``), judged as it streams and then in full.

NOTE on sizes: a member's size is a claim (a sparse member stores no data for its holes), so
a 1 PiB member costs a few bytes. Sizes no filesystem or disk imagewright builds can hold are
refused here, in one sentence, before anything is written.

Each kind comes with an estimate of what its content needs on an ext4 filesystem, so that
``--size`` is checked before the long work starts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imagewright.errors import BuildError, ImageIOError, InvalidArgumentError, UnsafeImageError
from imagewright.formats.base import Limits
from imagewright.gate import admit
from imagewright.inspection import ImageReport
from imagewright.ops.build.efiloader import GUEST_CHAIN_PATHS
from imagewright.units import format_size

#: Filesystems build copies block for block (and grows with resize2fs).
EXT_TYPES = frozenset({"ext2", "ext3", "ext4"})
#: Filesystems a Linux root may be on that libguestfs can read out as a tree.
LIBGUESTFS_TYPES = frozenset({"xfs", "btrfs", "reiserfs", "jfs", "f2fs", "squashfs"})
#: Compression wrappers a tarball may come in (the container reader's names).
TAR_COMPRESSIONS = frozenset({"gzip", "xz", "bzip2", "zstd"})

#: ext4 allocates whole blocks; estimates assume the common 4 KiB.
BLOCK = 4096
#: Symbolic link targets up to 59 bytes live in the inode ("fast" links); longer ones take a block.
FAST_SYMLINK_MAX = 59
#: The largest file ext4 holds with 4 KiB blocks: 2^32 - 1 blocks (ext4 wiki, "File size").
EXT4_MAX_FILE_BYTES = (2**32 - 1) * BLOCK


@dataclass
class ContentEstimate:
    """What a tree needs on ext4: data blocks and inodes (metadata overhead comes on top)."""

    #: Bytes of regular-file data (apparent sizes).
    file_bytes: int = 0
    #: Bytes of blocks: files rounded up to whole blocks, a block per directory and long link.
    block_bytes: int = 0
    #: Inodes: every file, directory, link and device node.
    inodes: int = 0
    #: Names of kernels in /boot (``vmlinuz-*``), for an early "nothing to boot".
    kernels: list[str] = field(default_factory=list)
    #: Which of the guest's signed UEFI chain files (``efiloader.GUEST_CHAIN_PATHS``) it has.
    uefi_chain_paths: set[str] = field(default_factory=set)

    @property
    def has_uefi_chain(self) -> bool:
        """The tree names its own signed shim and GRUB (build puts those on the ESP)."""
        return len(self.uefi_chain_paths) == len(GUEST_CHAIN_PATHS)

    def add(self, kind: str, size: int = 0, name: str = "", link_target_length: int = 0) -> None:
        if name:
            relative = "/".join(p for p in name.split("/") if p not in ("", "."))
            if relative in GUEST_CHAIN_PATHS:
                self.uefi_chain_paths.add(relative)
        if kind == "hardlink":
            return  # another name for an inode already counted
        self.inodes += 1
        if kind == "file":
            self.file_bytes += size
            self.block_bytes += -(-size // BLOCK) * BLOCK
        elif kind == "dir" or (kind == "symlink" and link_target_length > FAST_SYMLINK_MAX):
            self.block_bytes += BLOCK
        if kind in ("file", "symlink") and _is_boot_kernel(name):
            self.kernels.append(name.rsplit("/", 1)[-1])


def _is_boot_kernel(relative: str) -> bool:
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    return len(parts) == 2 and parts[0] == "boot" and parts[1].startswith("vmlinuz-")


@dataclass
class FilesystemImageSource:
    """A flat filesystem image (no partition table)."""

    path: Path
    #: qemu-img's driver for the file (raw, qcow2, vmdk ...) — of the content inside a wrapper.
    format: str
    #: gzip, xz, bzip2 or zstd when the image is compressed, else None.
    compression: str | None
    fs_type: str
    #: Size the superblock claims, bytes.
    fs_size: int
    uuid: str | None
    label: str | None
    report: ImageReport
    #: The decompressed copy of a compressed source (a scratch file the gate wrote).
    decompressed: Path | None = None

    kind = "filesystem-image"

    @property
    def data_path(self) -> Path:
        """The file holding the image's bytes: the decompressed copy, or the source itself."""
        return self.decompressed or self.path

    @property
    def needs_conversion(self) -> bool:
        """True unless ``data_path`` is the raw filesystem (then it is read in place)."""
        return self.format != "raw" or (self.compression is not None and self.decompressed is None)


@dataclass
class DirectorySource:
    """A directory holding a root filesystem tree."""

    path: Path
    content: ContentEstimate

    kind = "directory"


@dataclass
class TarballSource:
    """A root filesystem tarball (plain or compressed)."""

    path: Path
    compression: str | None
    members: int
    content: ContentEstimate
    report: ImageReport

    kind = "tarball"


BuildSource = FilesystemImageSource | DirectorySource | TarballSource


def open_source(
    path: Path, *, limits: Limits | None = None, spool: Callable[[str], Path] | None = None
) -> BuildSource:
    """Judge ``path`` and say what kind of source it is; one clear sentence when it is none.

    ``spool``: scratch paths for the decompressed copy of a compressed filesystem image
    (without it, such an image must fit in what inspection examines in memory).
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise InvalidArgumentError(f"The source {path} does not exist.") from None
    except OSError as err:
        raise ImageIOError(f"The source {path} cannot be read: {err.strerror}.") from None
    if stat.S_ISLNK(st.st_mode):
        st = path.stat()  # a link named on the command line is the user's own choice
    if stat.S_ISDIR(st.st_mode):
        return DirectorySource(path, estimate_directory(path))
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgumentError(
            f"The source {path} is neither a regular file nor a directory; give a filesystem image, "
            "a root filesystem directory or a rootfs tarball."
        )
    limits = limits or Limits()
    try:
        admitted = admit(path, limits=limits, spool=spool)
    except UnsafeImageError as err:
        raise UnsafeImageError(f"{err}; nothing was written.", err.reasons) from None
    report = admitted.report
    if admitted.spooled is not None:
        source = _flat_filesystem(path, admitted.wrapper or report, report, compression=admitted.compression)
        source.decompressed = admitted.spooled
        return source
    container = report.container
    if container is not None:
        return _from_container(path, report, limits)
    return _flat_filesystem(path, report, report, compression=None)


def _from_container(path: Path, report: ImageReport, limits: Limits) -> BuildSource:
    container = report.container
    assert container is not None
    if container.kind == "rootfs-archive":
        content = ContentEstimate()
        for member in container.members:
            if member.type == "file" and member.size > EXT4_MAX_FILE_BYTES:
                raise BuildError(
                    f"Member '{member.name[:200]}' of {path} claims {format_size(member.size)}, more than "
                    f"the {format_size(EXT4_MAX_FILE_BYTES)} an ext4 file can hold; nothing was written."
                )
            target = len((member.linkname or "").encode("utf-8", "surrogateescape"))
            content.add(member.type, member.size, member.name, target)
        if content.block_bytes > limits.max_virtual_size:
            raise BuildError(
                f"The files of {path} claim {format_size(content.block_bytes)}, more than the "
                f"{format_size(limits.max_virtual_size)} disk imagewright builds; nothing was written."
            )
        compression = container.format if container.format in TAR_COMPRESSIONS else None
        return TarballSource(path, compression, len(container.members), content, report)
    if container.kind == "compressed" and container.inner is not None:
        return _flat_filesystem(path, report, container.inner, compression=container.format)
    if container.kind in ("archive", "disk-archive"):
        raise BuildError(
            f"{path} is a {container.format} archive that does not look like a root filesystem "
            "(no etc/ next to usr/, bin/, lib/ ...); build takes a rootfs tarball, a directory or a "
            "filesystem image."
        )
    raise BuildError(
        f"{path} is {'an OVA package' if container.kind == 'ova' else 'a ' + container.format + ' file'}, "
        "not a filesystem image, a root filesystem directory or a rootfs tarball."
    )


def _flat_filesystem(
    path: Path, outer: ImageReport, inner: ImageReport, *, compression: str | None
) -> FilesystemImageSource:
    disk = inner.disk
    if disk is not None and disk.partition_table is not None:
        table = disk.partition_table
        raise BuildError(
            f"{path} is already a partitioned disk ({table.kind} with {len(table.partitions)} "
            "partitions); build takes a filesystem image without a partition table, a directory or a "
            "rootfs tarball."
        )
    fs = disk.filesystem if disk is not None else None
    if fs is None or fs.usage != "filesystem":
        what = f"a {fs.type} signature" if fs is not None else "no filesystem imagewright recognises"
        raise BuildError(
            f"{path} holds {what}; build takes a filesystem image (ext2/3/4), a root filesystem "
            "directory or a rootfs tarball (.tar, .tar.gz, .tar.xz, .tar.zst, .tar.bz2)."
        )
    if fs.type not in EXT_TYPES and fs.type not in LIBGUESTFS_TYPES:
        raise BuildError(
            f"{path} holds a {fs.type} filesystem, which is not a Linux root filesystem build can use."
        )
    if fs.size_bytes is None or fs.size_bytes <= 0:
        raise BuildError(f"The {fs.type} filesystem in {path} does not say how large it is.")
    return FilesystemImageSource(
        path=path,
        format=inner.format,
        compression=compression,
        fs_type=fs.type,
        fs_size=fs.size_bytes,
        uuid=fs.uuid,
        label=fs.label,
        report=outer,
    )


def estimate_directory(root: Path) -> ContentEstimate:
    """Walk ``root`` (never following links) and add up what its tree needs.

    Raises BuildError naming the first entry the current user cannot read: mke2fs has to read
    every file and list every directory of the tree.
    """
    content = ContentEstimate()
    content.add("dir")  # the root directory itself
    linked: set[tuple[int, int]] = set()

    def unreadable(err: OSError) -> None:
        raise BuildError(
            f"{err.filename} cannot be read ({err.strerror}); build reads every file of a directory "
            "source — run it as a user who can, or fix the permissions."
        )

    for directory, dirs, files in os.walk(root, onerror=unreadable, followlinks=False):
        for name in dirs + files:
            full = os.path.join(directory, name)
            try:
                st = os.lstat(full)
            except OSError as err:
                unreadable(err)
                raise  # pragma: no cover - unreadable() always raises
            relative = os.path.relpath(full, root)
            mode = st.st_mode
            if stat.S_ISREG(mode):
                if not os.access(full, os.R_OK, follow_symlinks=False):
                    unreadable(PermissionError(13, "permission denied", full))
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in linked:
                        continue  # another name of a file already counted
                    linked.add((st.st_dev, st.st_ino))
                content.add("file", st.st_size, relative)
            elif stat.S_ISDIR(mode):
                if not os.access(full, os.R_OK | os.X_OK, follow_symlinks=False):
                    unreadable(PermissionError(13, "permission denied", full))
                content.add("dir", name=relative)
            elif stat.S_ISLNK(mode):
                content.add("symlink", name=relative, link_target_length=st.st_size)
            else:
                content.add("device", name=relative)
    return content
