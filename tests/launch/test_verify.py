"""verify, booting the test guest (TCG: slow): one image that becomes what it is told, one that
ignores the key.

The image is the test guest built into a GPT disk and prepared with the agent (as
``tests/e2e`` does), uploaded to a registry started as a process; ``verify`` runs it from the
registry through the metadata service with IMDSv2 tokens required (the service's access log
shows this instance's token flow). The failing image's agent is the real one with its SSH key
step made a no-op: everything passes but the key, and verify says so and exits 1.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.fixtures.metadata_service import MetadataStack
from tests.fixtures.registry import BIN
from tests.launch.conftest import iw, ps

from imagewright import agent
from imagewright.ops.prepare import PrepareOptions, prepare

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VERIFY_TIMEOUT = "400"
CHECKS = ["console", "stop", "hostname", "ssh key", "user-data", "ssh host keys"]


def _disk(tarball: Path, directory: Path, script: bytes | None = None) -> Path:
    disk = directory / "disk.qcow2"
    subprocess.run(
        [str(BIN / "imagewright"), "build", "--from", str(tarball), "-o", str(disk), "--size", "1G",
         "--table", "gpt"],
        check=True, capture_output=True,
    )  # fmt: skip
    prepare(disk, options=PrepareOptions(agent=True, agent_script=script))
    return disk


def keyless_agent() -> bytes:
    script = agent.agent_script()
    step = b"apply_ssh_keys() {\n"
    assert script.count(step) == 1
    return script.replace(
        step, step + b'    log "ssh: keys ignored (a guest that ignores its key)"\n    return 0\n'
    )


def test_verify_from_the_registry_through_the_metadata_service(
    stack: MetadataStack, testguest_tarball: Path, tmp_path: Path
) -> None:
    disk = _disk(testguest_tarball, tmp_path)
    with stack.server.api(stack.server.token()) as admin:
        image = admin.create_image(name="testguest", disk_format="qcow2", container_format="bare")
        assert admin.upload(image["id"], disk.read_bytes()).status_code == 204

    result = iw(stack, "verify", "testguest", "--context", "metadata", "--tokens", "required",
                "--timeout", VERIFY_TIMEOUT, "--json")  # fmt: skip

    report = json.loads(result.stdout)
    assert report["ok"] is True, result.stdout
    assert [c["name"] for c in report["checks"]] == CHECKS
    assert all(c["ok"] for c in report["checks"])
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["console"]["detail"] == f"agent ready (source ec2, hostname {report['hostname']})"
    assert checks["user-data"]["detail"] == "ran 1 time(s)"
    assert checks["ssh key"]["detail"] == "in /root/.ssh/authorized_keys"
    instance_id = report["instance_id"]
    log = stack.access_log(waiting_for=f"forwarder {instance_id} GET /latest/user-data 200")
    mine = [line.split()[3:6] for line in log.splitlines() if f" {instance_id} " in line]
    assert mine[0] == ["PUT", "/latest/api/token", "200"]
    # Nothing is left: no instance, no process, no overlay.
    assert ps(stack) == {"instances": [], "orphans": []}
    assert list((stack.server.data_dir / "instances").iterdir()) == []


def test_verify_fails_an_image_whose_guest_ignores_the_key(
    stack: MetadataStack, testguest_tarball: Path, tmp_path: Path
) -> None:
    disk = _disk(testguest_tarball, tmp_path, keyless_agent())

    result = iw(stack, "verify", str(disk), "--context", "nocloud", "--timeout", VERIFY_TIMEOUT, check=False)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    marks = {}
    for line in lines[1:-1]:
        mark, rest = line.split(maxsplit=1)
        name = max((n for n in CHECKS if rest.startswith(n + " ")), key=len)
        marks[name] = mark
    assert marks == {
        "console": "✔", "stop": "✔", "hostname": "✔", "ssh key": "✘", "user-data": "✔", "ssh host keys": "✔",
    }  # fmt: skip
    assert "not in /root/.ssh/authorized_keys" in result.stdout
    assert lines[-1].startswith("FAILED in ")
    assert ps(stack) == {"instances": [], "orphans": []}
