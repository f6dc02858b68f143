"""The small real Linux guest every boot test, the demo and the benchmarks use.

Built without root from Debian packages and the host's own busybox and tools; the kernel
download and cut-down is cached under ``${IMAGEWRIGHT_CACHE:-~/.cache/imagewright}/testguest/
<kernel-release>/`` (see ``kernel.py``), so building a tree from a warm cache takes seconds.
Command line: ``python -m imagewright.compute.testguest --output DIR [--tar FILE.tar.gz]
[--flat-ext4 FILE]``.

The tree (usr-merged; about 30 MB, of which 8 MB kernel and 2.5 MB initramfs)::

    /bin /sbin /lib /lib64 -> usr/bin usr/sbin usr/lib usr/lib64
    /usr/bin/busybox                 the host's busybox-static; every applet is a link to it
    /usr/sbin/sfdisk /usr/bin/partx /usr/sbin/blkid /usr/sbin/resize2fs /usr/bin/ssh-keygen
    /usr/lib/x86_64-linux-gnu/...    the libraries ldd names for those (glibc, libblkid, libcrypto ...)
    /usr/lib64/ld-linux-x86-64.so.2  the dynamic loader
    /usr/lib/modules/<release>/      disk, CD-ROM, VFAT and virtio-net modules + modules.dep
    /boot/vmlinuz-<release>          the Debian kernel (linux-image-amd64's current release)
    /boot/initrd.img-<release>       our initramfs: loads the modules, mounts root=UUID=/LABEL=/
                                     /dev/..., switch_root to /sbin/init
    /sbin/init -> busybox            busybox init with /etc/inittab
    /etc/init.d/rcS                  mounts, hostname, modules, swapon -a (UUID= in fstab works),
                                     /etc/init.d/S* in order, /etc/rc.local, then the marker:
                                     "imagewright-testguest: up hostname=H swaps=N root=DEV",
                                     then poweroff -f if "imagewright.poweroff" is on the cmdline
    /etc/rc.local                    executable, ends in "exit 0" (where an agent hooks in)
    /etc/{passwd,group,shadow}       root only (password locked) and nobody
    /etc/{hostname,hosts,fstab,inittab,modules,nsswitch.conf,profile,shells,os-release}
    /etc/network/  /etc/ssh/         empty
    /etc/udhcpc/default.script       configures an interface from a busybox udhcpc lease
    /root (0700) /tmp /var/tmp (1777) /dev /proc /sys /run /home /mnt /media /var/{log,lib}

The serial console is ttyS0: boot with ``console=ttyS0``. Networking (measured with QEMU user
networking): the NIC is ``eth0`` and starts down; ``ip link set eth0 up`` before ``udhcpc -i eth0``
(else udhcpc spins on "Network is down"); busybox 1.35's ``wget -T N`` crashes (segfault), so
bound it with ``timeout N wget ...`` instead. File owners in the tree are the
builder's uid; the tarball writer records everything as root (0:0), and ``flat_ext4`` run by
a non-root builder records the builder's uid (harmless: the guest runs everything as root).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid as uuid_module
from dataclasses import dataclass
from pathlib import Path

from imagewright.compute.testguest.kernel import GUEST_MODULES, KernelBundle, fetch_kernel
from imagewright.compute.testguest.rootfs import HOST_TOOLS, cached_initramfs, populate_tree
from imagewright.compute.testguest.scripts import INITRAMFS_PREFIX, MARKER_PREFIX, POWEROFF_ARGUMENT
from imagewright.errors import BuildError, OutputExistsError
from imagewright.files import AtomicOutput
from imagewright.programs import e2fs

__all__ = [
    "GUEST_MODULES",
    "HOST_TOOLS",
    "INITRAMFS_PREFIX",
    "MARKER_PREFIX",
    "POWEROFF_ARGUMENT",
    "FlatFilesystem",
    "TestGuest",
    "build_testguest_rootfs",
    "flat_ext4",
    "rootfs_tarball",
]


@dataclass(frozen=True)
class TestGuest:
    """A built test guest tree and what a boot of it needs to know."""

    __test__ = False  # not a pytest test class, whatever its name

    root: Path
    kernel_version: str
    #: Absolute host paths of the kernel and initramfs inside ``root``.
    kernel: Path
    initrd: Path
    #: The start of the line rcS prints when the guest is up (``marker_line`` gives the rest).
    marker: str = MARKER_PREFIX
    poweroff_argument: str = POWEROFF_ARGUMENT

    @property
    def kernel_in_guest(self) -> str:
        return "/" + self.kernel.relative_to(self.root).as_posix()

    @property
    def initrd_in_guest(self) -> str:
        return "/" + self.initrd.relative_to(self.root).as_posix()

    def marker_line(self, *, hostname: str = "testguest", swaps: int = 0, root: str) -> str:
        """The exact marker line for the given state (``root`` as /proc/mounts shows it)."""
        return f"{self.marker} hostname={hostname} swaps={swaps} root={root}"

    def kernel_command_line(self, root: str, *, poweroff: bool = False, extra: str = "") -> str:
        """A command line for a direct kernel boot: serial console, ``root=``, read-write."""
        words = ["console=ttyS0", f"root={root}", "rw", "panic=-1"]
        if poweroff:
            words.append(self.poweroff_argument)
        if extra:
            words.append(extra)
        return " ".join(words)


def build_testguest_rootfs(dest: Path, *, cache_dir: Path | None = None) -> TestGuest:
    """Build the test guest's root filesystem tree in ``dest`` (absent or empty).

    The first call downloads and caches the kernel (tens of seconds); later ones copy from
    the cache (about a second).
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise OutputExistsError(f"{dest} already exists and is not an empty directory.")
    bundle = fetch_kernel(cache_dir)
    initrd = cached_initramfs(bundle, cache_dir)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        populate_tree(dest, bundle, initrd)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return _describe(dest, bundle)


def _describe(dest: Path, bundle: KernelBundle) -> TestGuest:
    return TestGuest(
        root=dest,
        kernel_version=bundle.release,
        kernel=dest / "boot" / f"vmlinuz-{bundle.release}",
        initrd=dest / "boot" / f"initrd.img-{bundle.release}",
    )


def _numeric_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def rootfs_tarball(root: Path, output: Path) -> Path:
    """Write ``root`` as a gzip-compressed tarball, every member owned by root (0:0).

    Members are relative (``./etc/passwd``) as debootstrap and ``docker export`` tarballs are;
    symlinks stay symlinks.
    """
    with AtomicOutput(output) as out:
        with tarfile.open(out.path, "w:gz", compresslevel=6) as tar:
            tar.add(root, arcname=".", recursive=True, filter=_numeric_root)
        out.commit()
    return output


def tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root`` (links not followed)."""
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                total += path.stat().st_size
    return total


@dataclass(frozen=True)
class FlatFilesystem:
    """An unpartitioned ext4 image made from a tree."""

    path: Path
    uuid: str
    label: str
    size_bytes: int


def flat_ext4(
    root: Path,
    output: Path,
    *,
    size_bytes: int | None = None,
    label: str = "testroot",
    uuid: str | None = None,
) -> FlatFilesystem:
    """``mke2fs -t ext4 -d ROOT OUTPUT SIZE``: an ext4 filesystem image holding ``root``.

    The default size leaves room to grow (twice the content, at least 64 MiB), in whole MiB.
    """
    if size_bytes is None:
        content = tree_size(root)
        size_bytes = max(64 << 20, content * 2 + (16 << 20))
        size_bytes = (size_bytes + (1 << 20) - 1) // (1 << 20) * (1 << 20)
    fs_uuid = uuid or str(uuid_module.uuid4())
    with AtomicOutput(output) as out:
        e2fs.mke2fs(out.path, fs_type="ext4", size_bytes=size_bytes, root_dir=root, label=label, uuid=fs_uuid)
        if out.path.stat().st_size != size_bytes:
            raise BuildError(f"mke2fs did not write {output}.")
        out.commit()
    return FlatFilesystem(path=output, uuid=fs_uuid, label=label, size_bytes=size_bytes)
