"""Deflate blocks: one compression of a guest's bytes, shared by every compressed output.

A guest is cut into grains (64 KiB, the VMDK grain) and each grain is deflated on its own,
in parallel, as *non-final* deflate blocks closed by a sync flush (RFC 1951 section 3.2.4:
an empty stored block ``00 00 ff ff`` that ends the data on a byte boundary). Such blocks
concatenate into one valid deflate stream, whose end is the empty final fixed-Huffman block
``03 00`` — the trick pigz uses to compress in parallel and still write one gzip member
(``crc32_combine`` joins the checksums of the pieces). The same block serves three framings:

- a **zlib stream** for one streamOptimized VMDK grain (RFC 1950): ``78 01`` + block +
  ``03 00`` + Adler-32 of the grain, big-endian;
- a **gzip member** of the whole image (RFC 1952): header + every block in order + ``03 00``
  + CRC-32 + ISIZE, little-endian — a ``raw.gz`` output;
- the gzip of a **tar stream** holding the image (an EC2 bundle): the tar header's block,
  the image's blocks, the padding's block, in order.

So ``publish`` compresses each grain once for its VMDK, its raw.gz and its bundle. Grains
are deflated without a preset dictionary (each block stands alone; a grain must, and the
blocks then mean the same in every stream they are put into). A zero grain is never
compressed: its block is computed once per length.

ISA-L's deflate (``isal_zlib``) runs outside the GIL, so a thread pool uses every core.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from isal import isal_zlib

#: Bytes per grain: the VMDK grain (128 sectors), the unit of parallel compression.
GRAIN = 64 * 1024
#: ISA-L level 1: about zlib -4's ratio at many times its speed (levels are 0..3).
DEFAULT_LEVEL = 1
#: The empty final block that ends a deflate stream made of sync-flushed blocks.
FINAL_BLOCK = b"\x03\x00"
#: zlib header: deflate, 32 KiB window, no dictionary, "fastest" (CMF*256+FLG divisible by 31).
ZLIB_HEADER = b"\x78\x01"
#: Grains per task handed to a worker (1 MiB): amortises the pool's cost per task.
_BATCH = 16
#: Entries per task at most (zero runs need no work): a task's deflate blocks stay about a
#: MiB even when its entries are 16 MiB zero runs (83 bytes of block per 64 KiB grain).
_MAX_ENTRIES = 4 * _BATCH

Prepared = TypeVar("Prepared")


@dataclass(frozen=True, slots=True)
class DeflateBlock:
    """``length`` input bytes as non-final deflate blocks ending on a byte boundary."""

    length: int
    data: bytes
    crc32: int
    adler32: int

    def zlib_stream(self) -> bytes:
        """A complete zlib stream (RFC 1950) of these bytes."""
        return ZLIB_HEADER + self.data + FINAL_BLOCK + struct.pack(">I", self.adler32)


def deflate_block(data: bytes | memoryview, level: int = DEFAULT_LEVEL) -> DeflateBlock:
    compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(isal_zlib.Z_SYNC_FLUSH)
    return DeflateBlock(len(data), out, isal_zlib.crc32(data), isal_zlib.adler32(data))


_zero_blocks: dict[tuple[int, int], DeflateBlock] = {}
_zero_lock = threading.Lock()


def zero_block(length: int, level: int = DEFAULT_LEVEL) -> DeflateBlock:
    """The block of ``length`` zero bytes (computed once per length and level)."""
    key = (length, level)
    block = _zero_blocks.get(key)
    if block is None:
        block = deflate_block(bytes(length), level)
        with _zero_lock:
            _zero_blocks[key] = block
    return block


_zero_crcs: dict[int, int] = {}


def zero_crc32(length: int) -> int:
    """The CRC-32 of ``length`` zero bytes (computed once per length)."""
    crc = _zero_crcs.get(length)
    if crc is None:
        crc = 0
        if length <= 0:
            return 0
        step = bytes(min(length, 1 << 20))
        for start in range(0, length, len(step)):
            crc = isal_zlib.crc32(memoryview(step)[: length - start], crc)
        _zero_crcs[length] = crc
    return crc


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of A+B from CRC(A), CRC(B) and len(B)."""
    return int(isal_zlib.crc32_combine(crc1, crc2, length2))


class GzipMember:
    """Assembles one gzip member from deflate blocks; ``write`` receives its bytes in order."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self.crc32 = 0
        self.size = 0
        # RFC 1952: magic, CM=8 (deflate), no flags, MTIME 0 (unknown: the output does not
        # depend on the time it was made), XFL 0, OS 255 (unknown).
        write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")

    def add(self, block: DeflateBlock, count: int = 1) -> None:
        """``block``, ``count`` times in a row (a run of zero grains shares one block)."""
        self._write(block.data * count if count > 1 else block.data)
        for _ in range(count):
            self.crc32 = crc32_combine(self.crc32, block.crc32, block.length)
        self.size += block.length * count

    def add_joined(self, data: bytes, crc32: int, length: int) -> None:
        """Blocks already joined in order: ``data`` deflates ``length`` bytes whose CRC-32 is ``crc32``."""
        self._write(data)
        self.crc32 = crc32_combine(self.crc32, crc32, length)
        self.size += length

    def finish(self) -> None:
        self._write(FINAL_BLOCK + struct.pack("<II", self.crc32, self.size & 0xFFFFFFFF))


def default_workers() -> int:
    """Every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class ParallelDeflater(Generic[Prepared]):
    """Deflates grains on a thread pool and hands the results back in submission order.

    ``submit(tag, data)`` queues one grain (``block`` given: already known, e.g. a zero
    grain's, and only kept in order). Grains travel in tasks of ``_BATCH`` grains to deflate;
    the worker that deflated a task also runs ``prepare(tags, blocks)`` on it (whatever the
    receiver wants done once per task, out of order and side by side: joining buffers,
    combining checksums), and ``deliver(prepared)`` gets each task's result in the
    submitting thread, in submission order, as soon as every earlier one is done. At most
    ``window`` tasks are in flight, so memory stays bounded (about window x 1 MiB).
    """

    def __init__(
        self,
        prepare: Callable[[list[object], list[DeflateBlock]], Prepared],
        deliver: Callable[[Prepared], None],
        *,
        level: int = DEFAULT_LEVEL,
        workers: int | None = None,
    ) -> None:
        self._prepare = prepare
        self._deliver = deliver
        self._level = level
        self.workers = workers or default_workers()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="deflate")
        self._window = 2 * self.workers + 2
        self._batch: list[tuple[object, bytes | memoryview | None, DeflateBlock | None]] = []
        self._work = 0
        self._pending: deque[Future[Prepared]] = deque()

    def submit(self, tag: object, data: bytes | memoryview | None, block: DeflateBlock | None = None) -> None:
        self._batch.append((tag, data, block))
        if block is None:
            self._work += 1
        if self._work >= _BATCH or len(self._batch) >= _MAX_ENTRIES:
            self._send()

    def _send(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        level, prepare = self._level, self._prepare

        def work() -> Prepared:
            blocks = [
                block if block is not None else deflate_block(data or b"", level) for _, data, block in batch
            ]
            return prepare([tag for tag, _, _ in batch], blocks)

        future: Future[Prepared]
        if self._work:
            future = self._pool.submit(work)
        else:
            # Nothing to deflate (zero grains only): prepared here, no hand-over to the pool.
            future = Future()
            future.set_result(work())
        self._work = 0
        self._pending.append(future)
        while len(self._pending) >= self._window:
            self._pop()

    def _pop(self) -> None:
        self._deliver(self._pending.popleft().result())

    def flush(self) -> None:
        """Deliver everything submitted so far."""
        self._send()
        while self._pending:
            self._pop()

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._batch.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
