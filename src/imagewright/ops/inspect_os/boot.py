"""Kernels and initial ramdisks in /boot, and which kernel the boot loader boots by default.

Names: Debian/Ubuntu ``vmlinuz-<release>`` + ``initrd.img-<release>``; RHEL/Fedora/SUSE
``vmlinuz-<release>`` + ``initramfs-<release>.img`` / ``initrd-<release>``; Alpine
``vmlinuz-<flavour>`` + ``initramfs-<flavour>``; Arch ``vmlinuz-linux`` + ``initramfs-linux.img``.

GRUB 2 (``/boot/grub/grub.cfg``, ``/boot/grub2/grub.cfg``; GRUB manual, "Simple configuration"
and "default"): ``set default=`` names an entry by number (``"0"``; ``"1>2"`` is entry 2 of
submenu 1), by title or by ``--id``; ``${saved_entry}`` (GRUB_DEFAULT=saved) is looked up in
``/boot/grub/grubenv``. Entries are ``menuentry 'title' ... {`` blocks whose ``linux`` line
names the kernel. With ``blscfg`` (Fedora/RHEL 8+) the entries are Boot Loader Specification
files ``/boot/loader/entries/*.conf`` (``title``, ``linux``, ``initrd``): the saved entry, else
the one that sorts last (the newest kernel). extlinux/syslinux (``/boot/extlinux.conf``,
``/boot/extlinux/extlinux.conf``, Alpine's default): ``DEFAULT label`` and ``LABEL``/``KERNEL``/
``LINUX``/``INITRD`` lines.

NOTE: configuration files are untrusted: at most ``MAX_CONFIG`` bytes, ``MAX_ENTRIES`` entries,
lines over ``reader.MAX_LINE`` skipped; what cannot be parsed gives no default, never an error.
"""

from __future__ import annotations

import re
import shlex

from imagewright.errors import GuestFilesystemError, InvalidArgumentError
from imagewright.guest.bounded import GuestReader, lines
from imagewright.guest.model import FileType, join
from imagewright.ops.inspect_os.model import BootEntry, BootFile

MAX_CONFIG = 1024 * 1024
MAX_ENTRIES = 1000
MAX_LINES = 100_000
#: Deepest nesting of blocks followed (GRUB's own configurations nest three deep).
MAX_DEPTH = 64
#: Most files in /boot looked at.
MAX_BOOT_FILES = 10_000

GRUB_CONFIGS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/boot/efi/EFI/*/grub.cfg")
GRUBENV = ("/boot/grub/grubenv", "/boot/grub2/grubenv")
EXTLINUX_CONFIGS = ("/boot/extlinux.conf", "/boot/extlinux/extlinux.conf", "/boot/syslinux/syslinux.cfg")
BLS_ENTRIES = "/boot/loader/entries"
#: Every file looked at, and the directories listed (``GuestReader.prefetch``).
LOOKS_AT = (*GRUB_CONFIGS[:2], *GRUBENV, *EXTLINUX_CONFIGS)
LISTS = ("/boot", BLS_ENTRIES)

_KERNEL = re.compile(r"^(?:vmlinuz|vmlinux|bzImage|kernel)(?:-(?P<release>.+))?$")
_INITRD = re.compile(r"^(?:initrd\.img|initramfs|initrd)(?:-(?P<release>.+?))?(?:\.img)?$")
_NOT_KERNELS = re.compile(r"(?:\.(?:sig|hmac|asc|old|bak|dtb)|-rescue-.*)$")


def read_boot_files(reader: GuestReader) -> tuple[list[BootFile], list[BootFile]]:
    """``(kernels, initrds)`` in /boot, sorted by name."""
    kernels: list[BootFile] = []
    initrds: list[BootFile] = []
    try:
        if not reader.guest.is_dir("/boot"):
            return kernels, initrds
        entries = reader.guest.listdir("/boot")
    except (GuestFilesystemError, InvalidArgumentError) as err:
        reader.note(f"/boot could not be listed: {err}")
        return kernels, initrds
    if len(entries) > MAX_BOOT_FILES:
        reader.note(f"/boot holds {len(entries)} entries; only the first {MAX_BOOT_FILES} were looked at")
    for entry in sorted(entries[:MAX_BOOT_FILES], key=lambda e: e.name):
        if entry.type not in (FileType.REGULAR, FileType.SYMLINK):
            continue
        name = entry.name
        path = join("/boot", name)
        if _NOT_KERNELS.search(name) and not name.startswith("initramfs"):
            continue
        kernel = _KERNEL.match(name)
        if kernel is not None:
            kernels.append(BootFile(path, entry.size, kernel.group("release")))
            continue
        initrd = _INITRD.match(name)
        if initrd is not None and "kdump" not in name:
            initrds.append(BootFile(path, entry.size, initrd.group("release")))
    return kernels, initrds


# ---- GRUB 2 ------------------------------------------------------------------------------


class _Menu:
    """A menu (top level or submenu) of grub.cfg: its entries, in order."""

    def __init__(self, title: str | None, ident: str | None) -> None:
        self.title = title
        self.ident = ident
        self.items: list[_Menu | _Entry] = []


class _Entry:
    def __init__(self, title: str | None, ident: str | None) -> None:
        self.title = title
        self.ident = ident
        self.kernel: str | None = None
        self.initrd: str | None = None


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True, posix=True)
    except ValueError:
        return line.split()


def _block_head(words: list[str]) -> tuple[str | None, str | None]:
    """Title and ``--id`` of a ``menuentry``/``submenu`` line."""
    title = words[1] if len(words) > 1 and not words[1].startswith("-") else None
    ident = None
    for index, word in enumerate(words):
        if word == "--id" and index + 1 < len(words):
            ident = words[index + 1]
        elif word.startswith("--id="):
            ident = word[5:]
        elif word == "$menuentry_id_option" and index + 1 < len(words):
            ident = words[index + 1]
    return title, ident


def parse_grub_cfg(text: str) -> tuple[str | None, _Menu, bool]:
    """``(set default value, top menu, uses blscfg)``."""
    top = _Menu(None, None)
    stack: list[_Menu | _Entry] = [top]
    default: str | None = None
    bls = False
    count = 0
    for line in lines(text, MAX_LINES):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        words = _words(stripped)
        if not words:
            continue
        head = words[0]
        current = stack[-1]
        if head in ("menuentry", "submenu") and stripped.endswith("{"):
            count += 1
            if count > MAX_ENTRIES or len(stack) > MAX_DEPTH:
                break
            title, ident = _block_head(words)
            item: _Menu | _Entry = _Menu(title, ident) if head == "submenu" else _Entry(title, ident)
            if isinstance(current, _Menu):
                current.items.append(item)
            stack.append(item)
        elif head == "}":
            if len(stack) > 1:
                stack.pop()
        elif head == "blscfg":
            bls = True
        elif isinstance(current, _Entry) and head in ("linux", "linux16", "linuxefi") and len(words) > 1:
            current.kernel = words[1]
        elif isinstance(current, _Entry) and head in ("initrd", "initrd16", "initrdefi") and len(words) > 1:
            current.initrd = words[1]
        elif len(stack) == 1 and head == "set" and len(words) > 1 and words[1].startswith("default="):
            default = words[1][len("default=") :]
        elif stripped.endswith("{"):
            if len(stack) > MAX_DEPTH:
                break
            stack.append(_Menu(None, None))  # a function body: nothing in it is a menu entry
    return default, top, bls


def _find(menu: _Menu, selector: str) -> _Entry | None:
    """The entry ``selector`` names in ``menu``: ``N``, ``N>M``, a title or an id (``>``-joined)."""
    first, _, rest = selector.partition(">")
    chosen: _Menu | _Entry | None = None
    if first.isdigit():
        index = int(first)
        chosen = menu.items[index] if index < len(menu.items) else None
    else:
        for item in menu.items:
            if first in (item.title, item.ident):
                chosen = item
                break
    if isinstance(chosen, _Menu):
        return _find(chosen, rest or "0")
    return chosen


def _grubenv_saved(reader: GuestReader) -> str | None:
    for path in GRUBENV:
        text = reader.text(path, 64 * 1024, "grubenv")
        if text is None:
            continue
        for line in lines(text, 1000):
            if line.startswith("saved_entry="):
                return line[len("saved_entry=") :].strip() or None
    return None


def _bls_default(reader: GuestReader, config: str, saved: str | None) -> BootEntry | None:
    names = [p for p in reader.glob(f"{BLS_ENTRIES}/*.conf")][:MAX_ENTRIES]
    if not names:
        return None
    chosen = next((p for p in names if saved and p.rpartition("/")[2] == f"{saved}.conf"), None)
    if chosen is None:
        chosen = sorted(names)[-1]
    text = reader.text(chosen, 64 * 1024, "a boot loader entry")
    if text is None:
        return None
    fields: dict[str, str] = {}
    for line in lines(text, 1000):
        key, _, value = line.strip().partition(" ")
        if key in ("title", "linux", "initrd") and key not in fields:
            fields[key] = value.strip()[:1000]
    return BootEntry("grub2 (bls)", chosen, fields.get("title"), fields.get("linux"), fields.get("initrd"))


def _grub_default(reader: GuestReader) -> BootEntry | None:
    configs = [
        path for pattern in GRUB_CONFIGS for path in (reader.glob(pattern) if "*" in pattern else [pattern])
    ]
    for config in configs:
        text = reader.text(config, MAX_CONFIG, "a GRUB configuration")
        if text is None:
            continue
        default, top, bls = parse_grub_cfg(text)
        saved = _grubenv_saved(reader) if default is None or "saved_entry" in default else None
        selector = default if default is not None and "$" not in default else saved or "0"
        if bls and not top.items:
            return _bls_default(reader, config, saved)
        entry = _find(top, selector)
        if entry is None and selector != "0":
            entry = _find(top, "0")  # GRUB falls back to the first entry
        if entry is None:
            continue
        return BootEntry("grub2", config, entry.title, entry.kernel, entry.initrd)
    return None


# ---- extlinux ----------------------------------------------------------------------------


def parse_extlinux(text: str, config: str) -> BootEntry | None:
    default: str | None = None
    labels: dict[str, dict[str, str]] = {}
    order: list[str] = []
    current: dict[str, str] | None = None
    for line in lines(text, MAX_LINES):
        key, _, value = line.strip().partition(" ")
        key = key.upper()
        value = value.strip()[:1000]
        if key == "DEFAULT" and value:
            default = value.split()[0]
        elif key == "LABEL" and value and len(labels) < MAX_ENTRIES:
            current = labels.setdefault(value, {})
            order.append(value)
        elif current is not None and key in ("KERNEL", "LINUX", "INITRD", "MENU"):
            if key == "MENU" and value.upper().startswith("LABEL "):
                current["title"] = value[6:].strip()
            elif key in ("KERNEL", "LINUX"):
                current["kernel"] = value.split()[0] if value else ""
            elif key == "INITRD":
                current["initrd"] = value.split(",")[0]
    name = default if default in labels else (order[0] if order else None)
    if name is None:
        return None
    chosen = labels[name]
    return BootEntry(
        "extlinux", config, chosen.get("title", name), chosen.get("kernel"), chosen.get("initrd")
    )


def read_boot_default(reader: GuestReader) -> BootEntry | None:
    entry = _grub_default(reader)
    if entry is not None:
        return entry
    for config in EXTLINUX_CONFIGS:
        text = reader.text(config, MAX_CONFIG, "an extlinux configuration")
        if text is not None and (found := parse_extlinux(text, config)) is not None:
            return found
    return None
