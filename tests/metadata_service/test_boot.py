"""Our agent in the test guest under QEMU, reaching the metadata service through guestfwd.

The instance is made with ``imagewright instance create`` (IMDSv2 tokens required); QEMU's user
network sits on 169.254.0.0/16 and runs the instance's forwarder for each guest connection to
169.254.169.254:80 (``MetadataChannel.forwarder``, as ``imagewright run`` will; inside QEMU's sandbox it sees
only its interpreter, its script, its signature file and the socket); the
forwarder signs and passes each request over the service's unix socket. The agent's ready line
shows the values given to ``instance create``; the access log shows the token flow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.agent.test_boot import boot_once, guest_with_agent
from tests.metadata_service.conftest import Fleet

from imagewright.agent import find_ready_line
from imagewright.compute.testguest import TestGuest
from imagewright.programs.qemu_system import METADATA_ADDRESS, GuestForward, NetworkSpec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_agent_reads_its_instance_through_the_forwarder(
    fleet: Fleet, testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    stack = fleet.stack
    (tmp_path / "ud").write_bytes(b"#!/bin/sh\necho metadata-service-user-data $(hostname)\n")
    (tmp_path / "key.pub").write_text(fleet.keys[0] + "\n")
    view = stack.create_instance(
        "--name", "booted", "--hostname", "booted.example.com", "--key-file", str(tmp_path / "key.pub"),
        "--user-data", str(tmp_path / "ud"), "--tokens", "required",
    )  # fmt: skip
    root = guest_with_agent(testguest_rootfs, tmp_path)
    spec = stack.channel.forwarder(view["id"])
    forward = GuestForward(METADATA_ADDRESS, 80, spec.command, reads=spec.reads, writes=spec.writes)
    network = NetworkSpec(mode="user", link_local=True, restrict=True, guest_forwards=(forward,))

    lines = boot_once(testguest_rootfs, root, network=network, snapshot=True)

    ready = find_ready_line("\n".join(lines))
    assert ready is not None
    assert (ready.instance_id, ready.hostname, ready.source) == (view["id"], "booted", "ec2")
    assert "imagewright-agent: user-data| metadata-service-user-data booted" in lines
    assert "imagewright-agent: IMDSv2 session token obtained" in lines
    line = f"forwarder {view['id']} GET /latest/user-data 200"
    log = [entry for entry in stack.access_log(waiting_for=line).splitlines() if f" {view['id']} " in entry]
    assert log[0].split()[3:6] == ["PUT", "/latest/api/token", "200"]
    assert line in "\n".join(log)
    assert all(entry.split()[1] == "forwarder" and entry.split()[-2] in ("200", "404") for entry in log)
