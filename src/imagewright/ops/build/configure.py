"""Files build writes into the new root filesystem: the kernel (with --kernel), grub.cfg, /etc/fstab.

All through the ext2/3/4 guest backend (debugfs on ``IMAGE?offset=``), nothing mounted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import BuildError, GuestFilesystemError, InvalidArgumentError
from imagewright.guest.e2fs import E2fsGuest
from imagewright.guest.model import FileType
from imagewright.ops.build.fstab import merge_fstab
from imagewright.ops.build.grubcfg import KERNEL_PREFIX, KernelChoice, choose_kernel, grub_config

#: A Linux x86 kernel image carries "HdrS" at 0x202 (the boot protocol header, Documentation/x86/boot.rst).
BZIMAGE_MAGIC_OFFSET = 0x202
BZIMAGE_MAGIC = b"HdrS"
#: /etc/fstab larger than this is not a real fstab.
MAX_FSTAB_BYTES = 1 << 20


@dataclass(frozen=True)
class GivenKernel:
    """``--kernel``/``--initrd``: host files copied into /boot."""

    kernel: Path
    initrd: Path | None = None


def check_given_kernel(given: GivenKernel) -> None:
    """One sentence when --kernel is not a Linux kernel or a file is missing."""
    for path in (given.kernel, given.initrd):
        if path is not None and not path.is_file():
            raise InvalidArgumentError(f"{path} is not a file.")
    with given.kernel.open("rb") as f:
        f.seek(BZIMAGE_MAGIC_OFFSET)
        if f.read(len(BZIMAGE_MAGIC)) != BZIMAGE_MAGIC:
            raise InvalidArgumentError(
                f"{given.kernel} is not a Linux x86 kernel (no bzImage header); give the vmlinuz file."
            )


def _given_names(given: GivenKernel) -> tuple[str, str | None, str]:
    name = given.kernel.name
    version = name[len(KERNEL_PREFIX) :] if name.startswith(KERNEL_PREFIX) and len(name) > 8 else name
    if "/" in version or version in ("", ".", ".."):
        version = "imagewright"
    initrd = f"initrd.img-{version}" if given.initrd is not None else None
    return f"{KERNEL_PREFIX}{version}", initrd, version


def install_kernel(guest: E2fsGuest, given: GivenKernel | None) -> KernelChoice:
    """Copy a given kernel into /boot, or choose the newest one there; BuildError if there is none."""
    if given is not None:
        kernel_name, initrd_name, version = _given_names(given)
        guest.mkdir("/boot", parents=True, mode=0o755)
        guest.copy_in(given.kernel, f"/boot/{kernel_name}", mode=0o644, uid=0, gid=0)
        if given.initrd is not None and initrd_name is not None:
            guest.copy_in(given.initrd, f"/boot/{initrd_name}", mode=0o644, uid=0, gid=0)
        return KernelChoice(
            f"/boot/{kernel_name}", f"/boot/{initrd_name}" if initrd_name else None, version, "--kernel"
        )
    files: list[str] = []
    if guest.is_dir("/boot"):
        entries = guest.listdir("/boot")
        # Regular files only: a vmlinuz-* link may point anywhere (GRUB would follow it, but a
        # dangling one must not be chosen); Debian's /vmlinuz links live in /, not /boot.
        files = [entry.name for entry in entries if entry.type is FileType.REGULAR]
    chosen = choose_kernel(files)
    if chosen is None:
        raise BuildError("Nothing to boot: no /boot/vmlinuz-* in the source and no --kernel given.")
    return chosen


def write_grub_config(guest: E2fsGuest, kernel: KernelChoice, root_uuid: str, append: str) -> str:
    text = grub_config(kernel, root_uuid, append)
    guest.mkdir("/boot/grub", parents=True, mode=0o755)
    guest.write_text("/boot/grub/grub.cfg", text, mode=0o644, uid=0, gid=0)
    return text


def write_fstab(guest: E2fsGuest, *, root_uuid: str, root_type: str, swap_uuid: str | None) -> str:
    existing: str | None = None
    found = guest.lstat_or_none("/etc/fstab")
    if found is not None and (found.is_file or found.is_symlink):
        try:
            existing = guest.read_text("/etc/fstab", limit=MAX_FSTAB_BYTES)
        except GuestFilesystemError:
            existing = None  # a dangling link or a huge file: replaced, not merged
    text = merge_fstab(existing, root_uuid=root_uuid, root_type=root_type, swap_uuid=swap_uuid)
    guest.mkdir("/etc", parents=True, mode=0o755)
    # A link at /etc/fstab is replaced by the file itself (write_text removes the name first).
    guest.write_text("/etc/fstab", text, mode=0o644, uid=0, gid=0)
    return text
