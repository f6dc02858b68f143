"""kmod (Debian ``kmod``): ``depmod`` for a kernel module tree that is not the running one.

``depmod -b BASEDIR VERSION`` reads ``BASEDIR/lib/modules/VERSION`` and writes
``modules.dep`` (one line per module: ``kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko ...``,
dependencies listed so that the *last* one must be loaded *first*), ``modules.alias``,
``modules.softdep`` and their binary twins. No root needed.
"""

from __future__ import annotations

import os
from pathlib import Path

from imagewright.programs.runner import run_program


def depmod(base_dir: Path, kernel_version: str, *, timeout: float = 300.0) -> Path:
    """Run ``depmod -b BASE_DIR KERNEL_VERSION``; returns the path of the ``modules.dep`` written."""
    run_program(
        ["depmod", "-b", os.fspath(base_dir), kernel_version],
        timeout=timeout,
        what="computing kernel module dependencies",
    )
    return base_dir / "lib" / "modules" / kernel_version / "modules.dep"


def read_modules_dep(path: Path) -> dict[str, tuple[str, ...]]:
    """``modules.dep`` as {module path: its dependencies in the file's order}."""
    table: dict[str, tuple[str, ...]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        module, sep, deps = line.partition(":")
        if sep:
            table[module.strip()] = tuple(deps.split())
    return table
