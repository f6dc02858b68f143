"""``imagewright prepare`` as a user types it: output, JSON, exit codes, one-sentence errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import qemu_img
from tests.guest.images import GuestImage, cat, flat_ext4, listing, sha256_file, sysprep_tree, write

from imagewright import agent
from imagewright.compute.testguest import FlatFilesystem
from imagewright.ops.prepare import DEFAULTS
from imagewright.ops.prepare.operations import OPERATIONS

pytestmark = pytest.mark.integration

RunCli = Callable[..., Result]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    directory = tmp_path_factory.mktemp("prepare-cli")
    return flat_ext4(sysprep_tree(directory / "root"), directory / "disk.raw")


@pytest.fixture
def image(template: GuestImage, tmp_path: Path) -> GuestImage:
    target = tmp_path / "disk.raw"
    shutil.copyfile(template.path, target)
    return GuestImage(target, 0)


def one_sentence_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("imagewright: error: ") and lines[0].endswith(".")
    assert "Traceback" not in result.output
    return lines[0].removeprefix("imagewright: error: ")


def test_list_operations(run_cli: RunCli) -> None:
    result = run_cli(["prepare", "--list-operations"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["operation", "default", "description"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == [op.name for op in OPERATIONS]
    assert rows["ssh-hostkeys"].split()[1] == "yes"
    assert rows["root-password"].split()[1] == "no"
    assert "with --dns" in rows["resolv-conf"] and "with --agent" in rows["agent"]
    listed = json.loads(run_cli(["prepare", "--list-operations", "--json"]).stdout)
    assert [entry["name"] for entry in listed] == [op.name for op in OPERATIONS]
    assert all(entry["why"] for entry in listed)


def test_prepare_prints_each_operation_and_its_changes(run_cli: RunCli, image: GuestImage) -> None:
    result = run_cli(["prepare", image.path])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"prepared {image.path} (the filesystem of the whole disk (ext4) of disk.raw): ")
    assert "  ssh-hostkeys      deleted /etc/ssh/ssh_host_ecdsa_key\n" in out
    assert "\n                    deleted /etc/ssh/ssh_host_rsa_key\n" in out
    assert "linked /etc/udev/rules.d/70-persistent-net.rules (-> /dev/null; replaces file)" in out
    assert "  machine-id        emptied /etc/machine-id (a new id is made at first boot)\n" in out
    assert "  cloud-init-state  nothing to do\n" in out
    for name in DEFAULTS:
        assert f"  {name} " in out
    assert "ssh_host_rsa_key" not in listing(image, "/etc/ssh")


def test_json_report(run_cli: RunCli, image: GuestImage) -> None:
    result = run_cli(["prepare", image.path, "--operations", "ssh-hostkeys,machine-id", "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert [op["name"] for op in report["operations"]] == ["ssh-hostkeys", "machine-id"]
    assert report["changes"] == 8 and report["dry_run"] is False and report["format"] == "raw"
    assert report["operations"][1]["changes"][0] == {
        "action": "truncate",
        "path": "/etc/machine-id",
        "detail": "a new id is made at first boot",
    }


def test_dry_run_changes_nothing(run_cli: RunCli, image: GuestImage) -> None:
    before = sha256_file(image.path)
    result = run_cli(
        ["prepare", image.path, "--dry-run", "--agent", "--dns", "192.0.2.1", "--module", "acpiphp"]
    )
    assert result.exit_code == 0, result.output
    assert "would be made; the image was not changed" in result.stdout
    assert "would delete /etc/ssh/ssh_host_rsa_key" in result.stdout
    assert f"would write {agent.AGENT_INSTALL_PATH}" in result.stdout
    assert "would edit /etc/resolv.conf (nameserver 192.0.2.1)" in result.stdout
    assert "would edit /etc/modules (added acpiphp)" in result.stdout
    assert sha256_file(image.path) == before


def test_agent_dns_and_module(run_cli: RunCli, image: GuestImage) -> None:
    result = run_cli(["prepare", image.path, "--agent", "--dns", "192.0.2.1", "--module", "acpiphp"])
    assert result.exit_code == 0, result.output
    assert cat(image, agent.AGENT_INSTALL_PATH) == agent.agent_script()
    assert cat(image, "/etc/resolv.conf").endswith(b"nameserver 192.0.2.1\n")
    assert cat(image, "/etc/modules").endswith(b"acpiphp\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--operations", "ssh-hostkeys,warp-drive"],
            "'warp-drive' is not a prepare operation; valid names are",
        ),
        (["--dns", "not-an-ip"], "'not-an-ip' is not an IPv4 or IPv6 address for --dns."),
        (["--module", "bad/name"], "'bad/name' is not a kernel module name for --module."),
        (["--operations", "resolv-conf"], "The operation resolv-conf needs --dns."),
        (["--partition", "3"], "The image has no partition table; leave out --partition."),
    ],
)
def test_bad_input_is_one_sentence_and_leaves_the_image(
    run_cli: RunCli, image: GuestImage, args: list[str], message: str
) -> None:
    before = sha256_file(image.path)
    assert message in one_sentence_error(run_cli(["prepare", image.path, *args]))
    assert sha256_file(image.path) == before


def test_refused_image_is_one_sentence(run_cli: RunCli, image: GuestImage, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", image.path, overlay)
    before = sha256_file(overlay)
    assert "backing file" in one_sentence_error(run_cli(["prepare", overlay]))
    assert sha256_file(overlay) == before


def test_guest_without_etc(run_cli: RunCli, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree, "srv/data", "x\n")
    image = flat_ext4(tree, tmp_path / "data.raw", size_mib=8)
    assert "has no /etc" in one_sentence_error(run_cli(["prepare", image.path]))


def test_missing_image_argument_is_a_usage_error(run_cli: RunCli, tmp_path: Path) -> None:
    assert run_cli(["prepare"]).exit_code == 2
    assert "does not exist" in one_sentence_error(run_cli(["prepare", tmp_path / "nothing.qcow2"]))


def test_the_test_guest_gets_the_agent_through_rc_local(
    run_cli: RunCli, testguest_flat_ext4: FlatFilesystem, tmp_path: Path
) -> None:
    """The busybox guest the boot tests use: its rcS runs rc.local, so the agent hooks in there."""
    disk = tmp_path / "testguest.ext4"
    shutil.copyfile(testguest_flat_ext4.path, disk)
    result = run_cli(["prepare", disk, "--agent"])
    assert result.exit_code == 0, result.output
    image = GuestImage(disk, 0)
    rc_local = cat(image, "/etc/rc.local").decode()
    assert f"{agent.RC_LOCAL_LINE}\nexit 0\n" in rc_local
    assert listing(image, "/etc")["rc.local"][0] == 0o100755
    assert cat(image, agent.AGENT_INSTALL_PATH) == agent.agent_script()
