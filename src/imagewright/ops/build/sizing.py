"""Does the source fit the disk? Estimates of what ext4 needs, checked before the long work.

mke2fs's own metadata depends on the filesystem's size, not on what goes in it (measured with
e2fsprogs 1.47.0 and Debian's /etc/mke2fs.conf on empty filesystems: 14.5% of a 64 MiB one —
1 KiB blocks and an inode per 4 KiB below 512 MiB, the "small" type —, 4.9% of 1 GiB, 3.5% of
4 GiB, 2.6% of 16 GiB, 2.4% of 64 GiB). The estimate below is a little above every one of
those: inode tables (256 bytes per inode), the default journal (``ext2fs_default_journal_size``:
4 MiB to 1 GiB by size), 1% for bitmaps, group descriptors and the blocks reserved for growing,
and 4 MiB. The content side rounds every file up to whole 4 KiB blocks. A source that passes can
still fail in mke2fs (a tree of a million tiny files) — then mke2fs's own complaint is turned
into the same sentence.
"""

from __future__ import annotations

from imagewright.errors import BuildError
from imagewright.ops.build.layout import LayoutShape, MiB, minimum_disk_size, round_up_mib
from imagewright.ops.build.source import ContentEstimate
from imagewright.units import format_size

GiB = 1 << 30
#: Below this, mke2fs uses the "small" type: 1 KiB blocks, an inode per 4 KiB.
SMALL_FILESYSTEM = 512 * MiB
INODE_SIZE = 256
#: Bytes built disks get beyond what the content needs, when --size is not given.
DEFAULT_HEADROOM = 0.25


def bytes_per_inode(size: int) -> int:
    """mke2fs.conf's inode_ratio for a filesystem of ``size`` bytes (small/default/big/huge)."""
    if size < SMALL_FILESYSTEM:
        return 4096
    if size < 4 << 40:
        return 16384
    if size < 16 << 40:
        return 32768
    return 65536


def journal_bytes(size: int) -> int:
    """The default journal of an ext3/ext4 filesystem of ``size`` bytes (counted in 4 KiB blocks)."""
    blocks = size // 4096
    for limit, journal in (
        (32768, 4 * MiB),
        (256 * 1024, 16 * MiB),
        (512 * 1024, 32 * MiB),
        (4096 * 1024, 64 * MiB),
        (8192 * 1024, 128 * MiB),
        (16384 * 1024, 256 * MiB),
        (32768 * 1024, 512 * MiB),
    ):
        if blocks < limit:
            return journal
    return 1024 * MiB


def metadata_bytes(size: int) -> int:
    """Bytes of an ext4 filesystem of ``size`` bytes taken by its own metadata (an upper estimate)."""
    if size < SMALL_FILESYSTEM:
        return size * 15 // 100
    inode_tables = size // bytes_per_inode(size) * INODE_SIZE
    return inode_tables + journal_bytes(size) + size // 100 + 4 * MiB


def inode_count(size: int) -> int:
    return size // bytes_per_inode(size)


def root_bytes_needed(content: ContentEstimate) -> int:
    """The smallest filesystem (whole MiB) whose free space holds ``content``, by the estimate."""
    size = round_up_mib(content.block_bytes + 4 * MiB)
    for _ in range(64):
        needed = round_up_mib(content.block_bytes + metadata_bytes(size))
        # Enough inodes too: the ratio grows past 512 MiB, so this may take another round.
        needed = max(needed, round_up_mib((content.inodes + 16) * bytes_per_inode(needed)))
        if needed <= size:
            return size
        size = needed
    return size  # pragma: no cover - converges in a few steps


def check_tree_fits(content: ContentEstimate, root_size: int, *, disk_size: int, shape: LayoutShape) -> None:
    """BuildError with the numbers when ``content`` cannot fit a root partition of ``root_size``."""
    free = root_size - metadata_bytes(root_size)
    inodes = inode_count(root_size)
    if content.block_bytes <= free and content.inodes + 16 <= inodes:
        return
    needed_disk = minimum_disk_size(root_bytes_needed(content), shape)
    if content.block_bytes > free:
        what = (
            f"needs about {format_size(content.block_bytes)} for its {content.inodes} files and "
            f"directories, but the root partition of a {format_size(disk_size)} disk"
            f"{_beside_root(shape)} has room for about {format_size(max(free, 0))} after "
            f"{format_size(metadata_bytes(root_size))} of ext4 metadata"
        )
    else:
        what = (
            f"has {content.inodes} files and directories, but an ext4 filesystem of "
            f"{format_size(root_size)} has only {inodes} inodes"
        )
    raise BuildError(f"The source {what}; give --size {format_size(needed_disk)} or more.")


def check_filesystem_fits(
    fs_size: int,
    used_bytes: int,
    root_size: int,
    *,
    disk_size: int,
    shape: LayoutShape,
    fs_type: str,
) -> bool:
    """Whether a flat filesystem of ``fs_size`` must shrink to fit ``root_size``.

    Returns False when it fits as it is (it is then grown), True when it has to shrink and
    can (``used_bytes`` plus 5% and 16 MiB fit); BuildError with the numbers otherwise.
    """
    if fs_size <= root_size:
        return False
    shrunk = used_bytes + used_bytes // 20 + 16 * MiB
    if shrunk <= root_size:
        return True
    needed_disk = minimum_disk_size(round_up_mib(shrunk), shape)
    raise BuildError(
        f"The {fs_type} filesystem of the source is {format_size(fs_size)} with "
        f"{format_size(used_bytes)} in use, but the root partition of a {format_size(disk_size)} disk"
        f"{_beside_root(shape)} is {format_size(root_size)}; give --size {format_size(needed_disk)} "
        "or more."
    )


def default_disk_size(root_needed: int, shape: LayoutShape) -> int:
    """The disk size used without --size: the root needed plus headroom, in whole GiB."""
    root = round_up_mib(int(root_needed * (1 + DEFAULT_HEADROOM)))
    disk = minimum_disk_size(root, shape)
    return -(-disk // GiB) * GiB


def _beside_root(shape: LayoutShape) -> str:
    """What else the disk holds: " with 100 MiB of EFI System Partition and 64 MiB of swap"."""
    beside = [f"{format_size(shape.esp_size)} of EFI System Partition"] if shape.uefi else []
    if shape.swap_size:
        beside.append(f"{format_size(round_up_mib(shape.swap_size))} of swap")
    return f" with {' and '.join(beside)}" if beside else ""
