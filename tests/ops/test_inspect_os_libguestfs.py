"""inspect --os next to libguestfs: the fields ``virt-inspector`` also reports agree on the same
images, and an XFS root (read through the libguestfs backend) gives the facts its ext4 twin
gives. Each libguestfs run boots an appliance (minutes under TCG on a busy machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.guest.images import GuestImage, flat_ext4, partitioned_ext4
from tests.guest.test_libguestfs import xfs_disk
from tests.ops.os_trees import alpine_tree, debian_tree, virt_inspector

from imagewright.ops.inspect_os import inspect_os
from imagewright.ops.inspect_os.model import OsFacts
from imagewright.programs.guestfish import environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def libguestfs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in environment().items():
        monkeypatch.setenv(key, value)


def ours(image: Path) -> OsFacts:
    [facts] = inspect_os(image).roots
    return facts


def agree(facts: OsFacts, theirs: dict[str, object]) -> None:
    """The fields both report agree (virt-inspector leaves out what it could not tell)."""
    dist = facts.distribution
    assert theirs["distro"] == dist.os_distro
    assert theirs["major_version"] == (dist.version_id or "").split(".")[0]
    assert theirs["arch"] in (facts.architecture, None)
    assert theirs["hostname"] == facts.hostname
    [database] = facts.packages
    assert theirs["package_format"] == database.format
    assert theirs["applications"] == sorted(p.name for p in database.packages)


def test_debian_agrees_with_virt_inspector(tmp_path: Path) -> None:
    image = partitioned_ext4(
        debian_tree(tmp_path / "root"), tmp_path / "debian.raw", table="gpt", size_mib=64
    )
    theirs = virt_inspector(image.path, "raw")
    assert theirs["root"] == "/dev/sda2"
    facts = ours(image.path)
    agree(facts, theirs)
    assert theirs["arch"] == "x86_64"
    assert len(facts.packages[0].packages) > 100


def test_alpine_agrees_with_virt_inspector(tmp_path: Path) -> None:
    image: GuestImage = flat_ext4(alpine_tree(tmp_path / "root"), tmp_path / "alpine.raw")
    theirs = virt_inspector(image.path, "raw")
    facts = ours(image.path)
    agree(facts, theirs)
    assert theirs["minor_version"] == "19"


def test_an_xfs_root_through_libguestfs_gives_the_facts_of_its_ext4_twin(tmp_path: Path) -> None:
    tree = debian_tree(tmp_path / "root")
    ext4 = ours(partitioned_ext4(tree, tmp_path / "ext4.raw", table="gpt", size_mib=64).path)
    # The tree written by mkfs.xfs itself (no appliance boot to fill it); read through libguestfs.
    xfs = ours(xfs_disk(tmp_path, tree, fill="mkfs"))
    assert "(xfs)" in xfs.filesystem
    first, second = ext4.to_dict(), xfs.to_dict()
    for facts in (first, second):
        facts.pop("filesystem")
        facts.pop("fstab")  # LABEL=root names the ext4 twin's filesystem, not the xfs one
    assert first == second
