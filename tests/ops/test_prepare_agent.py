"""prepare --agent: the script and its boot hook for systemd, rc.local, SysV and busybox guests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.guest.images import (
    GuestImage,
    cat,
    e2fsck_clean,
    flat_ext4,
    listing,
    sha256_file,
    stat_of,
    sysprep_tree,
    write,
)

from imagewright import agent
from imagewright.errors import ContextError
from imagewright.ops.prepare import PrepareOptions, prepare

pytestmark = pytest.mark.integration

PLACEHOLDER = b"#!/bin/sh\necho 'imagewright-agent: ready instance-id=test hostname=test source=none'\n"


def guest(tmp_path: Path, init: str) -> GuestImage:
    return flat_ext4(sysprep_tree(tmp_path / f"tree-{init}", init=init), tmp_path / f"{init}.raw")


def only_agent(image: GuestImage, script: bytes | None = None) -> list[str]:
    """Run just the agent operation; the paths it changed."""
    report = prepare(
        image.path, operations=["agent"], options=PrepareOptions(agent=True, agent_script=script)
    )
    assert [op.name for op in report.operations] == ["agent"]
    return [c.path for op in report.operations for c in op.changes]


def assert_script_installed(image: GuestImage, script: bytes) -> None:
    assert cat(image, agent.AGENT_INSTALL_PATH) == script
    assert listing(image, "/usr/local/sbin")["imagewright-agent"][:3] == (0o100755, 0, 0)


def test_systemd_guest_gets_an_enabled_unit(tmp_path: Path) -> None:
    image = guest(tmp_path, "systemd")
    assert only_agent(image) == [
        "/usr/local/sbin",
        agent.AGENT_INSTALL_PATH,
        agent.SYSTEMD_UNIT_PATH,
        agent.SYSTEMD_WANTS_LINK,
    ]
    assert_script_installed(image, agent.agent_script())
    assert cat(image, agent.SYSTEMD_UNIT_PATH) == agent.systemd_unit()
    assert listing(image, "/etc/systemd/system")["imagewright-agent.service"][:3] == (0o100644, 0, 0)
    link = stat_of(image, agent.SYSTEMD_WANTS_LINK)
    assert "Type: symlink" in link
    assert f"{agent.SYSTEMD_UNIT_PATH}" in link
    assert "rc.local" not in listing(image, "/etc")
    assert e2fsck_clean(image)[0]
    assert only_agent(image) == []  # already installed: nothing to do


def test_placeholder_script_can_stand_in(tmp_path: Path) -> None:
    image = guest(tmp_path, "systemd")
    only_agent(image, PLACEHOLDER)
    assert_script_installed(image, PLACEHOLDER)


def test_rc_local_guest_gets_the_call_before_exit_0(tmp_path: Path) -> None:
    image = guest(tmp_path, "sysvinit-rclocal")
    changed = only_agent(image)
    assert "/etc/rc.local" in changed
    assert cat(image, "/etc/rc.local").decode() == (
        f"#!/bin/sh -e\n#\n# rc.local\n\necho hello\n\n{agent.RC_LOCAL_LINE}\nexit 0\n"
    )
    assert listing(image, "/etc")["rc.local"][0] == 0o100755
    assert_script_installed(image, agent.agent_script())
    assert "systemd" not in listing(image, "/etc")
    assert only_agent(image) == []


def test_non_executable_rc_local_is_made_executable(tmp_path: Path) -> None:
    tree = sysprep_tree(tmp_path / "tree", init="sysvinit-rclocal")
    (tree / "etc/rc.local").chmod(0o644)
    image = flat_ext4(tree, tmp_path / "rc.raw")
    only_agent(image)
    assert listing(image, "/etc")["rc.local"][0] == 0o100755
    assert agent.RC_LOCAL_LINE.encode() in cat(image, "/etc/rc.local")


def test_rc_local_is_created_when_rcs_runs_it(tmp_path: Path) -> None:
    tree = sysprep_tree(tmp_path / "tree", init="busybox")
    write(tree, "etc/init.d/rcS", "#!/bin/sh\nmount -a\n[ -x /etc/rc.local ] && /etc/rc.local\n", 0o755)
    image = flat_ext4(tree, tmp_path / "bb.raw")
    changed = only_agent(image)
    assert "/etc/rc.local" in changed
    assert cat(image, "/etc/rc.local").decode() == (
        f"#!/bin/sh\n# rc.local: run at the end of boot.\n\n{agent.RC_LOCAL_LINE}\n\nexit 0\n"
    )
    assert listing(image, "/etc")["rc.local"][0] == 0o100755


def test_sysv_guest_gets_an_init_script_and_rcs_link(tmp_path: Path) -> None:
    image = guest(tmp_path, "sysvinit")
    only_agent(image)
    assert cat(image, agent.INIT_SCRIPT_PATH) == agent.init_script()
    assert listing(image, "/etc/init.d")["imagewright-agent"][0] == 0o100755
    assert 'Fast link dest: "../init.d/imagewright-agent"' in stat_of(
        image, "/etc/rcS.d/S99imagewright-agent"
    )
    assert e2fsck_clean(image)[0]


def test_busybox_rcs_running_s_scripts_gets_an_s99_script(tmp_path: Path) -> None:
    tree = sysprep_tree(tmp_path / "tree", init="busybox")
    write(tree, "etc/init.d/rcS", '#!/bin/sh\nfor s in /etc/init.d/S??*; do "$s" start; done\n', 0o755)
    image = flat_ext4(tree, tmp_path / "bb.raw")
    only_agent(image)
    assert cat(image, "/etc/init.d/S99imagewright-agent") == agent.init_script()
    assert listing(image, "/etc/init.d")["S99imagewright-agent"][0] == 0o100755


def test_plain_busybox_gets_an_inittab_line(tmp_path: Path) -> None:
    image = guest(tmp_path, "busybox")
    only_agent(image)
    assert cat(image, "/etc/inittab").decode() == (
        f"::sysinit:/etc/init.d/rcS\n::sysinit:{agent.AGENT_INSTALL_PATH}\n"
        "::respawn:/sbin/getty 115200 ttyS0\n"
    )
    assert only_agent(image) == []


def test_unknown_init_is_refused_and_the_image_untouched(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree, "etc/hostname", "mystery\n")
    image = flat_ext4(tree, tmp_path / "mystery.raw", size_mib=8)
    before = sha256_file(image.path)
    with pytest.raises(ContextError, match="cannot tell how this guest starts programs at boot"):
        prepare(image.path, options=PrepareOptions(agent=True))
    assert sha256_file(image.path) == before


def test_dry_run_lists_the_agent_files(tmp_path: Path) -> None:
    image = guest(tmp_path, "systemd")
    before = sha256_file(image.path)
    report = prepare(image.path, dry_run=True, operations=["-tmp"], options=PrepareOptions(agent=True))
    agent_changes = [c for op in report.operations if op.name == "agent" for c in op.changes]
    assert [c.path for c in agent_changes][-3:] == [
        agent.AGENT_INSTALL_PATH,
        agent.SYSTEMD_UNIT_PATH,
        agent.SYSTEMD_WANTS_LINK,
    ]
    assert all(c.describe(True).startswith("would ") for c in agent_changes)
    assert sha256_file(image.path) == before
