"""sfdisk (Debian ``fdisk``): write a partition table into an image file.

(Reading it back is imagewright.disk's job: build checks what sfdisk wrote with its own parser.)

sfdisk works on a plain file as on a disk: ``--no-reread --no-tell-kernel`` keep it from asking
the kernel to re-read a table it does not know about (there is no device), and ``--wipe never
--wipe-partitions never`` keep it from "helpfully" erasing signatures it finds in the new
partitions — in an image being built, what lies there is ours (verified with util-linux 2.38.1:
neither option changes a byte outside sector 0, the GPT headers and the entry arrays).

The script language (sfdisk(8), "Input format"): header lines ``label: dos|gpt``,
``unit: sectors``, then one line per partition of ``key=value`` pairs separated by commas:
``start=2048, size=4096, type=83, bootable`` (MBR) or
``start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name="BIOS boot"`` (GPT).

It runs in the sandbox (``programs/runner.py``) and sees the image file alone.
"""

from __future__ import annotations

import os

from imagewright.programs.runner import Sandbox, run_program

# Writing a table touches a few sectors and finishes in well under
# a second; the bound only stops a wedged process from holding a build forever.
_TIMEOUT = 120.0


def write_table(image: str | os.PathLike[str], script: str) -> None:
    """Partition the image file ``image`` as ``script`` says (see the module docstring)."""
    target = os.path.abspath(os.fspath(image))
    run_program(
        [
            "sfdisk", "--quiet", "--no-reread", "--no-tell-kernel",
            "--wipe", "never", "--wipe-partitions", "never",
            target,
        ],
        input=script.encode("utf-8"),
        timeout=_TIMEOUT,
        what="writing the partition table",
        sandbox=Sandbox(writes=(target,)),
    )  # fmt: skip
