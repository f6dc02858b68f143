"""A judged qcow2 image read by imagewright itself for a raw output: no qemu-img, no NBD.

A raw output of a qcow2 source is the guest's bytes in order. qemu-img can produce them only
into a seekable target, so ``stream_raw`` runs it against the in-process NBD sink
(``nbd_sink``): every data byte then crosses a socket twice (qemu-img reads it, sends it; the
sink receives and copies it), one 2 MiB request at a time. The qcow2 guest view that
inspection already reads the image with (``formats.qcow2_guest``: L1 → L2 → cluster as QEMU
7.2 reads it, every offset bounded) gives the same bytes with one ``pread`` per run of
host-contiguous clusters (``MappedGuestSource.runs``), straight into the output writer —
about half the CPU, and the writer's lanes (hashing, writing) are fed as fast as they go.

Used only where it has been checked byte for byte against qemu-img (``OWN_READERS``;
tests/ops/test_convert_guest.py: versions 2 and 3, small and large clusters, zlib and zstd
compressed clusters, zero clusters, extended L2 entries, preallocated images) and only for an
image the gate has admitted whole (``prepare_source``) whose guest view exists: no backing
file, no external data file, no encryption. Anything else is read by qemu-img as before.

The gate's rule is unchanged: the whole image is judged before this writes a guest byte.

**Hashing while the image arrives** (``hash_guest``). A registry must give the md5 and
sha512 of what it stores (Glance's ``checksum`` and ``os_hash_value``: of the converted data
when it converts), and on 1 GiB those two digests cost more CPU than everything else of an
import. A qcow2 cannot be judged before it has fully arrived (its metadata may lie anywhere),
but its guest bytes are a function of the file's bytes alone, and a download only appends:
the same reader run over the file *as it grows* (a ``GrowingFile``; every read waits until
its bytes are there) sees, run for run, what the conversion will write once the file is
complete. So the digests are computed during the download, on both cores (one thread per
digest), and the conversion after the gate only copies (``convert(prehashed=...)``). It reads
with the same parsers and bounds the gate applies to the same untrusted bytes, and writes
nothing: nothing is converted, and nothing becomes visible, before the gate has judged the
complete file. The digests are used only when that file is the one hashed (same path, same
size) and the conversion read it with the same reader; otherwise the output is hashed as it
is written, as always. An image the reader does not take (a problem, a backing file ...) is
simply not prehashed: the gate then says what is wrong with it.

**Writing while the image arrives** (``hash_guest(output=...)``). The bytes hashed are the
bytes a raw conversion writes; copying them again after the gate (``copy_guest``) is a second
pass over 1 GiB, after the download, in the critical path of an import. So the same pass can
also write them, by a lane of its own, into a private scratch file (the task's, never a
store's): a candidate output, not an image. It is used only where the digests are — the gate
has admitted the complete file, and it is the very file read, with the same reader (then it
is renamed into the conversion's output; ``convert(prehashed=...)``); otherwise it is
ignored and deleted with the task's scratch, and the output is written after the gate as
before. Nothing of it becomes visible, or is read by any program, before the gate has judged
the complete file. What it writes of the file's bytes is bounded by the file's size: an
image that maps more of them than its file holds (a cluster mapped again and again) stops
being written there, and is only hashed; bytes decoded from compressed clusters are bounded
by the virtual size, as the conversion's output is.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imagewright.binary import ByteSource, FileSource
from imagewright.errors import ImageFormatError, ImageIOError, UnsafeImageError
from imagewright.formats import qcow2
from imagewright.formats.base import Limits
from imagewright.formats.mapped_guest import MappedGuestSource
from imagewright.ops.convert.nbd_sink import StreamConsumer
from imagewright.ops.convert.output import (
    BackgroundHashes,
    DirectOutputFile,
    HashingConsumer,
    Lane,
    OutputFile,
)
from imagewright.ops.convert.source import PreparedSource

#: Formats whose guest view replaces qemu-img for a raw output.
OWN_READERS = {"qcow2": qcow2.open_image}


def reads_itself(source: PreparedSource) -> bool:
    """Whether ``stream_guest`` would read ``source`` (a gate-admitted file) itself."""
    return source.format in OWN_READERS and source.wrapper is None and source.report.safe


def stream_guest(
    source: PreparedSource,
    consumer: StreamConsumer,
    limits: Limits,
    progress: Callable[[int, int | None], None] | None = None,
) -> bool:
    """Stream ``source``'s guest bytes into ``consumer`` front to back, as ``stream_raw`` does.

    False (nothing streamed) when the image is not one this module reads: the caller uses
    qemu-img. Zero runs (unallocated or zero clusters) are passed as ``zeros``, never read.
    """
    with _admitted_guest(source, limits) as found:
        if found is None:
            return False
        _stream(found[1], consumer, progress)
    return True


@contextmanager
def _admitted_guest(
    source: PreparedSource, limits: Limits
) -> Iterator[tuple[FileSource, MappedGuestSource] | None]:
    """The open file and guest view of ``source``, or None when this module does not read it."""
    if not reads_itself(source):
        yield None
        return
    with FileSource(source.path) as opened:
        guest = _guest(opened, source.format, limits)
        yield None if guest is None or guest.size != source.virtual_size else (opened, guest)


def copy_guest(
    source: PreparedSource,
    dst: Path,
    limits: Limits,
    progress: Callable[[int, int | None], None] | None = None,
) -> bool:
    """Write ``source``'s guest bytes into the raw file ``dst`` without reading them into this
    process (their digests are known: ``hash_guest``): runs of host clusters are copied in
    the kernel (``OutputFile.copy_at``), zero runs stay holes. False (nothing written) when
    the image is not one this module reads."""
    with _admitted_guest(source, limits) as found:
        if found is None:
            return False
        opened, guest = found
        out = OutputFile(dst)
        try:
            for offset, run in guest.runs():
                if run.host_offset is not None:
                    available = guest.host_bytes(run.host_offset, run.length)
                    copied = out.copy_at(offset, opened.fileno(), run.host_offset, available)
                    guest.check_host_read(run.host_offset, copied, available)
                elif run.data is not None:
                    out.write_at(offset, run.data)
                if progress is not None:
                    progress(offset + run.length, guest.size)
            out.finish(guest.size)
        finally:
            out.close()
    return True


@dataclass(frozen=True)
class GuestDigests:
    """What ``hash_guest`` computed: digests of the guest bytes of the file at ``path``."""

    path: str
    file_size: int
    format: str
    virtual_size: int
    digests: dict[str, str]
    #: The raw conversion itself, written as it was hashed (``hash_guest(output=...)``), or None.
    output: str | None = None

    def matches(self, source: PreparedSource, checksums: tuple[str, ...]) -> bool:
        """Whether these are the digests of ``source``'s raw conversion (module docstring)."""
        try:
            size = os.stat(source.path).st_size
        except OSError:
            return False
        return (
            reads_itself(source)
            and os.path.realpath(source.path) == self.path
            and size == self.file_size
            and source.format == self.format
            and source.virtual_size == self.virtual_size
            and all(name in self.digests for name in checksums)
        )


def hash_guest(
    src: ByteSource,
    path: str | os.PathLike[str],
    checksums: tuple[str, ...],
    limits: Limits | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
) -> GuestDigests | None:
    """The digests of the guest bytes of ``src`` (the file at ``path``, possibly still
    arriving: a ``GrowingFile``), as a raw conversion would write them; None when the image
    is not one this module reads (the caller converts and hashes the usual way).

    ``output``: also write those bytes there, a raw file (zero runs as holes), as they are
    hashed — a candidate output for ``convert(prehashed=...)``, bounded by the file's size
    (module docstring); ``GuestDigests.output`` names it when it is complete. Not flushed to
    disk: whoever keeps it does (``AtomicOutput.commit``).

    Errors of ``src`` itself (a failed download) are raised; what the image's bytes are is
    never an error here (the gate judges them, with its own sentences, once they are all in).
    """
    if src.pread(0, 4) != qcow2.MAGIC:
        return None
    fmt = "qcow2"
    consumer: HashingConsumer | _Prewriter = (
        HashingConsumer(checksums, background=True)
        if output is None
        else _Prewriter(checksums, Path(output), budget=src.size)
    )
    written: str | None = None
    try:
        guest = _guest(src, fmt, limits or Limits())
        if guest is None:
            return None
        _stream(guest, consumer, progress)
        if isinstance(consumer, _Prewriter) and consumer.finish(guest.size):
            written = os.path.realpath(consumer.path)
        digests = consumer.hashes.hexdigests()
    except (ImageFormatError, UnsafeImageError):
        return None
    finally:
        if isinstance(consumer, _Prewriter):
            consumer.close()
        else:
            consumer.hashes.close()
        if output is not None and written is None:
            with contextlib.suppress(OSError):
                os.unlink(output)
    return GuestDigests(os.path.realpath(path), src.size, fmt, guest.size, digests, written)


class _Prewriter:
    """A ``StreamConsumer`` that hashes the guest bytes (a thread per digest) and writes them
    into ``path`` (a thread of its own, around the page cache where it can:
    ``DirectOutputFile``; zero runs stay holes) until more bytes read from the image file
    than ``budget`` would be written — each of its bytes is guest data once in an image that
    maps no cluster twice — then it only hashes (``finish`` says False). Bytes decoded from
    the file (compressed clusters: ``write_decoded``) are not charged: they are bounded by
    the virtual size, as the conversion's own output is."""

    def __init__(self, checksums: tuple[str, ...], path: Path, budget: int) -> None:
        self.path = path
        self.hashes = BackgroundHashes(checksums)
        self._file = DirectOutputFile(path)
        # Deeper than the digests' lanes (8): a direct write waits for the disk, and its
        # hiccups must not hold the reader, which feeds the digests (the critical path); the
        # items are the ones those lanes hash, kept longer only while the disk lags (at most
        # 24 reads of 8 MiB).
        self._writing: Lane | None = Lane("prewriting", self._write_item, depth=24)
        self._budget = budget
        self._written = 0

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._write(offset, data, charged=True)

    def write_decoded(self, offset: int, data: bytes | memoryview) -> None:
        self._write(offset, data, charged=False)

    def _write(self, offset: int, data: bytes | memoryview, *, charged: bool) -> None:
        item = data if isinstance(data, bytes) else bytes(data)  # one immutable copy, shared
        self.hashes.update(item)
        if self._writing is None:
            return
        if charged:
            self._written += len(item)
        if self._written > self._budget:
            self._abandon()
            return
        try:
            self._writing.put((offset, item))
        except ImageIOError:  # a full disk ...: the output is written after the gate, or fails there
            self._abandon()

    def zeros(self, offset: int, length: int) -> None:
        self.hashes.update_zeros(length)

    def _write_item(self, item: tuple[int, bytes]) -> None:
        self._file.write_at(*item)

    def _abandon(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            with contextlib.suppress(BaseException):
                writing.join()
        self._file.close()

    def finish(self, size: int) -> bool:
        """Whether ``path`` now holds the whole stream (``size`` bytes, not fsynced)."""
        if self._writing is None:
            return False
        try:
            self._writing.join()
            self._file.finish(size, durable=False)
        except ImageIOError:
            self._abandon()
            return False
        self._writing = None
        return True

    def close(self) -> None:
        self._abandon()
        self.hashes.close()


class _CancelledError(Exception):
    """``GuestHashing.cancel`` was called."""


class GuestHashing:
    """``hash_guest`` in a thread of its own, so that what follows the download (the gate, the
    copy into the output) runs beside the last of the hashing: ``result()`` waits for the
    digests (None: not computed), ``cancel()`` stops the thread. The thread closes ``src`` when
    it ends: the file it reads outlives the code that started it."""

    def __init__(
        self,
        src: FileSource,
        path: str | os.PathLike[str],
        checksums: tuple[str, ...],
        limits: Limits | None = None,
        *,
        output: str | os.PathLike[str] | None = None,
    ) -> None:
        self._src = src
        self._stop = threading.Event()
        self._digests: GuestDigests | None = None
        #: The conversion is written as it is hashed (``hash_guest(output=...)``).
        self.writes_output = output is not None
        self._thread = threading.Thread(
            target=self._run, args=(path, checksums, limits, output), name="guest-hashing", daemon=True
        )
        self._thread.start()

    def _run(
        self,
        path: str | os.PathLike[str],
        checksums: tuple[str, ...],
        limits: Limits | None,
        output: str | os.PathLike[str] | None,
    ) -> None:
        try:
            self._digests = hash_guest(
                self._src, path, checksums, limits, progress=self._check, output=output
            )
        except BaseException:  # noqa: BLE001 - cancelled, or the source failed (its writer says why)
            self._digests = None
        finally:
            self._src.close()

    def _check(self, done: int, total: int | None) -> None:
        if self._stop.is_set():
            raise _CancelledError

    def result(self) -> GuestDigests | None:
        self._thread.join()
        return self._digests

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()


def _guest(src: ByteSource, fmt: str, limits: Limits) -> MappedGuestSource | None:
    image = OWN_READERS[fmt](src, limits)
    guest = image.guest
    if image.problems or image.references or not isinstance(guest, MappedGuestSource):
        return None
    return guest


def _stream(
    guest: MappedGuestSource, consumer: StreamConsumer, progress: Callable[[int, int | None], None] | None
) -> None:
    size = guest.size
    # Bytes decoded from the image file (compressed clusters), to a consumer that tells them apart.
    decoded = getattr(consumer, "write_decoded", consumer.write)
    for offset, run in guest.runs():
        if run.host_offset is not None:
            consumer.write(offset, guest.read_host(run.host_offset, run.length))
        elif run.data is not None:
            decoded(offset, run.data)
        else:
            consumer.zeros(offset, run.length)
        if progress is not None:
            progress(offset + run.length, size)
