"""qemu-io (Debian ``qemu-utils``): writing a few bytes into a guest disk through qemu's format driver.

imagewright uses it to write partition-table sectors into a qcow2 (or any format qemu can
write) without converting the whole image: ``write -s FILE OFFSET LENGTH`` fills the write
buffer from FILE (qemu-io 7.2, ``help write``) and writes it at guest byte OFFSET, allocating
clusters as the format requires. Several writes go in one run (one ``-c`` each).

NOTE: as with qemu-img, the format is always named (``-f``), never probed, and the image path
is absolute (see ``programs/qemu_img.py``). qemu-io splits each ``-c`` command at white space
without any quoting, so the data files live in a private directory whose path holds no white
space; a ``TMPDIR`` that has some is refused rather than risk writing the wrong file.

qemu-io exits 1 when any command fails (``write failed: ...``, a missing file): that is how
failure is detected; ``-q`` keeps successful writes silent.

It runs in the sandbox (``programs/runner.py``): the image read-write, the data files
read-only, nothing else.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from imagewright.errors import InvalidArgumentError, ProgramError
from imagewright.programs.qemu_img import KNOWN_FORMATS, image_path
from imagewright.programs.runner import Sandbox, run_program, telling_line

#: A handful of sector writes takes milliseconds; the bound stops a stuck image from hanging us.
_TIMEOUT = 300.0
#: The largest single write we hand qemu-io (partition tables are a few KiB).
MAX_WRITE_BYTES = 16 * 1024 * 1024
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")


def write_guest(image: str | os.PathLike[str], fmt: str, writes: Sequence[tuple[int, bytes]]) -> None:
    """Write each ``(guest_offset, data)`` into ``image`` (format ``fmt``) in one qemu-io run.

    Raises ProgramError when qemu-io fails (the image may then be partly written: callers
    work on a copy). Offsets beyond the virtual disk fail in qemu-io with an I/O error.
    """
    if fmt not in KNOWN_FORMATS:
        raise InvalidArgumentError(f"'{fmt}' is not an image format imagewright passes to qemu-io.")
    todo = [(offset, data) for offset, data in writes if data]
    if not todo:
        return
    for offset, data in todo:
        if offset < 0:
            raise InvalidArgumentError("A guest offset cannot be negative.")
        if len(data) > MAX_WRITE_BYTES:
            raise InvalidArgumentError("A single qemu-io write is limited to 16 MiB.")
    with tempfile.TemporaryDirectory(prefix="imagewright-qemu-io-") as scratch:
        if not _PLAIN_PATH.match(scratch):
            raise InvalidArgumentError(
                f"The temporary directory {scratch} has characters qemu-io cannot take in a command; "
                "set TMPDIR to a plain path."
            )
        argv = ["qemu-io", "-f", fmt]
        sources: list[Path] = []
        for index, (offset, data) in enumerate(todo):
            source = Path(scratch) / f"write{index}"
            source.write_bytes(data)
            sources.append(source)
            argv += ["-c", f"write -q -s {source} {offset} {len(data)}"]
        target = image_path(image)
        argv.append(target)
        result = run_program(
            argv, timeout=_TIMEOUT, check=False, sandbox=Sandbox.of(reads=sources, writes=[target])
        )
    if result.returncode != 0:
        raise ProgramError(
            f"qemu-io could not write into {os.fspath(image)} (exit {result.returncode}): "
            f"{telling_line(result.stdout_text + result.stderr_text)}"
        )
