"""Shared fixtures. Fixture images are built by code (real tools), never committed."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from imagewright.cli.main import cli

# A suite started in the background by a non-interactive shell (`make test &`, nohup) inherits
# SIGINT ignored (POSIX), and so would every program the tests start and send Ctrl-C to: the
# Ctrl-C tests would wait for nothing. Python's own handler again, inherited as the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The test guest fixtures (testguest_rootfs, testguest_flat_ext4, testguest_tarball) for every boot test;
# s3_server (a real S3 endpoint: Swift + s3api) for the stores' and the registry's tests;
# cloud_init_site (Debian's cloud-init, unpacked) for what cloud-init's own code reads; the Debian
# cloud images (debian_agent_guest, debian_cloud_init_guest).
pytest_plugins = (
    "tests.fixtures.testguest",
    "tests.fixtures.s3_server",
    "tests.fixtures.cloud_init",
    "tests.fixtures.debian_guest",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--registry-server",
        choices=("uvicorn", "granian"),
        default="uvicorn",
        help="The ASGI server every started 'imagewright serve' runs on, unless a test names one "
        "(tests.fixtures.registry.RegistryServer).",
    )


def pytest_configure(config: pytest.Config) -> None:
    from tests.fixtures import registry

    registry.DEFAULT_SERVER = config.getoption("--registry-server")


@pytest.fixture
def run_cli() -> Callable[..., Result]:
    """Run ``imagewright ARGS`` in-process; returns click's Result (exit_code, stdout, stderr)."""

    def run(args: Sequence[str]) -> Result:
        runner = CliRunner()
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return run


def require_program(name: str) -> str:
    """Path of a program the test needs; fail (not skip) when it is missing: `make test` installs it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed; run `make test`, which installs it")
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
