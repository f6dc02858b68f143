"""mtools: FAT filesystems inside image files, without mounting and without root.

``mformat -i IMAGE`` formats a plain file as a FAT "superfloppy" (boot sector at byte 0, no
partition table), ``mmd``/``mcopy`` create directories and copy files in with VFAT long names,
``mdir -/ -b`` lists the tree and ``mtype`` reads a file back.

Every call runs with a fixed environment so a user's ``~/.mtoolsrc`` or ``MTOOLS_*`` variables
cannot change the result: ``MTOOLSRC=/dev/null`` (no user configuration),
``MTOOLS_SKIP_CHECK=1`` (image files have no floppy geometry to check) and
``MTOOLS_NO_VFAT=0`` (long names on, or ``local-hostname`` would become ``LOCAL-HO``).

A filesystem inside a partition of a disk image is reached as ``-i IMAGE@@OFFSET`` (mtools(1),
"Drive letters": the image at byte OFFSET of the file), so nothing is copied out and back.

Every call runs in the sandbox (``programs/runner.py``): the image (read-write when it is
changed) and, for ``mcopy``, the files copied in (read-only); nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from imagewright.errors import InvalidArgumentError
from imagewright.programs.runner import Sandbox, run_program

_ENV = {"MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}
_TIMEOUT = 120.0
#: FAT volume labels are 11 characters from the OEM code page; we only write plain ASCII.
MAX_FAT_LABEL = 11


def _image(image: Path) -> str:
    return os.path.abspath(image)


def _image_at(image: str, offset: int) -> str:
    """The ``-i`` argument: the image file, at ``offset`` bytes when the filesystem is a partition."""
    if offset < 0:
        raise InvalidArgumentError("A FAT filesystem cannot start before its image file.")
    if not offset:
        return image
    if "@@" in image:
        raise InvalidArgumentError(
            f"mtools cannot reach a partition of {image}: its name contains '@@'; choose another name."
        )
    return f"{image}@@{offset}"


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
    target = _image(image)
    run_program(
        ["mformat", "-i", target, "-v", label, "-N", f"{serial & 0xFFFFFFFF:08x}", "::"],
        env=_ENV,
        timeout=_TIMEOUT,
        what="formatting the FAT filesystem",
        sandbox=Sandbox(writes=(target,)),
    )


def make_directories(image: Path, paths: Sequence[str], *, offset: int = 0) -> None:
    """``mmd`` each path (parents first; an existing directory is an error)."""
    if not paths:
        return
    target = _image(image)
    run_program(
        ["mmd", "-i", _image_at(target, offset), *[_fat_path(p) for p in paths]],
        env=_ENV,
        timeout=_TIMEOUT,
        what="creating directories in the FAT filesystem",
        sandbox=Sandbox(writes=(target,)),
    )


def copy_in(
    image: Path, sources: Sequence[Path], destination: str = "", *, offset: int = 0, keep_times: bool = False
) -> None:
    """``mcopy -s`` files and directory trees from the host into ``destination`` in the image.

    ``keep_times``: ``-m``, the files keep their modification times (else they get the time
    of the copy).
    """
    if not sources:
        return
    target = _image(image)
    files = [os.path.abspath(s) for s in sources]
    options = ["-s", "-Q", *(["-m"] if keep_times else [])]
    run_program(
        ["mcopy", *options, "-i", _image_at(target, offset), *files, _fat_path(destination) + "/"],
        env=_ENV,
        timeout=_TIMEOUT,
        what="copying files into the FAT filesystem",
        sandbox=Sandbox.of(reads=files, writes=[target]),
    )


def list_tree(image: Path, *, offset: int = 0) -> list[str]:
    """Every path in the image, relative, directories with a trailing ``/`` (``mdir -/ -b``)."""
    source = _image(image)
    result = run_program(
        ["mdir", "-/", "-b", "-i", _image_at(source, offset), "::/"],
        env=_ENV,
        timeout=_TIMEOUT,
        what="listing the FAT filesystem",
        sandbox=Sandbox(reads=(source,)),
    )
    paths: list[str] = []
    for raw in result.stdout_text.splitlines():
        line = raw.strip()
        if line.startswith("::/"):
            paths.append(line[3:])
    return paths


def read_file(image: Path, path: str, *, offset: int = 0) -> bytes:
    """The exact bytes of one file in the image (``mtype`` without text conversion)."""
    source = _image(image)
    return run_program(
        ["mtype", "-i", _image_at(source, offset), _fat_path(path)],
        env=_ENV,
        timeout=_TIMEOUT,
        what=f"reading {path} from the FAT filesystem",
        sandbox=Sandbox(reads=(source,)),
    ).stdout
