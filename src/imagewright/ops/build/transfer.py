"""Copying a file (a filesystem, a swap header) into a byte range of the image being built.

Streamed in 4 MiB reads: memory stays flat whatever the size. Holes of the source are not
read at all (SEEK_DATA/SEEK_HOLE), and 64 KiB blocks of zeros are not written: the image is a
fresh sparse file whose target range reads as zeros already, so skipping them keeps it sparse.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from imagewright.errors import BuildError, ImageIOError
from imagewright.files import file_extents

_READ = 4 << 20
_BLOCK = 64 << 10
_ZERO_BLOCK = bytes(_BLOCK)

#: ``progress(done_bytes, total_bytes)``.
ByteProgress = Callable[[int, int], None]


def copy_into(
    source: Path,
    image_fd: int,
    offset: int,
    length: int,
    *,
    progress: ByteProgress | None = None,
) -> None:
    """Copy the first ``length`` bytes of ``source`` to byte ``offset`` of the open image.

    The target range must read as zeros (a fresh sparse image): zero blocks are skipped.
    """
    try:
        size = source.stat().st_size
    except OSError as err:
        raise ImageIOError(f"{source} cannot be read: {err.strerror}.") from None
    if size < length:
        raise BuildError(f"{source} holds {size} bytes, fewer than the {length} to be copied.")
    done = 0
    try:
        with source.open("rb", buffering=0) as src:
            for start, run, is_data in file_extents(src.fileno(), length):
                if is_data:
                    _copy_run(src.fileno(), start, run, image_fd, offset)
                done = start + run
                if progress is not None:
                    progress(done, length)
    except OSError as err:
        raise ImageIOError(f"Copying {source} into the image failed: {err.strerror}.") from None
    if progress is not None:
        progress(length, length)


def _copy_run(src_fd: int, start: int, length: int, image_fd: int, offset: int) -> None:
    position = start
    end = start + length
    while position < end:
        chunk = os.pread(src_fd, min(_READ, end - position), position)
        if not chunk:
            raise BuildError("The source file shrank while it was being copied.")
        view = memoryview(chunk)
        run_start: int | None = None  # start of the current run of non-zero blocks
        for block_start in range(0, len(view), _BLOCK):
            block = view[block_start : block_start + _BLOCK]
            if block == _ZERO_BLOCK[: len(block)]:
                if run_start is not None:
                    _write_all(image_fd, view[run_start:block_start], offset + position + run_start)
                    run_start = None
            elif run_start is None:
                run_start = block_start
        if run_start is not None:
            _write_all(image_fd, view[run_start:], offset + position + run_start)
        position += len(chunk)


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written
