"""``ldd`` (Debian ``libc-bin``): the shared libraries a host program loads.

Only ever run on the host's own trusted programs (ldd may execute the program's loader):
the test guest copies a few host tools (sfdisk, resize2fs, ssh-keygen) with exactly the
libraries they need.
"""

from __future__ import annotations

import os
from pathlib import Path

from imagewright.programs.runner import run_program


def shared_libraries(program: Path, *, timeout: float = 60.0) -> list[Path]:
    """Absolute paths of the libraries ``program`` loads, the dynamic loader included.

    Lines look like ``libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`` or
    ``/lib64/ld-linux-x86-64.so.2 (0x...)``; the kernel's vDSO has no file and is skipped.
    """
    result = run_program(
        ["ldd", os.fspath(program)], timeout=timeout, what=f"listing the libraries of {program}"
    )
    libraries: list[Path] = []
    for raw in result.stdout_text.splitlines():
        line = raw.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (", 1)[0].strip()
        else:
            target = line.split(" (", 1)[0].strip()
        if target.startswith("/"):
            libraries.append(Path(target))
    return libraries
