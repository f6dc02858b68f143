"""Growing an ext2/3/4 filesystem on the raw working copy: ``e2fsck -fp``, then ``resize2fs``.

resize2fs insists on a filesystem checked since it was last mounted, so a forced preen
(``e2fsck -fp``, which also replays a pending journal) comes first.

NOTE: a filesystem inside a partition is *not* resized in place through e2fsprogs'
``FILE?offset=BYTES`` name. resize2fs (1.47, resize/main.c) sizes and truncates a regular
file as if the filesystem started at byte 0: after growing it calls ``ftruncate(fd, new fs
size)``, cutting off the last ``offset`` bytes of the partition and everything behind it
(the GPT backup), and before growing it may write one byte at ``new fs size - 1`` of the
file, inside the partition. So the partition's bytes are copied (sparsely) into a file of
their own, resized there at offset 0, and copied back. A flat filesystem already starts at
byte 0 and fills its file; it is resized where it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import GuestFilesystemError
from imagewright.files import copy_range
from imagewright.programs import e2fs

#: The filesystems resize2fs grows (blkid's TYPE names).
EXT_TYPES = frozenset({"ext2", "ext3", "ext4"})


@dataclass(frozen=True)
class FilesystemGrowth:
    type: str
    old_size: int
    new_size: int
    block_size: int


def grow_ext(
    raw: Path, offset: int, size: int, fs_type: str, scratch: Callable[[str], Path]
) -> FilesystemGrowth:
    """Grow the ext2/3/4 filesystem at byte ``offset`` of the raw file ``raw`` to fill ``size`` bytes.

    ``scratch(suffix)`` names a temporary file next to ``raw`` (for a partition's own copy).
    """
    if offset == 0 and raw.stat().st_size == size:
        return _grow_in_file(raw, size, fs_type)
    alone = scratch("partition")
    with alone.open("xb") as f:
        f.truncate(size)
    copy_range(raw, offset, size, alone, 0)
    growth = _grow_in_file(alone, size, fs_type)
    # resize2fs truncates its file to whole filesystem blocks; the partial block after the
    # filesystem is not part of it, so the file is extended back and that tail (now a hole)
    # is left as the raw copy has it.
    left = alone.stat().st_size
    if not growth.new_size <= left <= size:
        raise GuestFilesystemError("resize2fs changed the size of the partition's copy unexpectedly.")
    os.truncate(alone, size)
    copy_range(alone, 0, size, raw, offset)
    os.unlink(alone)
    return growth


def _grow_in_file(path: Path, size: int, fs_type: str) -> FilesystemGrowth:
    device = e2fs.device_name(path)
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
