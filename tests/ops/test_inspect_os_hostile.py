"""inspect --os and --audit on hostile guests: link loops, links out of the guest, a 2 GiB
os-release (sparse), a million dpkg stanzas, binary garbage, special files where files should
be. Each is a note, never an exception; memory stays bounded (measured with tracemalloc);
nothing outside the guest is ever read."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.guest.images import GuestImage, flat_ext4, link, write
from tests.ops.os_trees import HOST_BUSYBOX, _copy, debian_tree

from imagewright.ops.inspect_os import inspect_os
from imagewright.ops.inspect_os.model import OsFacts
from imagewright.ops.inspect_os.packages import MAX_DATABASE, MAX_STANZAS

pytestmark = pytest.mark.integration
RunCli = Callable[..., Result]

GiB = 1 << 30
MILLION = 1_000_000
HOST_MARKER = "HOST-FILE-MUST-NOT-LEAK"
GARBAGE = bytes(range(256)) * 4 + b"\nID=\x00evil\x1b[2J\nVERSION_ID=\xff\xfe\n" + os.urandom(2048)


def million_stanzas(path: Path) -> None:
    """A dpkg status database of a million installed packages (~60 MiB), written streaming."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for index in range(MILLION):
            out.write(f"Package: pkg{index}\nStatus: install ok installed\nVersion: 1.{index}\n\n")


@pytest.fixture(scope="module")
def host_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host directory a guest's links name by absolute and relative paths."""
    base = tmp_path_factory.mktemp("host")
    (base / "hostname").write_text(f"{HOST_MARKER}\n")
    (base / "os-release").write_text(f"ID={HOST_MARKER.lower()}\n")
    return base


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, host_secrets: Path) -> GuestImage:
    base = tmp_path_factory.mktemp("hostile")
    root = base / "root"
    debian_tree(root)
    escape = "../" * 40
    # A 2 GiB os-release (sparse: mke2fs -d keeps the hole) and garbage in the fallback.
    (root / "etc/os-release").unlink()
    with (root / "etc/os-release").open("wb") as f:
        f.truncate(2 * GiB)
    (root / "usr/lib/os-release").unlink()
    write(root, "usr/lib/os-release", GARBAGE)
    write(root, "etc/lsb-release", GARBAGE)
    (root / "etc/debian_version").unlink()
    link(root, "etc/debian_version", f"{escape}{host_secrets}/os-release".replace("//", "/"))
    # Links that would leave the guest (absolute and relative) and link loops.
    (root / "etc/hostname").unlink()
    link(root, "etc/hostname", f"{host_secrets}/hostname")
    (root / "usr/sbin/init").unlink()
    link(root, "usr/sbin/init", "init2")
    link(root, "usr/sbin/init2", "/sbin/init")
    (root / "usr/lib/systemd/systemd").unlink()
    link(root, "usr/lib/systemd/systemd", f"{escape}{HOST_BUSYBOX}".replace("//", "/"))
    (root / "usr/bin/busybox").unlink()
    link(root, "usr/bin/busybox", str(HOST_BUSYBOX))  # absolute: the guest's /bin/busybox, missing
    _copy(HOST_BUSYBOX, root / "usr/bin/dash", 0o755)
    link(root, "usr/bin/sh", "dash")
    # A million dpkg stanzas; an apk database of one 10 MiB line; garbage as the rpm database.
    million_stanzas(root / "var/lib/dpkg/status")
    write(root, "lib/apk/db/installed", b"P:" + b"x" * (10 << 20))
    write(root, "var/lib/rpm/rpmdb.sqlite", b"SQLite format 3\0" + GARBAGE)
    # Special files and directories where files should be.
    (root / "etc/fstab").unlink()
    os.mkfifo(root / "etc/fstab")
    (root / "etc/cloud/cloud.cfg").unlink()
    link(root, "etc/cloud/cloud.cfg", "cloud.cfg")
    (root / "boot/grub/grub.cfg").unlink()
    write(root, "boot/grub/grub.cfg", "function f {\n" * 50_000 + "menuentry 'x' {\n" * 5000)
    write(root, "etc/shadow", GARBAGE, 0o640)
    write(root, "root/.ssh/authorized_keys", GARBAGE, 0o600)
    link(root, "home/loop/.ssh", "/home/loop/.ssh")
    link(root, "var/log/loop", "/var/log")
    return flat_ext4(root, base / "hostile.raw", size_mib=160)


@pytest.fixture(scope="module")
def inspected(hostile: GuestImage) -> tuple[OsFacts, int]:
    tracemalloc.start()
    try:
        found = inspect_os(hostile.path, audit=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(found.roots) == 1
    return found.roots[0], peak


def test_the_2_gib_os_release_is_refused_by_its_size(inspected: tuple[OsFacts, int]) -> None:
    facts, _ = inspected
    assert "/etc/os-release is 2 GiB, more than the 64 KiB an os-release file can be; not read" in facts.notes
    # The garbage fallback gave no distribution but its valid-looking lines, cleaned.
    assert "/usr/lib/os-release holds binary data (NUL bytes); only its text lines were read" in facts.notes
    dist = facts.distribution
    assert dist.id is None or "\x1b" not in dist.id
    assert all(ch.isprintable() for value in (dist.id, dist.version_id, dist.name) if value for ch in value)


def test_nothing_outside_the_guest_is_read(inspected: tuple[OsFacts, int], hostile: GuestImage) -> None:
    facts, _ = inspected
    assert HOST_MARKER not in json.dumps(facts.to_dict())
    assert HOST_MARKER.lower() not in json.dumps(facts.to_dict())
    assert facts.hostname is None
    # /sbin/init loops, systemd and busybox point outside: the architecture comes from /bin/sh.
    assert "/sbin/init: too many levels of symbolic links at /sbin/init" in facts.notes
    assert (facts.architecture, facts.architecture_source) == ("x86_64", "/bin/sh -> /usr/bin/dash")


def test_a_million_dpkg_stanzas_are_read_to_the_budget(inspected: tuple[OsFacts, int]) -> None:
    facts, peak = inspected
    [dpkg] = [db for db in facts.packages if db.format == "deb"]
    assert dpkg.truncated and dpkg.count == MAX_STANZAS
    assert dpkg.packages[-1].name == f"pkg{MAX_STANZAS - 1}"
    assert (
        f"/var/lib/dpkg/status holds more than {MAX_STANZAS} entries; only the first {MAX_STANZAS} were read"
        in (facts.notes)
    )
    # The apk database's only line is longer than any line read: no package, no memory spent on it.
    [apk] = [db for db in facts.packages if db.format == "apk"]
    assert apk.count == 0
    assert not [db for db in facts.packages if db.format == "rpm"]
    assert any(n.startswith("/var/lib/rpm/rpmdb.sqlite was not read: it cannot be") for n in facts.notes)
    # Memory: the 60 MiB database and the 10 MiB line were streamed; what is kept is the budget's
    # package list (tracemalloc's peak of the whole inspection, audit included).
    assert peak < 96 * (1 << 20), peak


def test_special_files_and_loops_are_notes(inspected: tuple[OsFacts, int]) -> None:
    facts, _ = inspected
    assert "/etc/fstab is a fifo, not a file; an fstab not read" in facts.notes
    assert facts.fstab == []
    assert any(n.startswith("/etc/cloud/cloud.cfg: too many levels of symbolic links") for n in facts.notes)
    assert facts.cloud_init.present and facts.cloud_init.datasources == [
        "NoCloud",
        "ConfigDrive",
        "OpenStack",
        "Ec2",
        "None",
    ]
    # 50 000 unclosed function blocks and 5000 entries: parsed within the entry budget, no default.
    assert facts.boot_default is None


def test_the_audit_of_the_hostile_guest(hostile: GuestImage) -> None:
    found = inspect_os(hostile.path, facts=False, audit=True).audit
    assert found is not None
    [root] = found.roots
    checks = {f.check for f in root.findings}
    # Garbage in shadow and authorized_keys holds no account and no key: nothing is made up.
    assert "root-password" not in checks and "user-passwords" not in checks
    assert "authorized-keys" not in checks
    assert HOST_MARKER not in json.dumps(found.to_dict())
    # /home/loop/.ssh is a link to itself: the check that looks there cannot finish, so the
    # audit is not clean whatever the other checks found.
    assert root.incomplete == ["authorized-keys"]
    assert not found.clean


def test_a_huge_sparse_package_database_is_not_copied(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, "etc/os-release", "ID=debian\n")
    (root / "var/lib/dpkg").mkdir(parents=True)
    with (root / "var/lib/dpkg/status").open("wb") as f:
        f.truncate(MAX_DATABASE + 1)
    image = flat_ext4(root, tmp_path / "sparse.raw", size_mib=16)
    [facts] = inspect_os(image.path).roots
    assert facts.packages == []
    assert "/var/lib/dpkg/status is 256 MiB, more than the 256 MiB a package database can be; not read" in (
        facts.notes
    )


def test_cli_on_the_hostile_guest_exits_cleanly(run_cli: RunCli, hostile: GuestImage) -> None:
    result = run_cli(["inspect", "--os", "--audit", str(hostile.path)])
    assert result.exit_code == 0, result.output
    assert "NOT complete: the authorized-keys check could not finish" in result.output
    strict = run_cli(["inspect", "--audit", "--strict", str(hostile.path)])
    assert strict.exit_code == 1
    assert "Traceback" not in result.output
    assert "note:" in result.output
    assert HOST_MARKER not in result.output
