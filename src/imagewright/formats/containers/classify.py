"""What an archive is (OVA, a disk in a tarball, a root filesystem, anything else), and
which of its members are reasons to refuse it.

NOTE on the rules:
- Every kind: a member that would land outside the extraction directory (absolute path,
  a '..' component, a path through a symlink member) or whose name means different things
  to different readers (a NUL byte) is refused; so is a hard link that points outside
  the archive, because extracting it links a host file into the result.
- OVA, disk archive, plain archive: an image package holds regular files and directories
  only. A symlink, hard link, device node or FIFO in one has no innocent use and is the
  classic way to make an extractor read or overwrite host files.
- Root filesystem: symlinks (absolute ones too: /etc/localtime → /usr/share/zoneinfo/…),
  hard links within the tree, device nodes and setuid files are what a root filesystem is
  made of. They are listed, not refused: ``build`` copies them into an image, never onto
  the host. Its files become files of a guest, never disks, so they are not inspected as
  images (a Debian tree holds thousands of ``.gz`` changelogs and a compressed initramfs),
  and a file larger than the largest disk imagewright builds is refused (``archive``).

NOTE: the kind is decided by names and shape, which the archive's author chooses. So nothing
but a label hangs on "OVA" vs "disk archive" vs "archive": every member of each is inspected
by its content. Only "root filesystem" changes what is examined, and what it permits is what
``build`` (its one consumer) copies into an image.
"""

from __future__ import annotations

import posixpath
import re

from imagewright.formats.containers.model import ArchiveMember, ContainerKind
from imagewright.formats.containers.problems import Findings

DISK_SUFFIXES = (
    ".img",
    ".raw",
    ".qcow2",
    ".qcow",
    ".vmdk",
    ".vhd",
    ".vhdx",
    ".vdi",
    ".iso",
    ".qed",
    ".hdd",
)
_COMPRESSION_SUFFIXES = (".gz", ".xz", ".zst", ".bz2")
#: A disk archive holds this many regular files at most ("one or a few disks"). The kind is a
#: label for people: whatever the kind, the inspection examines every member by its content.
MAX_DISK_ARCHIVE_FILES = 4

_ROOTFS_DIRS = {
    "bin",
    "sbin",
    "usr",
    "lib",
    "lib64",
    "var",
    "boot",
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
    "root",
    "home",
    "opt",
    "srv",
    "mnt",
}
_SEPARATORS = re.compile(r"[/\\]")


def normalize(name: str) -> str:
    """The path a member extracts to, relative to the extraction directory."""
    path = posixpath.normpath("/" + name.lstrip("/")) if name else "/"
    # normpath of "/x/../.." stays under "/" — so judge '..' on the raw name, not here.
    return path.lstrip("/")


def top_component(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return parts[0] if parts else ""


def is_disk_name(name: str) -> bool:
    """``disk.raw``, ``image.qcow2``, also compressed (``disk.raw.gz``)."""
    lower = name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
            break
    return lower.endswith(DISK_SUFFIXES)


def is_ovf_name(name: str) -> bool:
    return name.lower().endswith(".ovf")


def looks_like_rootfs(members: list[ArchiveMember]) -> bool:
    """A root filesystem tree: an ``etc`` directory next to at least two other top-level
    directories every Linux root has (possibly all under ``./``).
    """
    return tops_look_like_rootfs({top_component(m.name) for m in members})


def tops_look_like_rootfs(tops: set[str]) -> bool:
    """``looks_like_rootfs`` on the set of top-level names (kept up to date while streaming)."""
    return "etc" in tops and len(tops & _ROOTFS_DIRS) >= 2


def is_top_level_ovf(member: ArchiveMember) -> bool:
    return member.type == "file" and is_ovf_name(member.name) and "/" not in normalize(member.name)


def classify(members: list[ArchiveMember]) -> ContainerKind:
    """OVA (a ``.ovf`` at the top; deeper only if the tree is no root filesystem, which may
    well ship an ``.ovf`` somewhere under /usr), root filesystem, disk archive, archive."""
    files = [m for m in members if m.type == "file"]
    if any(is_top_level_ovf(m) for m in files):
        return "ova"
    if looks_like_rootfs(members):
        return "rootfs-archive"
    if any(is_ovf_name(m.name) for m in files):
        return "ova"
    if 1 <= len(files) <= MAX_DISK_ARCHIVE_FILES and all(is_disk_name(m.name) for m in files):
        return "disk-archive"
    return "archive"


#: Member types that never carry data (``tar`` refuses a header of one that claims some).
_NO_DATA_TYPEFLAGS = frozenset({"1", "2", "3", "4", "5", "6"})


def _path_fault(name: str) -> str | None:
    if name.startswith("/"):
        return "has an absolute path"
    if ".." in _SEPARATORS.split(name):
        return "has a '..' component"
    return None


def _label(name: str) -> str:
    return f"member '{name[:200]}'"


def judge_members(kind: ContainerKind, members: list[ArchiveMember], findings: Findings) -> None:
    """Add the problems and notes of ``members`` for an archive of ``kind``."""
    package = kind in ("ova", "disk-archive", "archive")
    # The paths extracted so far (also: the earlier members a hard link may point to).
    seen: set[str] = set()
    symlinks: set[str] = set()
    devices = setuid = links = 0
    for member in members:
        name = member.name
        fault = _path_fault(name)
        if fault:
            findings.problem(
                f"{_label(name)} {fault}; it would be written outside the extraction directory", fault
            )
        path = normalize(name)
        if path == name:
            path = name  # keep one string per member, not two (200 000 members)
        parent = posixpath.dirname(path) if symlinks else ""
        while parent:
            if parent in symlinks:
                findings.problem(
                    f"{_label(name)} lies under the symbolic link member '{parent[:200]}'; extracting it "
                    "would write wherever that link points",
                    "under symlink",
                )
                break
            parent = posixpath.dirname(parent)

        if member.type != "file" and member.stored_size and member.typeflag not in _NO_DATA_TYPEFLAGS:
            # NOTE (safety): GNU tar reads a 'D' member's data as a directory listing and skips
            # a 'V' label's; Python's tarfile extracts every type it does not know (D, V, A, M
            # ...) as a regular file with that data: a file nobody examined (any archive kind).
            findings.problem(
                f"{_label(name)} has the tar type '{member.typeflag}' and carries "
                f"{member.stored_size} bytes of data, which Python's tarfile extracts as a regular "
                "file and GNU tar does not; readers disagree on what the archive holds",
                "typed data",
            )

        if member.type == "hardlink":
            target = member.linkname or ""
            target_fault = _path_fault(target)
            if target_fault:
                why = "is an absolute path" if target.startswith("/") else "has a '..' component"
                findings.problem(
                    f"{_label(name)} is a hard link to '{target[:200]}', which {why}; extracting it would "
                    "link a file from outside the archive",
                    "hard link outside",
                )
            elif not package and normalize(target) not in seen:
                findings.problem(
                    f"{_label(name)} is a hard link to '{target[:200]}', which is not an earlier member of "
                    "the archive",
                    "hard link dangling",
                )

        if package:
            what = {
                "symlink": "a symbolic link",
                "hardlink": "a hard link",
                "chardev": "a character device",
                "blockdev": "a block device",
                "fifo": "a FIFO",
            }.get(member.type)
            if what:
                findings.problem(
                    f"{_label(name)} is {what}; an image package holds only regular files", member.type
                )
            elif member.type == "other" and member.typeflag != "V":
                findings.problem(
                    f"{_label(name)} has the unknown tar type '{member.typeflag}'", "unknown type"
                )
        else:
            if member.type in ("chardev", "blockdev", "fifo"):
                devices += 1
            if member.type == "file" and member.mode & 0o6000:
                setuid += 1
            if member.type in ("symlink", "hardlink"):
                links += 1
            if member.type == "other" and member.typeflag != "V":
                findings.note(f"{_label(name)} has the unknown tar type '{member.typeflag}'", "unknown type")

        if member.type == "symlink":
            symlinks.add(path)
        if path in seen and member.type != "dir":
            sentence = f"{_label(name)} appears twice; the second copy overwrites the first when extracted"
            if kind in ("ova", "disk-archive"):
                findings.problem(sentence, "duplicate")
            else:
                findings.note(sentence, "duplicate")
        seen.add(path)
    if kind == "rootfs-archive" and (devices or setuid or links):
        findings.note(
            f"the root filesystem holds links: {links}, device nodes or FIFOs: {devices}, setuid/setgid "
            f"files: {setuid} (normal for a root filesystem; copied into an image, never onto the host)"
        )
