"""One tar header block's fields and checksum, and ``looks_like_tar``: no scanning here.

The layout is in ``tar``'s docstring. This module is what ``probe_container`` needs to tell
whether an image starts with a tar header, so it imports nothing that scans or decompresses:
inspecting a disk image (most images) loads none of that.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from imagewright.errors import ImageFormatError

if TYPE_CHECKING:
    from imagewright.formats.containers.model import TarFormat

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
_HIGH_BYTES = bytes(range(0x80, 0x100))


class TarHeaderError(ImageFormatError):
    """A header block that no tar reader would accept."""


def _field(block: bytes, start: int, length: int) -> bytes:
    return block[start : start + length].partition(b"\0")[0]


#: Numbers seen before, raw field -> value: modes, owners and times repeat in an archive,
#: and a dictionary lookup is far cheaper than parsing again (bounded, never trusted for size).
_NUMBERS: dict[bytes, int] = {}
_MAX_NUMBERS = 4096


def _number(raw: bytes, what: str) -> int:
    """An octal ASCII number, or GNU base-256 (first byte 0x80 positive, 0xff negative)."""
    value = _NUMBERS.get(raw)
    if value is not None:
        return value
    if raw and raw[0] & 0x80:
        if raw[0] == 0x80:
            return int.from_bytes(raw[1:], "big")
        if raw[0] == 0xFF:
            return int.from_bytes(raw, "big", signed=True)
        raise TarHeaderError(f"The tar header's {what} field holds an unknown binary encoding.")
    text = raw.partition(b"\0")[0].strip(b" ")
    if not text:
        value = 0
    elif text.translate(None, b"01234567"):
        raise TarHeaderError(f"The tar header's {what} field is not an octal number.")
    else:
        value = int(text, 8)
    if len(_NUMBERS) < _MAX_NUMBERS:
        _NUMBERS[raw] = value
    return value


def _byte_sum(data: bytes) -> int:
    """The sum of the bytes of ``data`` (at most 512), in C.

    NOTE: Adler-32's low half is 1 + the byte sum modulo 65521; 256 bytes sum to at most
    65280, so per 256-byte piece it is the exact sum.
    """
    total = 0
    for start in range(0, len(data), 256):
        total += (zlib.adler32(data[start : start + 256]) & 0xFFFF) - 1
    return total


#: The checksum field counts as eight spaces.
_CHECKSUM_SPACES = 8 * 0x20


def checksum_matches(block: bytes) -> bool:
    try:
        stored = _number(block[148:156], "checksum")
    except TarHeaderError:
        return False
    unsigned = _byte_sum(block) - _byte_sum(block[148:156]) + _CHECKSUM_SPACES
    if stored == unsigned:
        return True
    # Some historic tars summed signed chars.
    rest = block[:148] + b" " * 8 + block[156:]
    high = len(rest) - len(rest.translate(None, _HIGH_BYTES))
    return stored == unsigned - 256 * high


def _magic(block: bytes) -> TarFormat | None:
    magic = block[257:265]
    if magic[:6] == b"ustar\0":
        return "ustar"
    if magic == b"ustar  \0":
        return "gnu"
    if magic == bytes(8):
        return "v7"
    return None


def looks_like_tar(block: bytes) -> bool:
    """A header a tar reader would accept: valid checksum, and a ustar/GNU magic — or, for
    old v7 headers, a name, a plain type flag and octal numbers (random data rarely passes).
    """
    if len(block) < BLOCK or block[:BLOCK] == ZERO_BLOCK:
        return False
    block = block[:BLOCK]
    kind = _magic(block)
    if kind is None or not checksum_matches(block):
        return False
    if kind != "v7":
        return True
    name = _field(block, 0, 100)
    if not name or any(byte < 0x20 for byte in name) or block[156:157] not in b"0123456\0":
        return False
    try:
        for start, length, what in ((100, 8, "mode"), (124, 12, "size"), (136, 12, "mtime")):
            if block[start] & 0x80:
                return False
            _number(block[start : start + length], what)
    except TarHeaderError:
        return False
    return True
