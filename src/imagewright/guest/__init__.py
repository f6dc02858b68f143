"""Files inside a guest image, without mounting it.

    from imagewright.guest import open_guest

    with open_guest("disk.qcow2", writable=True) as guest:
        guest.write_file("/etc/hostname", b"web1\n")
        guest.delete("/etc/ssh/ssh_host_rsa_key")

ext2/3/4 filesystems are read and written through e2fsprogs' debugfs (``guest.e2fs``), other
filesystems through libguestfs (``guest.libguestfs``); partitioned or flat, raw or any qemu
format (through a raw working copy, ``guest.workcopy``). What every call accepts, refuses and
means is ``GuestFS``'s (``guest.base``), the same whichever backend runs it.
Every path is an absolute guest path; the image is refused before anything reads it if
``inspect`` judges it unsafe; a failure leaves the image unchanged.
"""

from __future__ import annotations

from imagewright.guest.base import GuestFS
from imagewright.guest.model import (
    DirEntry,
    FileType,
    GuestFileNotFoundError,
    GuestStat,
    guest_path,
)
from imagewright.guest.session import open_guest, open_scratch_guest

__all__ = [
    "DirEntry",
    "FileType",
    "GuestFS",
    "GuestFileNotFoundError",
    "GuestStat",
    "guest_path",
    "open_guest",
    "open_scratch_guest",
]
