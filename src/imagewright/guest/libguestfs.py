"""Filesystems other than ext2/3/4: what libguestfs would be needed for.

imagewright edits ext2/3/4 itself (debugfs). For xfs, btrfs, LVM and the rest the tool of
choice is libguestfs (it boots a small appliance VM and lets that kernel do the work); its
Python binding imports only in Debian's system Python, not in a virtualenv.
"""

from __future__ import annotations

from imagewright.errors import GuestFilesystemError


def unavailable(fs_type: str) -> GuestFilesystemError:
    """The one sentence explaining that a guest on ``fs_type`` cannot be edited here."""
    what = "is on LVM" if fs_type == "LVM2_member" else f"is {fs_type}"
    name = "LVM" if fs_type == "LVM2_member" else fs_type
    return GuestFilesystemError(
        f"The root filesystem {what}; imagewright edits ext2/3/4 directly and needs libguestfs "
        f"(Debian: libguestfs-tools) for {name}."
    )
