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
The same facts libguestfs's ``virt-inspector`` reports (inspect_os.c / inspect-fs-unix.c),
without its appliance.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagewright.guest import GuestFS
from imagewright.guest.bounded import GuestReader
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
    from imagewright.inspection import ImageReport

#: Is an fstab ``spec`` a filesystem of this disk? (True / False / None: cannot tell)
SpecResolver = Callable[[str], bool | None]


@dataclass
class OsInspection:
    """Every root filesystem's facts (with ``facts``), its audit (with ``audit``), and notes on
    what was not looked into."""

    roots: list[OsFacts] = field(default_factory=list)
    audit: AuditReport | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"roots": [root.to_dict() for root in self.roots], "notes": list(self.notes)}


def os_facts(guest: GuestFS, resolves: SpecResolver | None = None) -> OsFacts:
    """What the operating system on ``guest`` (a root filesystem) is."""
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
        reader.note(
            f"/boot is a filesystem of its own ({boot_mount.spec}); the kernels and boot loader "
            "configuration on it were not looked at"
        )
    facts.notes = reader.notes
    return facts


def spec_resolver(report: ImageReport) -> SpecResolver:
    """Whether an fstab device spec names a filesystem of the disk ``report`` describes."""
    survey = report.disk
    tags: dict[str, set[str]] = {"UUID": set(), "LABEL": set(), "PARTUUID": set(), "PARTLABEL": set()}
    if survey is not None:
        filesystems = [survey.filesystem] if survey.filesystem is not None else []
        table = survey.partition_table
        if table is not None:
            disk_id = str(table.disk_id).lower().removeprefix("0x")
            for part in table.partitions:
                if part.filesystem is not None:
                    filesystems.append(part.filesystem)
                if part.uuid:
                    tags["PARTUUID"].add(part.uuid.lower())
                elif table.kind in ("mbr", "dos"):
                    # An MBR partition's PARTUUID is the disk identifier and the number (blkid).
                    tags["PARTUUID"].add(f"{disk_id}-{part.number:02x}")
                if part.name:
                    tags["PARTLABEL"].add(part.name)
        for filesystem in filesystems:
            if filesystem.uuid:
                tags["UUID"].add(filesystem.uuid.lower())
            if filesystem.label:
                tags["LABEL"].add(filesystem.label)
    by_link = {"by-uuid": "UUID", "by-label": "LABEL", "by-partuuid": "PARTUUID", "by-partlabel": "PARTLABEL"}

    def resolves(spec: str) -> bool | None:
        tag, sep, value = spec.partition("=")
        if not sep and spec.startswith("/dev/disk/"):
            kind, _, value = spec[len("/dev/disk/") :].partition("/")
            tag = by_link.get(kind, "")
        elif not sep:
            return None
        tag = tag.upper()
        if tag not in tags:
            return None
        value = value.strip("\"'")
        return (value if tag in ("LABEL", "PARTLABEL") else value.lower()) in tags[tag]

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
    with open_root_filesystems(image, report=report) as (guests, notes):
        result.notes.extend(notes)
        resolves = spec_resolver(report)
        for guest in guests:
            if facts:
                result.roots.append(os_facts(guest, resolves))
            if result.audit is not None:
                result.audit.roots.append(audit_guest(guest))
    if result.audit is not None:
        result.audit.notes.extend(notes)
    return result


__all__ = ["OsFacts", "OsInspection", "inspect_os", "os_facts", "spec_resolver"]
