"""``inspect --os``: the operating system inside an image, read without booting or mounting it.

    from imagewright.ops.inspect_os import inspect_os
    found = inspect_os("disk.qcow2")
    for root in found.roots:
        print(root.distribution.id, root.distribution.version_id, root.architecture)

Each Linux root filesystem (ext2/3/4 through debugfs; others through libguestfs where it is
installed) is opened read-only through the guest contract (``guest.open_root_filesystems``)
after ``inspect`` judged the image safe; nothing from the guest runs. Every file is read with
a bound of its own (``reader``), so a hostile guest (link loops, a 2 GiB os-release, a million
dpkg stanzas, binary garbage) costs bounded time and memory and yields notes, not errors.
When the root's fstab mounts /boot from another filesystem of the disk (named by UUID, LABEL,
PARTUUID or PARTLABEL), the kernels and boot loader configuration are read from that one, seen
where the guest mounts it (``guest.mounted``). The same facts libguestfs's ``virt-inspector``
reports (inspect_os.c / inspect-fs-unix.c), without its appliance.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagewright.guest import GuestFS
from imagewright.guest.bounded import GuestReader
from imagewright.guest.mounted import MountedFilesystem
from imagewright.ops.audit import AuditReport, audit_guest
from imagewright.ops.inspect_os import boot, elf, packages, releases, system
from imagewright.ops.inspect_os.boot import read_boot_default, read_boot_files
from imagewright.ops.inspect_os.elf import read_architecture
from imagewright.ops.inspect_os.model import OsFacts
from imagewright.ops.inspect_os.packages import read_packages
from imagewright.ops.inspect_os.releases import read_distribution
from imagewright.ops.inspect_os.system import (
    read_cloud_init,
    read_fstab,
    read_hostname,
    read_init_system,
    read_ssh_server,
)
from imagewright.ops.prepare.operations.agent import AGENT_PATH

if TYPE_CHECKING:
    from imagewright.disk.filesystems import FilesystemInfo
    from imagewright.inspection import ImageReport

#: Is an fstab ``spec`` a filesystem of this disk? (True / False / None: cannot tell)
SpecResolver = Callable[[str], bool | None]
#: Which filesystem of this disk an fstab ``spec`` names: ``(found, partition)``, the partition
#: None for an unpartitioned disk's filesystem; ``(False, None)`` when it names none (or cannot tell).
SpecLocator = Callable[[str], tuple[bool, int | None]]
#: Opens a filesystem of the disk read-only by partition number (None when it cannot).
FilesystemOpener = Callable[[int | None], GuestFS | None]


@dataclass
class OsInspection:
    """Every root filesystem's facts (with ``facts``), its audit (with ``audit``), and notes on
    what was not looked into."""

    roots: list[OsFacts] = field(default_factory=list)
    audit: AuditReport | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"roots": [root.to_dict() for root in self.roots], "notes": list(self.notes)}


def os_facts(
    guest: GuestFS,
    resolves: SpecResolver | None = None,
    *,
    locate: SpecLocator | None = None,
    open_filesystem: FilesystemOpener | None = None,
) -> OsFacts:
    """What the operating system on ``guest`` (a root filesystem) is. With ``locate`` and
    ``open_filesystem``, a /boot that fstab mounts from another filesystem of the disk is
    read from there (as the running system would see it)."""
    reader = GuestReader(guest)
    reader.prefetch(
        (*releases.LOOKS_AT, *elf.PROGRAMS, *boot.LOOKS_AT, *packages.LOOKS_AT, *system.LOOKS_AT, AGENT_PATH),
        (*boot.LISTS, *system.LISTS),
    )
    facts = OsFacts(filesystem=guest.description)
    facts.distribution = read_distribution(reader)
    facts.architecture, facts.architecture_source = read_architecture(reader)
    facts.init_system = read_init_system(reader)
    facts.kernels, facts.initrds = read_boot_files(reader)
    facts.boot_default = read_boot_default(reader)
    facts.packages = read_packages(reader)
    facts.hostname = read_hostname(reader)
    facts.fstab = read_fstab(reader, resolves or (lambda spec: None))
    facts.cloud_init = read_cloud_init(reader, facts.packages)
    facts.agent = AGENT_PATH if reader.exists(AGENT_PATH) else None
    facts.ssh_server = read_ssh_server(reader)
    boot_mount = next((m for m in facts.fstab if m.mountpoint == "/boot"), None)
    if boot_mount is not None and not facts.kernels:
        # The root's /boot is only a mount point; its files are on another filesystem.
        found, partition = locate(boot_mount.spec) if locate is not None else (False, None)
        boot_guest = open_filesystem(partition) if found and open_filesystem is not None else None
        if boot_guest is None:
            reader.note(
                f"/boot is a filesystem of its own ({boot_mount.spec}); the kernels and boot loader "
                "configuration on it were not looked at"
            )
        else:
            _read_separate_boot(facts, boot_guest, reader)
    facts.notes = reader.notes
    return facts


def _read_separate_boot(facts: OsFacts, boot_guest: GuestFS, root_reader: GuestReader) -> None:
    """Kernels, initrds and the boot default from the filesystem fstab mounts at /boot."""
    mounted = MountedFilesystem(boot_guest, "/boot")
    reader = GuestReader(mounted)
    reader.prefetch(boot.LOOKS_AT, boot.LISTS)
    facts.boot_filesystem = boot_guest.description
    facts.kernels, facts.initrds = read_boot_files(reader)
    facts.boot_default = facts.boot_default or read_boot_default(reader)
    for note in reader.notes:
        root_reader.note(f"{note} (on {boot_guest.description})")


def _spec_tags(report: ImageReport) -> dict[str, dict[str, int | None]]:
    """For each fstab tag, the values this disk answers to and the partition of each (None:
    the unpartitioned disk's filesystem)."""
    survey = report.disk
    tags: dict[str, dict[str, int | None]] = {"UUID": {}, "LABEL": {}, "PARTUUID": {}, "PARTLABEL": {}}
    if survey is None:
        return tags
    filesystems: list[tuple[FilesystemInfo, int | None]] = []
    if survey.filesystem is not None:
        filesystems.append((survey.filesystem, None))
    table = survey.partition_table
    if table is not None:
        disk_id = str(table.disk_id).lower().removeprefix("0x")
        for part in table.partitions:
            if part.filesystem is not None:
                filesystems.append((part.filesystem, part.number))
            if part.uuid:
                tags["PARTUUID"].setdefault(part.uuid.lower(), part.number)
            elif table.kind in ("mbr", "dos"):
                # An MBR partition's PARTUUID is the disk identifier and the number (blkid).
                tags["PARTUUID"].setdefault(f"{disk_id}-{part.number:02x}", part.number)
            if part.name:
                tags["PARTLABEL"].setdefault(part.name, part.number)
    for filesystem, number in filesystems:
        if filesystem.uuid:
            tags["UUID"].setdefault(filesystem.uuid.lower(), number)
        if filesystem.label:
            tags["LABEL"].setdefault(filesystem.label, number)
    return tags


_BY_LINK = {"by-uuid": "UUID", "by-label": "LABEL", "by-partuuid": "PARTUUID", "by-partlabel": "PARTLABEL"}


def _tag_and_value(spec: str) -> tuple[str, str] | None:
    """``("UUID", "1234")`` for ``UUID=1234`` or ``/dev/disk/by-uuid/1234``; None for a device
    name or anything else the disk alone cannot tell."""
    tag, sep, value = spec.partition("=")
    if not sep and spec.startswith("/dev/disk/"):
        kind, _, value = spec[len("/dev/disk/") :].partition("/")
        tag = _BY_LINK.get(kind, "")
    elif not sep:
        return None
    tag = tag.upper()
    value = value.strip("\"'")
    return tag, (value if tag in ("LABEL", "PARTLABEL") else value.lower())


def spec_locator(report: ImageReport) -> SpecLocator:
    """Which filesystem of the disk ``report`` describes an fstab device spec names."""
    tags = _spec_tags(report)

    def locate(spec: str) -> tuple[bool, int | None]:
        parsed = _tag_and_value(spec)
        if parsed is None or parsed[0] not in tags or parsed[1] not in tags[parsed[0]]:
            return False, None
        return True, tags[parsed[0]][parsed[1]]

    return locate


def spec_resolver(report: ImageReport) -> SpecResolver:
    """Whether an fstab device spec names a filesystem of the disk ``report`` describes."""
    tags = _spec_tags(report)

    def resolves(spec: str) -> bool | None:
        parsed = _tag_and_value(spec)
        if parsed is None or parsed[0] not in tags:
            return None
        return parsed[1] in tags[parsed[0]]

    return resolves


def inspect_os(
    image: str | os.PathLike[str],
    *,
    report: ImageReport | None = None,
    facts: bool = True,
    audit: bool = False,
) -> OsInspection:
    """The operating system of every Linux root filesystem in ``image`` (judged safe first):
    its facts (``facts``) and what it would leak if published (``audit``), in one opening."""
    from imagewright.guest.session import open_root_filesystems
    from imagewright.inspection import inspect_image

    report = report or inspect_image(image)
    result = OsInspection(audit=AuditReport() if audit else None)
    with open_root_filesystems(image, report=report) as (guests, notes, others):
        result.notes.extend(notes)
        resolves = spec_resolver(report)
        locate = spec_locator(report)
        for guest in guests:
            if facts:
                result.roots.append(os_facts(guest, resolves, locate=locate, open_filesystem=others.open))
            if result.audit is not None:
                result.audit.roots.append(audit_guest(guest))
    if result.audit is not None:
        result.audit.notes.extend(notes)
    return result


__all__ = ["OsFacts", "OsInspection", "inspect_os", "os_facts", "spec_locator", "spec_resolver"]
