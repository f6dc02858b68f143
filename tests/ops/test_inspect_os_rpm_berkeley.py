"""The rpm Berkeley DB Packages database of RHEL/CentOS 8 and before, read without rpm or BDB.

The databases are real: rpm itself records packages rpmbuild built (``os_trees.rpm_database``),
Berkeley DB's own ``db_load`` writes their headers into a hash database (little- and big-endian,
4 KiB pages, and 512-byte pages where every header lies on an overflow chain), and rpm's
``bdb_ro`` backend reads it back as the independent truth. Hostile files — garbage, lying
metadata, chains that loop, random damage — end in one sentence or a partial count, in bounded
time, never another exception.
"""

from __future__ import annotations

import sqlite3
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.guest.images import flat_ext4, write
from tests.ops.os_trees import RPM_PACKAGES, rpm_database

from imagewright.ops.inspect_os import inspect_os
from imagewright.ops.inspect_os.rpm_berkeley import P_OVERFLOW, PAGE_HEADER, read_rpm_berkeley
from imagewright.ops.inspect_os.rpmdb import RpmDatabaseError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def headers(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The stored headers of RPM_PACKAGES, as rpm recorded them."""
    base = tmp_path_factory.mktemp("rpm")
    rpm_database(base / "work", base / "db", RPM_PACKAGES)
    with sqlite3.connect(base / "db" / "rpmdb.sqlite") as db:
        return [blob for (blob,) in db.execute("SELECT blob FROM Packages ORDER BY hnum")]


def berkeley_packages(target: Path, blobs: list[bytes], *, order: str, pagesize: int) -> Path:
    """A Packages hash database written by Berkeley DB's db_load: header numbers 1.. (in the
    writer's byte order ``order``), and rpm's counter record 0."""
    target.mkdir(parents=True, exist_ok=True)

    def escaped(data: bytes) -> str:
        return "".join(f"\\{byte:02x}" for byte in data)

    lines = [escaped(struct.pack(order + "I", 0)), escaped(struct.pack(order + "I", len(blobs) + 1))]
    for number, blob in enumerate(blobs, start=1):
        lines += [escaped(struct.pack(order + "I", number)), escaped(blob)]
    lorder = "1234" if order == "<" else "4321"
    subprocess.run(
        [
            "db_load",
            "-T",
            "-t",
            "hash",
            "-c",
            f"db_lorder={lorder}",
            "-c",
            f"db_pagesize={pagesize}",
            target / "Packages",
        ],
        input=("\n".join(lines) + "\n").encode(),
        check=True,
        capture_output=True,
    )
    return target / "Packages"


def rpm_says(database: Path) -> Counter[str]:
    """What rpm's own bdb_ro backend reads from the database."""
    out = subprocess.run(
        [
            "rpm",
            "--dbpath",
            database.parent,
            "--define",
            "_db_backend bdb_ro",
            "-qa",
            "--qf",
            "%{NAME} %{VERSION}-%{RELEASE} %{ARCH}\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Counter(out.splitlines())


def ours(database: Path, most: int = 1_000_000) -> tuple[Counter[str], int, bool]:
    packages, count, truncated = read_rpm_berkeley(database, most)
    return Counter(f"{p.name} {p.version} {p.architecture}" for p in packages), count, truncated


@pytest.mark.parametrize(
    ("order", "pagesize", "copies"),
    [("<", 4096, 1), (">", 4096, 1), ("<", 512, 1), (">", 512, 3), ("<", 4096, 300)],
    ids=["le-4k", "be-4k", "le-512-overflow", "be-512-overflow", "le-4k-1500-packages"],
)
def test_what_rpm_reads_we_read(
    headers: list[bytes], tmp_path: Path, order: str, pagesize: int, copies: int
) -> None:
    database = berkeley_packages(tmp_path / "rpm", headers * copies, order=order, pagesize=pagesize)
    truth = rpm_says(database)
    assert sum(truth.values()) == len(headers) * copies
    found, count, truncated = ours(database)
    assert (found, count, truncated) == (truth, len(headers) * copies, False)


def test_at_most_so_many_are_read(headers: list[bytes], tmp_path: Path) -> None:
    database = berkeley_packages(tmp_path / "rpm", headers, order="<", pagesize=4096)
    found, count, truncated = ours(database, most=3)
    assert (sum(found.values()), count, truncated) == (3, 3, True)


def test_refusals_are_one_sentence(headers: list[bytes], tmp_path: Path) -> None:
    good = berkeley_packages(tmp_path / "rpm", headers, order="<", pagesize=4096).read_bytes()
    cases = {
        "garbage": (bytes(range(256)) * 64, "not a Berkeley DB hash database"),
        "short": (good[:100], "too short"),
        "page size": (good[:20] + struct.pack("<I", 3000) + good[24:], "page size 3000"),
        "version": (good[:16] + struct.pack("<I", 99) + good[20:], "hash version 99"),
        "last page": (good[:32] + struct.pack("<I", 10**6) + good[36:], "more pages than the file holds"),
        "buckets": (good[:72] + struct.pack("<I", 10**6) + good[76:], "more pages than the file holds"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name.replace(" ", "-")
        path.write_bytes(data)
        with pytest.raises(RpmDatabaseError, match=message):
            read_rpm_berkeley(path, 100)


def _pages_of_type(data: bytes, pagesize: int, kind: int) -> list[int]:
    return [n for n in range(1, len(data) // pagesize) if data[n * pagesize + 25] == kind]


def test_chains_that_loop_end(headers: list[bytes], tmp_path: Path) -> None:
    path = berkeley_packages(tmp_path / "rpm", headers, order="<", pagesize=512)
    data = bytearray(path.read_bytes())
    # Every overflow page points back at itself; every hash page at the first hash page.
    for number in _pages_of_type(bytes(data), 512, P_OVERFLOW):
        struct.pack_into("<I", data, number * 512 + 16, number)
    hash_pages = _pages_of_type(bytes(data), 512, 13) + _pages_of_type(bytes(data), 512, 2)
    for number in hash_pages:
        struct.pack_into("<I", data, number * 512 + 16, min(hash_pages))
    path.write_bytes(bytes(data))
    found, count, truncated = ours(path)
    # Headers longer than a page cannot be read whole any more: counted, not named.
    assert count == len(headers) and not truncated and sum(found.values()) == 0


def test_an_overflow_page_that_lies_about_its_length(headers: list[bytes], tmp_path: Path) -> None:
    path = berkeley_packages(tmp_path / "rpm", headers, order="<", pagesize=512)
    data = bytearray(path.read_bytes())
    first = _pages_of_type(bytes(data), 512, P_OVERFLOW)[0]
    struct.pack_into("<H", data, first * 512 + 22, 512 - PAGE_HEADER + 1)
    path.write_bytes(bytes(data))
    found, count, _ = ours(path)
    assert count == len(headers) and sum(found.values()) == len(headers) - 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=40))
def test_random_damage_never_raises_anything_else(
    headers: list[bytes], tmp_path: Path, damage: list[tuple[int, int]]
) -> None:
    path = tmp_path / "rpm" / "Packages"
    if not path.exists():
        berkeley_packages(tmp_path / "rpm", headers * 2, order="<", pagesize=512)
    data = bytearray(path.read_bytes())
    for where, value in damage:
        data[where % len(data)] = value
    damaged = tmp_path / "damaged"
    damaged.write_bytes(bytes(data))
    try:
        found, count, _ = ours(damaged)
    except RpmDatabaseError:
        return
    assert sum(found.values()) <= count <= 2 * len(headers) + 1


def test_inspect_os_reads_a_centos_7_database(headers: list[bytes], tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, "etc/os-release", 'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nVERSION_ID="7"\n')
    write(root, "etc/redhat-release", "CentOS Linux release 7.9.2009 (Core)\n")
    berkeley_packages(root / "var/lib/rpm", headers, order="<", pagesize=4096)
    image = flat_ext4(root, tmp_path / "centos.raw")
    (facts,) = inspect_os(image.path).roots
    assert (facts.distribution.os_distro, facts.distribution.version_id) == ("centos", "7")
    (database,) = facts.packages
    assert (database.format, database.path, database.count, database.truncated) == (
        "rpm",
        "/var/lib/rpm/Packages",
        len(RPM_PACKAGES),
        False,
    )
    assert database.version_of("openssh-server") == "9.6p1-1.fc40.4"
    assert not any("Packages" in note for note in facts.notes)
