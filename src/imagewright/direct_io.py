"""Large outputs written and read back around the page cache (``O_DIRECT``), where it is allowed.

A package's outputs (``package``) and an import's raw conversion (``ops.convert.output.
DirectOutputFile``) are written once, front to back, fsynced, and some (the OVA; a qcow2 not
made from a raw file) read back once for a checksum. Through the page cache every byte is copied
into freshly allocated cache pages and then written out by the kernel anyway (every output is
fsynced): measured on the bench machine (``bench/package_bench.py``, a 4 GiB publish: 2.5 GB
written), ``pwrite`` was 15% of a publish's CPU time — the copy into the cache, the cache's
allocation and its bookkeeping — and the read-backs another 4% copying it out again. With
``O_DIRECT`` the disk reads and writes our own buffers (DMA, no copy by the CPU), and nothing is
left in the cache for other work to be evicted by.

``O_DIRECT`` wants the memory address, the file offset and the length of every transfer
aligned (to the device's logical block; ``ALIGN`` covers every block device Linux has), so:

- ``DirectAppender`` stages appended bytes in a page-aligned buffer (``mmap``) and writes whole
  aligned blocks; the bytes in front of an unaligned start (a header written later) are staged
  as zeros, and a partial last block is written padded with zeros (the file is cut to its
  length by the caller's ``ftruncate``). Two buffers take turns: one is written by a thread
  of its own while the next fills, so the disk's time overlaps the caller's hashing. Large
  pieces are copied into the staging buffer with the GIL released (``copy_released``): a
  slice assignment holds it for the whole copy, and with four targets staging 2.5 GB side by
  side those copies kept the other threads' Python waiting (a publish ran 0.3-0.5 s faster at
  the same CPU time without them, in alternating runs at load 3-4).
- ``StagingBuffer`` is one such buffer (from a small pool), which both writers stage in.
- ``read_digests`` reads a finished file with ``O_DIRECT`` into two aligned buffers (a thread
  reads one while the other is hashed).

Where a filesystem refuses ``O_DIRECT`` (at ``open``: tmpfs before Linux 6.6, some FUSE
filesystems; or at the first transfer: an alignment it wants larger), the same bytes go
through the page cache instead — same file, same result, only slower. Bytes written out of
order (headers filled in at the end) go through the page cache always: the kernel keeps the
two coherent (a direct read or write first writes back and drops the cached pages in its range).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from imagewright.files import io_error

#: Alignment of every direct transfer: the page size, a multiple of any logical block size.
ALIGN = 4096
#: Bytes staged per direct write (one of two buffers).
STAGE = 4 << 20
#: Bytes per direct read of a read-back (the same buffers).
READ = STAGE

#: Errors that mean "not with O_DIRECT here", not "the disk failed".
NOT_DIRECT = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)

#: Off switch: ``IMAGEWRIGHT_NO_DIRECT_IO=1`` in the environment (to compare, or for a
#: filesystem that takes O_DIRECT but is slow with it); tests exercise the page-cache path with it.
ENABLED = os.environ.get("IMAGEWRIGHT_NO_DIRECT_IO") != "1"


_pool: list[mmap.mmap] = []
_pool_lock = threading.Lock()
#: Buffers kept for the next writer or reader (a bundle opens a writer per 10 MiB part, and
#: fresh anonymous pages cost a fault and a clearing each); two: one writer's pair, so a
#: long-lived process (``imagewright serve``) keeps 8 MiB, not every buffer it ever used.
_POOL_SIZE = 2


def _buffer() -> mmap.mmap:
    """A page-aligned buffer of ``STAGE`` bytes (``READ`` is the same size)."""
    with _pool_lock:
        while _pool:
            buffer = _pool.pop()
            if len(buffer) == STAGE:
                return buffer
            buffer.close()
    return mmap.mmap(-1, STAGE)


def _release(buffer: mmap.mmap) -> None:
    with _pool_lock:
        if len(_pool) < _POOL_SIZE:
            _pool.append(buffer)
            return
    buffer.close()


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (Include/pybuffer.h), to learn where a buffer's bytes are."""

    _fields_ = (
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    )


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_PyBuffer),)
_release_buffer.restype = None
#: Copies at least this long are made without the GIL (``copy_released``).
RELEASED_COPY = 64 << 10


def copy_released(destination: int, source: memoryview, length: int) -> None:
    """Copy ``length`` bytes of ``source`` (contiguous) to the address ``destination`` with
    the GIL released: a slice assignment holds it for the whole copy, and the staging copies of
    a publish (every byte of 2.5 GB of outputs) then stall every other thread's Python."""
    view = _PyBuffer()
    if _get_buffer(source, ctypes.byref(view), 0) != 0:  # PyBUF_SIMPLE: raises if it is not one block
        raise BufferError("not a contiguous buffer")
    try:
        if view.len < length or view.buf is None:
            raise BufferError("buffer shorter than the copy")
        ctypes.memmove(destination, view.buf, length)  # a ctypes foreign call: the GIL is released
    finally:
        _release_buffer(ctypes.byref(view))


def open_direct(path: Path, flags: int) -> int | None:
    """A descriptor of ``path`` opened with ``O_DIRECT`` added to ``flags``; None where the
    filesystem refuses it."""
    direct = getattr(os, "O_DIRECT", 0)
    if not ENABLED or not direct:
        return None
    try:
        return os.open(path, flags | direct | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in NOT_DIRECT:
            return None
        raise io_error(err, path, "opening") from None


def write_direct(fd: int, view: memoryview, offset: int) -> int:
    """Write ``view`` at ``offset`` through ``fd`` (opened with ``O_DIRECT``): how many of its
    bytes went out before the filesystem refused a direct transfer (all of them when none was
    refused; the caller writes the rest through the page cache). Other errors are raised."""
    done = 0
    while done < len(view):
        try:
            done += os.pwrite(fd, view[done:], offset + done)
        except OSError as err:
            if err.errno not in NOT_DIRECT:
                raise
            break
    return done


class StagingBuffer:
    """A page-aligned buffer of ``STAGE`` bytes (from the pool) that bytes are copied into for
    a direct write: ``put`` copies a piece at an offset, large ones with the GIL released
    (``copy_released``); ``view`` is the buffer; ``release`` hands it back to the pool."""

    def __init__(self) -> None:
        self._buffer: mmap.mmap | None = _buffer()
        self.view = memoryview(self._buffer)
        # Where the bytes are, for copies without the GIL: the ctypes object holds an export of
        # the buffer until ``release``.
        self._anchor: ctypes.Array[ctypes.c_char] | None = (ctypes.c_char * STAGE).from_buffer(self._buffer)
        self._address = ctypes.addressof(self._anchor)

    def put(self, offset: int, data: memoryview) -> None:
        """Copy ``data`` (one block of memory) to ``offset``; it must fit."""
        length = len(data)
        if offset + length > STAGE:
            raise ValueError(f"{length} bytes at {offset} do not fit in a {STAGE}-byte staging buffer")
        if length >= RELEASED_COPY:
            copy_released(self._address + offset, data, length)
        else:
            self.view[offset : offset + length] = data

    def zero(self, start: int, end: int) -> None:
        self.view[start:end] = bytes(end - start)

    def release(self) -> None:
        if self._buffer is None:
            return
        self.view.release()
        self._anchor = None
        buffer, self._buffer = self._buffer, None
        _release(buffer)


class DirectAppender:
    """Appends bytes to ``path`` from offset ``start`` with ``O_DIRECT`` (see the module docstring).

    ``fallback_fd`` is a plain descriptor of the same file: staged bytes go through it instead
    once the filesystem refuses a direct transfer. ``flush`` writes everything staged (a
    partial last block padded with zeros, so the file may be longer than ``position`` until
    the caller cuts it); ``finish`` flushes and waits; ``close`` lets go of the descriptor and
    the buffers.

    What the caller writes out of order itself must lie in front of ``start`` or after the
    last append (headers at the end, a tar's end): the blocks this writes cover the bytes in
    front of ``start`` in the first block (as zeros, before any header is written) and the
    staged partial block again at each flush that follows an append.
    """

    def __init__(self, path: Path, fd: int, fallback_fd: int, start: int) -> None:
        self.path = path
        self._fd = fd
        self._fallback_fd = fallback_fd
        self._direct = True
        self._stages = [StagingBuffer(), StagingBuffer()]
        self._current = 0
        #: File offset of the current buffer's first byte.
        self._base = start - start % ALIGN
        #: Bytes staged in the current buffer (those in front of ``start``: zeros, a placeholder).
        self._used = start % ALIGN
        #: Logical end of what was appended.
        self.position = start
        #: Bytes were appended since the last flush (a flush writes the partial block only then:
        #: bytes put after the end by the caller since, e.g. a tar's end, must stay).
        self._appended = False
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="direct-write")
        self._pending: Future[None] | None = None

    def append(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        length = len(view)
        done = 0
        while done < length:
            take = min(length - done, STAGE - self._used)
            self._stages[self._current].put(self._used, view[done : done + take])
            self._used += take
            done += take
            if self._used == STAGE:
                self._send(STAGE, STAGE)
        self.position += length
        self._appended = self._appended or length > 0

    def _send(self, whole: int, length: int) -> None:
        """Hand ``length`` staged bytes (``whole`` of them complete blocks, the rest padding) to
        the writer thread and go on in the other buffer with what is left after ``whole``."""
        self._wait()
        current = self._current
        view, base = self._stages[current].view, self._base
        self._pending = self._writer.submit(self._write, view[:length], base)
        rest = self._used - whole
        if rest:
            self._stages[1 - current].put(0, view[whole : self._used])
        self._current = 1 - current
        self._base = base + whole
        self._used = rest

    def _write(self, view: memoryview, offset: int) -> None:
        try:
            done = write_direct(self._fd, view, offset) if self._direct else 0
            if done < len(view):
                self._direct = False  # this filesystem wants otherwise: the page cache
                while done < len(view):
                    done += os.pwrite(self._fallback_fd, view[done:], offset + done)
        except OSError as err:
            raise io_error(err, self.path) from None

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def flush(self) -> None:
        """Write everything staged, a partial last block padded with zeros (it stays staged:
        the next append completes it and writes it again)."""
        if self._used == 0 or not self._appended:
            self._wait()
            return
        self._appended = False
        whole = self._used - self._used % ALIGN
        padded = -(-self._used // ALIGN) * ALIGN
        self._stages[self._current].zero(self._used, padded)
        self._send(whole, padded)
        self._wait()

    def finish(self) -> None:
        self.flush()

    def close(self) -> None:
        self._writer.shutdown(wait=True)  # no write may outlive the descriptor
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for stage in self._stages:
            stage.release()


def read_digests(path: Path, algorithms: tuple[str, ...], size: int | None = None) -> dict[str, str]:
    """Digests of the first ``size`` bytes of ``path`` (the whole file when None), read once.

    With ``O_DIRECT`` where the filesystem allows it (what was just written that way is not in
    the page cache, and copying it through the cache would cost more than the disk's read);
    a thread reads the next piece while this one is hashed.
    """
    hashers = [hashlib.new(name) for name in algorithms]
    try:
        with open(path, "rb", buffering=0) as plain:
            total = os.fstat(plain.fileno()).st_size if size is None else size
            fd = open_direct(path, os.O_RDONLY)
            try:
                done = _read_into(fd, plain.fileno(), total, hashers)
            finally:
                if fd is not None:
                    os.close(fd)
    except OSError as err:
        raise io_error(err, path, "reading") from None
    if done != total:
        raise AssertionError(f"{path} holds {done} bytes, not the {total} written")
    return {name: hasher.hexdigest() for name, hasher in zip(algorithms, hashers, strict=True)}


def _read_into(direct_fd: int | None, plain_fd: int, total: int, hashers: list[hashlib._Hash]) -> int:
    """Hash ``total`` bytes of the file from offset 0 (through ``direct_fd`` while the
    filesystem takes it, else ``plain_fd``); returns how many there were."""
    buffers = [_buffer(), _buffer()]
    views = [memoryview(buffer) for buffer in buffers]
    reader = ThreadPoolExecutor(1, thread_name_prefix="direct-read")
    fds = [direct_fd] if direct_fd is not None else []

    def read(index: int, offset: int) -> int:
        # Whole blocks (the last one may reach past the end: the read stops there).
        target = [views[index][: min(READ, -(-(total - offset) // ALIGN) * ALIGN)]]
        while fds:
            try:
                return os.preadv(fds[0], target, offset)
            except OSError as err:
                if err.errno not in NOT_DIRECT:
                    raise
                fds.clear()
        return os.preadv(plain_fd, target, offset)

    try:
        offset, index = 0, 0
        pending = reader.submit(read, index, offset) if total else None
        while pending is not None:
            got = min(pending.result(), total - offset)
            if got <= 0:
                break
            following = offset + got
            pending = reader.submit(read, 1 - index, following) if following < total else None
            for hasher in hashers:
                hasher.update(views[index][:got])
            offset, index = following, 1 - index
        return offset
    finally:
        reader.shutdown(wait=True)
        for view in views:
            view.release()
        for buffer in buffers:
            _release(buffer)
