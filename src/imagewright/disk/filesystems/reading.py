"""Small helpers every signature probe shares: bounded reads and blkid's string rules."""

from __future__ import annotations

import struct
from typing import Literal

from imagewright.binary import ByteSource, read_exact
from imagewright.disk.guids import uuid_from_bytes

# C isspace(): what blkid_rtrim_whitespace() strips.
_C_SPACE = " \t\n\v\f\r"


def read_or_none(
    src: ByteSource, offset: int, length: int, what: str = "filesystem superblock"
) -> bytes | None:
    """The bytes at ``offset``, or ``None`` when they lie outside ``src``.

    A probe treats "not there" as "not this filesystem", as blkid does when its buffer read
    fails; errors that are not about bounds (an I/O error, the end of a decompressed prefix)
    still propagate as ImagewrightError.
    """
    if offset < 0 or length < 0 or offset + length > src.size:
        return None
    return read_exact(src, offset, length, what)


def u16le(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<H", data, offset)[0]
    return value


def u32le(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def u64le(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<Q", data, offset)[0]
    return value


def u16be(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from(">H", data, offset)[0]
    return value


def u32be(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from(">I", data, offset)[0]
    return value


def u64be(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from(">Q", data, offset)[0]
    return value


def c_string(raw: bytes) -> bytes:
    """Bytes up to the first NUL, as C code sees a fixed-size char array."""
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def blkid_label(raw: bytes) -> str | None:
    """blkid_probe_set_label(): up to the first NUL, trailing white space removed, empty -> None."""
    text = c_string(raw).decode("utf-8", errors="replace").rstrip(_C_SPACE)
    return text or None


def blkid_id_label(raw: bytes) -> str | None:
    """blkid_probe_set_id_label(): like a label, with leading white space removed too."""
    text = c_string(raw).decode("utf-8", errors="replace").rstrip(_C_SPACE).lstrip(_C_SPACE)
    return text or None


def utf16_label(raw: bytes, endian: Literal["le", "be"]) -> str | None:
    """blkid_probe_set_utf8label(): UTF-16 up to the first NUL character, trailing space removed."""
    usable = raw[: len(raw) - (len(raw) % 2)]
    units = []
    for index in range(0, len(usable), 2):
        pair = usable[index : index + 2]
        if pair == b"\0\0":
            break
        units.append(pair)
    text = b"".join(units).decode(f"utf-16-{endian}", errors="replace").rstrip(_C_SPACE)
    return text or None


def uuid_or_none(raw: bytes) -> str | None:
    """A 16-byte UUID as blkid prints it; all-zero UUIDs are not reported (blkid_uuid_is_empty)."""
    if len(raw) != 16 or not any(raw):
        return None
    return uuid_from_bytes(raw)


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), as XFS v5 and btrfs checksum their superblocks. Small inputs only."""
    crc ^= 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
