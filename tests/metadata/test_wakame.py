"""The Wakame-vdc METADATA drive, read back with blkid, mtools and fsck.vfat."""

from __future__ import annotations

import os
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from tests.fixtures.tools import blkid, run, which

from imagewright.errors import ContextError, InvalidArgumentError, ProgramError
from imagewright.metadata import context
from imagewright.metadata.context import build_context_medium
from imagewright.metadata.fat import image_size_for, write_fat_image
from imagewright.metadata.instance import ExtraHost, InstanceDescription
from imagewright.metadata.layout import MediumFile, MediumLayout
from imagewright.metadata.wakame import WakameBuilder, mac_directory_name

MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null"}


def _mtools(*args: str) -> bytes:
    """Run an mtools command directly (not through imagewright) and return its stdout."""
    proc = subprocess.run(
        [which(args[0]), *args[1:]], capture_output=True, check=False, env={**os.environ, **MTOOLS_ENV}
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def mdir_tree(image: Path) -> set[str]:
    out = _mtools("mdir", "-/", "-b", "-i", str(image), "::/").decode()
    return {line.strip()[3:] for line in out.splitlines() if line.strip().startswith("::/")}


def mtype(image: Path, path: str) -> bytes:
    return _mtools("mtype", "-i", str(image), f"::/{path}")


@pytest.fixture
def wakame_instance(static_instance: InstanceDescription) -> InstanceDescription:
    return InstanceDescription(
        instance_id=static_instance.instance_id,
        hostname=static_instance.hostname,
        ssh_keys=static_instance.ssh_keys,
        user_data=static_instance.user_data,
        network=static_instance.network,
        mac=static_instance.mac,
        extra_hosts=(
            ExtraHost("db.internal", IPv4Address("192.0.2.20")),
            ExtraHost("Cache", IPv4Address("192.0.2.21")),
        ),
        image_id="wmi-debian12",
    )


def test_static_drive_holds_every_value(tmp_path: Path, wakame_instance: InstanceDescription) -> None:
    out = tmp_path / "metadata.img"
    report = build_context_medium("wakame", wakame_instance, out)
    assert report.label == "METADATA" and report.filesystem == "vfat"
    probe = blkid(out)
    assert probe["TYPE"] == "vfat"
    assert probe["LABEL"] == "METADATA"
    assert 8 * 2**20 <= out.stat().st_size <= 32 * 2**20
    # No partition table: the filesystem starts at byte 0 (a superfloppy).
    assert "PTTYPE" not in probe
    run("fsck.vfat", "-n", out)

    nic = "meta-data/network/interfaces/macs/52-54-00-ab-cd-ef"
    lines = [k.line for k in wakame_instance.ssh_keys]
    expected = {
        "meta-data/ami-id": "wmi-debian12",
        "meta-data/ami-launch-index": "0",
        "meta-data/hostname": "web1.example.com",
        "meta-data/local-hostname": "web1.example.com",
        "meta-data/instance-id": "i-0123456789abcdef0",
        "meta-data/mac": "52:54:00:ab:cd:ef",
        "meta-data/local-ipv4": "192.0.2.10",
        "meta-data/public-keys/0/openssh-key": lines[0],
        "meta-data/public-keys/1/openssh-key": lines[1],
        f"{nic}/mac": "52:54:00:ab:cd:ef",
        f"{nic}/local-hostname": "web1.example.com",
        f"{nic}/local-ipv4s": "192.0.2.10",
        f"{nic}/x-netmask": "255.255.255.0",
        f"{nic}/x-network": "192.0.2.0",
        f"{nic}/x-broadcast": "192.0.2.255",
        f"{nic}/x-gateway": "192.0.2.1",
        f"{nic}/x-metric": "0",
        f"{nic}/x-dns": "192.0.2.53\n198.51.100.53",
        "meta-data/extra-hosts/db.internal": "192.0.2.20",
        "meta-data/extra-hosts/Cache": "192.0.2.21",
    }
    tree = mdir_tree(out)
    assert set(expected) | {"user-data"} == {p for p in tree if not p.endswith("/")}
    for path, value in expected.items():
        assert mtype(out, path) == (value + "\n").encode(), path
    assert mtype(out, "user-data") == wakame_instance.user_data
    assert set(report.files) == set(expected) | {"user-data"}


def test_dhcp_drive_has_only_the_mac_for_the_nic(tmp_path: Path, dhcp_instance: InstanceDescription) -> None:
    out = tmp_path / "metadata.img"
    build_context_medium("wakame", dhcp_instance, out)
    tree = mdir_tree(out)
    nic = "meta-data/network/interfaces/macs/52-54-00-12-34-56/"
    assert {p for p in tree if p.startswith(nic)} == {nic, nic + "mac", nic + "local-hostname"}
    assert "meta-data/local-ipv4" not in tree
    assert "user-data" not in tree
    assert not any(p.startswith("meta-data/extra-hosts") for p in tree)
    assert mtype(out, nic + "mac") == b"52:54:00:12:34:56\n"


def test_no_keys_leaves_an_empty_public_keys_directory(tmp_path: Path) -> None:
    out = tmp_path / "metadata.img"
    build_context_medium("wakame", InstanceDescription("i-1", "h"), out)
    tree = mdir_tree(out)
    assert "meta-data/public-keys/" in tree
    assert not any(p.startswith("meta-data/public-keys/") and p != "meta-data/public-keys/" for p in tree)


def test_mac_directory_spelling() -> None:
    assert mac_directory_name("52:54:00:AB:cd:EF") == "52-54-00-ab-cd-ef"


def test_large_user_data_grows_the_image(tmp_path: Path) -> None:
    user_data = bytes(range(256)) * (15 * 4096)  # 15 MiB, binary
    layout = WakameBuilder().layout(InstanceDescription("i-1", "h", user_data=user_data))
    assert image_size_for(layout) > 16 * 2**20
    out = tmp_path / "big.img"
    write_fat_image(layout, out)
    assert mtype(out, "user-data") == user_data
    run("fsck.vfat", "-n", out)


def test_wakame_refuses_an_init_script(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="only carried by the opennebula medium"):
        build_context_medium("wakame", InstanceDescription("i-1", "h", init_script=b"x"), tmp_path / "m.img")
    assert list(tmp_path.iterdir()) == []


def test_fat_writer_refuses_iso_layouts(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="not a FAT medium"):
        write_fat_image(MediumLayout("t", "L", "iso9660", (MediumFile("a", b""),)), tmp_path / "x.img")


def test_a_full_fat_image_is_an_error_from_mtools(tmp_path: Path) -> None:
    layout = MediumLayout("t", "METADATA", "vfat", (MediumFile("big", b"x" * (3 * 2**20)),))
    with pytest.raises(ProgramError, match="mcopy failed while copying files into the FAT filesystem"):
        write_fat_image(layout, tmp_path / "small.img", size=2 * 2**20)


def test_a_failed_build_leaves_no_output_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class BadLabelBuilder:
        kind = "bad-label"
        label = "METADATA"
        filesystem = "vfat"
        description = "a FAT medium whose label mformat cannot write"

        def layout(self, instance: InstanceDescription) -> MediumLayout:
            # The label is too long for FAT: mformat is never reached, after the temporary exists.
            return MediumLayout(self.kind, "LABEL-TOO-LONG", "vfat", (MediumFile("a", b"a"),))

    monkeypatch.setitem(context.BUILDERS, "bad-label", BadLabelBuilder())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="FAT volume label"):
        build_context_medium("bad-label", InstanceDescription("i-1", "h"), tmp_path / "m.img")
    assert list(tmp_path.iterdir()) == []
