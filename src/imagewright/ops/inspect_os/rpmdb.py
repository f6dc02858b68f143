"""Installed rpm packages from the sqlite database of current Fedora, RHEL 9 and SUSE.

Sources: rpm's ``lib/backend/sqlite.c`` (``/var/lib/rpm/rpmdb.sqlite``, or
``/usr/lib/sysimage/rpm/rpmdb.sqlite``: table ``Packages (hnum INTEGER PRIMARY KEY, blob BLOB)``,
one header per installed package) and ``lib/header.c`` (a stored header: big-endian ``il``
index entries and ``dl`` data bytes, then ``il`` entries of tag, type, offset, count (4 × 4
bytes), then the data; a STRING (type 6) or I18NSTRING (9) is NUL-terminated at its offset).
Tags: NAME 1000, VERSION 1001, RELEASE 1002, ARCH 1022.

NOTE: the database is untrusted. It is copied to a host scratch file and opened read-only and
immutable (a WAL left beside it is not read) with ``trusted_schema`` off; ``Packages`` must be a
table; a progress handler stops any statement after ``MAX_STEPS`` virtual-machine steps (no
view or trigger can make it run long); at most ``MAX_STANZAS`` headers of at most
``MAX_HEADER`` bytes are read, and every header offset is checked against its blob. The
older Berkeley DB format (``/var/lib/rpm/Packages``, RHEL 8 and before) is read by
``rpm_berkeley``.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

from imagewright.ops.inspect_os.model import Package

MAX_HEADER = 16 * 1024 * 1024
MAX_INDEX = 100_000
MAX_STEPS = 200_000_000
TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_ARCH = 1000, 1001, 1002, 1022
STRING_TYPES = (6, 9)


class RpmDatabaseError(Exception):
    """The file is not an rpm sqlite database imagewright reads (said as a note)."""


def header_fields(blob: bytes) -> dict[int, str]:
    """The NAME, VERSION, RELEASE and ARCH strings of one stored rpm header."""
    if len(blob) < 8:
        return {}
    index_count, data_length = struct.unpack_from(">II", blob, 0)
    data_start = 8 + 16 * index_count
    if index_count > MAX_INDEX or data_start + data_length > len(blob):
        return {}
    fields: dict[int, str] = {}
    for entry in range(index_count):
        tag, kind, offset, _count = struct.unpack_from(">IIII", blob, 8 + 16 * entry)
        if tag not in (TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_ARCH) or kind not in STRING_TYPES:
            continue
        if offset >= data_length:
            continue
        start = data_start + offset
        end = blob.find(b"\0", start, data_start + data_length)
        if end < 0:
            continue
        fields.setdefault(tag, blob[start : min(end, start + 200)].decode("utf-8", "replace"))
    return fields


def package_of(blob: bytes) -> Package | None:
    """The package a stored header describes, or None when it names none."""
    fields = header_fields(blob)
    name = fields.get(TAG_NAME)
    if not name:
        return None
    version = fields.get(TAG_VERSION, "")
    if TAG_RELEASE in fields:
        version = f"{version}-{fields[TAG_RELEASE]}"
    return Package(name, version, fields.get(TAG_ARCH))


def read_rpm_sqlite(path: Path, most: int) -> tuple[list[Package], bool]:
    """Packages of an rpm sqlite database (a host file), and whether it had more than ``most``."""
    steps = 0

    def progress() -> int:
        nonlocal steps
        steps += 1000
        return 1 if steps > MAX_STEPS else 0

    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as err:
        raise RpmDatabaseError(f"it cannot be opened as a database ({err})") from None
    try:
        connection.set_progress_handler(progress, 1000)
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("PRAGMA query_only = ON")
        kind = connection.execute("SELECT type FROM sqlite_master WHERE name = 'Packages'").fetchone()
        if kind is None or kind[0] != "table":
            raise RpmDatabaseError("it holds no Packages table")
        packages: list[Package] = []
        rows = connection.execute(
            "SELECT CASE WHEN length(blob) <= ? THEN blob END FROM Packages ORDER BY hnum", (MAX_HEADER,)
        )
        for count, (blob,) in enumerate(rows):
            if count >= most:
                return packages, True
            package = package_of(blob) if isinstance(blob, bytes) else None
            if package is not None:
                packages.append(package)
        return packages, False
    except sqlite3.Error as err:
        raise RpmDatabaseError(f"it cannot be read as an rpm database ({err})") from None
    finally:
        connection.close()
