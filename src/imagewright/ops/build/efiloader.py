"""The UEFI boot loader ``build`` puts on the ESP: Debian's signed chain, or an unsigned GRUB.

The signed chain is what makes a disk boot under Secure Boot (the firmware runs only what a
key in its ``db`` signed; every cloud's Secure Boot firmware carries Microsoft's UEFI CA)::

    firmware --verifies--> shim (signed by Microsoft's UEFI CA 2011; carries Debian's CA)
    shim     --verifies--> GRUB (signed by Debian; shim's shim_lock protocol)
    GRUB     --verifies--> the kernel (signed by Debian, checked through shim_lock)

The binaries come from the Debian packages themselves, as the test guest's kernel does
(``programs/apt.py``: ``apt-cache policy`` for the candidate version, ``apt-get download``,
``dpkg-deb --fsys-tarfile``), never installed on the host (their maintainer scripts would
run grub-install on the host's own disk):

- ``shim-signed``: ``/usr/lib/shim/shimx64.efi.signed``
- ``grub-efi-amd64-signed``: ``/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed`` — a
  monolithic GRUB (its modules built in: a Secure Boot GRUB loads none from disk) whose
  prefix is ``/EFI/debian`` on the device it was started from; its built-in configuration
  reads ``$prefix/grub.cfg`` (else ``$cmdpath/grub.cfg``) — Debian's ``build-efi-images``.
- ``shim-helpers-amd64-signed``: ``/usr/lib/shim/mmx64.efi.signed`` (MokManager, which shim
  starts when a machine owner key change is pending).

Each package's files are cached once per version under ``<cache>/uefi/<package>_<version>/``
with a ``manifest.json`` written last (the test guest's cache pattern), under the cache's lock.
Every file is checked before use: a PE32+ x86-64 EFI application carrying an Authenticode
signature (``disk/efiboot.py`` reads it; the signature itself is the firmware's to verify).

When the signed packages cannot be had (no APT, APT knows no such package, no network and
nothing cached), ``auto`` falls back to GRUB linked here by ``grub-mkimage -O x86_64-efi``
(``grub-efi-amd64-bin``) with the same prefix, so the ESP is laid out the same way; it boots
under UEFI without Secure Boot, and the build report says so.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from imagewright.binary import FileSource
from imagewright.disk.efiboot import read_pe_image
from imagewright.errors import BuildError, ImagewrightError, InvalidArgumentError
from imagewright.files import ScratchFiles, cache_lock, default_cache_dir, read_manifest
from imagewright.programs import apt, grub

LoaderKind = Literal["signed", "unsigned"]
#: ``--efi-loader``: signed (or fail), unsigned, or auto (signed when it can be had).
LoaderChoice = Literal["auto", "signed", "unsigned"]
LOADER_CHOICES: tuple[LoaderChoice, ...] = ("auto", "signed", "unsigned")

#: The directory under EFI/ that Debian's signed GRUB takes as its prefix (its build sets it).
VENDOR_DIRECTORY = "debian"

#: Modules linked into the unsigned GRUB: the disk, the two filesystems, the menu and the boot.
UNSIGNED_MODULES: tuple[str, ...] = (
    "part_gpt", "part_msdos", "fat", "ext2", "normal", "linux", "serial", "terminal", "echo",
    "test", "search", "search_fs_uuid", "configfile", "reboot", "halt", "efi_gop",
)  # fmt: skip

_MANIFEST = "manifest.json"
_MANIFEST_VERSION = 1
#: Largest boot loader file believed (Debian's signed GRUB is 4 MiB).
MAX_LOADER_BYTES = 64 << 20


@dataclass(frozen=True)
class _SignedFile:
    package: str
    package_path: str
    #: Its name on the ESP (Debian's grub-install names).
    name: str


SIGNED_FILES: tuple[_SignedFile, ...] = (
    _SignedFile("shim-signed", "usr/lib/shim/shimx64.efi.signed", "shimx64.efi"),
    _SignedFile("grub-efi-amd64-signed", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed", "grubx64.efi"),
    _SignedFile("shim-helpers-amd64-signed", "usr/lib/shim/mmx64.efi.signed", "mmx64.efi"),
)


@dataclass(frozen=True)
class EfiBinary:
    """One EFI executable for the ESP (``name`` as it is called there)."""

    name: str
    path: Path
    size: int
    sha256: str
    signed: bool
    #: "shim-signed 1.51~1+deb12u1+16.1-2~deb12u1", "grub-mkimage (grub-efi-amd64-bin)".
    origin: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "signed": self.signed,
            "origin": self.origin,
        }


@dataclass(frozen=True)
class EfiLoader:
    """The boot loader files for the ESP and how they were obtained."""

    kind: LoaderKind
    binaries: tuple[EfiBinary, ...]

    def binary(self, name: str) -> EfiBinary:
        for item in self.binaries:
            if item.name == name:
                return item
        raise KeyError(name)

    @property
    def first_stage(self) -> EfiBinary:
        """What the firmware starts (copied to EFI/BOOT/BOOTX64.EFI): shim, or GRUB itself."""
        return self.binary("shimx64.efi" if self.kind == "signed" else "grubx64.efi")

    @property
    def total_size(self) -> int:
        return sum(item.size for item in self.binaries)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "binaries": [item.to_dict() for item in self.binaries]}


def choose_loader(
    choice: LoaderChoice, *, scratch: Path, cache_dir: Path | None = None
) -> tuple[EfiLoader, list[str]]:
    """The loader for ``choice`` and the notes for the build report (why unsigned, if so)."""
    if choice not in LOADER_CHOICES:
        raise InvalidArgumentError(f"'{choice}' is not an EFI loader; choose auto, signed or unsigned.")
    notes: list[str] = []
    if choice == "unsigned":
        notes.append(
            "the ESP holds an unsigned GRUB (--efi-loader unsigned): it boots under UEFI without Secure Boot"
        )
        return unsigned_loader(scratch), notes
    try:
        return signed_loader(cache_dir), notes
    except ImagewrightError as err:
        if choice == "signed":
            raise BuildError(f"Debian's signed UEFI boot loader could not be had: {_clause(err)}.") from None
        notes.append(
            "the ESP holds an unsigned GRUB built by grub-mkimage: it boots under UEFI but not with Secure "
            f"Boot on, because Debian's signed shim and GRUB could not be had ({_clause(err)})"
        )
    return unsigned_loader(scratch), notes


def _clause(err: ImagewrightError) -> str:
    """An error's sentence as a clause inside another sentence."""
    text = str(err).strip().rstrip(".")
    if text[1:2].isupper():  # "APT ...", "GRUB ...": an acronym keeps its case
        return text
    return text[:1].lower() + text[1:]


def signed_loader(cache_dir: Path | None = None) -> EfiLoader:
    """Debian's signed shim, GRUB and MokManager, from the cache or downloaded once."""
    root = (cache_dir or default_cache_dir()) / "uefi"
    binaries: list[EfiBinary] = []
    for wanted in SIGNED_FILES:
        version = apt.candidate_version(wanted.package)
        if version is None:
            raise BuildError(f"APT knows no package {wanted.package}.")
        binaries.append(_cached_or_fetched(root, wanted, version))
    return EfiLoader("signed", tuple(binaries))


def _safe_version(version: str) -> str:
    if not re.fullmatch(r"[0-9A-Za-z.+~:-]{1,128}", version):
        raise BuildError(f"'{version}' is not a Debian package version imagewright can cache.")
    return version.replace(":", "%3a")


def _cached_or_fetched(root: Path, wanted: _SignedFile, version: str) -> EfiBinary:
    directory = root / f"{wanted.package}_{_safe_version(version)}"
    found = _load_cached(directory, wanted, version)
    if found is not None:
        return found
    with cache_lock(root):
        found = _load_cached(directory, wanted, version)
        if found is None:
            _fetch(directory, wanted, version)
            found = _load_cached(directory, wanted, version)
    if found is None:
        raise BuildError(f"The {wanted.package} files could not be stored in {root}.")
    return found


def _fetch(directory: Path, wanted: _SignedFile, version: str) -> None:
    """Download the package, keep its one file, write the manifest last, move it into place."""
    origin = f"{wanted.package} {version}"
    with ScratchFiles(directory) as builds:
        scratch = builds.scratch_directory("fetch")
        deb = apt.download_package(wanted.package, scratch / "download")
        got = deb.name.split("_")[1] if deb.name.count("_") >= 2 else ""
        if got.replace("%3a", ":") != version:
            raise BuildError(f"apt-get download fetched {deb.name}, not {wanted.package} {version}.")
        final = scratch / "files"
        final.mkdir()
        target = final / wanted.name
        apt.extract_package_files(deb, {wanted.package_path: target}, max_file_bytes=MAX_LOADER_BYTES)
        binary = _describe(target, wanted.name, origin, must_be_signed=True)
        manifest = {
            "manifest_version": _MANIFEST_VERSION,
            "package": wanted.package,
            "version": version,
            "file": wanted.name,
            "sha256": binary.sha256,
        }
        (final / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)  # an incomplete earlier attempt (no valid manifest)
        final.rename(directory)


def _load_cached(directory: Path, wanted: _SignedFile, version: str) -> EfiBinary | None:
    data = read_manifest(directory / _MANIFEST, _MANIFEST_VERSION)
    if data is None:
        return None
    if (data.get("package"), data.get("version"), data.get("file")) != (wanted.package, version, wanted.name):
        return None
    try:
        binary = _describe(
            directory / wanted.name, wanted.name, f"{wanted.package} {version}", must_be_signed=True
        )
    except (ImagewrightError, OSError):
        return None
    return binary if binary.sha256 == data.get("sha256") else None


def _describe(path: Path, name: str, origin: str, *, must_be_signed: bool) -> EfiBinary:
    """Hash ``path`` and check it is an x86-64 EFI application (signed, when it must be)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            if size > MAX_LOADER_BYTES:
                raise BuildError(f"{path} is larger than any boot loader.")
    with FileSource(path) as src:
        pe = read_pe_image(src)
    if pe is None or not pe.is_x86_64_efi_application:
        raise BuildError(f"{path} is not an x86-64 EFI application.")
    if must_be_signed and not pe.signed:
        raise BuildError(f"{path} carries no Authenticode signature.")
    return EfiBinary(name, path, size, digest.hexdigest(), pe.signed, origin)


def unsigned_loader(scratch: Path) -> EfiLoader:
    """GRUB for x86_64-efi linked by grub-mkimage into ``scratch`` (prefix /EFI/debian)."""
    output = scratch / "grubx64.efi"
    grub.mkimage(output, prefix=f"/EFI/{VENDOR_DIRECTORY}", modules=UNSIGNED_MODULES, target="x86_64-efi")
    binary = _describe(output, "grubx64.efi", "grub-mkimage (grub-efi-amd64-bin)", must_be_signed=False)
    return EfiLoader("unsigned", (binary,))
