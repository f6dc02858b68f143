"""The UEFI boot loader ``build`` puts on the ESP: the guest's signed chain, Debian's, or an unsigned GRUB.

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

**The guest's own chain comes first.** A root filesystem with its distribution's signed packages
installed (Debian's or Ubuntu's ``shim-signed`` and ``grub-efi-amd64-signed``; ``build --from``
installs them for every disk that boots under UEFI) carries a chain whose GRUB checks the
kernel *that distribution* signed (each shim carries its own vendor's certificate only):
Debian's GRUB, through Debian's shim, refuses Ubuntu's kernel under Secure Boot ("bad shim
signature", tried here with noble). So when the
source has the files below, the ESP gets them, read out of the new root filesystem (never from
the build machine), and the directory under ``EFI/`` is the one that GRUB was built to look in::

    /usr/lib/shim/shimx64.efi.signed                    shim (Ubuntu: an alternatives link
                                                        to shimx64.efi.signed.latest)
    /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed  GRUB, signed by the distribution
    /usr/lib/shim/mmx64.efi.signed or mmx64.efi         MokManager, when there is a signed one
                                                        (Debian: shim-helpers-amd64-signed;
                                                        Ubuntu: shim-signed, Canonical-signed)

GRUB's prefix is read from the signed image itself: ``grub-mkimage -p`` stores it as a module
of type ``OBJ_TYPE_PREFIX`` (3) — a ``struct grub_module_header`` {u32 type, u32 size} and the
NUL-terminated string (GRUB ``include/grub/kernel.h``, ``util/mkimage.c``); Debian's and
Ubuntu's ``build-efi-images`` pass ``/EFI/debian`` and ``/EFI/ubuntu``. Its built-in
configuration then reads ``$prefix/grub.cfg``, where build puts the stub.

When the guest has no such chain, the ESP gets Debian's from the build machine's APT as above.
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
from imagewright.guest.base import GuestFS
from imagewright.programs import apt, grub

LoaderKind = Literal["signed", "unsigned"]
#: Whose boot chain: the guest's own packages, or build's (Debian's from the build machine's APT,
#: or grub-mkimage's).
LoaderOwner = Literal["guest", "build"]
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
#: GRUB's module type for the prefix (``OBJ_TYPE_PREFIX``, include/grub/kernel.h).
_GRUB_PREFIX_MODULE = 3
#: A prefix module: header {u32 type, u32 size}, then ``/EFI/<directory>`` and its NUL.
_GRUB_PREFIX = re.compile(
    re.escape(_GRUB_PREFIX_MODULE.to_bytes(4, "little")) + rb"(.{4})/EFI/([A-Za-z0-9._-]{1,64})\x00",
    re.DOTALL,
)
_SCAN_CHUNK = 1 << 20
_SCAN_OVERLAP = 128


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
class _GuestFile:
    #: Its name on the ESP.
    name: str
    #: Where the guest's packages put it, the first that exists and is signed wins.
    candidates: tuple[str, ...]
    required: bool


GUEST_FILES: tuple[_GuestFile, ...] = (
    _GuestFile("shimx64.efi", ("/usr/lib/shim/shimx64.efi.signed",), True),
    _GuestFile("grubx64.efi", ("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",), True),
    _GuestFile("mmx64.efi", ("/usr/lib/shim/mmx64.efi.signed", "/usr/lib/shim/mmx64.efi"), False),
)
#: The paths (relative, as tar members are named) whose presence says a source carries its own chain.
GUEST_CHAIN_PATHS: tuple[str, ...] = tuple(f.candidates[0].lstrip("/") for f in GUEST_FILES if f.required)


@dataclass(frozen=True)
class EfiBinary:
    """One EFI executable for the ESP (``name`` as it is called there)."""

    name: str
    path: Path
    size: int
    sha256: str
    signed: bool
    #: "shim-signed 1.51~1+deb12u1+16.1-2~deb12u1", "grub-mkimage (grub-efi-amd64-bin)",
    #: "the guest's /usr/lib/shim/shimx64.efi.signed.latest".
    origin: str
    #: The common names in its Authenticode signature's certificates, as they come (the signer's
    #: and its issuers').
    signers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "signed": self.signed,
            "signers": list(self.signers),
            "origin": self.origin,
        }


@dataclass(frozen=True)
class EfiLoader:
    """The boot loader files for the ESP and how they were obtained."""

    kind: LoaderKind
    binaries: tuple[EfiBinary, ...]
    owner: LoaderOwner = "build"
    #: The directory under EFI/ GRUB takes as its prefix (where it reads grub.cfg).
    vendor_directory: str = VENDOR_DIRECTORY

    def binary(self, name: str) -> EfiBinary:
        for item in self.binaries:
            if item.name == name:
                return item
        raise KeyError(name)

    def has(self, name: str) -> bool:
        return any(item.name == name for item in self.binaries)

    @property
    def description(self) -> str:
        """Whose chain, in words (the build report and the ESP room message use it)."""
        if self.owner == "guest":
            return f"the guest's own signed shim and GRUB (EFI/{self.vendor_directory})"
        if self.kind == "signed":
            return "Debian's signed shim, GRUB and MokManager"
        return "GRUB"

    @property
    def first_stage(self) -> EfiBinary:
        """What the firmware starts (copied to EFI/BOOT/BOOTX64.EFI): shim, or GRUB itself."""
        return self.binary("shimx64.efi" if self.kind == "signed" else "grubx64.efi")

    @property
    def total_size(self) -> int:
        return sum(item.size for item in self.binaries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "owner": self.owner,
            "vendor_directory": self.vendor_directory,
            "binaries": [item.to_dict() for item in self.binaries],
        }


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
    return EfiBinary(name, path, size, digest.hexdigest(), pe.signed, origin, pe.certificate_names)


def guest_loader(guest: GuestFS, scratch: Path) -> tuple[EfiLoader | None, str | None]:
    """The guest's own signed shim, GRUB (and MokManager) copied into ``scratch``, or None and
    why not (None, None: the guest has no signed chain at all)."""
    found: list[EfiBinary] = []
    directory = scratch / "guest-efi"
    for wanted in GUEST_FILES:
        binary, why = _guest_binary(guest, wanted, directory)
        if binary is not None:
            found.append(binary)
        elif wanted.required:
            present = [guest.lstat_or_none(f.candidates[0]) is not None for f in GUEST_FILES if f.required]
            return None, (why if any(present) else None)
    grub_binary = next(item for item in found if item.name == "grubx64.efi")
    vendor = grub_efi_directory(grub_binary.path)
    if vendor is None:
        return None, (
            "the guest's signed GRUB carries no /EFI/<directory> prefix: where it reads grub.cfg is unknown"
        )
    return EfiLoader("signed", tuple(found), owner="guest", vendor_directory=vendor), None


def _guest_binary(guest: GuestFS, wanted: _GuestFile, directory: Path) -> tuple[EfiBinary | None, str]:
    """The first candidate that is a signed x86-64 EFI application, copied out; else why not."""
    why = f"the guest has no {wanted.candidates[0]}"
    for number, candidate in enumerate(wanted.candidates):
        try:
            real = guest.resolve(candidate)
            info = guest.stat(real)
        except ImagewrightError:
            continue
        if not info.is_file:
            why = f"the guest's {candidate} is not a regular file"
            continue
        if info.size > MAX_LOADER_BYTES:
            why = f"the guest's {candidate} is larger than any boot loader"
            continue
        directory.mkdir(mode=0o700, exist_ok=True)
        target = directory / f"{wanted.name}-{number}"
        guest.copy_out(real, target)
        try:
            return _describe(target, wanted.name, f"the guest's {real}", must_be_signed=True), ""
        except BuildError:
            why = f"the guest's {candidate} is not a signed x86-64 EFI application"
            target.unlink(missing_ok=True)
    return None, why


def grub_efi_directory(path: Path) -> str | None:
    """The ``<directory>`` of a GRUB EFI image's built-in ``/EFI/<directory>`` prefix, or None
    (see the module docstring: the prefix module, read in bounded chunks)."""
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(_SCAN_CHUNK):
            data = tail + chunk
            for match in _GRUB_PREFIX.finditer(data):
                size = int.from_bytes(match.group(1), "little")
                needed = 8 + len(b"/EFI/") + len(match.group(2)) + 1
                if needed <= size < needed + 16:  # the module is padded to the address size
                    return match.group(2).decode("ascii")
            tail = data[-_SCAN_OVERLAP:]
    return None


def unsigned_loader(scratch: Path) -> EfiLoader:
    """GRUB for x86_64-efi linked by grub-mkimage into ``scratch`` (prefix /EFI/debian)."""
    output = scratch / "grubx64.efi"
    grub.mkimage(output, prefix=f"/EFI/{VENDOR_DIRECTORY}", modules=UNSIGNED_MODULES, target="x86_64-efi")
    binary = _describe(output, "grubx64.efi", "grub-mkimage (grub-efi-amd64-bin)", must_be_signed=False)
    return EfiLoader("unsigned", (binary,))
