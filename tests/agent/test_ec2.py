"""The agent's EC2 source against the test metadata responder on a localhost port.

busybox sh runs with busybox applets only: the IMDSv2 PUT goes through ``nc`` (busybox wget
cannot PUT) and the GETs through busybox ``wget``. dash and bash run with curl. The responder
logs every request with its token header, which tells IMDSv2 from IMDSv1.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from tests.agent.sandbox import SHELLS, Sandbox
from tests.fixtures.imds_responder import ImdsConfig, ImdsServer

from imagewright.metadata.instance import SshPublicKey

USER_DATA = '#!/bin/sh\necho "ec2 user-data"\ntouch "$IMAGEWRIGHT_AGENT_ROOT/tmp/ec2-marker"\n'
FIB_TRIE_WITH_ADDRESS = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 169.254.0.0/16 2 0 2
        |-- 169.254.0.15
           /32 host LOCAL
Local:
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.1
        /32 host LOCAL
"""
FIB_TRIE_LOOPBACK_ONLY = """Local:
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.1
        /32 host LOCAL
"""


def config(keys: tuple[SshPublicKey, ...], mode: str) -> ImdsConfig:
    return ImdsConfig(
        instance_id="i-0ec2ec2ec2ec2ec2e",
        local_hostname="ip-169-254-0-15.ec2.internal",
        public_keys=[("alice", keys[0].line), ("bob", keys[1].line)],
        user_data=USER_DATA,
        token_mode=mode,
    )


def check_applied(box: Sandbox, keys: tuple[SshPublicKey, ...], run_stdout: str) -> None:
    assert box.read("etc/hostname") == "ip-169-254-0-15\n"
    assert "127.0.1.1\tip-169-254-0-15.ec2.internal ip-169-254-0-15" in box.read("etc/hosts").splitlines()
    assert box.read("root/.ssh/authorized_keys").splitlines() == [k.line for k in keys]
    assert (box.root / "tmp/ec2-marker").exists(), run_stdout
    assert (box.state("i-0ec2ec2ec2ec2ec2e") / "user-data.log").read_text() == "ec2 user-data\n"


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("mode", ["optional", "required"])
def test_imdsv2_token_is_used(
    shell: str, mode: str, sandbox: Sandbox, ssh_keys: tuple[SshPublicKey, ...]
) -> None:
    imds = config(ssh_keys, mode)
    with ImdsServer(imds) as server:
        run = sandbox.run(shell, imds=server.url)
        requests = list(server.requests)

    assert run.ready_lines() == [
        "imagewright-agent: ready instance-id=i-0ec2ec2ec2ec2ec2e hostname=ip-169-254-0-15 source=ec2"
    ]
    assert requests[0] == {
        "method": "PUT",
        "path": "/latest/api/token",
        "token": None,
        "ttl": "21600",
        "status": 200,
    }
    gets = requests[1:]
    assert {r["path"] for r in gets} >= {
        "/latest/meta-data/instance-id",
        "/latest/meta-data/local-hostname",
        "/latest/meta-data/public-keys/",
        "/latest/meta-data/public-keys/0/openssh-key",
        "/latest/meta-data/public-keys/1/openssh-key",
        "/latest/user-data",
    }
    assert all(r["method"] == "GET" and r["token"] == imds.token and r["status"] == 200 for r in gets)
    assert "IMDSv2 session token obtained" in run.messages
    check_applied(sandbox, ssh_keys, run.stdout)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("mode", ["404", "403", "405", "silent"])
def test_falls_back_to_imdsv1(
    shell: str, mode: str, sandbox: Sandbox, ssh_keys: tuple[SshPublicKey, ...]
) -> None:
    with ImdsServer(config(ssh_keys, mode)) as server:
        run = sandbox.run(shell, imds=server.url)
        requests = list(server.requests)

    assert run.ready.source == "ec2"
    assert run.ready.instance_id == "i-0ec2ec2ec2ec2ec2e"
    assert requests[0]["method"] == "PUT"
    assert requests[0]["status"] == (None if mode == "silent" else int(mode))
    assert all(r["token"] is None for r in requests[1:])
    assert {r["status"] for r in requests[1:]} == {200}
    expected = (
        "no answer to the IMDSv2 token request; trying IMDSv1"
        if mode == "silent"
        else f"IMDSv2 not offered (HTTP {mode} to the token request); using IMDSv1"
    )
    assert expected in run.messages
    check_applied(sandbox, ssh_keys, run.stdout)


@pytest.mark.parametrize("shell", SHELLS)
def test_dhcp_first_only_when_no_interface_has_an_address(
    shell: str, make_sandbox: Callable[..., Sandbox], ssh_keys: tuple[SshPublicKey, ...]
) -> None:
    with ImdsServer(config(ssh_keys, "optional")) as server:
        bare = make_sandbox()
        bare.write("proc/net/fib_trie", FIB_TRIE_LOOPBACK_ONLY)
        first = bare.run(shell, imds=server.url)
        configured = make_sandbox()
        configured.write("proc/net/fib_trie", FIB_TRIE_WITH_ADDRESS)
        second = configured.run(shell, imds=server.url)

    assert first.ready.source == second.ready.source == "ec2"
    if shell == "busybox":
        # udhcpc is a busybox applet; it runs once, before the metadata service is asked
        assert [c for c in first.dry_run if c.startswith("udhcpc")] == [
            c for c in first.dry_run if c.startswith("udhcpc -i eth0 -n -q -t 4 -T 2 -s ")
        ]
        assert len([c for c in first.dry_run if c.startswith("udhcpc")]) == 1
        dhcp_at = first.messages.index("network: DHCP on eth0")
        token_at = first.messages.index("IMDSv2 session token obtained")
        assert dhcp_at < token_at
    assert "network: an interface already has an address" in second.messages
    assert not any(c.startswith(("udhcpc", "dhclient", "dhcpcd")) for c in second.dry_run)


@pytest.mark.parametrize("shell", SHELLS)
def test_required_mode_without_a_token_gives_up_cleanly(
    shell: str, sandbox: Sandbox, ssh_keys: tuple[SshPublicKey, ...]
) -> None:
    # a service that wants tokens but hands out one the agent cannot put in a header
    imds = config(ssh_keys, "required")
    imds.token = "not a usable token \r\n"  # the agent refuses a token with blanks
    with ImdsServer(imds) as server:
        run = sandbox.run(shell, imds=server.url)

    assert run.returncode == 0
    assert "IMDSv2 answered with an unusable token; using IMDSv1" in run.messages
    assert "the metadata service requires an IMDSv2 token and none could be obtained" in run.messages
    assert run.ready_lines() == ["imagewright-agent: ready instance-id=none hostname=template source=none"]


@pytest.mark.parametrize("shell", SHELLS)
def test_no_metadata_service_at_all(shell: str, sandbox: Sandbox) -> None:
    started = time.monotonic()
    run = sandbox.run(shell, imds="http://127.0.0.1:9")
    elapsed = time.monotonic() - started

    assert run.returncode == 0
    assert run.ready_lines() == ["imagewright-agent: ready instance-id=none hostname=template source=none"]
    assert "no connection to http://127.0.0.1:9 for an IMDSv2 token; trying IMDSv1" in run.messages
    assert "no EC2 metadata service at http://127.0.0.1:9" in run.messages
    assert elapsed < 15
    assert sandbox.read("etc/hostname") == "template\n"
    assert not (sandbox.root / "root/.ssh/authorized_keys").exists()
