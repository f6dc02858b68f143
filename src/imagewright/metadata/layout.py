"""A context medium before it is written: a volume label, a filesystem kind and a file tree.

Builders (``nocloud``, ``configdrive``, ``opennebula``, ``wakame``) only decide *what* goes on
the medium and return a ``MediumLayout``; writers (``iso.write_iso9660``,
``fat.write_fat_image``) decide *how* the bytes land on disk. That keeps every format's content
testable without any image, and every image writer testable with any content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imagewright.errors import ContextError

Filesystem = Literal["iso9660", "vfat"]


@dataclass(frozen=True)
class MediumFile:
    """One file on the medium: a relative path with ``/`` separators, and its exact bytes."""

    path: str
    data: bytes


@dataclass(frozen=True)
class MediumLayout:
    kind: str
    label: str
    filesystem: Filesystem
    files: tuple[MediumFile, ...]
    #: Directories that must exist even when empty (parents of files are implied).
    directories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for path in [f.path for f in self.files] + list(self.directories):
            check_medium_path(path)
        for item in self.files:
            if item.path in seen:
                raise ContextError(f"The medium would hold '{item.path}' twice.")
            seen.add(item.path)
        file_paths = {f.path for f in self.files}
        for directory in self.all_directories():
            if directory in file_paths:
                raise ContextError(f"The medium would hold '{directory}' as both a file and a directory.")

    def all_directories(self) -> list[str]:
        """Every directory, parents before children, in a stable order."""
        found: set[str] = set()
        for path in [f.path for f in self.files] + [d + "/x" for d in self.directories]:
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                found.add("/".join(parts[:depth]))
        return sorted(found, key=lambda d: (d.count("/"), d))

    @property
    def file_paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def total_bytes(self) -> int:
        return sum(len(f.data) for f in self.files)


def check_medium_path(path: str) -> None:
    """Refuse paths that are absolute, empty, or climb out of the medium."""
    if not path or path.startswith("/") or "\x00" in path or "\\" in path:
        raise ContextError(f"'{path}' is not a valid path on a context medium.")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ContextError(f"'{path}' is not a valid path on a context medium.")
