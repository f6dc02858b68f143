"""sfdisk (Debian ``fdisk``): write a partition table into an image file, read it back as JSON.

sfdisk works on a plain file as on a disk: ``--no-reread --no-tell-kernel`` keep it from asking
the kernel to re-read a table it does not know about (there is no device), and ``--wipe never
--wipe-partitions never`` keep it from "helpfully" erasing signatures it finds in the new
partitions — in an image being built, what lies there is ours (verified with util-linux 2.38.1:
neither option changes a byte outside sector 0, the GPT headers and the entry arrays).

The script language (sfdisk(8), "Input format"): header lines ``label: dos|gpt``,
``unit: sectors``, then one line per partition of ``key=value`` pairs separated by commas:
``start=2048, size=4096, type=83, bootable`` (MBR) or
``start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name="BIOS boot"`` (GPT).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from imagewright.errors import ProgramError
from imagewright.programs.runner import run_program

# Writing a table touches a few sectors; reading one back is as quick. Both finish in well under
# a second; the bound only stops a wedged process from holding a build forever.
_TIMEOUT = 120.0


@dataclass(frozen=True)
class SfdiskPartition:
    """One partition as ``sfdisk --json`` lists it (sectors; ``type`` as sfdisk spells it)."""

    node: str
    start: int
    size: int
    type: str
    uuid: str | None = None
    name: str | None = None
    bootable: bool = False
    attrs: str | None = None

    @property
    def number(self) -> int:
        """The partition number at the end of sfdisk's node name (``disk.img2`` → 2)."""
        digits = ""
        for ch in reversed(self.node):
            if not ch.isdigit():
                break
            digits = ch + digits
        return int(digits) if digits else 0


@dataclass(frozen=True)
class SfdiskTable:
    """``sfdisk --json IMAGE``: the table as sfdisk reads it."""

    label: str
    id: str
    sector_size: int
    first_lba: int | None
    last_lba: int | None
    partitions: tuple[SfdiskPartition, ...] = field(default_factory=tuple)


def write_table(image: str | os.PathLike[str], script: str) -> None:
    """Partition the image file ``image`` as ``script`` says (see the module docstring)."""
    run_program(
        [
            "sfdisk", "--quiet", "--no-reread", "--no-tell-kernel",
            "--wipe", "never", "--wipe-partitions", "never",
            os.path.abspath(os.fspath(image)),
        ],
        input=script.encode("utf-8"),
        timeout=_TIMEOUT,
        what="writing the partition table",
    )  # fmt: skip


def read_table(image: str | os.PathLike[str]) -> SfdiskTable:
    """``sfdisk --json IMAGE`` parsed; ProgramError when there is no table sfdisk can read."""
    result = run_program(
        ["sfdisk", "--json", os.path.abspath(os.fspath(image))],
        timeout=_TIMEOUT,
        what="reading the partition table",
    )
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise ProgramError("sfdisk --json printed something that is not JSON.") from None
    table = data.get("partitiontable") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise ProgramError("sfdisk --json printed no partition table.")
    return SfdiskTable(
        label=str(table.get("label", "")),
        id=str(table.get("id", "")),
        sector_size=_int(table.get("sectorsize"), 512),
        first_lba=_optional_int(table.get("firstlba")),
        last_lba=_optional_int(table.get("lastlba")),
        partitions=tuple(_partition(p) for p in table.get("partitions", []) if isinstance(p, dict)),
    )


def _partition(entry: dict[str, Any]) -> SfdiskPartition:
    return SfdiskPartition(
        node=str(entry.get("node", "")),
        start=_int(entry.get("start"), -1),
        size=_int(entry.get("size"), -1),
        type=str(entry.get("type", "")),
        uuid=str(entry["uuid"]) if "uuid" in entry else None,
        name=str(entry["name"]) if "name" in entry else None,
        bootable=bool(entry.get("bootable", False)),
        attrs=str(entry["attrs"]) if "attrs" in entry else None,
    )


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
