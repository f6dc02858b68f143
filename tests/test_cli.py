from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from click.testing import Result

import imagewright


def test_version_prints_package_version(run_cli: Callable[..., Result]) -> None:
    result = run_cli(["--version"])
    assert result.exit_code == 0
    assert imagewright.__version__ in result.output


def test_unknown_command_is_a_usage_error(run_cli: Callable[..., Result]) -> None:
    result = run_cli(["no-such-verb"])
    assert result.exit_code == 2


def test_console_script_runs_as_a_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imagewright.cli.main", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    assert "Usage:" in proc.stdout
