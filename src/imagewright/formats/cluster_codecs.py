"""Bounded decompression of the compressed clusters of qcow, qcow2 and VMDK.

Every function here takes a compressed span whose size the caller already bounded and
produces at most one cluster (or grain) of output, whatever the stream claims: a
decompression bomb cannot make us allocate more than that. A stream that is damaged, or
that produces the wrong amount of data, is an ``ImageFormatError``.

The rules follow QEMU 7.2 so that we read exactly what ``qemu-img convert`` reads:

- qcow and qcow2 (zlib): raw deflate, window bits 12 (``inflateInit2(-12)`` in
  ``block/qcow2-threads.c``); the output must fill the cluster exactly, and input left over
  after that is fine (the descriptor only knows the compressed size to a 512-byte sector).
- qcow2 (zstd): one or more zstd frames that together fill the cluster exactly.
- VMDK: a zlib stream *with* its RFC 1950 header (``uncompress()`` in ``block/vmdk.c``)
  that must end within one grain; the last grain of a disk may be shorter.
"""

from __future__ import annotations

import io
import zlib

from imagewright.errors import ImageFormatError

#: zstd frames may ask for a window of up to this many bytes; qcow2 clusters are at most 2 MiB,
#: so a real frame never needs more, and a hostile one cannot make us reserve gigabytes.
_ZSTD_MAX_WINDOW = 8 * 1024 * 1024


def inflate_raw_cluster(data: bytes, cluster_size: int, what: str) -> bytes:
    """Raw-deflate ``data`` (window bits 12) into exactly ``cluster_size`` bytes."""
    inflater = zlib.decompressobj(wbits=-12)
    try:
        out = inflater.decompress(data, cluster_size)
    except zlib.error as err:
        raise ImageFormatError(f"The compressed {what} is damaged ({err}).") from None
    if len(out) != cluster_size:
        raise ImageFormatError(
            f"The compressed {what} holds {len(out)} bytes instead of the {cluster_size} of a cluster."
        )
    return out


def unzstd_cluster(data: bytes, cluster_size: int, what: str) -> bytes:
    """Decompress zstd frames in ``data`` into exactly ``cluster_size`` bytes."""
    import zstandard  # here, not at the top: most images hold no zstd cluster (start-up of inspect)

    decompressor = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    out = bytearray()
    try:
        with decompressor.stream_reader(
            io.BytesIO(data), read_size=64 * 1024, read_across_frames=True, closefd=False
        ) as reader:
            while len(out) < cluster_size:
                chunk = reader.read(cluster_size - len(out))
                if not chunk:
                    break
                out += chunk
    except zstandard.ZstdError as err:
        raise ImageFormatError(f"The zstd-compressed {what} is damaged ({err}).") from None
    if len(out) != cluster_size:
        raise ImageFormatError(
            f"The zstd-compressed {what} holds {len(out)} bytes instead of the {cluster_size} of a cluster."
        )
    return bytes(out)


def inflate_zlib_grain(data: bytes, grain_size: int, what: str) -> bytes:
    """Decompress a zlib stream (RFC 1950) of at most ``grain_size`` bytes of output.

    The stream must end within the grain; bytes after its end are ignored, as zlib's
    ``uncompress()`` does.
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, grain_size)
        # A full grain stops the inflater before it reads the stream's trailer (the Adler-32
        # checksum): feed the rest one output byte at a time; any further output is too much.
        for _ in range(len(data) + 2):
            if inflater.eof or not inflater.unconsumed_tail:
                break
            if inflater.decompress(inflater.unconsumed_tail, 1):
                raise ImageFormatError(f"The compressed {what} expands to more than one grain.")
    except zlib.error as err:
        raise ImageFormatError(f"The compressed {what} is damaged ({err}).") from None
    if not inflater.eof:
        raise ImageFormatError(f"The compressed {what} is truncated.")
    return out
