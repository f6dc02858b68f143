"""Bounded, positional reading of untrusted bytes — the floor every parser stands on.

A ``ByteSource`` is anything that answers ``pread(offset, length)`` and knows its ``size``:
an image file, a window into one (a tar member, a partition), the guest view of a qcow2,
or the decompressed head of a ``.gz``. Parsers never read a whole file; they ask for the
bytes a header names, and ``read_exact`` refuses any request that points outside the source
or asks for more than ``MAX_SINGLE_READ`` at once, so a hostile size field becomes an
``ImageFormatError`` instead of a ``MemoryError``.

``Layout`` names every field of a fixed binary structure next to its ``struct`` code, so a
header is described once (and can be packed again by writers).
"""

from __future__ import annotations

import bisect
import os
import stat
import struct
import threading
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from imagewright.errors import ImageFormatError, ImageIOError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

#: No parser may ask for more than this in one read; metadata tables larger than this are refused.
MAX_SINGLE_READ = 64 * MiB


@runtime_checkable
class ByteSource(Protocol):
    """Random-access bytes of known size. ``pread`` may return fewer bytes only at the end."""

    @property
    def size(self) -> int: ...

    def pread(self, offset: int, length: int) -> bytes: ...


class NotExaminedError(ImageFormatError):
    """Part of the input could not be examined within the limit (of work, memory or nesting).

    Not a sign of a bad image, but never a reason to call it safe: whatever was not examined
    is refused, with this sentence as the reason.
    """


class PrefixExhaustedError(NotExaminedError):
    """A read went past the part of a stream that was decompressed for inspection."""


def read_exact(src: ByteSource, offset: int, length: int, what: str) -> bytes:
    """Return exactly ``length`` bytes at ``offset`` or raise a one-sentence ImageFormatError.

    ``what`` names the structure being read ("qcow2 L1 table"), for the message.
    """
    if offset < 0 or length < 0:
        raise ImageFormatError(f"The {what} has a negative offset or length ({offset}, {length}).")
    if length > MAX_SINGLE_READ:
        raise ImageFormatError(
            f"The {what} claims {length} bytes, more than the {MAX_SINGLE_READ // MiB} MiB any "
            "metadata structure may take."
        )
    if offset + length > src.size:
        raise ImageFormatError(
            f"The {what} (bytes {offset}..{offset + length}) lies beyond the end of the "
            f"{src.size}-byte image."
        )
    data = src.pread(offset, length)
    if len(data) != length:
        raise ImageFormatError(f"The {what} at offset {offset} is truncated.")
    return data


class FileSource:
    """An image file opened read-only; counts the bytes read (inspect promises to read little).

    Only regular files and block devices are accepted: a FIFO or a socket would block or
    be consumed, a directory is a user mistake.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ImageIOError(f"{self.path}: no such file.") from None
        except IsADirectoryError:
            raise ImageIOError(f"{self.path} is a directory, not an image file.") from None
        except PermissionError:
            raise ImageIOError(f"{self.path}: permission denied.") from None
        except OSError as err:
            raise ImageIOError(f"{self.path} cannot be opened: {err.strerror}.") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise ImageIOError(f"{self.path} is a directory, not an image file.")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                raise ImageIOError(f"{self.path} is not a regular file or block device.")
            self._size = os.lseek(fd, 0, os.SEEK_END)
            self.allocated_size = st.st_blocks * 512 if stat.S_ISREG(st.st_mode) else self._size
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        self.bytes_read = 0

    @property
    def size(self) -> int:
        return self._size

    def fileno(self) -> int:
        """The open file descriptor (for kernel-side copies of the file's bytes)."""
        if self._fd is None:
            raise ImageIOError(f"{self.path} was already closed.")
        return self._fd

    def pread(self, offset: int, length: int) -> bytes:
        if self._fd is None:
            raise ImageIOError(f"{self.path} was already closed.")
        if length <= 0 or offset >= self._size:
            return b""
        length = min(length, self._size - offset)
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as err:
            raise ImageIOError(f"Reading {self.path} failed: {err.strerror}.") from None
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GrowingFile(FileSource):
    """A file another thread is still writing front to back (a download), read as it grows.

    ``pread`` waits until its bytes are in the file (``grew``), or the writer has ended:
    ``finish`` (the file is complete) or ``fail`` (its error is raised to every reader that
    waits for bytes that will never come). ``size`` is the announced size (``expect``, e.g. a
    Content-Length), else the final one once finished; the writer's bytes past it are never
    read. ``wait_complete`` waits for the end (what a reader that needs the whole file calls).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._changed = threading.Condition()
        self._written = 0
        self._announced: int | None = None
        self._finished = False
        self._error: BaseException | None = None

    # --- the writer's side ---------------------------------------------------------------------

    def expect(self, size: int) -> None:
        with self._changed:
            self._announced = size
            self._changed.notify_all()

    def grew(self, written: int) -> None:
        """``written`` more bytes are in the file (flushed: visible to ``os.pread``)."""
        with self._changed:
            self._written += written
            self._changed.notify_all()

    def finish(self) -> None:
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._changed:
            self._error = error
            self._finished = True
            self._changed.notify_all()

    # --- the reader's side (a ByteSource) ------------------------------------------------------

    def _wait(self, ready: Callable[[], bool]) -> None:
        with self._changed:
            while not ready():
                if self._finished:
                    if self._error is not None:
                        raise self._error
                    return
                self._changed.wait()

    @property
    def size(self) -> int:
        self._wait(lambda: self._announced is not None)
        return self._announced if self._announced is not None else self._written

    def wait_complete(self) -> None:
        self._wait(lambda: False)

    def pread(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if length <= 0 or offset >= end:
            return b""
        self._wait(lambda: self._written >= end)
        with self._changed:
            # What FileSource may read: what is in the file (it only grows; any thread may read).
            self._size = max(self._size, self._written)
        return super().pread(offset, end - offset)

    def __enter__(self) -> GrowingFile:
        return self


class CountingSource:
    """``src``, counting the bytes read through it (the progress of a pass over it)."""

    def __init__(self, src: ByteSource) -> None:
        self._src = src
        self.bytes_read = 0

    @property
    def size(self) -> int:
        return self._src.size

    def pread(self, offset: int, length: int) -> bytes:
        data = self._src.pread(offset, length)
        self.bytes_read += len(data)
        return data


class BytesSource:
    """Bytes already in memory (test fixtures, a decompressed header)."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    @property
    def size(self) -> int:
        return len(self._data)

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0:
            return b""
        return self._data[offset : offset + length]


class SliceSource:
    """A window ``[offset, offset + size)`` of another source: a partition, a tar member."""

    def __init__(self, parent: ByteSource, offset: int, size: int) -> None:
        if offset < 0 or size < 0:
            raise ImageFormatError("A region has a negative offset or size.")
        self._parent = parent
        self._offset = offset
        # A window never reaches past its parent, whatever the header that named it says.
        self._size = max(0, min(size, parent.size - offset))

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self._size:
            return b""
        length = min(length, self._size - offset)
        return self._parent.pread(self._offset + offset, length)


class ConcatSource:
    """Several sources read one after another as one (the chunks of a file in an OVA)."""

    def __init__(self, parts: Sequence[ByteSource]) -> None:
        self._parts = list(parts)
        self._starts: list[int] = []
        total = 0
        for part in self._parts:
            self._starts.append(total)
            total += part.size
        self._size = total

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self._size:
            return b""
        end = min(offset + length, self._size)
        pieces: list[bytes] = []
        index = bisect.bisect_right(self._starts, offset) - 1
        while offset < end and index < len(self._parts):
            part, start = self._parts[index], self._starts[index]
            if offset >= start + part.size:
                index += 1
                continue
            piece = part.pread(offset - start, min(end, start + part.size) - offset)
            if not piece:
                break
            pieces.append(piece)
            offset += len(piece)
        return b"".join(pieces)


#: The block size ``data_runs`` finds zeros at by default (a hole of a sparse file is coarser).
ZERO_BLOCK = 64 * KiB
_zero_buffers: dict[int, bytes] = {}


def zeros(length: int) -> bytes:
    """``length`` zero bytes, shared: comparing a piece with it is one ``memcmp``.

    Buffers of the sizes asked for most (a stream's piece size, a block size) are kept.
    """
    buffer = _zero_buffers.get(length)
    if buffer is None:
        buffer = bytes(length)
        if length <= 4 * MiB and len(_zero_buffers) < 64:
            _zero_buffers[length] = buffer
    return buffer


def data_runs(data: bytes, block: int = ZERO_BLOCK) -> list[tuple[int, int]]:
    """The ``[start, end)`` runs of ``data`` that hold something else than zeros, found by
    ``block``-sized steps (a run starts and ends on a block boundary or at an end of ``data``).

    At C speed: the whole of ``data`` is compared with a zero buffer first (an empty disk
    costs one ``memcmp`` per piece), and only a piece that is not all zeros is looked at
    block by block. Nothing is copied but the ``block``-sized slices of such a piece.
    """
    length = len(data)
    if not length or data == zeros(length):
        return []
    runs: list[tuple[int, int]] = []
    zero_block = zeros(block)
    for start in range(0, length, block):
        end = min(start + block, length)
        piece = data[start:end]
        if piece == (zero_block if end - start == block else zeros(end - start)):
            continue
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


#: Granularity at which ``HeldBytes`` drops zeros: a block of zeros costs no memory.
HELD_BLOCK = 4096
_ZERO_HELD_BLOCK = bytes(HELD_BLOCK)
_ZERO_RUN = bytes(1024 * 1024)


class HeldBytes:
    """Decompressed bytes kept in memory as they stream past: runs of data, zeros implied.

    ``append`` takes the stream in order; 4 KiB blocks of zeros are not stored, so a disk
    image that is mostly empty costs only the memory of its data. ``held`` is what is stored.
    """

    def __init__(self) -> None:
        self.length = 0
        self.held = 0
        self._starts = array("q")
        self._runs: list[bytearray] = []

    def append(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if len(view) <= len(_ZERO_RUN) and view == _ZERO_RUN[: len(view)]:
            self.length += len(view)  # the common case of an empty disk: one comparison per chunk
            return
        # Align on the stream's own block boundaries, so that blocks of zeros are found
        # wherever the caller's chunks happen to end.
        position = 0
        while position < len(view):
            absolute = self.length + position
            step = min(HELD_BLOCK - absolute % HELD_BLOCK, len(view) - position)
            block = view[position : position + step]
            if block != _ZERO_HELD_BLOCK[:step]:
                self._store(absolute, block)
            position += step
        self.length += len(view)

    def extend_zeros(self, count: int) -> None:
        """``count`` bytes of zeros (a hole of a sparse file): nothing is stored."""
        self.length += max(0, count)

    def _store(self, absolute: int, block: memoryview) -> None:
        if self._runs and self._starts[-1] + len(self._runs[-1]) == absolute:
            self._runs[-1] += block
        else:
            self._starts.append(absolute)
            self._runs.append(bytearray(block))
        self.held += len(block)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of what was appended (zeros where nothing is stored)."""
        end = min(offset + length, self.length)
        if offset < 0 or offset >= end:
            return b""
        out = bytearray(end - offset)
        index = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while index < len(self._runs) and self._starts[index] < end:
            run_start = self._starts[index]
            run = self._runs[index]
            start = max(offset, run_start)
            stop = min(end, run_start + len(run))
            if start < stop:
                out[start - offset : stop - offset] = run[start - run_start : stop - run_start]
            index += 1
        return bytes(out)


class PrefixSource:
    """The examined part of a stream we cannot seek in (a ``.gz`` image, a member of a
    ``.tar.gz``), of possibly unknown size.

    ``prefix`` is the bytes examined, as plain bytes or as ``HeldBytes``. ``size`` is the full
    stream size when known, else ``unknown_size`` (large, so that bounds checks of the inner
    format do not refuse a valid image). A read beyond the examined bytes raises
    ``PrefixExhaustedError``: that part could not be examined within the limit.
    """

    def __init__(self, prefix: bytes | HeldBytes, total_size: int | None, unknown_size: int) -> None:
        if isinstance(prefix, HeldBytes):
            self._held = prefix
        else:
            self._held = HeldBytes()
            self._held.append(prefix)
        self.total_size_known = total_size is not None
        self._size = total_size if total_size is not None else unknown_size

    @property
    def size(self) -> int:
        return self._size

    @property
    def prefix_length(self) -> int:
        """How many bytes from the start were examined (and can be read)."""
        return self._held.length

    @property
    def complete(self) -> bool:
        """True when every byte of the stream was examined."""
        return self.total_size_known and self._held.length >= self._size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self._size:
            return b""
        length = min(length, self._size - offset)
        if offset + length > self._held.length:
            raise PrefixExhaustedError(
                f"Bytes {offset}..{offset + length} of the stream could not be examined within the limit: "
                f"only its first {self._held.length} bytes were decompressed for inspection."
            )
        return self._held.read(offset, length)


Endian = Literal["<", ">"]


class Layout:
    """A fixed-size binary structure: each field's name next to its ``struct`` code.

    Fields whose code is padding (ends in ``x``) carry no value. ``unpack`` raises
    ImageFormatError on short input, never ``struct.error``.
    """

    def __init__(self, name: str, endian: Endian, fields: Sequence[tuple[str, str]]) -> None:
        self.name = name
        self._struct = struct.Struct(endian + "".join(code for _, code in fields))
        self.field_names = tuple(field for field, code in fields if not code.endswith("x"))
        if len(set(self.field_names)) != len(self.field_names):
            raise ValueError(f"duplicate field name in layout {name}")

    @property
    def size(self) -> int:
        return self._struct.size

    def unpack(self, data: bytes, offset: int = 0) -> dict[str, Any]:
        if offset < 0 or len(data) - offset < self._struct.size:
            raise ImageFormatError(f"The {self.name} is truncated.")
        values = self._struct.unpack_from(data, offset)
        return dict(zip(self.field_names, values, strict=True))

    def pack(self, values: Mapping[str, Any]) -> bytes:
        try:
            return self._struct.pack(*(values[field] for field in self.field_names))
        except (KeyError, struct.error) as err:
            raise ValueError(f"cannot pack {self.name}: {err}") from err
