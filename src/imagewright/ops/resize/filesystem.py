"""Growing an ext2/3/4 filesystem on the raw working copy: ``e2fsck -fp``, then ``resize2fs``.

resize2fs insists on a filesystem checked since it was last mounted, so a forced preen
(``e2fsck -fp``, which also replays a pending journal) comes first; both reach a filesystem
inside a partition through e2fsprogs' ``FILE?offset=BYTES`` device name
(``programs/e2fs.py``). This only ever runs on imagewright's own working copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import GuestFilesystemError
from imagewright.programs import e2fs

#: The filesystems resize2fs grows (blkid's TYPE names).
EXT_TYPES = frozenset({"ext2", "ext3", "ext4"})


@dataclass(frozen=True)
class FilesystemGrowth:
    type: str
    old_size: int
    new_size: int
    block_size: int


def grow_ext(raw: Path, offset: int, size: int, fs_type: str) -> FilesystemGrowth:
    """Grow the ext2/3/4 filesystem at byte ``offset`` of the raw file ``raw`` to fill ``size`` bytes."""
    device = e2fs.device_name(raw, offset)
    before = e2fs.read_superblock(device)
    e2fs.e2fsck_preen(device)
    # resize2fs rounds a size down to whole filesystem blocks itself; it takes whole KiB.
    e2fs.resize2fs(device, size - size % 1024)
    after = e2fs.read_superblock(device)
    if after.size < before.size:
        raise GuestFilesystemError(
            f"resize2fs left the {fs_type} filesystem smaller ({after.size} bytes) than it was "
            f"({before.size} bytes)."
        )
    return FilesystemGrowth(fs_type, before.size, after.size, after.block_size)
