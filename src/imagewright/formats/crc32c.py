"""CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries.

Pure Python and table-driven: polynomial 0x1EDC6F41, bit-reflected (0x82F63B78), initial
value and final XOR 0xFFFFFFFF, as in RFC 3720 (iSCSI) appendix B.4 and MS-VHDX section 2.2.

VHDX checksums cover mostly-zero blocks (a 64 KiB region table holds a few dozen bytes of
entries), so runs of zero bytes are not fed through the byte loop: appending ``n`` zero
bytes is a linear map of the CRC register, and ``_ZeroRun`` applies it in O(log n) steps
by composing precomputed maps for 1, 2, 4, ... zero bytes (the idea behind zlib's
``crc32_combine``). A 64 KiB table therefore costs about as much as its non-zero bytes.
"""

from __future__ import annotations

import re

POLYNOMIAL_REFLECTED = 0x82F63B78
_MASK = 0xFFFFFFFF


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ POLYNOMIAL_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()

#: Zero runs shorter than this go through the byte loop; longer ones are skipped algebraically.
_MIN_ZERO_RUN = 64
_ZERO_RUN_RE = re.compile(b"\\x00{%d,}" % _MIN_ZERO_RUN)


def _apply(matrix: tuple[int, ...], vector: int) -> int:
    """Multiply a 32x32 GF(2) matrix (one column per input bit) by a register value."""
    result = 0
    bit = 0
    while vector:
        if vector & 1:
            result ^= matrix[bit]
        vector >>= 1
        bit += 1
    return result


def _one_zero_byte() -> tuple[int, ...]:
    """The register map of feeding one zero byte: column i is the image of bit i."""
    columns = []
    for bit in range(32):
        crc = 1 << bit
        crc = _TABLE[crc & 0xFF] ^ (crc >> 8)
        columns.append(crc)
    return tuple(columns)


class _ZeroRun:
    """Maps for 2**k zero bytes, built by squaring on demand."""

    def __init__(self) -> None:
        self._powers: list[tuple[int, ...]] = [_one_zero_byte()]

    def _power(self, k: int) -> tuple[int, ...]:
        while len(self._powers) <= k:
            last = self._powers[-1]
            self._powers.append(tuple(_apply(last, column) for column in last))
        return self._powers[k]

    def feed(self, register: int, count: int) -> int:
        """The register after ``count`` zero bytes."""
        k = 0
        while count:
            if count & 1:
                register = _apply(self._power(k), register)
            count >>= 1
            k += 1
        return register


_ZEROS = _ZeroRun()


def _feed_bytes(register: int, data: bytes | memoryview) -> int:
    table = _TABLE
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data``; pass a previous result as ``crc`` to continue it (like zlib.crc32)."""
    view = bytes(data)
    register = (crc ^ _MASK) & _MASK
    position = 0
    for run in _ZERO_RUN_RE.finditer(view):
        start, end = run.span()
        register = _feed_bytes(register, memoryview(view)[position:start])
        register = _ZEROS.feed(register, end - start)
        position = end
    register = _feed_bytes(register, memoryview(view)[position:])
    return register ^ _MASK


def crc32c_with_field_zeroed(data: bytes, field_offset: int) -> int:
    """CRC-32C of ``data`` with the 4-byte checksum field at ``field_offset`` read as zero.

    How every VHDX structure is checksummed (MS-VHDX 2.2: "the checksum field is set to 0
    during the computation").
    """
    if field_offset < 0 or field_offset + 4 > len(data):
        raise ValueError("the checksum field lies outside the data")
    return crc32c(data[:field_offset] + b"\0\0\0\0" + data[field_offset + 4 :])
