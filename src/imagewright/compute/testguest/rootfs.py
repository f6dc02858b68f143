"""Assemble the test guest's root filesystem tree and its initramfs from the cached kernel.

The tree is usr-merged like Debian 12 (``/bin``, ``/sbin``, ``/lib``, ``/lib64`` are links
into ``/usr``), so host programs copied with the libraries ``ldd`` names land where their
loader looks for them. Building it from a warm cache copies a few tens of MB: about a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from imagewright.compute.initramfs import InitramfsWriter
from imagewright.compute.testguest import scripts
from imagewright.compute.testguest.kernel import KernelBundle, testguest_cache_root
from imagewright.errors import BuildError
from imagewright.files import AtomicOutput, cache_lock
from imagewright.programs import ldd
from imagewright.programs.runner import find_program, run_program

#: Host programs an in-guest agent needs that busybox lacks: grow the root partition
#: (sfdisk; partx tells the kernel about a changed partition), find filesystems by label
#: (blkid), grow ext4 (resize2fs) and create SSH host keys (ssh-keygen).
HOST_TOOLS: tuple[str, ...] = ("sfdisk", "partx", "blkid", "resize2fs", "ssh-keygen")

#: The usr-merge links at the top of the tree.
_MERGED_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}

#: Directories of the tree and their modes (created in this order).
_DIRECTORIES: tuple[tuple[str, int], ...] = (
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("usr/lib", 0o755),
    ("usr/lib64", 0o755),
    ("usr/share", 0o755),
    ("boot", 0o755),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("home", 0o755),
    ("mnt", 0o755),
    ("media", 0o755),
    ("etc", 0o755),
    ("etc/init.d", 0o755),
    ("etc/network", 0o755),
    ("etc/ssh", 0o755),
    ("etc/udhcpc", 0o755),
    ("var", 0o755),
    ("var/log", 0o755),
    ("var/lib", 0o755),
    ("var/tmp", 0o1777),
)

#: Files of /etc and friends: (path, text, mode).
_CONFIG_FILES: tuple[tuple[str, str, int], ...] = (
    ("etc/inittab", scripts.INITTAB, 0o644),
    ("etc/init.d/rcS", scripts.RCS, 0o755),
    ("etc/rc.local", scripts.RC_LOCAL, 0o755),
    ("etc/passwd", scripts.USERS, 0o644),
    ("etc/group", scripts.GROUP, 0o644),
    ("etc/shadow", scripts.SHADOW, 0o600),
    ("etc/hostname", scripts.HOSTNAME, 0o644),
    ("etc/hosts", scripts.HOSTS, 0o644),
    ("etc/fstab", scripts.FSTAB, 0o644),
    ("etc/nsswitch.conf", scripts.NSSWITCH, 0o644),
    ("etc/profile", scripts.PROFILE, 0o644),
    ("etc/shells", "/bin/sh\n/bin/ash\n", 0o644),
    ("etc/os-release", scripts.OS_RELEASE, 0o644),
    # Debian builds busybox with CONFIG_UDHCPC_DEFAULT_SCRIPT="/etc/udhcpc/default.script".
    ("etc/udhcpc/default.script", scripts.UDHCPC_SCRIPT, 0o755),
)


@dataclass(frozen=True)
class BusyboxApplets:
    binary: Path
    #: Applet paths relative to / as ``busybox --list-full`` prints them (``bin/sh``, ``sbin/init``).
    paths: tuple[str, ...]


def host_busybox() -> BusyboxApplets:
    """The host's busybox (Debian ``busybox-static``: one static binary) and its applets."""
    binary = Path(find_program("busybox"))
    listing = run_program([os.fspath(binary), "--list-full"], timeout=60.0, what="listing busybox applets")
    paths = tuple(line.strip() for line in listing.stdout_text.splitlines() if "/" in line.strip())
    if "sbin/init" not in paths or "bin/sh" not in paths:
        raise BuildError(
            f"{binary} lacks the init or sh applet; install the Debian package 'busybox-static'."
        )
    return BusyboxApplets(binary, paths)


def merged_path(path: str) -> str:
    """Where a path of a non-merged layout lives in the usr-merged tree (``bin/sh`` -> ``usr/bin/sh``)."""
    parts = PurePosixPath(path.lstrip("/")).parts
    if parts and parts[0] in _MERGED_LINKS:
        return str(PurePosixPath(_MERGED_LINKS[parts[0]], *parts[1:]))
    return str(PurePosixPath(*parts))


def _write_text(dest: Path, relative: str, text: str, mode: int) -> None:
    target = dest / relative
    target.write_text(text, encoding="utf-8")
    os.chmod(target, mode)


def _copy_host_file(dest: Path, host_path: Path, mode: int | None = None) -> None:
    """Copy a host file (content, following links) to the same path inside ``dest``."""
    target = dest / merged_path(os.fspath(host_path))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    shutil.copyfile(host_path, target)
    os.chmod(target, mode if mode is not None else stat.S_IMODE(host_path.stat().st_mode) & 0o755)


def populate_tree(dest: Path, bundle: KernelBundle, initrd: Path) -> None:
    """Write the whole test guest tree into the empty directory ``dest``."""
    for name, mode in _DIRECTORIES:
        (dest / name).mkdir(exist_ok=True)
        os.chmod(dest / name, mode)
    for link, target in _MERGED_LINKS.items():
        (dest / link).symlink_to(target)

    applets = host_busybox()
    shutil.copyfile(applets.binary, dest / "usr/bin/busybox")
    os.chmod(dest / "usr/bin/busybox", 0o755)  # noqa: S103 - a program every user runs
    for applet in applets.paths:
        applet_link = dest / merged_path(applet)
        if applet_link.name == "busybox" or applet_link.exists() or applet_link.is_symlink():
            continue
        applet_link.parent.mkdir(parents=True, exist_ok=True)
        applet_link.symlink_to("/usr/bin/busybox")

    for tool in HOST_TOOLS:
        program = Path(find_program(tool))
        _copy_host_file(dest, program, 0o755)
        for library in ldd.shared_libraries(program):
            _copy_host_file(dest, library, 0o755)

    shutil.copyfile(bundle.vmlinuz, dest / "boot" / f"vmlinuz-{bundle.release}")
    os.chmod(dest / "boot" / f"vmlinuz-{bundle.release}", 0o644)
    shutil.copyfile(initrd, dest / "boot" / f"initrd.img-{bundle.release}")
    os.chmod(dest / "boot" / f"initrd.img-{bundle.release}", 0o644)
    shutil.copytree(bundle.modules_dir, dest / "usr/lib/modules" / bundle.release)

    for relative, text, mode in _CONFIG_FILES:
        _write_text(dest, relative, text, mode)
    modules = "".join(f"{name}\n" for name in bundle.module_names)
    _write_text(dest, "etc/modules", "# Kernel modules rcS loads at boot (modprobe).\n" + modules, 0o644)


def initramfs_inputs_key(bundle: KernelBundle, busybox: BusyboxApplets) -> str:
    """A digest of everything the initramfs is built from: a changed input means a new image."""
    digest = hashlib.sha256()
    digest.update(scripts.INITRAMFS_INIT.encode())
    digest.update("\n".join(bundle.load_order).encode())
    digest.update(bundle.release.encode())
    info = busybox.binary.stat()
    digest.update(f"{busybox.binary}:{info.st_size}:{info.st_mtime_ns}".encode())
    digest.update("\n".join(busybox.paths).encode())
    return digest.hexdigest()[:16]


def cached_initramfs(bundle: KernelBundle, cache_dir: Path | None = None) -> Path:
    """The initramfs of ``bundle`` (built once per set of inputs, under the cache lock)."""
    busybox = host_busybox()
    path = bundle.directory / f"initrd-{initramfs_inputs_key(bundle, busybox)}.img"
    if path.is_file():
        return path
    with cache_lock(testguest_cache_root(cache_dir)):
        if path.is_file():
            return path
        for stale in bundle.directory.glob("initrd-*.img*"):
            stale.unlink()
        with AtomicOutput(path, force=True) as out:
            write_initramfs(out.path, bundle, busybox)
            out.commit()
    return path


def write_initramfs(path: Path, bundle: KernelBundle, busybox: BusyboxApplets) -> None:
    """The initramfs: busybox with its applet links, the modules in load order, /init.

    Layout (usr-merged like the root filesystem)::

        /init  /dev/console (char 5:1)  /proc  /sys  /dev  /newroot  /tmp
        /bin /sbin /lib /lib64 -> usr/...   /usr/bin/busybox + applet links
        /usr/lib/modules/<release>/...      the guest's modules and modules.dep
        /etc/initramfs-modules              module files in load order
    """
    with InitramfsWriter(path) as archive:
        for name in ("dev", "proc", "sys", "newroot", "tmp", "etc", "usr", "usr/bin", "usr/sbin"):
            archive.add_directory(name)
        archive.add_directory("usr/lib")
        archive.add_directory("usr/lib64")
        for link, target in _MERGED_LINKS.items():
            archive.add_symlink(link, target)
        # The kernel opens /dev/console for init before anything can mount devtmpfs.
        archive.add_char_device("dev/console", 5, 1)
        archive.add_file("usr/bin/busybox", busybox.binary, 0o755)
        added = {"usr/bin/busybox"}
        for applet in busybox.paths:
            name = merged_path(applet)
            if name in added or PurePosixPath(name).parent.as_posix() not in ("usr/bin", "usr/sbin"):
                continue
            added.add(name)
            archive.add_symlink(name, "/usr/bin/busybox")
        archive.add_bytes("init", scripts.INITRAMFS_INIT.encode(), 0o755)
        archive.add_bytes("etc/initramfs-modules", "".join(f"{m}\n" for m in bundle.load_order).encode())
        modules_root = PurePosixPath("usr/lib/modules", bundle.release)
        directories: set[str] = set()
        for source in sorted(bundle.modules_dir.rglob("*")):
            relative = source.relative_to(bundle.modules_dir).as_posix()
            if source.is_dir():
                continue
            parent = (modules_root / relative).parent
            for ancestor in reversed((parent, *parent.parents)):
                text = ancestor.as_posix()
                if text in (".", "usr", "usr/lib") or text in directories:
                    continue
                directories.add(text)
                archive.add_directory(text)
            archive.add_file((modules_root / relative).as_posix(), source, 0o644)
