"""The Debian kernel of the test guest: resolved, downloaded once, cut down to what a boot needs.

``linux-image-amd64`` is a metapackage; ``apt-cache depends`` names the versioned package
behind it (``linux-image-6.1.0-56-amd64``), whose name carries the kernel release
(``6.1.0-56-amd64``, what ``uname -r`` prints and the directory under ``/lib/modules``).
The package (~70 MB, ~400 MB unpacked) is streamed through ``dpkg-deb --fsys-tarfile`` into
a scratch tree, ``depmod -b`` computes ``modules.dep`` over all its modules, and only the
modules the test guest needs (with their dependency closure) are kept, with a ``modules.dep``
of their own. What stays in the cache for one kernel release (a few MB)::

    <cache>/testguest/<release>/
        kernel.json                  what is here (release, package, load order); written last
        vmlinuz-<release>
        modules/lib/modules/<release>/{kernel/...,modules.dep,modules.alias,...}
        initrd-<key>.img             initramfs images built from this kernel (see rootfs.py)

The whole fetch runs under an exclusive ``fcntl`` lock on ``<cache>/testguest/.lock``, so
parallel test workers (pytest-xdist) and parallel commands build it once.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from imagewright.errors import BuildError, ImagewrightError
from imagewright.files import ScratchFiles, cache_lock, default_cache_dir, read_manifest
from imagewright.programs import apt, kmod

#: The metapackage that always points at Debian's current kernel for amd64.
KERNEL_METAPACKAGE = "linux-image-amd64"
_PACKAGE_PREFIX = "linux-image-"

# What each job of the guest needs from the kernel. Names are module names as modules.dep
# spells their files ('-' and '_' are interchangeable, as for modprobe).
#: Disks on virtio-blk, virtio-scsi, IDE (PIIX) and AHCI, and the ext4 root on them.
#: crc32c: ext4 and jbd2 checksum their metadata with it (modules.softdep "pre: crypto-crc32c");
#: the generic one always loads, the SSE4.2 one only where the CPU has the instruction.
DISK_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ata_piix",
    "ahci",
    "crc32c_generic",
    "crc32c-intel",
    "ext4",
)
#: Context CD-ROMs (ISO 9660 on an IDE or SCSI CD drive).
CDROM_MODULES: tuple[str, ...] = ("sr_mod", "cdrom", "isofs")
#: A VFAT metadata disk (Wakame-vdc style) and the character sets FAT mounts use: code page
#: 437 for short names, Debian's default iocharset "ascii" (CONFIG_FAT_DEFAULT_IOCHARSET;
#: without nls_ascii a plain ``mount -t vfat`` fails with "IO charset ascii not found"),
#: and the ones an agent may ask for with ``-o iocharset=``.
VFAT_MODULES: tuple[str, ...] = ("vfat", "fat", "nls_cp437", "nls_ascii", "nls_iso8859-1", "nls_utf8")
#: One virtio NIC (virtio_net pulls in net_failover and failover).
NET_MODULES: tuple[str, ...] = ("virtio_net",)

GUEST_MODULES: tuple[str, ...] = DISK_MODULES + CDROM_MODULES + VFAT_MODULES + NET_MODULES

_MANIFEST = "kernel.json"
_MANIFEST_VERSION = 1


@dataclass(frozen=True)
class KernelBundle:
    """One cached kernel release: the kernel image and the guest's module subset."""

    release: str
    package: str
    package_version: str
    directory: Path
    #: Module files relative to ``/lib/modules/<release>/``, in an order that loads each
    #: module after everything it depends on.
    load_order: tuple[str, ...]
    #: The module names asked for (``GUEST_MODULES``) that are present in this kernel.
    module_names: tuple[str, ...]

    @property
    def vmlinuz(self) -> Path:
        return self.directory / f"vmlinuz-{self.release}"

    @property
    def modules_base(self) -> Path:
        """The directory that holds ``lib/modules/<release>`` (``depmod -b`` base)."""
        return self.directory / "modules"

    @property
    def modules_dir(self) -> Path:
        return self.modules_base / "lib" / "modules" / self.release


def testguest_cache_root(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "testguest"


def resolve_kernel_package() -> str:
    """The versioned kernel package ``linux-image-amd64`` depends on (APT's current candidate)."""
    for name in apt.package_depends(KERNEL_METAPACKAGE):
        if name.startswith(_PACKAGE_PREFIX) and name != KERNEL_METAPACKAGE:
            return name
    raise BuildError(
        f"APT does not say which kernel {KERNEL_METAPACKAGE} depends on; run 'apt-get update' and retry."
    )


def cached_bundles(cache_dir: Path | None = None) -> list[KernelBundle]:
    """Every complete kernel bundle in the cache, newest release last."""
    root = testguest_cache_root(cache_dir)
    bundles = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            bundle = _load_manifest(entry)
            if bundle is not None:
                bundles.append(bundle)
    return sorted(bundles, key=lambda b: _release_key(b.release))


def _release_key(release: str) -> tuple[int | str, ...]:
    parts: list[int | str] = []
    for piece in release.replace("-", ".").split("."):
        parts.append(int(piece) if piece.isdigit() else -1)
    return tuple(parts)


def fetch_kernel(cache_dir: Path | None = None) -> KernelBundle:
    """The current Debian kernel bundle, from the cache or downloaded and cut down once.

    Without APT (offline, no package lists) the newest cached release is used.
    """
    root = testguest_cache_root(cache_dir)
    try:
        package = resolve_kernel_package()
    except ImagewrightError:
        cached = cached_bundles(cache_dir)
        if cached:
            return cached[-1]
        raise
    release = package[len(_PACKAGE_PREFIX) :]
    _check_release(release)
    directory = root / release
    bundle = _load_manifest(directory)
    if bundle is not None:
        return bundle
    with cache_lock(root):
        bundle = _load_manifest(directory)
        if bundle is not None:
            return bundle
        return _build_bundle(root, package, release)


def _check_release(release: str) -> None:
    if not release or "/" in release or release.startswith(".") or any(ch.isspace() for ch in release):
        raise BuildError(f"'{release}' is not a kernel release name imagewright can use.")


def _load_manifest(directory: Path) -> KernelBundle | None:
    data = read_manifest(directory / _MANIFEST, _MANIFEST_VERSION)
    if data is None:
        return None
    if tuple(data.get("requested_modules", ())) != GUEST_MODULES:
        return None  # built for another module list: rebuild
    bundle = KernelBundle(
        release=str(data["release"]),
        package=str(data["package"]),
        package_version=str(data["package_version"]),
        directory=directory,
        load_order=tuple(str(m) for m in data["load_order"]),
        module_names=tuple(str(m) for m in data["module_names"]),
    )
    if not bundle.vmlinuz.is_file() or not (bundle.modules_dir / "modules.dep").is_file():
        return None
    return bundle


def _build_bundle(root: Path, package: str, release: str) -> KernelBundle:
    # Scratch beside the bundle, named for it: a build killed half-way is swept by the next one.
    with ScratchFiles(root / release) as builds:
        scratch = builds.scratch_directory("build")
        deb = apt.download_package(package, scratch / "download")
        package_version = deb.name.split("_")[1] if deb.name.count("_") >= 2 else "unknown"
        full = scratch / "full"
        vmlinuz_name = _extract_kernel_tree(deb, full, release)
        deb.unlink()
        kmod.depmod(full, release)
        full_modules = full / "lib" / "modules" / release
        dependencies = kmod.read_modules_dep(full_modules / "modules.dep")
        builtin = _builtin_names(full_modules / "modules.builtin")
        names, load_order = _closure(dependencies, GUEST_MODULES, builtin)

        final = scratch / "bundle"
        subset_modules = final / "modules" / "lib" / "modules" / release
        subset_modules.mkdir(parents=True)
        for relative in load_order:
            target = subset_modules / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(full_modules / relative, target)
        for extra in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            if (full_modules / extra).is_file():
                shutil.copyfile(full_modules / extra, subset_modules / extra)
        kmod.depmod(final / "modules", release)
        shutil.copyfile(full / "boot" / vmlinuz_name, final / f"vmlinuz-{release}")
        manifest = {
            "manifest_version": _MANIFEST_VERSION,
            "release": release,
            "package": package,
            "package_version": package_version,
            "requested_modules": list(GUEST_MODULES),
            "module_names": list(names),
            "load_order": list(load_order),
        }
        (final / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        target_dir = root / release
        if target_dir.exists():
            shutil.rmtree(target_dir)  # an incomplete earlier attempt (no valid manifest)
        final.rename(target_dir)
    bundle = _load_manifest(root / release)
    if bundle is None:
        raise BuildError(f"The kernel bundle for {release} could not be stored in {root}.")
    return bundle


def _extract_kernel_tree(deb: Path, dest: Path, release: str) -> str:
    """Write the package's kernel image and module tree under ``dest``; returns the vmlinuz name."""
    modules_prefix = PurePosixPath("lib", "modules", release)
    vmlinuz_name = ""
    with apt.open_package_tree(deb) as tar:
        for member in tar:
            path = PurePosixPath(member.name)  # "./boot/x" -> "boot/x"
            if path.is_absolute() or ".." in path.parts or not path.parts:
                continue
            wanted_kernel = (
                len(path.parts) == 2 and path.parts[0] == "boot" and path.name.startswith("vmlinuz-")
            )
            wanted_module = path.parts[: len(modules_prefix.parts)] == modules_prefix.parts
            if not (wanted_kernel or wanted_module) or not member.isfile():
                continue
            target = dest.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            os.chmod(target, stat.S_IMODE(member.mode) & 0o755 | 0o600)
            if wanted_kernel:
                vmlinuz_name = path.name
    if not vmlinuz_name:
        raise BuildError(f"The package {deb.name} holds no kernel image in /boot.")
    if not (dest / modules_prefix).is_dir():
        raise BuildError(f"The package {deb.name} holds no modules for kernel release {release}.")
    return vmlinuz_name


def _module_name(relative: str) -> str:
    name = PurePosixPath(relative).name
    for suffix in (".xz", ".zst", ".gz"):
        name = name.removesuffix(suffix)
    return name.removesuffix(".ko").replace("-", "_")


def _builtin_names(path: Path) -> frozenset[str]:
    if not path.is_file():
        return frozenset()
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return frozenset(_module_name(line.strip()) for line in lines if line.strip())


def _closure(
    dependencies: dict[str, tuple[str, ...]], wanted: tuple[str, ...], builtin: frozenset[str] = frozenset()
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(module names found, module files in a safe load order) for ``wanted`` and all they need.

    modules.dep lists a module's whole dependency closure with the module to load first
    last; loading each dependency (recursively) before the module gives a valid order even
    where the list is not sorted that way.
    """
    by_name = {_module_name(path): path for path in dependencies}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str, depth: int) -> None:
        if path in seen or depth > 64:
            return
        seen.add(path)
        for dep in reversed(dependencies.get(path, ())):
            visit(dep, depth + 1)
        order.append(path)

    found: list[str] = []
    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            continue  # built into this kernel, or absent (e.g. no crc32c-intel): nothing to load
        found.append(name)
        visit(path, 0)
    missing_essentials = [n for n in ("virtio_blk", "ext4") if n not in found and n not in builtin]
    if missing_essentials:
        raise BuildError(f"The kernel package has no {', '.join(missing_essentials)} module.")
    return tuple(found), tuple(order)
