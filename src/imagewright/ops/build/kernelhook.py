"""Keeping the boot menu right after the guest installs a kernel, when it has no GRUB package.

A disk built from a tarball without a boot loader package boots through the ``grub.cfg`` build
wrote, naming one kernel. When the guest later installs another kernel (``apt upgrade``),
nothing would rewrite that menu: the old kernel boots forever, or nothing boots once it is
removed. Debian's kernel packages run every program in ``/etc/kernel/postinst.d`` and
``/etc/kernel/postrm.d`` after installing or removing a kernel (Debian kernel handbook, 8.1
"Hook scripts"); a guest with ``grub-pc`` has ``zz-update-grub`` there. A guest without one gets
``zz-imagewright-grub``: a POSIX sh script that writes the same ``grub.cfg`` build writes
(``grubcfg.grub_config``), for the newest kernel in /boot, with the root UUID and kernel
parameters of the build, atomically (a temporary file renamed over the old one).

A guest counts as having a boot loader package when it has ``update-grub``, ``grub-mkconfig``
or ``grub2-mkconfig`` (then the package's own hooks keep the menu, and the report says which).
"""

from __future__ import annotations

from imagewright.guest.e2fs import E2fsGuest
from imagewright.ops.build.grubcfg import (
    INITRD_NAMES,
    KERNEL_PREFIX,
    MENU_TIMEOUT_SECONDS,
    command_line,
    grub_word,
)

#: Programs of a GRUB package that regenerate the menu (Debian/Ubuntu, then Fedora/SUSE names).
MENU_PROGRAMS = ("/usr/sbin/update-grub", "/usr/sbin/grub-mkconfig", "/usr/sbin/grub2-mkconfig")
HOOK_NAME = "zz-imagewright-grub"
HOOK_PATHS = (f"/etc/kernel/postinst.d/{HOOK_NAME}", f"/etc/kernel/postrm.d/{HOOK_NAME}")


def menu_program(guest: E2fsGuest) -> str | None:
    """The guest's own program that rewrites its GRUB menu, or None."""
    guest.stat_many(list(MENU_PROGRAMS))  # one lookup, cached
    return next((path for path in MENU_PROGRAMS if guest.is_file(path)), None)


def _double_quoted(text: str) -> str:
    """``text`` for the inside of a shell double-quoted string (``$``, backquote, ``\\``, ``"`` escaped)."""
    return "".join("\\" + ch if ch in '$`\\"' else ch for ch in text)


def hook_script(root_uuid: str, append: str) -> str:
    """The post-install/post-remove script for a disk whose root filesystem is ``root_uuid``.

    ``IMAGEWRIGHT_BOOT_DIR`` (default /boot) is where it looks and writes; tests point it elsewhere.
    """
    parameters = _double_quoted(" ".join(grub_word(word) for word in command_line(root_uuid, append)))
    initrd_names = " ".join(f'"{pattern.replace("{v}", "$version")}"' for pattern in INITRD_NAMES)
    return f"""#!/bin/sh
# Written by imagewright build: this guest has no GRUB package, so after a kernel is installed
# or removed this rewrites /boot/grub/grub.cfg (the menu build wrote) for the newest kernel.
set -eu
boot=${{IMAGEWRIGHT_BOOT_DIR:-/boot}}
newest=
for kernel in "$boot"/{KERNEL_PREFIX}*; do
    [ -f "$kernel" ] || continue
    version=${{kernel#"$boot"/{KERNEL_PREFIX}}}
    case $version in *.dpkg-*|*.bak|*.old) continue ;; esac
    if [ -z "$newest" ]; then newest=$version; continue; fi
    if command -v linux-version >/dev/null 2>&1; then
        if linux-version compare "$version" gt "$newest"; then newest=$version; fi
    elif [ "$(printf '%s\\n%s\\n' "$newest" "$version" | sort -V | tail -n 1)" = "$version" ]; then
        newest=$version
    fi
done
[ -n "$newest" ] || {{ echo "{HOOK_NAME}: no kernel in $boot; grub.cfg left as it is" >&2; exit 0; }}
version=$newest
initrd=
for name in {initrd_names}; do
    if [ -f "$boot/$name" ]; then initrd=$name; break; fi
done
mkdir -p "$boot/grub"
tmp="$boot/grub/grub.cfg.imagewright-new"
{{
    echo "# Written by imagewright's kernel hook ({HOOK_NAME}): boots the newest kernel."
    echo "serial --unit=0 --speed=115200"
    echo "terminal_input serial console"
    echo "terminal_output serial console"
    echo "set timeout={MENU_TIMEOUT_SECONDS}"
    echo "set default=0"
    echo
    echo "menuentry 'Linux $version' {{"
    echo "    linux '/boot/{KERNEL_PREFIX}$version' {parameters}"
    if [ -n "$initrd" ]; then echo "    initrd '/boot/$initrd'"; fi
    echo "}}"
}} > "$tmp"
mv -f "$tmp" "$boot/grub/grub.cfg"
"""


def install_kernel_hook(guest: E2fsGuest, root_uuid: str, append: str) -> list[str]:
    """Write the hook into postinst.d and postrm.d; returns the paths written."""
    script = hook_script(root_uuid, append)
    for path in HOOK_PATHS:
        guest.mkdir(path.rsplit("/", 1)[0], parents=True, mode=0o755)
        guest.write_text(path, script, mode=0o755, uid=0, gid=0)
    return list(HOOK_PATHS)
