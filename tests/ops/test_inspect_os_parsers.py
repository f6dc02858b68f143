"""The parsers of inspect --os on hand-written and generated input: what real files say, and
never an exception on garbage."""

from __future__ import annotations

import platform
import re
import sqlite3
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import run

from imagewright.ops.inspect_os import rpmdb
from imagewright.ops.inspect_os.boot import _find, parse_extlinux, parse_grub_cfg
from imagewright.ops.inspect_os.elf import architecture
from imagewright.ops.inspect_os.packages import MAX_STANZAS, parse_apk_installed, parse_dpkg_status
from imagewright.ops.inspect_os.releases import (
    from_os_release,
    parse_assignments,
    parse_redhat_release,
    parse_single_version,
)
from imagewright.ops.inspect_os.rpmdb import RpmDatabaseError, header_fields, read_rpm_sqlite
from imagewright.ops.inspect_os.system import parse_datasource_list

UBUNTU = """PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=jammy
"""


def test_os_release_quoting_as_os_release_5_says() -> None:
    text = (
        'NAME="Quoted \\"name\\" \\$HOME \\\\ \\`x\\`"\n'
        "ID='single'\n"
        "VERSION_ID=bare\\ word\n"
        "  export VARIANT=cloud\n"
        "lower=ignored\n"
        "NOT AN ASSIGNMENT\n"
        'ID_LIKE="rhel fedora"\n'
    )
    fields = parse_assignments(text)
    assert fields == {
        "NAME": 'Quoted "name" $HOME \\ `x`',
        "ID": "single",
        "VERSION_ID": "bare word",
        "VARIANT": "cloud",
        "ID_LIKE": "rhel fedora",
    }
    # The stdlib's parser of the same file agrees on every key both read.
    stdlib = platform._parse_os_release(text.splitlines())  # type: ignore[attr-defined]
    for key in ("NAME", "ID", "ID_LIKE"):
        assert fields[key] == stdlib[key]


def test_ubuntu_and_old_debian() -> None:
    ubuntu = from_os_release(parse_assignments(UBUNTU))
    assert (ubuntu.id, ubuntu.version_id, ubuntu.codename, ubuntu.id_like) == (
        "ubuntu",
        "22.04",
        "jammy",
        ["debian"],
    )
    jessie = from_os_release(parse_assignments('ID=debian\nVERSION_ID="8"\nVERSION="8 (jessie)"\n'))
    assert jessie.codename == "jessie"
    fedora = from_os_release(
        parse_assignments('ID=fedora\nVERSION="40 (Cloud Edition)"\nVERSION_CODENAME=""\n')
    )
    assert fedora.codename is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("CentOS Linux release 7.9.2009 (Core)", ("centos", "7.9.2009", "Core")),
        ("Red Hat Enterprise Linux release 9.3 (Plow)", ("rhel", "9.3", "Plow")),
        ("Red Hat Enterprise Linux Server release 6.10 (Santiago)", ("rhel", "6.10", "Santiago")),
        ("Fedora release 39 (Thirty Nine)", ("fedora", "39", "Thirty Nine")),
        ("Rocky Linux release 9.3 (Blue Onyx)", ("rocky", "9.3", "Blue Onyx")),
        ("AlmaLinux release 8.9 (Midnight Oncilla)", ("almalinux", "8.9", "Midnight Oncilla")),
        ("CentOS Stream release 9", ("centos", "9", None)),
    ],
)
def test_redhat_release(line: str, expected: tuple[str, str, str | None]) -> None:
    found = parse_redhat_release(line + "\n")
    assert found is not None
    assert (found.id, found.version_id, found.codename) == expected


def test_single_version_files() -> None:
    assert parse_single_version("3.19.1\n") == "3.19.1"
    assert parse_single_version("12.5\n") == "12.5"
    assert parse_single_version("bookworm/sid\n") is None
    assert parse_single_version("\x00\x01garbage") is None


def elf_header(elf_class: int, data: int, machine: int) -> bytes:
    """A complete ELF header (64 or 52 bytes) as readelf reads it."""
    order = "<" if data == 1 else ">"
    ident = b"\x7fELF" + bytes([elf_class, data, 1, 0]) + bytes(8)
    if elf_class == 2:
        rest = struct.pack(order + "HHIQQQIHHHHHH", 2, machine, 1, 0, 0, 0, 0, 64, 0, 0, 64, 0, 0)
    else:
        rest = struct.pack(order + "HHIIIIIHHHHHH", 2, machine, 1, 0, 0, 0, 0, 52, 0, 0, 40, 0, 0)
    return ident + rest


READELF_NAMES = {
    "x86_64": "Advanced Micro Devices X86-64",
    "i686": "Intel 80386",
    "aarch64": "AArch64",
    "armv7l": "ARM",
    "ppc64le": "PowerPC64",
    "ppc64": "PowerPC64",
    "s390x": "IBM S/390",
    "riscv64": "RISC-V",
    "mips64el": "MIPS R3000",
    "loongarch64": "LoongArch",
}


@pytest.mark.parametrize(
    ("elf_class", "data", "machine", "expected"),
    [
        (2, 1, 62, "x86_64"),
        (1, 1, 3, "i686"),
        (2, 1, 183, "aarch64"),
        (1, 1, 40, "armv7l"),
        (2, 1, 21, "ppc64le"),
        (2, 2, 21, "ppc64"),
        (2, 2, 22, "s390x"),
        (2, 1, 243, "riscv64"),
        (2, 1, 8, "mips64el"),
        (2, 1, 258, "loongarch64"),
    ],
)
def test_elf_machine_as_readelf_reads_it(
    tmp_path: Path, elf_class: int, data: int, machine: int, expected: str
) -> None:
    header = elf_header(elf_class, data, machine)
    assert architecture(header) == expected
    path = tmp_path / "program"
    path.write_bytes(header)
    out = run("readelf", "-h", str(path), check=False).stdout.decode()
    match = re.search(r"Machine:\s+(.+)", out)
    assert match is not None and match.group(1).strip() == READELF_NAMES[expected]
    endian = re.search(r"Data:\s+2's complement, (little|big) endian", out)
    assert endian is not None and (endian.group(1) == "little") == (data == 1)


def test_elf_refusals() -> None:
    good = elf_header(2, 1, 62)
    assert architecture(good[:19]) is None
    assert architecture(b"\x7fELX" + good[4:]) is None
    assert architecture(good[:4] + b"\x03" + good[5:]) is None  # class 3
    assert architecture(good[:5] + b"\x00" + good[6:]) is None  # no byte order
    assert architecture(good[:18] + b"\xff\xff") is None  # unknown machine
    assert architecture(b"#!/bin/sh\n" + bytes(20)) is None


GRUB_NESTED = """set default="1>1"
menuentry 'First' --id first { linux /boot/vmlinuz-a }
submenu 'Advanced' --id adv {
  menuentry 'A0' --id a0 {
    linux /boot/vmlinuz-b0
  }
  menuentry 'A1' --id a1 {
    linux /boot/vmlinuz-b1
    initrd /boot/initrd-b1
  }
}
"""


def test_grub_selectors() -> None:
    default, top, bls = parse_grub_cfg(
        GRUB_NESTED.replace("{ linux /boot/vmlinuz-a }", "{\nlinux /boot/vmlinuz-a\n}")
    )
    assert (default, bls) == ("1>1", False)
    for selector, kernel in (
        ("1>1", "/boot/vmlinuz-b1"),
        ("0", "/boot/vmlinuz-a"),
        ("first", "/boot/vmlinuz-a"),
        ("Advanced>A0", "/boot/vmlinuz-b0"),
        ("adv>a1", "/boot/vmlinuz-b1"),
        ("1", "/boot/vmlinuz-b0"),
    ):
        entry = _find(top, selector)
        assert entry is not None and entry.kernel == kernel, selector
    assert _find(top, "7") is None
    assert _find(top, "missing") is None
    _, _, bls = parse_grub_cfg("insmod blscfg\nblscfg\n")
    assert bls


def test_extlinux_default_and_first_label() -> None:
    text = (
        "DEFAULT lts\nLABEL virt\n LINUX vmlinuz-virt\nLABEL lts\n MENU LABEL Linux lts\n"
        " KERNEL /boot/vmlinuz-lts\n INITRD /boot/initramfs-lts,/boot/amd-ucode.img\n"
    )
    entry = parse_extlinux(text, "/boot/extlinux.conf")
    assert entry is not None
    assert (entry.title, entry.kernel, entry.initrd) == (
        "Linux lts",
        "/boot/vmlinuz-lts",
        "/boot/initramfs-lts",
    )
    first = parse_extlinux("DEFAULT nothere\nLABEL one\n KERNEL k1\n", "x")
    assert first is not None and first.kernel == "k1"
    assert parse_extlinux("PROMPT 0\n", "x") is None


def test_datasource_lists() -> None:
    assert parse_datasource_list("datasource_list: [ NoCloud, 'ConfigDrive', \"Ec2\" ]\n") == [
        "NoCloud",
        "ConfigDrive",
        "Ec2",
    ]
    assert parse_datasource_list("a: 1\ndatasource_list:\n  - NoCloud  # local\n  - None\nother: x\n") == [
        "NoCloud",
        "None",
    ]
    assert parse_datasource_list("datasource:\n  Ec2:\n    timeout: 5\n") is None
    assert parse_datasource_list("datasource_list: [ ../../etc, $(id) ]\n") == []


def stanzas(count: int, status: str = "install ok installed") -> list[str]:
    lines: list[str] = []
    for index in range(count):
        lines += [f"Package: p{index}", f"Status: {status}", "Version: 1.0", "Architecture: amd64", ""]
    return lines


def test_dpkg_status_counts_only_installed() -> None:
    text = (
        stanzas(3)
        + stanzas(1, "deinstall ok config-files")
        + stanzas(1, "install ok half-installed")
        + [
            "Package: cont",
            "Status: install ok installed",
            "Description: x",
            " continued: line",
            "Version: 2",
            "",
        ]
    )
    packages, truncated = parse_dpkg_status(text)
    assert [p.name for p in packages] == ["p0", "p1", "p2", "cont"]
    assert packages[-1].version == "2"
    assert not truncated


def test_stanza_budget() -> None:
    packages, truncated = parse_dpkg_status(iter(stanzas(MAX_STANZAS + 5)))
    assert truncated and len(packages) == MAX_STANZAS
    apk = (line for index in range(MAX_STANZAS + 1) for line in (f"P:p{index}", "V:1", ""))
    found, truncated = parse_apk_installed(apk)
    assert truncated and len(found) == MAX_STANZAS


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_parsers_never_raise_on_text(text: str) -> None:
    parse_assignments(text)
    from_os_release(parse_assignments(text))
    parse_redhat_release(text)
    parse_single_version(text)
    parse_grub_cfg(text)
    parse_extlinux(text, "x")
    parse_datasource_list(text)
    parse_dpkg_status(text.splitlines())
    parse_apk_installed(text.splitlines())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_elf_never_raises(data: bytes) -> None:
    found = architecture(data)
    assert found is None or data[:4] == b"\x7fELF"


def rpm_header(fields: dict[int, bytes]) -> bytes:
    """A stored rpm header (lib/header.c layout) holding STRING tags."""
    index, data = b"", b""
    for tag, value in fields.items():
        index += struct.pack(">IIII", tag, 6, len(data), 1)
        data += value + b"\0"
    return struct.pack(">II", len(fields), len(data)) + index + data


def packages_db(path: Path, blobs: list[bytes], schema: str | None = None) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute(
            schema or "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)"
        )
        if schema is None:
            connection.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b,) for b in blobs])
    connection.close()
    return path


def test_rpm_headers_and_their_refusals(tmp_path: Path) -> None:
    good = rpm_header({1000: b"bash", 1001: b"5.2", 1002: b"1.fc40", 1022: b"x86_64"})
    assert header_fields(good) == {1000: "bash", 1001: "5.2", 1002: "1.fc40", 1022: "x86_64"}
    assert header_fields(good[:-3]) == {}  # data shorter than dl says
    lying = struct.pack(">II", 1, 4) + struct.pack(">IIII", 1000, 6, 99, 1) + b"abc\0"
    assert header_fields(lying) == {}  # offset past the data
    unterminated = struct.pack(">II", 1, 3) + struct.pack(">IIII", 1000, 6, 0, 1) + b"abc"
    assert header_fields(unterminated) == {}
    assert header_fields(struct.pack(">II", 2**31, 0)) == {}
    db = packages_db(tmp_path / "ok.sqlite", [good, b"garbage", rpm_header({1000: b"zsh"})])
    packages, truncated = read_rpm_sqlite(db, 10)
    assert [(p.name, p.version, p.architecture) for p in packages] == [
        ("bash", "5.2-1.fc40", "x86_64"),
        ("zsh", "", None),
    ]
    assert not truncated
    assert read_rpm_sqlite(db, 2)[1] is True


def test_hostile_rpm_databases_are_refused_in_bounded_time(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 64)
    with pytest.raises(RpmDatabaseError, match="cannot be"):
        read_rpm_sqlite(garbage, 10)
    view = packages_db(
        tmp_path / "view.sqlite",
        [],
        "CREATE VIEW Packages AS WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
        "SELECT x AS hnum, zeroblob(10) AS blob FROM n",
    )
    with pytest.raises(RpmDatabaseError, match="no Packages table"):
        read_rpm_sqlite(view, 10)


def test_the_step_budget_stops_a_long_statement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = tmp_path / "rows.sqlite"
    packages_db(rows, [rpm_header({1000: f"p{i}".encode()}) for i in range(20_000)])
    assert len(read_rpm_sqlite(rows, 100_000)[0]) == 20_000
    monkeypatch.setattr(rpmdb, "MAX_STEPS", 50_000)
    with pytest.raises(RpmDatabaseError, match="interrupted"):
        read_rpm_sqlite(rows, 100_000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_rpm_header_never_raises(data: bytes) -> None:
    header_fields(data)
