"""The agent against real media from imagewright's builders, under busybox sh, dash and bash.

For each kind (NoCloud, config drive, OpenNebula, Wakame-vdc) the medium is built by
``imagewright.metadata`` and unpacked (xorriso / mcopy); the agent reads it in a sandbox root in
dry-run mode. Checked: the ready line, /etc/hostname, /etc/hosts, authorized_keys and its
modes, resolv.conf, the network commands it would run, user-data run once per instance-id.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from tests.agent.media import medium_dir
from tests.agent.sandbox import SHELLS, Sandbox

from imagewright.metadata.instance import ExtraHost, InstanceDescription, SshPublicKey
from imagewright.metadata.network import parse_network_spec

KINDS = ("nocloud", "configdrive", "opennebula", "wakame")
INSTANCE_MAC = "52:54:00:ab:cd:ef"

USER_DATA = b"""#!/bin/sh
echo "user-data ran, uid $(id -u)"
echo run >> "$IMAGEWRIGHT_AGENT_ROOT/tmp/user-data-marker"
exit 3
"""


def static_instance(
    keys: tuple[SshPublicKey, ...], instance_id: str = "i-0123456789abcdef0"
) -> InstanceDescription:
    return InstanceDescription(
        instance_id=instance_id,
        hostname="web1.example.com",
        ssh_keys=keys,
        user_data=USER_DATA,
        network=parse_network_spec("static:192.0.2.10/24,192.0.2.1,192.0.2.53,198.51.100.53"),
        mac=INSTANCE_MAC,
    )


def dhcp_instance(keys: tuple[SshPublicKey, ...], kind: str) -> InstanceDescription:
    extra = (ExtraHost("db.internal", IPv4Address("192.0.2.20")),) if kind == "wakame" else ()
    return InstanceDescription(
        instance_id="iid-local01",
        hostname="node",
        ssh_keys=keys[:1],
        user_data=None,
        extra_hosts=extra,
    )


def guest_with_two_nics(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """eth0 has QEMU's default MAC, eth1 the instance's: MAC matching must pick eth1."""
    box = make_sandbox()
    box.add_nic("eth1", INSTANCE_MAC, 3)
    return box


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("kind", KINDS)
def test_static_instance_from_builder_medium(
    kind: str,
    shell: str,
    make_sandbox: Callable[..., Sandbox],
    ssh_keys: tuple[SshPublicKey, ...],
    tmp_path: Path,
) -> None:
    box = guest_with_two_nics(make_sandbox)
    media = medium_dir(kind, static_instance(ssh_keys), tmp_path)

    run = box.run(shell, media=media, kind=kind)

    assert run.returncode == 0, run.stderr
    assert run.ready_lines() == [
        f"imagewright-agent: ready instance-id=i-0123456789abcdef0 hostname=web1 source={kind}"
    ]
    assert run.lines[-1].startswith("imagewright-agent: ready ")
    assert box.read("etc/hostname") == "web1\n"
    hosts = box.read("etc/hosts").splitlines()
    assert "127.0.1.1\tweb1.example.com web1" in hosts
    assert "127.0.0.1\tlocalhost" in hosts and "::1\tlocalhost ip6-localhost" in hosts
    assert sum(1 for line in hosts if line.startswith("127.0.1.1")) == 1

    auth = box.root / "root/.ssh/authorized_keys"
    assert auth.read_text().splitlines() == [key.line for key in ssh_keys]
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert stat.S_IMODE(auth.parent.stat().st_mode) == 0o700

    resolv = box.read("etc/resolv.conf").splitlines()
    assert [line for line in resolv if line.startswith("nameserver")] == [
        "nameserver 192.0.2.53",
        "nameserver 198.51.100.53",
    ]
    assert run.dry_run == [
        "hostname web1",
        "ip link set dev eth1 up",
        "ip -4 addr flush dev eth1",
        "ip addr add 192.0.2.10/24 dev eth1",
        "ip route replace default via 192.0.2.1 dev eth1",
    ]

    state = box.state("i-0123456789abcdef0")
    assert box.read("tmp/user-data-marker") == "run\n"
    assert (state / "user-data").read_bytes() == USER_DATA
    assert (state / "user-data.log").read_text() == "user-data ran, uid 0\n"
    assert (state / "user-data.status").read_text() == "3\n"
    assert "user-data| user-data ran, uid 0" in run.messages
    assert "user-data: exit status 3" in run.messages


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("kind", KINDS)
def test_second_boot_changes_nothing_and_new_instance_reapplies(
    kind: str,
    shell: str,
    make_sandbox: Callable[..., Sandbox],
    ssh_keys: tuple[SshPublicKey, ...],
    tmp_path: Path,
) -> None:
    box = guest_with_two_nics(make_sandbox)
    first = medium_dir(kind, static_instance(ssh_keys), tmp_path)
    assert box.run(shell, media=first, kind=kind).returncode == 0
    before = box.snapshot()

    again = box.run(shell, media=first, kind=kind)

    assert again.returncode == 0
    assert again.ready.instance_id == "i-0123456789abcdef0"
    assert box.snapshot() == before  # content, modes and mtimes: no file was rewritten
    assert box.read("tmp/user-data-marker") == "run\n"
    assert not any(m.startswith("user-data: running") for m in again.messages)
    assert "instance i-0123456789abcdef0: known; per-instance steps were done before" in again.messages

    # the operator changed authorized_keys by hand: the same instance leaves it alone
    auth = box.root / "root/.ssh/authorized_keys"
    auth.write_text(ssh_keys[0].line + "\n")
    box.run(shell, media=first, kind=kind)
    assert auth.read_text() == ssh_keys[0].line + "\n"

    second = medium_dir(kind, static_instance(ssh_keys, "i-0fedcba9876543210"), tmp_path)
    clone = box.run(shell, media=second, kind=kind)

    assert clone.ready.instance_id == "i-0fedcba9876543210"
    assert "instance i-0fedcba9876543210: new (previous instance: i-0123456789abcdef0)" in clone.messages
    assert box.read("tmp/user-data-marker") == "run\nrun\n"
    assert auth.read_text().splitlines() == [key.line for key in ssh_keys]
    assert box.read("var/lib/imagewright-agent/.last-instance-id") == "i-0fedcba9876543210\n"


@pytest.mark.parametrize("kind", KINDS)
def test_dhcp_instance_runs_udhcpc_with_busybox(
    kind: str,
    make_sandbox: Callable[..., Sandbox],
    ssh_keys: tuple[SshPublicKey, ...],
    tmp_path: Path,
) -> None:
    box = make_sandbox()
    media = medium_dir(kind, dhcp_instance(ssh_keys, kind), tmp_path)

    run = box.run("busybox", media=media, kind=kind)

    assert run.ready_lines() == [
        f"imagewright-agent: ready instance-id=iid-local01 hostname=node source={kind}"
    ]
    assert box.read("etc/hostname") == "node\n"
    assert "127.0.1.1\tnode" in box.read("etc/hosts").splitlines()
    dhcp = [c for c in run.dry_run if c.startswith("udhcpc ")]
    assert len(dhcp) == 1 and dhcp[0].startswith("udhcpc -i eth0 -n -q ")
    assert not any(c.startswith("ip addr add") for c in run.dry_run)
    assert not (box.root / "etc/resolv.conf").exists()
    # NoCloud's builder writes a #cloud-config user-data (keys for cloud-init): never run
    assert not any(m.startswith("user-data: running") for m in run.messages)
    assert (box.root / "root/.ssh/authorized_keys").read_text() == ssh_keys[0].line + "\n"
    if kind == "wakame":
        hosts = box.read("etc/hosts").splitlines()
        assert hosts[-3:] == [
            "# BEGIN imagewright-agent extra-hosts",
            "192.0.2.20\tdb.internal",
            "# END imagewright-agent extra-hosts",
        ]


@pytest.mark.parametrize("shell", SHELLS)
def test_keys_go_to_the_configured_default_user(
    shell: str, make_sandbox: Callable[..., Sandbox], ssh_keys: tuple[SshPublicKey, ...], tmp_path: Path
) -> None:
    box = make_sandbox(conf="DEFAULT_USER=debian\nHOST_KEYS=missing\n")
    media = medium_dir("nocloud", static_instance(ssh_keys), tmp_path)

    run = box.run(shell, media=media, kind="nocloud")

    auth = box.root / "home/debian/.ssh/authorized_keys"
    assert auth.read_text().splitlines() == [key.line for key in ssh_keys]
    assert (auth.stat().st_uid, auth.stat().st_gid) == (1000, 1000)
    assert (auth.parent.stat().st_uid, stat.S_IMODE(auth.parent.stat().st_mode)) == (1000, 0o700)
    assert not (box.root / "root/.ssh").exists()
    assert run.ready.source == "nocloud"


@pytest.mark.parametrize("shell", SHELLS)
def test_media_kind_is_guessed_and_discovery_falls_through_to_none(
    shell: str, make_sandbox: Callable[..., Sandbox], ssh_keys: tuple[SshPublicKey, ...], tmp_path: Path
) -> None:
    box = make_sandbox()
    media = medium_dir("configdrive", static_instance(ssh_keys), tmp_path)
    assert box.run(shell, media=media).ready.source == "configdrive"

    empty = tmp_path / "empty"
    empty.mkdir()
    fresh = make_sandbox()
    run = fresh.run(shell, media=empty)
    assert run.returncode == 0
    assert run.ready_lines() == ["imagewright-agent: ready instance-id=none hostname=template source=none"]
    assert not (fresh.root / "var/lib/imagewright-agent/.last-instance-id").exists()
