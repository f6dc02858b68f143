"""Host keys per instance, and the agent's manners with odd or hostile input: it never fails the
boot, never writes outside its root, and always ends with exactly one ready line."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.agent.sandbox import SHELLS, Sandbox

KEY_TYPES = ("rsa", "ecdsa", "ed25519")


def nocloud(tmp_path: Path, meta_data: str, user_data: str | bytes | None = None, name: str = "seed") -> Path:
    media = tmp_path / name
    media.mkdir()
    (media / "meta-data").write_text(meta_data)
    if user_data is not None:
        data = user_data.encode() if isinstance(user_data, str) else user_data
        (media / "user-data").write_bytes(data)
    return media


def host_keys(box: Sandbox) -> dict[str, bytes]:
    return {t: (box.root / f"etc/ssh/ssh_host_{t}_key").read_bytes() for t in KEY_TYPES}


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_host_keys_are_replaced_once_per_instance(
    shell: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    box = make_sandbox(conf="SOURCES=nocloud\n")  # HOST_KEYS defaults to per-instance
    box.write("etc/ssh/sshd_config", "Port 22\n")
    baked = host_keys(box)

    box.run(shell, media=nocloud(tmp_path, "instance-id: one\n", name="a"))
    first = host_keys(box)
    assert all(
        first[t] != baked[t] and first[t].startswith(b"-----BEGIN OPENSSH PRIVATE KEY") for t in KEY_TYPES
    )
    mode = (box.root / "etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o777
    assert mode == 0o600

    box.run(shell, media=nocloud(tmp_path, "instance-id: one\n", name="b"))
    assert host_keys(box) == first

    box.run(shell, media=nocloud(tmp_path, "instance-id: two\n", name="c"))
    second = host_keys(box)
    assert all(second[t] != first[t] for t in KEY_TYPES)


@pytest.mark.parametrize("shell", SHELLS)
def test_missing_host_keys_only(shell: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> None:
    box = make_sandbox(conf="SOURCES=nocloud\nHOST_KEYS=missing\n")
    box.write("etc/ssh/sshd_config", "Port 22\n")
    (box.root / "etc/ssh/ssh_host_ed25519_key").unlink()
    (box.root / "etc/ssh/ssh_host_ed25519_key.pub").unlink()

    run = box.run(shell, media=nocloud(tmp_path, "instance-id: keep\n"))

    assert box.read("etc/ssh/ssh_host_rsa_key") == "fake rsa key\n"
    if shell == "busybox":  # busybox has no ssh-keygen
        assert "ssh: neither ssh-keygen nor dropbearkey is installed; host keys not generated" in run.messages
        assert not (box.root / "etc/ssh/ssh_host_ed25519_key").exists()
    else:
        assert (box.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().startswith("ssh-ed25519 ")


@pytest.mark.parametrize("shell", SHELLS)
def test_hostile_instance_id_and_hostname_stay_inside(
    shell: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    box = make_sandbox(conf="SOURCES=nocloud\n")
    media = nocloud(
        tmp_path,
        'instance-id: "../../../etc/evil id"\nlocal-hostname: "bad host; rm -rf /"\n',
        "#!/bin/sh\necho ok\n",
    )

    run = box.run(shell, media=media)

    assert run.ready_lines() == [
        "imagewright-agent: ready instance-id=_.._.._etc_evil_id hostname=bad-host--rm--rf source=nocloud"
    ]
    assert (box.root / "var/lib/imagewright-agent/_.._.._etc_evil_id/user-data.log").read_text() == "ok\n"
    assert not (tmp_path / "etc").exists()
    assert box.read("etc/hostname") == "bad-host--rm--rf\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_bad_media_are_skipped_and_the_boot_goes_on(
    shell: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    huge = nocloud(tmp_path, "instance-id: x\n" + "# padding\n" * 120_000, name="huge")
    box = make_sandbox(conf="SOURCES=nocloud\n")
    run = box.run(shell, media=huge)
    assert run.returncode == 0
    assert any("more than the 1048576 this agent parses; ignored" in m for m in run.messages)
    assert run.ready_lines() == ["imagewright-agent: ready instance-id=none hostname=template source=none"]

    drive = tmp_path / "drive/openstack/latest"
    drive.mkdir(parents=True)
    (drive / "meta_data.json").write_text('{"uuid": "u-1", "hostname": ')
    box = make_sandbox(conf="SOURCES=configdrive\n")
    run = box.run(shell, media=tmp_path / "drive", kind="configdrive")
    assert "config drive: meta_data.json is not valid JSON; skipped" in run.messages
    assert run.ready.source == "none"

    (tmp_path / "nothing").mkdir()
    box = make_sandbox(conf="SOURCES=nocloud\n")
    run = box.run(shell, media=tmp_path / "nothing", kind="nocloud")
    assert "NoCloud medium without meta-data; skipped" in run.messages
    assert run.ready.source == "none"


@pytest.mark.parametrize("shell", SHELLS)
def test_user_data_that_is_not_a_script_is_not_run(
    shell: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    box = make_sandbox(conf="SOURCES=nocloud\nUNKNOWN_THING=1\n")
    run = box.run(shell, media=nocloud(tmp_path, "instance-id: plain\n", b"echo not a script\n\x00\xff"))
    assert "user-data is not a script (no #! line); not run" in run.messages
    assert "agent.conf: unknown setting 'UNKNOWN_THING' ignored" in run.messages
    assert not (box.state("plain") / "user-data").exists()
    assert run.ready.instance_id == "plain"


@pytest.mark.parametrize("shell", SHELLS)
def test_cloud_config_user_data_gives_keys_and_hostname(
    shell: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    box = make_sandbox(conf="SOURCES=nocloud\n")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl cc@x"
    run = box.run(
        shell,
        media=nocloud(
            tmp_path,
            "instance-id: cc\n",
            "#cloud-config\nhostname: from-cloud-config\n"
            f"ssh_authorized_keys:\n  - {key}\nruncmd: [reboot]\n",
        ),
    )
    assert run.ready.hostname == "from-cloud-config"
    assert box.read("root/.ssh/authorized_keys") == key + "\n"
    assert not any(m.startswith("user-data: running") for m in run.messages)


@pytest.mark.parametrize("shell", SHELLS)
def test_lock_temp_files_and_a_second_concurrent_run(
    shell: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    box = make_sandbox(conf="SOURCES=nocloud\n")
    media = nocloud(tmp_path, "instance-id: locked\n")

    # a live run holds the lock: the second agent stops at once, printing no ready line
    holder = subprocess.Popen(["sleep", "30"])
    try:
        (box.root / "run/imagewright-agent.lock").mkdir()
        (box.root / "run/imagewright-agent.lock/pid").write_text(f"{holder.pid}\n")
        run = box.run(shell, media=media)
        assert "another imagewright-agent is running; this one stops" in run.messages
        assert run.ready_lines() == []
    finally:
        holder.kill()
        holder.wait()

    # the lock of a dead run is taken over; nothing of the agent stays in /run afterwards
    run = box.run(shell, media=media)
    assert run.ready.instance_id == "locked"
    assert os.listdir(box.root / "run") == []
