"""The text edits prepare makes (network files, rc.local, shadow) and its log-name rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagewright.ops.prepare.operations.agent import add_to_rc_local
from imagewright.ops.prepare.operations.logfiles import ROTATED
from imagewright.ops.prepare.operations.modules import listed
from imagewright.ops.prepare.operations.net_hwaddr import strip_ifcfg, strip_keyfile, strip_netplan
from imagewright.ops.prepare.operations.root_password import lock

MAC = "52:54:00:aa:bb:cc"


def test_ifcfg_lines_with_addresses_go_and_the_rest_stays() -> None:
    text = (
        f'# comment HWADDR=x\nDEVICE=eth0\nHWADDR={MAC}\n  MACADDR="{MAC}"\nexport LLADDR={MAC}\nONBOOT=yes'
    )
    edited, removed = strip_ifcfg(text)
    assert edited == "# comment HWADDR=x\nDEVICE=eth0\nONBOOT=yes"
    assert removed == [f"HWADDR={MAC}", f'MACADDR="{MAC}"', f"export LLADDR={MAC}"]


def test_keyfile_keeps_keyword_clones() -> None:
    text = (
        f"[ethernet]\nmac-address={MAC}\ncloned-mac-address=random\n"
        f"cloned-mac-address={MAC.upper()}\nmtu=1500\n"
    )
    edited, removed = strip_keyfile(text)
    assert edited == "[ethernet]\ncloned-mac-address=random\nmtu=1500\n"
    assert len(removed) == 2


def test_netplan_match_only_mac_drops_match_and_set_name() -> None:
    text = (
        "# generated\n"
        "network:\n"
        "  version: 2\n"
        "  ethernets:\n"
        "    nic0:\n"
        "      set-name: eth0\n"
        "      match:\n"
        f"        macaddress: {MAC}\n"
        "\n"
        "      dhcp4: true\n"
        "    nic1:\n"
        "      match:\n"
        f"        macaddress: '{MAC}'\n"
        "        driver: virtio_net\n"
        "      set-name: eth1\n"
        f"      macaddress: {MAC}\n"
    )
    edited, removed = strip_netplan(text)
    assert edited == (
        "# generated\n"
        "network:\n"
        "  version: 2\n"
        "  ethernets:\n"
        "    nic0:\n"
        "\n"
        "      dhcp4: true\n"
        "    nic1:\n"
        "      match:\n"
        "        driver: virtio_net\n"
        "      set-name: eth1\n"
    )
    assert removed == [f"macaddress: {MAC}", f"macaddress: '{MAC}'", f"macaddress: {MAC}", "set-name: eth0"]


def test_netplan_flow_style_match() -> None:
    text = f"network:\n  ethernets:\n    e:\n      match: {{macaddress: {MAC}}}\n      set-name: e\n"
    edited, _ = strip_netplan(text)
    assert edited == "network:\n  ethernets:\n    e:\n"
    text = f'network:\n  ethernets:\n    e:\n      match: {{name: "en*", macaddress: "{MAC}"}}\n'
    edited, _ = strip_netplan(text)
    assert edited == 'network:\n  ethernets:\n    e:\n      match: {name: "en*"}\n'


def test_netplan_without_macs_is_unchanged() -> None:
    text = "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n      match:\n        name: eth0\n"
    assert strip_netplan(text) == (text, [])
    # Found by hypothesis: a match holding only a comment is not ours to remove.
    assert strip_netplan("      match:\n# comment") == ("      match:\n# comment", [])


_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "network:",
                "  ethernets:",
                "    eth0:",
                "      match:",
                f"        macaddress: {MAC}",
                "        name: en*",
                "      set-name: eth0",
                f"HWADDR={MAC}",
                f"mac-address={MAC}",
                "# comment",
                "",
                f"match: {{macaddress: {MAC}}}",
                "  match: {",
            ]
        ),
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
    ),
    max_size=25,
)


@settings(max_examples=400, deadline=None)
@given(lines=_LINES)
def test_edits_never_fail_and_leave_no_address_line(lines: list[str]) -> None:
    text = "\n".join(lines)
    for strip, leftover in (
        (strip_ifcfg, re.compile(r"^\s*(?:export\s+)?(?:HWADDR|MACADDR|LLADDR)\s*=")),
        (strip_keyfile, re.compile(rf"^\s*(?:cloned-)?mac-address\s*=\s*{MAC}\s*$")),
        (strip_netplan, re.compile(r"^\s*macaddress\s*:")),
    ):
        edited, removed = strip(text)
        assert not any(leftover.match(line) for line in edited.splitlines())
        if not removed:
            assert edited == text
        else:
            assert len(edited) < len(text)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("#!/bin/sh -e\necho hi\nexit 0\n", "#!/bin/sh -e\necho hi\nAGENT\nexit 0\n"),
        ("#!/bin/sh\nexit 0\n\n# trailing comment\n\n", "#!/bin/sh\nAGENT\nexit 0\n\n# trailing comment\n\n"),
        ("#!/bin/sh\necho no exit", "#!/bin/sh\necho no exit\nAGENT\n"),
        ("#!/bin/sh\nexit 0 # done\n", "#!/bin/sh\nAGENT\nexit 0 # done\n"),
        ("#!/bin/sh\nexit 1\n", "#!/bin/sh\nexit 1\nAGENT\n"),
        ("", "AGENT\n"),
    ],
)
def test_rc_local_line_goes_before_the_final_exit_0(before: str, after: str) -> None:
    assert add_to_rc_local(before, "AGENT") == after


@pytest.mark.parametrize(
    ("name", "rotated"),
    [
        ("syslog", False),
        ("syslog.1", True),
        ("syslog.2.gz", True),
        ("auth.log.10.xz", True),
        ("messages-20240101", True),
        ("messages-2024010112.gz", True),
        ("dmesg.old", True),
        ("system@abc.journal~", True),
        ("user-1000.journal", True),
        ("wtmp", False),
        ("Xorg.0.log", False),
        ("cloud-init.log", False),
        ("dpkg.log", False),
    ],
)
def test_rotated_log_names(name: str, rotated: bool) -> None:
    assert bool(ROTATED.search(name)) is rotated


def test_shadow_lock_keeps_everything_else() -> None:
    text = "daemon:*:1::::::\nroot:$y$j9T$abc:19000:0:99999:7:::\nbob:$6$x:1::::::\n"
    locked, detail = lock(text)
    assert locked == "daemon:*:1::::::\nroot:!$y$j9T$abc:19000:0:99999:7:::\nbob:$6$x:1::::::\n"
    assert detail
    assert lock(locked) == (locked, "")
    assert lock("root:*:1::::::\n") == ("root:*:1::::::\n", "")
    assert lock("no root here\n") == ("no root here\n", "")


def test_modules_listed_ignores_comments_and_options() -> None:
    assert listed("# acpiphp\nloop max_loop=8\n  virtio-net # nic\n") == {"loop", "virtio_net"}
