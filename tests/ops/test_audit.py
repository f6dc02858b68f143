"""inspect --audit on a used guest seeded with every leak: each flagged with the right file and
the prepare operation that fixes it; that operation alone makes the finding go; after prepare
the audit is clean; secrets never reach the output."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.guest.images import GuestImage, flat_ext4, sha256_file, sysprep_tree, write

from imagewright.guest import open_guest
from imagewright.ops.audit import CHECKS, audit_guest
from imagewright.ops.audit.checks.authorized_keys import describe_keys
from imagewright.ops.inspect_os import inspect_os
from imagewright.ops.prepare import prepare
from imagewright.ops.prepare.operations import BY_NAME as OPERATIONS

pytestmark = pytest.mark.integration
RunCli = Callable[..., Result]

ROOT_HASH = "$6$salt$hashhashhash"
AUTHORIZED = (
    'no-pty,command="/usr/bin/rsync --server" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuilder builder@laptop\n'
    "# a comment line\n"
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAA ci\x1b[31m-bot\n"
    "ssh-rsa AAAAB3NzaC1yc2E\n"
)

#: (check, path) of every finding the seeded guest must give.
EXPECTED = {
    ("ssh-host-keys", f"/etc/ssh/ssh_host_{kind}_key{pub}")
    for kind in ("rsa", "ecdsa", "ed25519")
    for pub in ("", ".pub")
} | {
    ("authorized-keys", "/root/.ssh/authorized_keys"),
    ("authorized-keys", "/home/alice/.ssh/id_ed25519"),
    ("shell-histories", "/root/.bash_history"),
    ("shell-histories", "/home/alice/.bash_history"),
    ("other-histories", "/home/alice/.zsh_history"),
    ("root-password", "/etc/shadow"),
    ("user-passwords", "/etc/shadow"),
    ("passwd-backups", "/etc/passwd-"),
    ("passwd-backups", "/etc/shadow-"),
    ("machine-id", "/etc/machine-id"),
    ("machine-id", "/var/lib/dbus/machine-id"),
    ("random-seed", "/var/lib/systemd/random-seed"),
    ("cloud-init-state", "/var/lib/cloud/instance"),
    ("cloud-init-state", "/var/lib/cloud/instances/i-0123"),
    ("cloud-init-state", "/var/lib/cloud/data/instance-id"),
    ("mac-addresses", "/etc/sysconfig/network-scripts/ifcfg-eth0"),
    ("mac-addresses", "/etc/netplan/50-cloud-init.yaml"),
    ("mac-addresses", "/etc/NetworkManager/system-connections/Wired connection 1.nmconnection"),
    ("persistent-net-rules", "/etc/udev/rules.d/70-persistent-net.rules"),
    ("dhcp-leases", "/var/lib/dhcp/dhclient.eth0.leases"),
    ("dhcp-leases", "/var/lib/dhclient/dhclient-eth0.leases"),
    ("dhcp-leases", "/var/lib/NetworkManager/internal-0123-eth0.lease"),
    ("logfiles", "/var/log/syslog"),
    ("logfiles", "/var/log/syslog.1"),
    ("logfiles", "/var/log/syslog.2.gz"),
    ("logfiles", "/var/log/messages-20240101"),
    ("logfiles", "/var/log/dmesg.old"),
    ("logfiles", "/var/log/apt/history.log"),
    ("logfiles", "/var/log/apt/history.log.1.gz"),
    ("logfiles", "/var/log/wtmp"),
    ("logfiles", "/var/log/journal/0123456789abcdef0123456789abcdef/system.journal"),
    ("package-cache", "/var/cache/apt/archives/hello_2.10_amd64.deb"),
    ("package-cache", "/var/cache/apt/archives/partial/curl_8.0_amd64.deb"),
    ("package-cache", "/var/cache/apt/pkgcache.bin"),
    ("package-cache", "/var/cache/dnf/fedora-1234"),
    ("tmp", "/tmp/junk.txt"),
    ("tmp", "/tmp/dir with spaces"),
    ("tmp", "/tmp/.X11-unix"),
    ("tmp", "/var/tmp/cache.bin"),
}


def seeded_tree(root: Path) -> Path:
    sysprep_tree(root)
    write(root, "root/.ssh/authorized_keys", AUTHORIZED, 0o600)
    write(root, "home/alice/.ssh/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\n", 0o600, 1000)
    write(root, "home/alice/.ssh/known_hosts", "host ssh-ed25519 AAAA\n", 0o600, 1000)
    write(root, "home/alice/.zsh_history", ": 1700000000:0;make\n", 0o600, 1000)
    write(root, "home/alice/.empty_history_is_fine", "", 0o600, 1000)
    write(
        root,
        "etc/shadow",
        f"root:{ROOT_HASH}:19000:0:99999:7:::\nalice:$y$j9T$userhash:19000:0:99999:7:::\n"
        "daemon:*:19000:0:99999:7:::\nbob:!$6$locked:19000:0:99999:7:::\n",
        0o640,
    )
    write(root, "var/lib/cloud/instances/i-0123/boot-finished", "done\n")
    write(root, "var/lib/cloud/data/instance-id", "i-0123\n")
    (root / "var/lib/cloud/instance").symlink_to("/var/lib/cloud/instances/i-0123")
    write(root, "var/lib/cloud/scripts/per-boot/keep.sh", "#!/bin/sh\n", 0o755)
    return root


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    base = tmp_path_factory.mktemp("audit")
    return flat_ext4(seeded_tree(base / "root"), base / "used.raw", size_mib=48)


@pytest.fixture
def image(seeded: GuestImage, tmp_path: Path) -> Path:
    target = tmp_path / "used.raw"
    shutil.copyfile(seeded.path, target)
    return target


def findings_of(path: Path) -> set[tuple[str, str]]:
    found = inspect_os(path, facts=False, audit=True).audit
    assert found is not None
    return {(f.check, f.path) for f in found.findings}


def test_every_seeded_leak_is_found_with_its_file_and_remedy(seeded: GuestImage) -> None:
    found = inspect_os(seeded.path, facts=False, audit=True).audit
    assert found is not None and len(found.roots) == 1
    assert found.roots[0].notes == []
    assert {(f.check, f.path) for f in found.findings} == EXPECTED
    checks = {check.name: check for check in CHECKS}
    for finding in found.findings:
        assert finding.fixed_by == checks[finding.check].fixed_by
        assert finding.severity == checks[finding.check].severity
    details = {(f.check, f.path): f.detail for f in found.findings if f.path == "/root/.ssh/authorized_keys"}
    assert details[("authorized-keys", "/root/.ssh/authorized_keys")] == (
        "3 authorized keys: ssh-ed25519 builder@laptop; ecdsa-sha2-nistp256 ci?[31m-bot; ssh-rsa (no comment)"
    )
    passwords = sorted(f.detail for f in found.findings if f.path == "/etc/shadow")
    assert passwords == ["alice has a password hash (not shown)", "root has a password hash (not shown)"]
    assert not found.clean
    assert {f.check for f in found.secrets} == {
        "ssh-host-keys",
        "authorized-keys",
        "shell-histories",
        "other-histories",
        "root-password",
        "user-passwords",
        "passwd-backups",
    }


def test_secrets_never_reach_the_output(run_cli: RunCli, seeded: GuestImage) -> None:
    for args in (["--audit"], ["--audit", "--json"], ["--os", "--audit", "--json"]):
        result = run_cli(["inspect", *args, str(seeded.path)])
        assert result.exit_code == 0, result.output
        for secret in (ROOT_HASH, "hashhashhash", "userhash", "AAAAC3Nza", "OPENSSH PRIVATE KEY", "\x1b"):
            assert secret not in result.output


@pytest.mark.parametrize("operation", sorted({op for check in CHECKS if (op := check.fixed_by) is not None}))
def test_the_named_operation_alone_removes_its_findings(image: Path, operation: str) -> None:
    named = {check.name for check in CHECKS if check.fixed_by == operation}
    before = findings_of(image)
    assert any(check in named for check, _ in before)
    prepare(image, operations=[operation])
    after = findings_of(image)
    assert not any(check in named for check, _ in after)
    # ... and nothing else: every other finding is still there.
    assert after == {finding for finding in before if finding[0] not in named}


def test_after_prepare_the_audit_is_clean_and_strict_passes(run_cli: RunCli, image: Path) -> None:
    strict = run_cli(["inspect", "--audit", "--strict", str(image)])
    assert strict.exit_code == 1
    assert "audit:          " in strict.output and "findings" in strict.output
    prepare(image, operations=["defaults", "root-password", "ssh-userdir"])
    remaining = findings_of(image)
    # No prepare operation locks users' passwords or removes zsh histories: those stay, named.
    assert remaining == {("user-passwords", "/etc/shadow"), ("other-histories", "/home/alice/.zsh_history")}
    with open_guest(image, writable=True) as guest:
        guest.delete("/home/alice/.zsh_history")
        shadow = guest.read_text("/etc/shadow").replace("alice:$y$", "alice:!$y$")
        guest.write_text("/etc/shadow", shadow)
    result = run_cli(["inspect", "--audit", "--strict", "--json", str(image)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["audit"]["clean"] is True
    assert document["audit"]["counts"] == {"secret": 0, "identity": 0, "residue": 0}


def test_findings_name_prepare_operations_that_exist() -> None:
    for check in CHECKS:
        assert check.fixed_by is None or check.fixed_by in OPERATIONS


def test_strict_needs_audit(run_cli: RunCli, seeded: GuestImage) -> None:
    result = run_cli(["inspect", "--strict", str(seeded.path)])
    assert result.exit_code == 2
    assert "--strict applies to --audit" in result.output


def test_key_descriptions_skip_options_and_garbage() -> None:
    assert describe_keys(AUTHORIZED) == [
        "ssh-ed25519 builder@laptop",
        "ecdsa-sha2-nistp256 ci?[31m-bot",
        "ssh-rsa (no comment)",
    ]
    assert describe_keys("garbage\n\x00\x01 ssh-ed25519\nssh-dss\n") == []


def test_audit_guest_on_an_open_guest(seeded: GuestImage) -> None:
    with open_guest(seeded.path) as guest:
        result = audit_guest(guest)
    assert {(f.check, f.path) for f in result.findings} == EXPECTED


def test_prepare_dry_run_says_what_the_audit_would_still_find(run_cli: RunCli, image: Path) -> None:
    before = sha256_file(image)
    result = run_cli(["prepare", "--dry-run", "--json", str(image)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    left = {(f["check"], f["path"]) for f in document["audit"]["left_after_this_run"]}
    # The default operations leave what only non-default operations (or none) fix.
    assert left == {
        ("authorized-keys", "/root/.ssh/authorized_keys"),
        ("authorized-keys", "/home/alice/.ssh/id_ed25519"),
        ("root-password", "/etc/shadow"),
        ("user-passwords", "/etc/shadow"),
        ("other-histories", "/home/alice/.zsh_history"),
    }
    assert document["audit"]["fixed_by_this_run"] == len(EXPECTED) - len(left)
    text = run_cli(["prepare", "--dry-run", "--operations", "defaults,root-password,ssh-userdir", str(image)])
    assert text.exit_code == 0, text.output
    assert (
        f"audit: {len(EXPECTED)} findings (inspect --audit); "
        f"these operations fix {len(EXPECTED) - 2}, 2 would be left:" in text.output
    )
    assert "/home/alice/.zsh_history  shell history, 20 bytes  [no prepare operation]" in text.output
    assert sha256_file(image) == before  # a dry run changes nothing
