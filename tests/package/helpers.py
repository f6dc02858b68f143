"""Building blocks the package tests share: source disks made by qemu tools, and the
streamOptimized VMDK of a source written by the package stage's own pass."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.fixtures.tools import qemu_img, qemu_io_write, sparse_file

from imagewright.files import ScratchFiles
from imagewright.package.passes import SequentialFile, read_source, run_pass
from imagewright.package.vmdk_stream import StreamOptimizedWriter, VmdkOptions

MiB = 1 << 20


def make_disk(path: Path, size: int, writes: list[tuple[int, int, int]], fmt: str = "raw") -> Path:
    """A disk of ``size`` bytes with ``(offset, length, pattern)`` writes, in ``fmt``."""
    raw = path.with_suffix(".raw") if fmt != "raw" else path
    sparse_file(raw, size)
    for offset, length, pattern in writes:
        qemu_io_write(raw, "raw", offset, length, pattern)
    if fmt != "raw":
        qemu_img("convert", "-f", "raw", "-O", fmt, raw, path)
        raw.unlink()
    return path


def write_vmdk(source: Path, output: Path, options: VmdkOptions | None = None) -> StreamOptimizedWriter:
    """``source`` (any format) as a streamOptimized VMDK written by one pass."""
    with ScratchFiles(output) as scratch:
        prepared = read_source(source, scratch.scratch)
        sink = SequentialFile(output)
        try:
            writer = StreamOptimizedWriter(
                sink.write, prepared.virtual_size, options or VmdkOptions(file_name=output.name)
            )
            run_pass(prepared, [writer])
            sink.finish()
        finally:
            sink.close()
    return writer


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def libvmdk_sha256(path: Path) -> tuple[int, str]:
    """(media size, sha256 of the guest) as libvmdk reads the VMDK: a reader independent of QEMU."""
    import pyvmdk

    handle = pyvmdk.handle()
    handle.open(str(path))
    try:
        handle.open_extent_data_files()
        digest = hashlib.sha256()
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        return handle.get_media_size(), digest.hexdigest()
    finally:
        handle.close()
