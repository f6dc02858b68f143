"""Which distribution release ``build --from VENDOR:RELEASE`` means, and what it is made of.

A release is named ``debian:CODENAME`` or ``ubuntu:CODENAME`` (``debian:bookworm``,
``ubuntu:noble``); ``debian:sid`` and ``debian:unstable`` are Debian's rolling suite. The
codenames are checked against the releases imagewright knows, so a typo fails at once with one
sentence instead of after an ``apt-get update`` against a suite the mirror does not have.

For each vendor the table says what build needs from it: the archive components, the keyring
apt verifies the archive with (from the Debian packages ``debian-archive-keyring`` and
``ubuntu-keyring``), the kernel package of each ``--kernel`` flavour, and whether the release
has ``-updates`` and ``-security`` suites.

Sources: Debian's release list (https://www.debian.org/releases/), Ubuntu's
(https://wiki.ubuntu.com/Releases); the kernel metapackages ``linux-image-cloud-amd64`` (Debian's
cloud flavour: virtio, Xen, Hyper-V and ENA drivers, no physical hardware) and
``linux-image-virtual`` (Ubuntu's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import InvalidArgumentError

#: Kernel flavours ``--kernel`` accepts.
KERNEL_FLAVOURS = ("cloud", "generic")


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
            f"'{match.group('release')}' is not a {vendor.title} release imagewright knows; "
            f"choose one of {', '.join(vendor.releases)}."
        )
    return Release(vendor, codename)
