"""Installed packages: dpkg's status file and apk's installed database, streamed; rpm's sqlite
database through ``rpmdb``, its older Berkeley DB through ``rpm_berkeley``.

Sources: deb-control(5)/dpkg(1) (``/var/lib/dpkg/status``: RFC 822-style stanzas separated by
blank lines; ``Status: want flag status`` and only ``installed`` is installed; continuation
lines start with a space); apk's ``/lib/apk/db/installed`` (apk-tools ``database.c``:
stanzas separated by blank lines, one ``X:value`` field per line, ``P`` name, ``V`` version,
``A`` architecture; every stanza is an installed package).

NOTE: the databases are untrusted and may be huge. They are copied to a host scratch file
(at most ``MAX_DATABASE`` bytes) and streamed line by line (lines over ``reader.MAX_LINE``
skipped); at most ``MAX_STANZAS`` stanzas are read, and a database with more is reported
as truncated with its count as a lower bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from imagewright.guest.bounded import GuestReader, file_lines
from imagewright.ops.inspect_os.model import Package, PackageDatabase
from imagewright.ops.inspect_os.rpm_berkeley import read_rpm_berkeley
from imagewright.ops.inspect_os.rpmdb import RpmDatabaseError, read_rpm_sqlite

#: The largest package database copied out (Debian's with 5000 packages is ~10 MiB).
MAX_DATABASE = 256 * 1024 * 1024
#: The most stanzas read (an installed system has a few thousand packages).
MAX_STANZAS = 200_000
#: The longest name, version or architecture kept.
MAX_FIELD = 200

DPKG_STATUS = "/var/lib/dpkg/status"
APK_INSTALLED = "/lib/apk/db/installed"
RPM_SQLITE = ("/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite")
RPM_BERKELEY = "/var/lib/rpm/Packages"
LOOKS_AT = (DPKG_STATUS, APK_INSTALLED, *RPM_SQLITE, RPM_BERKELEY)


def _stanzas(source: Iterable[str], separator: str) -> Iterable[dict[str, str]]:
    """Stanzas as ``{field: value}`` (first line of each field only), with unbounded input
    cut at ``MAX_STANZAS + 1`` stanzas by the caller."""
    fields: dict[str, str] = {}
    for line in source:
        if not line.strip():
            if fields:
                yield fields
                fields = {}
            continue
        if line[0] in " \t":
            continue  # a continuation line (descriptions, conffiles)
        name, sep, value = line.partition(separator)
        if sep and name in _WANTED:
            fields[name] = value.strip()[:MAX_FIELD]
        elif sep:
            fields.setdefault("", "")  # a stanza with only other fields is still a stanza
    if fields:
        yield fields


_WANTED = frozenset({"Package", "Status", "Version", "Architecture", "P", "V", "A"})


def parse_dpkg_status(source: Iterable[str]) -> tuple[list[Package], bool]:
    """Installed packages of a dpkg status file, and whether it had more stanzas than read."""
    packages: list[Package] = []
    for count, stanza in enumerate(_stanzas(source, ":")):
        if count >= MAX_STANZAS:
            return packages, True
        status = stanza.get("Status", "").split()
        name = stanza.get("Package")
        if name and len(status) == 3 and status[2] == "installed":
            packages.append(Package(name, stanza.get("Version", ""), stanza.get("Architecture")))
    return packages, False


def parse_apk_installed(source: Iterable[str]) -> tuple[list[Package], bool]:
    """Packages of apk's installed database, and whether it had more stanzas than read."""
    packages: list[Package] = []
    for count, stanza in enumerate(_stanzas(source, ":")):
        if count >= MAX_STANZAS:
            return packages, True
        name = stanza.get("P")
        if name:
            packages.append(Package(name, stanza.get("V", ""), stanza.get("A")))
    return packages, False


def read_packages(reader: GuestReader) -> list[PackageDatabase]:
    databases: list[PackageDatabase] = []
    for path, fmt, parse in (
        (DPKG_STATUS, "deb", parse_dpkg_status),
        (APK_INSTALLED, "apk", parse_apk_installed),
    ):
        with reader.host_copy(path, MAX_DATABASE, "a package database") as copy:
            if copy is None:
                continue
            packages, truncated = parse(file_lines(Path(copy)))
        if truncated:
            reader.note(
                f"{path} holds more than {MAX_STANZAS} entries; only the first {MAX_STANZAS} were read"
            )
        databases.append(PackageDatabase(fmt, path, len(packages), packages, truncated))
    for path in RPM_SQLITE:
        with reader.host_copy(path, MAX_DATABASE, "a package database") as copy:
            if copy is None:
                continue
            try:
                packages, truncated = read_rpm_sqlite(Path(copy), MAX_STANZAS)
            except RpmDatabaseError as err:
                reader.note(f"{path} was not read: {err}")
                continue
        if truncated:
            reader.note(
                f"{path} holds more than {MAX_STANZAS} entries; only the first {MAX_STANZAS} were read"
            )
        databases.append(PackageDatabase("rpm", path, len(packages), packages, truncated))
        break  # /var/lib/rpm is a link to /usr/lib/sysimage/rpm on current systems
    if not any(db.format == "rpm" for db in databases):
        with reader.host_copy(RPM_BERKELEY, MAX_DATABASE, "a package database") as copy:
            if copy is None:
                return databases
            try:
                packages, count, truncated = read_rpm_berkeley(Path(copy), MAX_STANZAS)
            except RpmDatabaseError as err:
                reader.note(f"{RPM_BERKELEY} was not read: {err}")
                return databases
        if truncated:
            reader.note(
                f"{RPM_BERKELEY} holds more than {MAX_STANZAS} entries; "
                f"only the first {MAX_STANZAS} were read"
            )
        databases.append(PackageDatabase("rpm", RPM_BERKELEY, count, packages, truncated))
    return databases
