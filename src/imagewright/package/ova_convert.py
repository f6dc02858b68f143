"""``imagewright convert vm.ova disk.qcow2``: the OVA's disk, verified, converted.

One read of the OVA copies its disk member to a scratch file beside the output while every
member is hashed (``ova_verify.extract_ova_disk``); a manifest, signature or structure that
does not check out refuses the package before any other program reads a byte of it. The
disk then goes through ``convert`` like any source — the gate inspects it in full first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography import x509

from imagewright.binary import FileSource
from imagewright.errors import ImagewrightError
from imagewright.files import ScratchFiles
from imagewright.formats.base import HEAD_SIZE, Limits
from imagewright.formats.containers import probe_container
from imagewright.ops.convert import ConvertResult, Progress, convert
from imagewright.package.ova_verify import extract_ova_disk


def is_ova(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a readable file holding an OVA (a tar with an OVF descriptor)."""
    try:
        with FileSource(path) as src:
            return probe_container(src, src.pread(0, HEAD_SIZE)) == "ova"
    except (OSError, ImagewrightError):
        return False


def convert_ova(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    progress: Progress | None = None,
    trusted: list[x509.Certificate] | None = None,
    **options: Any,
) -> ConvertResult:
    """Verify the OVA ``src``, extract its disk in the same read, convert it to ``dst``."""
    src_path, dst_path = Path(src), Path(dst)

    def extracting(done: int, total: int) -> None:
        if progress is not None:
            progress("verifying", done, total)

    with ScratchFiles(dst_path) as scratch:
        disk, verification = extract_ova_disk(
            src_path, scratch.scratch, limits=limits, progress=extracting, trusted=trusted
        )
        result = convert(disk, dst_path, limits=limits, progress=progress, **options)
    member = next(iter(verification.extracted))
    result.source = f"{src_path} ({member})"
    return result
