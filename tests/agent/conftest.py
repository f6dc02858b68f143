"""Fixtures for the agent tests: the script on disk, a busybox-only PATH, sandboxes, SSH keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.agent.sandbox import Sandbox, busybox_path, write_agent
from tests.fixtures.tools import run

from imagewright.metadata.instance import SshPublicKey, read_ssh_key_file


@pytest.fixture(scope="session")
def agent_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_agent(tmp_path_factory.mktemp("agent"))


@pytest.fixture(scope="session")
def busybox_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_path(tmp_path_factory.mktemp("busybox") / "bin")


@pytest.fixture
def make_sandbox(tmp_path: Path, agent_file: Path, busybox_tools: Path) -> Callable[..., Sandbox]:
    counter = iter(range(1000))

    def make(**kwargs: object) -> Sandbox:
        root = tmp_path / f"root{next(counter)}"
        root.mkdir()
        return Sandbox(root, busybox_tools, agent_file).populate(**kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()


def _make_key(directory: Path, key_type: str, comment: str) -> tuple[SshPublicKey, ...]:
    private = directory / f"id_{key_type}"
    run("ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", private)
    return read_ssh_key_file(private.with_name(private.name + ".pub"))


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[SshPublicKey, ...]:
    """Two real keys; the first one's comment holds what YAML and shells trip over."""
    directory = tmp_path_factory.mktemp("keys")
    tricky = _make_key(directory, "ed25519", "alice@example 'it''s' \"q\" $HOME # x: y \\n")
    plain = _make_key(directory, "ecdsa", "bob@example")
    return tricky + plain
