"""``imagewright boot``: inspection first, the format from inspect, exit codes, --json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import qemu_img

from imagewright.compute.accel import PROBE_EXIT_STATUS, PROBE_MESSAGE, write_probe_disk
from imagewright.programs.runner import record_invocations

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RunCli = Callable[..., Result]


@pytest.fixture
def probe_disk(tmp_path: Path) -> Path:
    """A disk that boots itself: prints PROBE_MESSAGE on COM1 and exits QEMU with status 99."""
    return write_probe_disk(tmp_path / "probe.img")


def test_boot_reaches_the_expected_text(run_cli: RunCli, probe_disk: Path, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    result = run_cli(
        ["boot", probe_disk, "--expect", "long mode reached", "--console-log", log, "--timeout", "60"]
    )
    assert result.exit_code == 0, result.output
    assert "accelerator:  tcg" in result.stdout
    assert f"matched:      {PROBE_MESSAGE}" in result.stdout
    assert "elapsed:" in result.stdout
    assert PROBE_MESSAGE in log.read_text()


def test_format_comes_from_inspect_and_json_reports(
    run_cli: RunCli, probe_disk: Path, tmp_path: Path
) -> None:
    qcow2 = tmp_path / "probe.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", probe_disk, qcow2)
    with record_invocations() as calls:
        result = run_cli(
            ["boot", qcow2, "--expect", "long mode", "--snapshot", "--json", "--disk-bus", "ide"]
        )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["matched"] is True
    assert report["matched_line"] == PROBE_MESSAGE
    assert report["accelerator"] == "tcg"
    qemu = [argv for argv in calls.argvs if argv[0].endswith("qemu-system-x86_64")]
    assert len(qemu) == 1
    assert any(arg.startswith(f"file={qcow2},format=qcow2,") and "snapshot=on" in arg for arg in qemu[0])


def test_without_expect_only_a_clean_poweroff_succeeds(run_cli: RunCli, probe_disk: Path) -> None:
    result = run_cli(["boot", probe_disk, "--timeout", "60"])
    assert result.exit_code == 1
    assert f"qemu exit:    {PROBE_EXIT_STATUS}" in result.stdout
    assert f"QEMU exit status {PROBE_EXIT_STATUS}" in result.stderr
    assert PROBE_MESSAGE in result.stderr  # the last console lines are shown


def test_timeout_exits_1_with_the_last_lines(run_cli: RunCli, tmp_path: Path) -> None:
    silent = tmp_path / "silent.img"  # no boot sector: SeaBIOS finds nothing to boot and waits
    silent.write_bytes(b"\0" * (1 << 20))
    result = run_cli(["boot", silent, "--expect", "never printed", "--timeout", "3"])
    assert result.exit_code == 1
    assert "did not print 'never printed' within 3 s" in result.stderr


def test_unsafe_image_is_refused_before_qemu_runs(run_cli: RunCli, probe_disk: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", probe_disk, "-F", "raw", overlay)
    with record_invocations() as calls:
        result = run_cli(["boot", overlay, "--expect", "anything"])
    assert result.exit_code == 1
    assert "refused" in result.stderr
    assert not any("qemu-system" in argv[0] for argv in calls.argvs)


def test_a_tarball_is_not_bootable(run_cli: RunCli, testguest_tarball: Path) -> None:
    with record_invocations() as calls:
        result = run_cli(["boot", testguest_tarball, "--expect", "anything"])
    assert result.exit_code == 1
    assert "not a disk image QEMU can boot" in result.stderr
    assert not any("qemu-system" in argv[0] for argv in calls.argvs)


def test_help_names_every_option(run_cli: RunCli) -> None:
    result = run_cli(["boot", "--help"])
    assert result.exit_code == 0
    for option in (
        "--timeout",
        "--expect",
        "--cdrom",
        "--drive",
        "--snapshot",
        "--memory",
        "--console-log",
        "--json",
    ):
        assert option in result.stdout
