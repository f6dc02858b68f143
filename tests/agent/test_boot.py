"""The agent in the real test guest (busybox init, Debian kernel) under QEMU.

The agent and its SysV script go straight into the test guest's tree (``prepare --agent`` does
that to real images; its own boot tests cover it). Checked here: a NoCloud seed from the
builder, booted twice from the same disk (the second boot changes nothing and does not re-run
user-data), the root filesystem grown online to fill an enlarged disk, and the files read back
with debugfs; and the EC2 source through QEMU's guestfwd ``cmd:`` running the test responder
with IMDSv2 tokens required.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from tests.fixtures.imds_responder import ImdsConfig, read_log
from tests.fixtures.tools import run

from imagewright.agent import AGENT_INSTALL_PATH, agent_script, find_ready_line, init_script
from imagewright.compute.boot import DirectKernel, boot
from imagewright.compute.testguest import FlatFilesystem, TestGuest, flat_ext4
from imagewright.metadata.context import build_context_medium
from imagewright.metadata.instance import InstanceDescription, SshPublicKey
from imagewright.metadata.network import parse_network_spec
from imagewright.programs.qemu_system import GuestForward, NetworkSpec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BOOT_TIMEOUT = 180.0
GROWN_BY = 32 * 1024 * 1024


def guest_with_agent(guest: TestGuest, directory: Path) -> FlatFilesystem:
    tree = directory / "tree"
    shutil.copytree(guest.root, tree, symlinks=True)
    agent = tree / AGENT_INSTALL_PATH.lstrip("/")
    agent.parent.mkdir(parents=True, exist_ok=True)
    agent.write_bytes(agent_script())
    agent.chmod(0o755)
    hook = tree / "etc/init.d/S50imagewright-agent"
    hook.write_bytes(init_script())
    hook.chmod(0o755)
    return flat_ext4(tree, directory / "root.ext4")


def boot_once(guest: TestGuest, root: FlatFilesystem, **options: object) -> list[str]:
    lines: list[str] = []
    result = boot(
        root.path,
        format="raw",
        timeout=BOOT_TIMEOUT,
        expect=guest.marker,
        on_line=lines.append,
        direct_kernel=DirectKernel(
            guest.kernel, guest.initrd, guest.kernel_command_line(f"UUID={root.uuid}")
        ),
        **options,  # type: ignore[arg-type]
    )
    assert result.matched, "\n".join(lines)
    return lines


def guest_file(root: FlatFilesystem, path: str) -> str:
    return run("debugfs", "-R", f"cat {path}", root.path).stdout.decode()


def block_count(root: FlatFilesystem) -> tuple[int, int]:
    header = run("dumpe2fs", "-h", root.path).stdout.decode().splitlines()
    fields = dict(line.split(":", 1) for line in header if ":" in line)
    return int(fields["Block count"]), int(fields["Block size"])


def test_nocloud_seed_twice_and_online_grow(
    testguest_rootfs: TestGuest, ssh_keys: tuple[SshPublicKey, ...], tmp_path: Path
) -> None:
    root = guest_with_agent(testguest_rootfs, tmp_path)
    blocks_before, block_size = block_count(root)
    with root.path.open("r+b") as disk:  # the cloud gave the instance a bigger disk
        disk.truncate(root.path.stat().st_size + GROWN_BY)
    instance = InstanceDescription(
        instance_id="i-0b00b00b00b00b00b",
        hostname="booted.example.com",
        ssh_keys=ssh_keys,
        user_data=b"#!/bin/sh\necho booted-user-data $(cat /etc/hostname)\n",
        network=parse_network_spec("static:10.0.2.15/24,10.0.2.2,10.0.2.3"),
    )
    seed = tmp_path / "seed.iso"
    build_context_medium("nocloud", instance, seed)
    network = NetworkSpec(mode="user", restrict=True)

    first = boot_once(testguest_rootfs, root, cdroms=[seed], network=network)
    second = boot_once(testguest_rootfs, root, cdroms=[seed], network=network)

    for lines in (first, second):
        ready = find_ready_line("\n".join(lines))
        assert ready is not None and (ready.instance_id, ready.hostname, ready.source) == (
            "i-0b00b00b00b00b00b",
            "booted",
            "nocloud",
        )
        assert sum(1 for line in lines if line.startswith("imagewright-agent: ready ")) == 1
        assert testguest_rootfs.marker_line(hostname="booted", root="/dev/vda") in lines
        assert "imagewright-agent: network: eth0 address 10.0.2.15/24" in lines
    assert "imagewright-agent: user-data| booted-user-data booted" in first
    assert not any("user-data" in line for line in second)
    assert (
        "imagewright-agent: instance i-0b00b00b00b00b00b: known; per-instance steps were done before"
        in second
    )

    assert guest_file(root, "/etc/hostname") == "booted\n"
    assert "127.0.1.1\tbooted.example.com booted" in guest_file(root, "/etc/hosts").splitlines()
    assert guest_file(root, "/root/.ssh/authorized_keys").splitlines() == [k.line for k in ssh_keys]
    state = "/var/lib/imagewright-agent/i-0b00b00b00b00b00b"
    assert guest_file(root, f"{state}/user-data.log") == "booted-user-data booted\n"
    assert guest_file(root, f"{state}/user-data.status") == "0\n"
    assert guest_file(root, "/etc/ssh/ssh_host_ed25519_key.pub").startswith("ssh-ed25519 ")
    blocks_after, _ = block_count(root)
    assert blocks_after == blocks_before + GROWN_BY // block_size
    run("e2fsck", "-fn", root.path)


@pytest.mark.parametrize("token_mode", ["required", "404", "403"])
def test_ec2_metadata_through_guestfwd(
    token_mode: str, testguest_rootfs: TestGuest, ssh_keys: tuple[SshPublicKey, ...], tmp_path: Path
) -> None:
    """IMDSv2 when the service issues tokens (and requires them); IMDSv1 when the token PUT is
    answered 404 (no IMDSv2 at all) or 403 (refused), as on older EC2 clones."""
    root = guest_with_agent(testguest_rootfs, tmp_path)
    config = ImdsConfig(
        instance_id="i-0ec2b00700000000",
        local_hostname="ip-169-254-0-15.ec2.internal",
        public_keys=[("alice", ssh_keys[0].line)],
        user_data="#!/bin/sh\necho ec2-boot-user-data\n",
        token_mode=token_mode,
        log=str(tmp_path / "imds.jsonl"),
    )
    responder = Path(__file__).parents[1] / "fixtures" / "imds_responder.py"
    network = NetworkSpec(
        mode="user",
        link_local=True,
        restrict=True,
        guest_forwards=(
            GuestForward(
                "169.254.169.254",
                80,
                (sys.executable, str(responder), str(config.save(tmp_path / "imds.json"))),
                # What the responder may see inside QEMU's sandbox.
                reads=(responder, tmp_path / "imds.json"),
                writes=(tmp_path / "imds.jsonl",),
            ),
        ),
    )

    lines = boot_once(testguest_rootfs, root, network=network, snapshot=True)

    ready = find_ready_line("\n".join(lines))
    assert ready is not None and (ready.instance_id, ready.hostname, ready.source) == (
        "i-0ec2b00700000000",
        "ip-169-254-0-15",
        "ec2",
    )
    assert "imagewright-agent: user-data| ec2-boot-user-data" in lines
    requests = read_log(tmp_path / "imds.jsonl")
    assert requests[0]["method"] == "PUT"
    if token_mode == "required":
        assert requests[0]["status"] == 200
        assert all(r["token"] == config.token and r["status"] == 200 for r in requests[1:])
    else:
        assert requests[0]["status"] == int(token_mode)
        assert all(not r["token"] and r["status"] in (200, 404) for r in requests[1:])
        assert all(r["method"] == "GET" for r in requests[1:])
    assert len(requests) >= 5
