"""GRUB 2 images (Debian ``grub-common`` for grub-mkimage; ``grub-pc-bin`` for the i386-pc
platform files, ``grub-efi-amd64-bin`` for the x86_64-efi ones).

``grub-mkimage -O i386-pc`` links a *core image*: ``diskboot.img`` (one sector that loads the
rest), the GRUB kernel, the modules named (and those they depend on, from ``moddep.lst``), an
optional embedded early configuration (``-c``) and the prefix (``-p``) where GRUB looks for
``grub.cfg`` and further modules. ``boot.img`` (one sector) goes into the MBR; where it finds
the core image, and where the core image finds the rest of itself, are pointers that
``grub-bios-setup`` normally patches — imagewright patches them itself (``ops/build/bootloader``),
because grub-bios-setup insists on a real device it can map to a BIOS drive.

``grub-mkimage -O x86_64-efi`` links the same kernel and modules into one PE32+ executable
that UEFI firmware starts directly (``EFI/BOOT/BOOTX64.EFI``); with a prefix that names no
device (``/EFI/debian``) GRUB takes the device it was loaded from. Such an image is unsigned:
firmware with Secure Boot on refuses it (``ops/build/esp.py`` prefers Debian's signed one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import InvalidArgumentError, ProgramError, ProgramNotFoundError
from imagewright.programs.runner import run_program

#: Where Debian's grub-pc-bin puts the i386-pc platform files.
I386_PC_DIRECTORY = Path("/usr/lib/grub/i386-pc")
#: Where Debian's grub-efi-amd64-bin puts the x86_64-efi platform files.
X86_64_EFI_DIRECTORY = Path("/usr/lib/grub/x86_64-efi")
#: One sector: boot.img's size.
BOOT_IMAGE_SIZE = 512


@dataclass(frozen=True)
class _Platform:
    default: Path
    #: Environment variable naming another directory (tests, other distributions).
    variable: str
    files: tuple[str, ...]
    what: str
    package: str


_PLATFORMS: dict[str, _Platform] = {
    "i386-pc": _Platform(
        I386_PC_DIRECTORY, "IMAGEWRIGHT_GRUB_I386_PC",
        ("boot.img", "diskboot.img", "kernel.img", "moddep.lst"), "BIOS", "grub-pc-bin",
    ),
    "x86_64-efi": _Platform(
        X86_64_EFI_DIRECTORY, "IMAGEWRIGHT_GRUB_X86_64_EFI",
        ("kernel.img", "moddep.lst"), "UEFI", "grub-efi-amd64-bin",
    ),
}  # fmt: skip
TARGETS: tuple[str, ...] = tuple(_PLATFORMS)


def platform_directory(target: str, directory: Path | None = None) -> Path:
    """The directory of GRUB's files for ``target``, or ProgramNotFoundError naming the package."""
    platform = _PLATFORMS.get(target)
    if platform is None:
        known = " and ".join(TARGETS)
        raise InvalidArgumentError(f"imagewright builds GRUB images for {known}, not {target}.")
    found = directory or Path(os.environ.get(platform.variable, platform.default))
    missing = [name for name in platform.files if not (found / name).is_file()]
    if missing:
        raise ProgramNotFoundError(
            f"GRUB's {platform.what} files are not installed ({found / missing[0]} is missing); "
            f"install the Debian package '{platform.package}'."
        )
    return found


def i386_pc_directory(directory: Path | None = None) -> Path:
    """The directory of GRUB's i386-pc files, or ProgramNotFoundError naming grub-pc-bin."""
    return platform_directory("i386-pc", directory)


def boot_image(directory: Path | None = None) -> bytes:
    """The 512 bytes of GRUB's ``boot.img`` (the MBR boot code)."""
    path = i386_pc_directory(directory) / "boot.img"
    data = path.read_bytes()
    if len(data) != BOOT_IMAGE_SIZE or data[510:512] != b"\x55\xaa":
        raise ProgramError(f"{path} is not a 512-byte boot sector; the GRUB installation looks damaged.")
    return data


def mkimage(
    output: str | os.PathLike[str],
    *,
    prefix: str,
    modules: Sequence[str],
    early_config: str | os.PathLike[str] | None = None,
    target: str = "i386-pc",
    directory: Path | None = None,
) -> None:
    """``grub-mkimage -O TARGET -d DIR -o OUTPUT -p PREFIX [-c CONFIG] MODULE...``."""
    platform_dir = platform_directory(target, directory)
    for module in modules:
        if not module or not all(ch.isalnum() or ch in "_-" for ch in module):
            raise InvalidArgumentError(f"'{module}' is not a GRUB module name.")
    if not prefix.startswith(("(", "/")) or any(ch in prefix for ch in "\0\n"):
        raise InvalidArgumentError(f"'{prefix}' is not a GRUB prefix such as (hd0,msdos1)/boot/grub.")
    argv = [
        "grub-mkimage",
        "--format", target,
        "--directory", str(platform_dir),
        "--output", os.path.abspath(os.fspath(output)),
        "--prefix", prefix,
    ]  # fmt: skip
    if early_config is not None:
        argv += ["--config", os.path.abspath(os.fspath(early_config))]
    argv += list(modules)
    run_program(argv, timeout=300.0, what=f"building the GRUB {target} image")
