"""What ``inspect --os`` learns about the operating system on one root filesystem.

Every field is what a file in the guest says, read without running anything from it; a
field is None (or empty) when the guest does not say, and ``notes`` tell what could not be
read and why (a file too large, a link loop, binary garbage). The names follow Glance's
image properties where there is one (``os_distro``, ``os_version``, ``architecture``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: os-release ``ID`` -> Glance's ``os_distro`` where they differ (the rest are equal); names
#: Glance's list lacks are libosinfo's/libguestfs' (``virt-inspector`` says "alpinelinux").
OS_DISTRO_NAMES: dict[str, str] = {
    "alpine": "alpinelinux",
    "opensuse-leap": "opensuse",
    "opensuse-tumbleweed": "opensuse",
    "sled": "sled",
    "sles": "sles",
    "ol": "oraclelinux",
    "amzn": "amazonlinux",
    "arch": "arch",
    "rocky": "rocky",
    "almalinux": "almalinux",
}


@dataclass
class Distribution:
    """Which distribution, from os-release (or the older files when it is missing)."""

    id: str | None = None
    name: str | None = None
    version: str | None = None
    version_id: str | None = None
    codename: str | None = None
    pretty_name: str | None = None
    id_like: list[str] = field(default_factory=list)
    #: The files the facts came from, in the order they were believed.
    sources: list[str] = field(default_factory=list)

    @property
    def os_distro(self) -> str | None:
        """Glance's ``os_distro`` (libosinfo short id family)."""
        if self.id is None:
            return None
        return OS_DISTRO_NAMES.get(self.id, self.id)


@dataclass
class BootFile:
    """A kernel or an initial ramdisk in /boot."""

    path: str
    size: int
    #: The kernel release the name carries ("6.1.0-18-amd64"; "virt" for Alpine's vmlinuz-virt).
    release: str | None = None


@dataclass
class BootEntry:
    """The entry a boot loader's configuration boots by default."""

    loader: str
    config: str
    title: str | None
    kernel: str | None
    initrd: str | None = None


@dataclass
class Package:
    name: str
    version: str
    architecture: str | None = None


@dataclass
class PackageDatabase:
    """An installed-package database: its format, where, how many packages, which."""

    format: str
    path: str
    count: int
    packages: list[Package] = field(default_factory=list)
    #: True when the database was larger than imagewright reads (count is then a lower bound).
    truncated: bool = False

    def version_of(self, name: str) -> str | None:
        for package in self.packages:
            if package.name == name:
                return package.version
        return None


@dataclass
class FstabEntry:
    spec: str
    mountpoint: str
    fs_type: str
    options: str
    #: True: names a filesystem of this disk; False: names one that is not on it;
    #: None: cannot tell from the disk (a device name, a network or virtual filesystem).
    on_this_disk: bool | None = None


@dataclass
class CloudInit:
    present: bool
    version: str | None = None
    #: ``datasource_list`` as configured (cloud.cfg, then cloud.cfg.d/*.cfg in order); empty: all.
    datasources: list[str] = field(default_factory=list)


@dataclass
class OsFacts:
    """The operating system on one root filesystem."""

    #: Which filesystem ("partition 2 (ext4) of disk.qcow2").
    filesystem: str
    distribution: Distribution = field(default_factory=Distribution)
    #: Glance's ``architecture`` (x86_64, aarch64, i686 ...), from an ELF header.
    architecture: str | None = None
    #: The file the architecture was read from.
    architecture_source: str | None = None
    init_system: str | None = None
    #: The filesystem /boot was read from when fstab mounts it from another one of the disk.
    boot_filesystem: str | None = None
    kernels: list[BootFile] = field(default_factory=list)
    initrds: list[BootFile] = field(default_factory=list)
    boot_default: BootEntry | None = None
    packages: list[PackageDatabase] = field(default_factory=list)
    hostname: str | None = None
    fstab: list[FstabEntry] = field(default_factory=list)
    cloud_init: CloudInit = field(default_factory=lambda: CloudInit(present=False))
    #: The imagewright agent's path when installed.
    agent: str | None = None
    #: "openssh" or "dropbear" when an SSH server is installed.
    ssh_server: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def os_type(self) -> str:
        return "linux"

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["distribution"]["os_distro"] = self.distribution.os_distro
        result["os_type"] = self.os_type
        return result
