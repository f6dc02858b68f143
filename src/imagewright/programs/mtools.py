"""mtools: FAT filesystems inside image files, without mounting and without root.

``mformat -i IMAGE`` formats a plain file as a FAT "superfloppy" (boot sector at byte 0, no
partition table), ``mmd``/``mcopy`` create directories and copy files in with VFAT long names,
``mdir -/ -b`` lists the tree and ``mtype`` reads a file back.

Every call runs with a fixed environment so a user's ``~/.mtoolsrc`` or ``MTOOLS_*`` variables
cannot change the result: ``MTOOLSRC=/dev/null`` (no user configuration),
``MTOOLS_SKIP_CHECK=1`` (image files have no floppy geometry to check) and
``MTOOLS_NO_VFAT=0`` (long names on, or ``local-hostname`` would become ``LOCAL-HO``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from imagewright.errors import InvalidArgumentError
from imagewright.programs.runner import run_program

_ENV = {"MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}
_TIMEOUT = 120.0
#: FAT volume labels are 11 characters from the OEM code page; we only write plain ASCII.
MAX_FAT_LABEL = 11


def _fat_path(path: str) -> str:
    """A path inside the image in mtools' ``::/dir/file`` spelling."""
    return "::/" + path.strip("/")


def format_fat(image: Path, label: str, serial: int) -> None:
    """Make a FAT filesystem over the whole of ``image`` (its size must already be set).

    mformat picks FAT12/16/32 and the cluster size from the file size, as mkfs.vfat would.
    """
    if not label or len(label) > MAX_FAT_LABEL or not label.isascii() or not label.isprintable():
        raise InvalidArgumentError(
            f"'{label}' cannot be a FAT volume label (1-{MAX_FAT_LABEL} ASCII characters)."
        )
    run_program(
        ["mformat", "-i", str(image), "-v", label, "-N", f"{serial & 0xFFFFFFFF:08x}", "::"],
        env=_ENV,
        timeout=_TIMEOUT,
        what="formatting the FAT filesystem",
    )


def make_directories(image: Path, paths: Sequence[str]) -> None:
    """``mmd`` each path (parents first; an existing directory is an error)."""
    if not paths:
        return
    run_program(
        ["mmd", "-i", str(image), *[_fat_path(p) for p in paths]],
        env=_ENV,
        timeout=_TIMEOUT,
        what="creating directories in the FAT filesystem",
    )


def copy_in(image: Path, sources: Sequence[Path], destination: str = "") -> None:
    """``mcopy -s`` files and directory trees from the host into ``destination`` in the image."""
    if not sources:
        return
    run_program(
        ["mcopy", "-s", "-Q", "-i", str(image), *[str(s) for s in sources], _fat_path(destination) + "/"],
        env=_ENV,
        timeout=_TIMEOUT,
        what="copying files into the FAT filesystem",
    )


def list_tree(image: Path) -> list[str]:
    """Every path in the image, relative, directories with a trailing ``/`` (``mdir -/ -b``)."""
    result = run_program(
        ["mdir", "-/", "-b", "-i", str(image), "::/"],
        env=_ENV,
        timeout=_TIMEOUT,
        what="listing the FAT filesystem",
    )
    paths: list[str] = []
    for raw in result.stdout_text.splitlines():
        line = raw.strip()
        if line.startswith("::/"):
            paths.append(line[3:])
    return paths


def read_file(image: Path, path: str) -> bytes:
    """The exact bytes of one file in the image (``mtype`` without text conversion)."""
    return run_program(
        ["mtype", "-i", str(image), _fat_path(path)],
        env=_ENV,
        timeout=_TIMEOUT,
        what=f"reading {path} from the FAT filesystem",
    ).stdout
