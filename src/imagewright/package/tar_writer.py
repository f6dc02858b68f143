"""USTAR headers (POSIX.1-1988 ``ustar``): what an OVA's members and an EC2 bundle's image
are wrapped in. The reader is ``formats/containers/tar.py``; its layout table applies.

Only what both packages need: regular files with short plain names (an OVA keeps names flat
and within 100 bytes, spec digest section 2.1; an EC2 bundle holds one member named after
its prefix), no GNU or pax extensions, numbers in octal.
"""

from __future__ import annotations

import time

from imagewright.errors import InvalidArgumentError

BLOCK = 512
#: GNU tar and Python's tarfile pad an archive to whole records of 20 blocks.
RECORD = 20 * BLOCK
#: Largest member that an 11-digit octal size field holds (8 GiB - 1).
MAX_OCTAL_SIZE = 0o77777777777


def padding(length: int) -> bytes:
    """Zero bytes that fill ``length`` up to a whole block."""
    return bytes(-length % BLOCK)


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode("ascii") + b"\0"


def _size_field(size: int) -> bytes:
    if size <= MAX_OCTAL_SIZE:
        return _octal(size, 12)
    # Larger members: the base-256 form (GNU, star, bsdtar and Python read it): first byte 0x80.
    return b"\x80" + size.to_bytes(11, "big")


def check_member_name(name: str) -> str:
    """A flat member name of printable ASCII, at most 100 bytes (no prefix field, no long names)."""
    if not (0 < len(name) <= 100) or not name.isascii() or not name.isprintable():
        raise InvalidArgumentError(
            f"'{name[:120]}' cannot be a tar member name here: use 1 to 100 printable ASCII characters."
        )
    if "/" in name or name in (".", ".."):
        raise InvalidArgumentError(f"'{name[:120]}' cannot be a tar member name here: names are flat.")
    return name


def ustar_header(name: str, size: int, *, mode: int = 0o644, mtime: int | None = None) -> bytes:
    """The 512-byte header block of a regular file ``name`` holding ``size`` bytes."""
    check_member_name(name)
    if size < 0:
        raise InvalidArgumentError("A tar member cannot have a negative size.")
    block = bytearray(BLOCK)
    block[0 : len(name)] = name.encode("ascii")
    block[100:108] = _octal(mode & 0o7777, 8)
    block[108:116] = _octal(0, 8)  # uid
    block[116:124] = _octal(0, 8)  # gid
    block[124:136] = _size_field(size)
    block[136:148] = _octal(int(time.time()) if mtime is None else mtime, 12)
    block[148:156] = b" " * 8  # the checksum field counts as spaces while summing
    block[156:157] = b"0"
    block[257:263] = b"ustar\0"
    block[263:265] = b"00"
    block[265:269] = b"root"
    block[297:301] = b"root"
    block[148:156] = f"{sum(block):06o}".encode("ascii") + b"\0 "
    return bytes(block)


def end_of_archive(length: int) -> bytes:
    """Two zero blocks, then zeros up to a whole record, for an archive ``length`` bytes long so far."""
    end = length + 2 * BLOCK
    return bytes(2 * BLOCK + (-end % RECORD))
