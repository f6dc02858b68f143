"""Fixtures for context media tests: real SSH keys made by ssh-keygen, readers of the media."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.fixtures.tools import run, which

from imagewright.metadata.instance import InstanceDescription, read_ssh_key_file
from imagewright.metadata.network import parse_network_spec


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path

    @property
    def public_line(self) -> str:
        return self.public.read_text().strip()


def make_key(directory: Path, key_type: str, comment: str, bits: int | None = None) -> KeyPair:
    private = directory / f"id_{key_type}_{abs(hash(comment)) % 10_000}"
    args: list[str | Path] = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", private]
    if bits:
        args[4:4] = ["-b", str(bits)]
    run(*args)
    return KeyPair(private, private.with_name(private.name + ".pub"))


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def ed25519_key(key_dir: Path) -> KeyPair:
    # A comment a shell or YAML would trip over: quotes, a dollar, a hash, a colon-space.
    return make_key(key_dir, "ed25519", "alice@example 'it''s' \"q\" $HOME # x: y \\n")


@pytest.fixture(scope="session")
def rsa_key(key_dir: Path) -> KeyPair:
    return make_key(key_dir, "rsa", "bob@example", bits=2048)


@pytest.fixture(scope="session")
def ecdsa_key(key_dir: Path) -> KeyPair:
    return make_key(key_dir, "ecdsa", "carol@example")


@pytest.fixture
def static_instance(ed25519_key: KeyPair, rsa_key: KeyPair) -> InstanceDescription:
    keys = read_ssh_key_file(ed25519_key.public) + read_ssh_key_file(rsa_key.public)
    return InstanceDescription(
        instance_id="i-0123456789abcdef0",
        hostname="web1.example.com",
        ssh_keys=keys,
        user_data=b"#!/bin/sh\necho 'user-data ran' $HOME\n",
        network=parse_network_spec("static:192.0.2.10/24,192.0.2.1,192.0.2.53,198.51.100.53"),
        mac="52:54:00:AB:CD:EF",
    )


@pytest.fixture
def dhcp_instance(ed25519_key: KeyPair) -> InstanceDescription:
    return InstanceDescription(
        instance_id="iid-local01",
        hostname="node",
        ssh_keys=read_ssh_key_file(ed25519_key.public),
    )


# --- independent readers --------------------------------------------------------------------


def isoinfo_names(image: Path, extension: str) -> set[str]:
    """Every path isoinfo lists with Rock Ridge (-R) or Joliet (-J), like '/openstack/latest/x'."""
    listing = run("isoinfo", extension, "-l", "-i", image).stdout.decode()
    names: set[str] = set()
    directory = ""
    for line in listing.splitlines():
        if line.startswith("Directory listing of "):
            directory = line[len("Directory listing of ") :].rstrip("/")
            continue
        if not line.strip() or "]" not in line:
            continue
        name = line.split("]", 1)[1].strip()
        if name in (".", ".."):
            continue
        names.add(f"{directory}/{name}")
    return names


def isoinfo_extract(image: Path, path: str, extension: str = "-R") -> bytes:
    return run("isoinfo", extension, "-x", path, "-i", image).stdout


def xorriso_paths(image: Path) -> set[str]:
    out = run("xorriso", "-indev", image, "-find", "/").stdout.decode()
    paths = set()
    for raw in out.splitlines():
        path = raw.strip().strip("'")
        if path.startswith("/") and path != "/":
            paths.add(path)
    return paths


def xorriso_extract(image: Path, path: str, destination: Path) -> bytes:
    run("xorriso", "-osirrox", "on", "-indev", image, "-extract", path, destination)
    return destination.read_bytes()


def source_in_shell(shell: list[str], script: Path, expression: str) -> bytes:
    """Source ``script`` in ``shell`` and return what ``expression`` prints."""
    proc = subprocess.run(
        [*shell, "-c", f'. "$1" && {expression}', "sh", str(script)],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


@pytest.fixture(scope="session")
def shells() -> dict[str, list[str]]:
    return {"dash": [which("dash")], "busybox": [which("busybox"), "sh"]}
