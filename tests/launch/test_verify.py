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
from tests.fixtures.tools import run
from tests.launch.conftest import iw, ps

from imagewright import agent
from imagewright.ops.prepare import PrepareOptions, prepare

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VERIFY_TIMEOUT = "400"
CHECKS = [
    "console",
    "firmware",
    "stop",
    "hostname",
    "ssh key",
    "user-data",
    "root filesystem",
    "ssh host keys",
]


def _disk(tarball: Path, directory: Path, script: bytes | None = None, *build_args: str) -> Path:
    disk = directory / "disk.qcow2"
    subprocess.run(
        [str(BIN / "imagewright"), "build", "--from", str(tarball), "-o", str(disk), "--size", "1G",
         "--table", "gpt", *build_args],
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
    # a hybrid disk: SeaBIOS, as the inspection says, and the kernel saw no UEFI
    assert (report["firmware"], report["firmware_reason"]) == (
        "bios",
        "inspection: boots under BIOS and UEFI",
    )
    assert checks["firmware"]["detail"] == "SeaBIOS; the kernel found no UEFI firmware"
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
        "console": "✔", "firmware": "✔", "stop": "✔", "hostname": "✔", "ssh key": "✘", "user-data": "✔",
        "root filesystem": "✔", "ssh host keys": "✔",
    }  # fmt: skip
    assert "not in /root/.ssh/authorized_keys" in result.stdout
    assert lines[-1].startswith("FAILED in ")
    assert ps(stack) == {"instances": [], "orphans": []}


GIVEN_USER_DATA = b'#!/bin/sh\necho "given user-data ran on $(hostname)" > /root/given-user-data\n'


def test_verify_boots_a_uefi_only_image_under_ovmf_with_given_user_data_and_a_grown_root(
    stack: MetadataStack, testguest_tarball: Path, tmp_path: Path
) -> None:
    """No flag: the inspection says UEFI only, so OVMF; the user's own user-data ran; the root
    filesystem grew into the 1.5 GiB disk — cross-checked after verify with sfdisk and dumpe2fs
    on the kept overlay, flattened here by qemu-img, and debugfs reading the script's file."""
    disk = _disk(testguest_tarball, tmp_path, None, "--firmware", "uefi")
    user_data = tmp_path / "user-data"
    user_data.write_bytes(GIVEN_USER_DATA)

    result = iw(stack, "verify", str(disk), "--context", "nocloud", "--user-data", str(user_data),
                "--disk-size", "1536M", "--timeout", VERIFY_TIMEOUT, "--keep", "--json")  # fmt: skip

    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True, result.stdout
    assert list(checks) == CHECKS
    assert (report["firmware"], report["secure_boot"]) == ("uefi", False)
    assert report["firmware_reason"] == "inspection: boots under UEFI only"
    assert checks["firmware"]["detail"] == "OVMF; the kernel found UEFI firmware (EDK II)"
    assert (
        checks["user-data"]["detail"]
        == f"the agent ran the {len(GIVEN_USER_DATA)} bytes given (exit status 0)"
    )
    assert report["disk_size"] == 1536 << 20
    assert checks["root filesystem"]["detail"].startswith("partition ")

    # Independently: the kept instance's disk, flattened by qemu-img with the chain named.
    instance = stack.server.data_dir / "instances" / report["instance_id"]
    try:
        assert (instance / "OVMF_VARS.fd").is_file()
        console = (instance / "console.log").read_text(errors="replace")
        assert "efi: EFI v" in console  # the kernel's own word: it ran under UEFI
        flat = tmp_path / "flat.raw"
        run("qemu-img", "convert", "--image-opts",
            f"driver=qcow2,file.filename={instance / 'disk.qcow2'},backing.driver=qcow2,"
            f"backing.file.filename={disk}", "-O", "raw", flat)  # fmt: skip
        assert flat.stat().st_size == 1536 << 20
        table = json.loads(run("sfdisk", "--json", flat).stdout)["partitiontable"]
        root = max(table["partitions"], key=lambda p: p["start"])
        end = (root["start"] + root["size"]) * 512
        assert (1536 << 20) - end <= 2 << 20  # the root partition reaches the disk's end
        header = run("dumpe2fs", "-h", f"{flat}?offset={root['start'] * 512}").stdout.decode()
        fields = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
        fs_bytes = int(fields["Block count"]) * int(fields["Block size"])
        assert root["size"] * 512 - fs_bytes < 2 << 20 and fs_bytes > 1 << 30
        ran = run("debugfs", "-R", "cat /root/given-user-data", f"{flat}?offset={root['start'] * 512}").stdout
        assert ran.decode().strip() == f"given user-data ran on {report['hostname']}"
    finally:
        iw(stack, "rm", "--force", report["instance_id"])
    assert ps(stack) == {"instances": [], "orphans": []}


@pytest.mark.long
def test_verify_boots_an_image_that_requires_secure_boot_with_secure_boot_on(
    stack: MetadataStack, testguest_tarball: Path, tmp_path: Path
) -> None:
    """A registry image with ``os_secure_boot=required`` (as Nova reads it): verify starts OVMF
    with Microsoft's keys and Secure Boot enforced, the disk's signed shim, GRUB and kernel boot,
    and the kernel's own "Secure boot enabled" is part of the firmware check."""
    disk = _disk(testguest_tarball, tmp_path)
    with stack.server.api(stack.server.token()) as admin:
        image = admin.create_image(
            name="testguest-sb", disk_format="qcow2", container_format="bare", os_secure_boot="required"
        )
        assert admin.upload(image["id"], disk.read_bytes()).status_code == 204

    result = iw(stack, "verify", "testguest-sb", "--context", "nocloud", "--timeout", VERIFY_TIMEOUT,
                "--keep", "--json")  # fmt: skip

    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    try:
        assert report["ok"] is True, result.stdout
        assert (report["firmware"], report["secure_boot"]) == ("uefi", True)
        assert report["firmware_reason"] == "image property os_secure_boot=required"
        assert checks["firmware"]["detail"] == (
            "OVMF; the kernel found UEFI firmware (EDK II), Secure Boot enabled"
        )
        # Independently: the kept console and the variable store of the Secure Boot firmware.
        instance = stack.server.data_dir / "instances" / report["instance_id"]
        console = (instance / "console.log").read_text(errors="replace")
        assert "secureboot: Secure boot enabled" in console
        assert (instance / "OVMF_VARS.fd").read_bytes() != b""
    finally:
        iw(stack, "rm", "--force", report["instance_id"])
    assert ps(stack) == {"instances": [], "orphans": []}
