"""The agent package: what prepare installs, checked with shellcheck and systemd-analyze."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.agent.sandbox import SHELLS, shell_argv
from tests.fixtures.tools import run, which

from imagewright.agent import (
    AGENT_INSTALL_PATH,
    RC_LOCAL_LINE,
    READY_PREFIX,
    ReadyLine,
    agent_config,
    agent_script,
    find_ready_line,
    init_script,
    instance_state_dir,
    systemd_unit,
)
from imagewright.errors import InvalidArgumentError


def test_script_is_posix_sh_and_shellcheck_clean(agent_file: Path) -> None:
    assert agent_script().startswith(b"#!/bin/sh\n")
    result = run("shellcheck", "-s", "sh", agent_file, check=False)
    assert result.returncode == 0, result.stdout.decode()


def test_init_script_is_shellcheck_clean(tmp_path: Path) -> None:
    path = tmp_path / "imagewright-agent"
    path.write_bytes(init_script())
    result = run("shellcheck", "-s", "sh", path, check=False)
    assert result.returncode == 0, result.stdout.decode()
    text = init_script().decode()
    assert "### BEGIN INIT INFO" in text and f"{AGENT_INSTALL_PATH} >/dev/console" in text


@pytest.mark.parametrize("shell", SHELLS)
def test_every_shell_parses_the_script(shell: str, agent_file: Path) -> None:
    result = subprocess.run(
        [*shell_argv(shell), "-n", str(agent_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_help_prints_the_header(agent_file: Path) -> None:
    result = subprocess.run(["sh", str(agent_file), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "imagewright-agent: ready instance-id=<id>" in result.stdout
    assert "IMAGEWRIGHT_AGENT_DRYRUN" in result.stdout


def test_systemd_unit_verifies(tmp_path: Path, agent_file: Path) -> None:
    unit = systemd_unit().decode()
    for line in (
        "Type=oneshot",
        "DefaultDependencies=no",
        "Before=network-pre.target",
        "Wants=network-pre.target",
        "StandardOutput=journal+console",
        f"ExecStart={AGENT_INSTALL_PATH}",
        "WantedBy=multi-user.target",
    ):
        assert line in unit.splitlines()
    assert any(line.startswith("Before=ssh.service") for line in unit.splitlines())
    # systemd's own checker, with ExecStart pointing at a file that exists here
    path = tmp_path / "imagewright-agent.service"
    path.write_text(unit.replace(AGENT_INSTALL_PATH, str(agent_file)))
    result = subprocess.run(
        [which("systemd-analyze"), "verify", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_ready_line_parsing() -> None:
    console = (
        "[    3.1] virtio_net virtio0 eth0: renamed\n"
        f"{READY_PREFIX} instance-id=i-1 hostname=a source=nocloud\n"
        "junk imagewright-agent: ready instance-id=i-2 hostname=web1 source=ec2\r\n"
        "imagewright-agent: ready instance-id=x hostname=y source=bogus\n"
    )
    assert find_ready_line(console) == ReadyLine("i-2", "web1", "ec2")
    assert find_ready_line("nothing here") is None


def test_agent_config_text_and_refusals() -> None:
    text = agent_config(default_user="debian", sources=["nocloud", "ec2"], grow_root=False).decode()
    assert text.splitlines()[1:] == [
        "DEFAULT_USER=debian",
        'SOURCES="nocloud ec2"',
        "GROW_ROOT=no",
        "HOST_KEYS=per-instance",
        "DHCP=yes",
    ]
    with pytest.raises(InvalidArgumentError, match="valid user name"):
        agent_config(default_user="Robert'); DROP")
    with pytest.raises(InvalidArgumentError, match="sources must be among"):
        agent_config(sources=["floppy"])
    with pytest.raises(InvalidArgumentError, match="host_keys"):
        agent_config(host_keys="always")


def test_rc_local_line_and_state_paths() -> None:
    assert RC_LOCAL_LINE.startswith(AGENT_INSTALL_PATH) and RC_LOCAL_LINE.endswith("|| true")
    assert instance_state_dir("i-0abc") == "/var/lib/imagewright-agent/i-0abc"
    assert instance_state_dir("../x y") == "/var/lib/imagewright-agent/_x_y"
