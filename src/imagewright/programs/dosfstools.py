"""dosfstools (Debian ``dosfstools``): make a FAT filesystem in a partition of an image file, check one.

``mkfs.fat --offset SECTOR IMAGE KIB`` writes the filesystem into the byte range of one
partition of a disk image in place (no loop device, no copy): the boot sector at
``SECTOR * 512``, ``KIB`` KiB long. It leaves the file's size and every byte outside that range
alone (dosfstools 4.2; it only warns "block count mismatch" because the file is larger than
the filesystem, which is the point). ``-h SECTOR`` records the same start as the BPB's hidden
sectors, as a filesystem made on the partition device of a real disk would have.

(``programs/mtools.py``'s ``mformat`` formats whole files, the context media; a partition in
place needs the explicit offset and size above, which mformat takes only through a geometry.)

``fsck.fat -n FILE`` checks a filesystem that starts at byte 0 and changes nothing; exit 0
means clean, 1 errors found.

Both run in the sandbox (``programs/runner.py``): mkfs.fat sees the image it writes into,
fsck.fat the file it checks (read-only); nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from imagewright.errors import InvalidArgumentError
from imagewright.programs.runner import ProgramResult, Sandbox, run_program

SECTOR = 512
_TIMEOUT = 120.0
#: FAT volume labels: 11 characters; we only write plain ASCII upper case, as mkfs.fat prefers.
MAX_LABEL = 11
FatBits = Literal[12, 16, 32]


def make_fat(
    image: str | os.PathLike[str],
    *,
    offset: int,
    size: int,
    label: str,
    volume_id: int,
    fat_bits: FatBits | None = None,
    sectors_per_cluster: int | None = None,
    invariant: bool = False,
) -> None:
    """``mkfs.fat`` over ``size`` bytes of ``image`` from byte ``offset`` (both whole sectors).

    ``fat_bits`` None lets mkfs.fat choose FAT12/16/32 from the size; ``sectors_per_cluster``
    None lets it choose the cluster size (NOTE: for FAT32 it may choose clusters so large that
    the volume has fewer than the 65525 clusters FAT32 needs, which readers that follow the
    specification, mtools among them, then take for FAT16 — give it for FAT32). ``invariant``:
    ``--invariant``, no time-based value in the new filesystem (reproducible builds).
    """
    if offset < 0 or offset % SECTOR or size <= 0 or size % 1024:
        raise InvalidArgumentError("A FAT filesystem needs a sector-aligned offset and a size in whole KiB.")
    plain = all(ch.isascii() and (ch.isupper() or ch.isdigit() or ch in "-_") for ch in label)
    if not label or len(label) > MAX_LABEL or not plain:
        raise InvalidArgumentError(f"'{label}' cannot be a FAT volume label (1-{MAX_LABEL} of A-Z 0-9 - _).")
    target = os.path.abspath(os.fspath(image))
    argv = ["mkfs.fat", *(["--invariant"] if invariant else [])]
    if fat_bits is not None:
        argv += ["-F", str(fat_bits)]
    if sectors_per_cluster is not None:
        if sectors_per_cluster not in (1, 2, 4, 8, 16, 32, 64, 128):
            raise InvalidArgumentError(f"{sectors_per_cluster} sectors cannot make a FAT cluster.")
        argv += ["-s", str(sectors_per_cluster)]
    argv += [
        "--offset", str(offset // SECTOR),
        "-h", str(offset // SECTOR),
        "-n", label,
        "-i", f"{volume_id & 0xFFFFFFFF:08X}",
        target,
        str(size // 1024),
    ]  # fmt: skip
    run_program(argv, timeout=_TIMEOUT, what="making the FAT filesystem", sandbox=Sandbox(writes=(target,)))


def check_fat(path: Path) -> ProgramResult:
    """``fsck.fat -n PATH`` (read-only); the result's returncode is 0 when the filesystem is clean."""
    source = os.path.abspath(path)
    return run_program(
        ["fsck.fat", "-n", source], timeout=_TIMEOUT, check=False, sandbox=Sandbox(reads=(source,))
    )
