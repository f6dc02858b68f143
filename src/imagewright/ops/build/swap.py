"""The swap partition: ``mkswap -L swap -U UUID`` on a scratch file of the partition's size, copied in.

mkswap writes only the first page of the area (the header and the ``SWAPSPACE2`` magic); the
scratch file stays sparse, and only its data is copied to the partition's offset.
"""

from __future__ import annotations

import os
from pathlib import Path

from imagewright.ops.build.layout import PlannedPartition
from imagewright.ops.build.transfer import copy_into
from imagewright.programs.mkswap import mkswap

SWAP_LABEL = "swap"


def write_swap(image_fd: int, part: PlannedPartition, uuid: str, scratch: Path) -> None:
    """Write a swap signature with ``uuid`` into ``part`` of the open image."""
    fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, part.size)
    finally:
        os.close(fd)
    try:
        mkswap(scratch, label=SWAP_LABEL, uuid=uuid)
        copy_into(scratch, image_fd, part.offset, part.size)
    finally:
        scratch.unlink(missing_ok=True)
