"""Which kernel the built disk boots, and the ``grub.cfg`` (and early config) that boots it.

The kernel is the newest ``/boot/vmlinuz-*`` of the root filesystem by version order (the way
``sort -V`` and Debian's ``linux-version sort`` order ``5.10.0-9`` before ``5.10.0-10``), with
the initrd that carries the same version under one of the names distributions use
(``initrd.img-V`` Debian/Ubuntu, ``initramfs-V.img`` Fedora/RHEL, ``initrd-V`` SUSE,
``initrd-V.img``). A kernel given with ``--kernel`` is copied in and wins.

The configuration talks to the first serial port and the screen (cloud consoles log the serial
port), waits one second at the menu, and starts the kernel with ``root=UUID=``.

NOTE on the console order: the *last* ``console=`` is the one behind ``/dev/console``, where
init and its scripts write. ``console=tty0 console=ttyS0,115200`` sends the kernel's messages to
both and makes the serial port ``/dev/console`` — what a cloud's "console log" records.

NOTE on quoting: GRUB's script parser expands ``$`` and treats ``;``, quotes and braces
specially, so every word taken from the guest or the user (file names, ``--append``) is written
as a single-quoted GRUB word (a ``'`` inside as ``'\\''``). ``--append`` is split into
kernel parameters the way the kernel splits its command line (at blanks outside double
quotes); GRUB puts a parameter that contains a blank back in double quotes when it builds the
command line (grub-core/lib/cmdline.c), which the kernel reads as one parameter again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from imagewright.errors import InvalidArgumentError

KERNEL_PREFIX = "vmlinuz-"
#: Initrd names per kernel version, in the order they are looked for.
INITRD_NAMES = ("initrd.img-{v}", "initramfs-{v}.img", "initrd-{v}", "initrd-{v}.img")
#: The console arguments every built disk gets (see the module NOTE).
CONSOLE_ARGUMENTS = ("console=tty0", "console=ttyS0,115200")
MENU_TIMEOUT_SECONDS = 1

_RUNS = re.compile(r"(\d+)")


def version_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key ordering version strings as ``sort -V`` does (numbers compared as numbers)."""
    key: list[tuple[int, int | str]] = []
    for piece in _RUNS.split(text):
        if not piece:
            continue
        key.append((1, int(piece)) if piece.isdigit() else (0, piece))
    return tuple(key)


@dataclass(frozen=True)
class KernelChoice:
    """The kernel and initrd the menu entry boots (guest paths under /boot)."""

    kernel: str
    initrd: str | None
    version: str
    #: "root filesystem" (found in /boot) or "--kernel" (copied in).
    origin: str

    def to_dict(self) -> dict[str, str | None]:
        return {"kernel": self.kernel, "initrd": self.initrd, "version": self.version, "origin": self.origin}


def choose_kernel(boot_files: Iterable[str]) -> KernelChoice | None:
    """The newest ``vmlinuz-*`` among the names of regular files in /boot, with its initrd."""
    names = set(boot_files)
    versions = [name[len(KERNEL_PREFIX) :] for name in names if name.startswith(KERNEL_PREFIX)]
    versions = [v for v in versions if v]
    if not versions:
        return None
    newest = max(versions, key=version_key)
    initrd = next(
        (
            f"/boot/{pattern.format(v=newest)}"
            for pattern in INITRD_NAMES
            if pattern.format(v=newest) in names
        ),
        None,
    )
    return KernelChoice(f"/boot/{KERNEL_PREFIX}{newest}", initrd, newest, "root filesystem")


def grub_word(text: str) -> str:
    """``text`` as one literal word of GRUB's script language."""
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in text):
        raise InvalidArgumentError(f"{text!r} contains a control character GRUB cannot be given.")
    return "'" + text.replace("'", "'\\''") + "'"


def kernel_parameters(text: str) -> list[str]:
    """Split ``text`` into parameters as the kernel does: at blanks outside double quotes.

    The quotes themselves only group and are dropped (GRUB adds them back where needed).
    """
    if any(ord(ch) < 0x20 and ch not in " \t" for ch in text):
        raise InvalidArgumentError(
            "The kernel command line cannot contain line breaks or control characters."
        )
    words: list[str] = []
    current: list[str] = []
    quoted = False
    started = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            started = True
        elif ch in " \t" and not quoted:
            if started:
                words.append("".join(current))
            current, started = [], False
        else:
            current.append(ch)
            started = True
    if quoted:
        raise InvalidArgumentError("The kernel command line has an unclosed double quote.")
    if started:
        words.append("".join(current))
    return words


def command_line(root_uuid: str, append: str = "") -> list[str]:
    """The kernel parameters of the menu entry."""
    return [f"root=UUID={root_uuid}", "ro", *CONSOLE_ARGUMENTS, *kernel_parameters(append)]


def grub_config(kernel: KernelChoice, root_uuid: str, append: str = "") -> str:
    """The text of /boot/grub/grub.cfg."""
    linux = " ".join(grub_word(w) for w in [kernel.kernel, *command_line(root_uuid, append)])
    lines = [
        "# Written by imagewright build: boots the kernel below from the root filesystem.",
        "serial --unit=0 --speed=115200",
        "terminal_input serial console",
        "terminal_output serial console",
        f"set timeout={MENU_TIMEOUT_SECONDS}",
        "set default=0",
        "",
        f"menuentry {grub_word('Linux ' + kernel.version)} {{",
        f"    linux {linux}",
    ]
    if kernel.initrd is not None:
        lines.append(f"    initrd {grub_word(kernel.initrd)}")
    lines += ["}", ""]
    return "\n".join(lines)


def early_config(root_uuid: str) -> str:
    """The configuration embedded in core.img: find the root filesystem by UUID, read its grub.cfg.

    The prefix given to grub-mkimage (``(hd0,msdos1)/boot/grub``) stays in force when the search
    fails, so a disk that is not the first BIOS disk still boots when it is found by UUID, and
    the first disk boots even without the search module's help.
    """
    if not re.fullmatch(r"[0-9a-fA-F-]{8,64}", root_uuid):
        raise InvalidArgumentError(f"'{root_uuid}' is not a filesystem UUID.")
    return f"search --no-floppy --fs-uuid --set=root {root_uuid}\nset prefix=($root)/boot/grub\n"


def esp_config(root_uuid: str) -> str:
    """The ``grub.cfg`` on the ESP (``EFI/debian/grub.cfg``) that UEFI GRUB reads first.

    Debian's signed GRUB reads ``$prefix/grub.cfg`` with the prefix ``/EFI/debian`` on the
    ESP (the unsigned one build links is given the same prefix). This file only finds the
    root filesystem by UUID and hands over to its ``/boot/grub/grub.cfg`` — the one BIOS
    GRUB reads and a guest's update-grub rewrites — as ``grub-install`` does on Debian, so
    one menu serves both firmwares and a kernel update inside the guest reaches both.
    """
    search = early_config(root_uuid)
    return (
        "# Written by imagewright build: continue with the root filesystem's own GRUB menu.\n"
        f"{search}"
        "configfile $prefix/grub.cfg\n"
    )
