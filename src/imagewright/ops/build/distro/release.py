"""Which distribution release ``build --from VENDOR:RELEASE`` means, and what it is made of.

A release is named ``debian:CODENAME`` or ``ubuntu:CODENAME`` (``debian:bookworm``,
``ubuntu:noble``); ``debian:sid`` and ``debian:unstable`` are Debian's rolling suite. The
codenames are checked against the releases imagewright knows, so a typo fails at once with one
sentence instead of after an ``apt-get update`` against a suite the mirror does not have.

For each vendor the table says what build needs from it: the archive components, the keyring
apt verifies the archive with, the kernel package of each ``--kernel`` flavour, whether the
release has ``-updates`` and ``-security`` suites, and its default archive.

NOTE on the Ubuntu keyring: Debian 12 has no ``ubuntu-keyring`` package (Debian 13 has), so a
Debian build machine cannot take Ubuntu's archive key from its own apt. imagewright then uses
the copy it ships, ``keyrings/ubuntu-archive-2018.gpg``: the one key file of Ubuntu's own
``ubuntu-keyring`` 2023.11.28.1 (``/etc/apt/trusted.gpg.d/ubuntu-keyring-2018-archive.gpg``),
"Ubuntu Archive Automatic Signing Key (2018)", fingerprint :data:`UBUNTU_ARCHIVE_KEY` — the key
that signs every Ubuntu release's InRelease since 18.10 (noble's and jammy's checked with
``gpgv`` when it was added; the package itself was checked against noble's signed
Packages index). apt checks every Release file against it before a package is used: an Ubuntu
build is never unverified. When the host has Ubuntu's keyring installed
(``/usr/share/keyrings/ubuntu-archive-keyring.gpg``), that one is used instead. Either way the
image's own ``/etc/apt/sources.list`` names the guest's keyring (``ubuntu-keyring`` is installed).

Sources: Debian's release list (https://www.debian.org/releases/), Ubuntu's
(https://wiki.ubuntu.com/Releases); the kernel metapackages ``linux-image-cloud-amd64`` (Debian's
cloud flavour: virtio, Xen, Hyper-V and ENA drivers, no physical hardware) and
``linux-image-virtual`` (Ubuntu's: the generic kernel with only the virtual machines' modules,
``linux-modules`` without ``linux-modules-extra``; booted through an initramfs like Debian's.
``linux-image-kvm`` is smaller still but drops the initramfs path build's menu uses, so it is
not offered); systemd-resolved is its own package from Debian 12 and Ubuntu 23.04 on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import InvalidArgumentError

#: Kernel flavours ``--kernel`` accepts.
KERNEL_FLAVOURS = ("cloud", "generic")
#: The keyrings imagewright ships (see the module NOTE).
BUNDLED_KEYRINGS = Path(__file__).parent / "keyrings"
#: Fingerprint of "Ubuntu Archive Automatic Signing Key (2018) <ftpmaster@ubuntu.com>".
UBUNTU_ARCHIVE_KEY = "F6ECB3762474EDA9D21B7022871920D1991BC93C"


@dataclass(frozen=True)
class Vendor:
    name: str
    title: str
    components: tuple[str, ...]
    keyring: Path
    #: The Debian package that provides ``keyring`` (for the "install X" hint).
    keyring_package: str
    #: Kernel metapackage per flavour.
    kernels: dict[str, str]
    #: Codenames imagewright knows, newest last; aliases map to a codename.
    releases: tuple[str, ...]
    aliases: dict[str, str]
    #: Releases without -updates/-security suites (rolling ones).
    rolling: tuple[str, ...] = ()
    #: A copy of the archive key shipped with imagewright, used when ``keyring`` is not installed.
    bundled_keyring: Path | None = None
    #: The archive (and its security archive) used when neither --mirror nor the host names one
    #: (None: mmdebstrap's own default).
    default_mirror: str | None = None
    security_mirror: str | None = None
    #: Releases whose systemd-resolved is part of ``systemd`` (no package of its own).
    resolved_in_systemd: tuple[str, ...] = ()


DEBIAN = Vendor(
    name="debian",
    title="Debian",
    components=("main",),
    keyring=Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
    keyring_package="debian-archive-keyring",
    kernels={"cloud": "linux-image-cloud-amd64", "generic": "linux-image-amd64"},
    releases=("buster", "bullseye", "bookworm", "trixie", "forky", "sid"),
    aliases={"unstable": "sid"},
    rolling=("sid",),
    resolved_in_systemd=("buster", "bullseye"),
)
UBUNTU = Vendor(
    name="ubuntu",
    title="Ubuntu",
    components=("main", "universe"),
    keyring=Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
    keyring_package="ubuntu-keyring",
    kernels={"cloud": "linux-image-virtual", "generic": "linux-image-generic"},
    releases=("focal", "jammy", "noble", "oracular", "plucky"),
    aliases={},
    bundled_keyring=BUNDLED_KEYRINGS / "ubuntu-archive-2018.gpg",
    default_mirror="http://archive.ubuntu.com/ubuntu",
    security_mirror="http://security.ubuntu.com/ubuntu",
    resolved_in_systemd=("focal", "jammy"),
)
VENDORS: dict[str, Vendor] = {vendor.name: vendor for vendor in (DEBIAN, UBUNTU)}

_SPEC = re.compile(r"(?P<vendor>[a-z]+):(?P<release>[a-z][a-z0-9-]*)")


@dataclass(frozen=True)
class Release:
    """One release of one vendor (``debian:bookworm``)."""

    vendor: Vendor
    codename: str

    @property
    def name(self) -> str:
        return f"{self.vendor.name}:{self.codename}"

    @property
    def has_updates(self) -> bool:
        return self.codename not in self.vendor.rolling

    @property
    def has_resolved_package(self) -> bool:
        """True when systemd-resolved is a package of its own in this release."""
        return self.codename not in self.vendor.resolved_in_systemd

    @property
    def keyring(self) -> Path:
        """The keyring apt checks the archive with during the build: the host's, else the bundled copy."""
        vendor = self.vendor
        if vendor.keyring.is_file() or vendor.bundled_keyring is None:
            return vendor.keyring
        return vendor.bundled_keyring

    def kernel_package(self, flavour: str) -> str:
        if flavour not in KERNEL_FLAVOURS:
            raise InvalidArgumentError(
                f"'{flavour}' is not a kernel flavour; choose {' or '.join(KERNEL_FLAVOURS)}."
            )
        return self.vendor.kernels[flavour]


def is_release_spec(text: str) -> bool:
    """True when ``text`` names a release (``vendor:codename``) rather than a file."""
    vendor, sep, _rest = text.partition(":")
    return bool(sep) and vendor in VENDORS and "/" not in text


def parse_release(text: str) -> Release:
    """``debian:bookworm`` → Release; InvalidArgumentError naming the choices otherwise."""
    match = _SPEC.fullmatch(text.strip().lower())
    if match is None or match.group("vendor") not in VENDORS:
        raise InvalidArgumentError(
            f"'{text}' is not a release name; write VENDOR:CODENAME with VENDOR "
            f"{' or '.join(VENDORS)}, for example debian:bookworm."
        )
    vendor = VENDORS[match.group("vendor")]
    codename = vendor.aliases.get(match.group("release"), match.group("release"))
    if codename not in vendor.releases:
        raise InvalidArgumentError(
            f"'{match.group('release')}' is not {'an' if vendor.title[0] in 'AEIOU' else 'a'} "
            f"{vendor.title} release imagewright knows; "
            f"choose one of {', '.join(vendor.releases)}."
        )
    return Release(vendor, codename)
