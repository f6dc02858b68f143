"""prepare on real ext4 images: exactly the expected changes, nothing else, image untouched on failure."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from tests.fixtures.tools import qemu_img, qemu_img_info, run
from tests.guest.images import (
    ALICE,
    MAC,
    GuestImage,
    Manifest,
    cat,
    converted,
    debugfs,
    e2fsck_clean,
    flat_ext4,
    listing,
    manifest,
    partitioned_ext4,
    sha256_file,
    stat_of,
    sysprep_tree,
    to_raw,
    write,
)

from imagewright.errors import GuestFilesystemError, ImagewrightError, InvalidArgumentError, UnsafeImageError
from imagewright.guest import libguestfs
from imagewright.ops.prepare import DEFAULTS, PrepareOptions, prepare, select
from imagewright.ops.prepare import operations as operations_module
from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations import BY_NAME

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sysprep_tree(tmp_path_factory.mktemp("prepare-tree") / "root")


@pytest.fixture(scope="module")
def mbr_template(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    return partitioned_ext4(tree, tmp_path_factory.mktemp("prepare-mbr") / "disk.raw")


@pytest.fixture(scope="module")
def baseline(mbr_template: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return manifest(mbr_template, tmp_path_factory.mktemp("prepare-baseline"))


@pytest.fixture
def image(mbr_template: GuestImage, tmp_path: Path) -> GuestImage:
    target = tmp_path / "disk.raw"
    shutil.copyfile(mbr_template.path, target)
    return GuestImage(target, mbr_template.offset)


# Every path the default operations delete, empty, edit or link in the sysprep tree.
DELETED = {
    *(f"/etc/ssh/ssh_host_{k}_key{s}" for k in ("rsa", "ecdsa", "ed25519") for s in ("", ".pub")),
    "/var/lib/dbus/machine-id",
    "/var/lib/systemd/random-seed",
    "/var/log/syslog.1",
    "/var/log/syslog.2.gz",
    "/var/log/messages-20240101",
    "/var/log/dmesg.old",
    "/var/log/apt/history.log.1.gz",
    "/var/log/journal/0123456789abcdef0123456789abcdef/system.journal",
    "/root/.bash_history",
    "/home/alice/.bash_history",
    "/tmp/junk.txt",
    "/tmp/dir with spaces",
    '/tmp/dir with spaces/it\'s "quoted".txt',
    "/tmp/.X11-unix",
    "/tmp/.X11-unix/X0",
    "/var/tmp/cache.bin",
    "/var/lib/dhcp/dhclient.eth0.leases",
    "/var/lib/dhclient/dhclient-eth0.leases",
    "/var/lib/NetworkManager/internal-0123-eth0.lease",
    "/var/cache/apt/archives/hello_2.10_amd64.deb",
    "/var/cache/apt/archives/partial/curl_8.0_amd64.deb",
    "/var/cache/apt/pkgcache.bin",
    "/var/cache/dnf/fedora-1234",
    "/var/cache/dnf/fedora-1234/packages",
    "/var/cache/dnf/fedora-1234/packages/bash-5.2.rpm",
    "/etc/passwd-",
    "/etc/shadow-",
}
# Deleted with their directory: reported once, as the directory.
NESTED = {
    '/tmp/dir with spaces/it\'s "quoted".txt',
    "/tmp/.X11-unix/X0",
    "/var/cache/dnf/fedora-1234/packages",
    "/var/cache/dnf/fedora-1234/packages/bash-5.2.rpm",
}
EMPTIED = {"/etc/machine-id", "/var/log/syslog", "/var/log/wtmp", "/var/log/apt/history.log"}
EDITED = {
    "/etc/sysconfig/network-scripts/ifcfg-eth0",
    "/etc/netplan/50-cloud-init.yaml",
    "/etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
}
LINKED = {"/etc/udev/rules.d/70-persistent-net.rules", "/etc/udev/rules.d/75-persistent-net-generator.rules"}
DEFAULT_CHANGES = len(DELETED - NESTED) + len(EMPTIED) + len(EDITED) + len(LINKED)
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def unchanged_part(entries: Manifest, touched: set[str]) -> Manifest:
    return {path: entry for path, entry in entries.items() if path not in touched}


def test_defaults_change_exactly_the_expected_files(
    image: GuestImage, baseline: Manifest, tmp_path: Path
) -> None:
    report = prepare(image.path)
    after = manifest(image, tmp_path)

    # Everything not named above is byte for byte, mode and owner as it was.
    touched = DELETED | EMPTIED | EDITED | LINKED
    assert unchanged_part(after, touched) == unchanged_part(baseline, touched)
    assert not DELETED & set(after)
    for path in EMPTIED:
        assert after[path][4] == EMPTY_SHA
        assert after[path][:4] == baseline[path][:4]  # type, mode, owner kept
    for path in LINKED:
        assert after[path] == ("link", 0o777, 0, 0, "/dev/null")
    for path in EDITED:
        assert after[path][:4] == baseline[path][:4]

    # The edits themselves.
    assert (
        cat(image, "/etc/sysconfig/network-scripts/ifcfg-eth0")
        == b"DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\n"
    )
    assert cat(image, "/etc/netplan/50-cloud-init.yaml") == (
        b"network:\n    ethernets:\n        eth0:\n            dhcp4: true\n    version: 2\n"
    )
    nm = cat(image, "/etc/NetworkManager/system-connections/Wired connection 1.nmconnection").decode()
    assert "mac-address" not in nm and "[ethernet]\n" in nm and "method=auto" in nm
    assert after["/etc/NetworkManager/system-connections/Wired connection 1.nmconnection"][1] == 0o600

    # Seen the way a person would check it.
    ssh = debugfs(image, "ls -l /etc/ssh")
    assert "sshd_config" in ssh and "ssh_host" not in ssh
    assert 'Fast link dest: "/dev/null"' in stat_of(image, "/etc/udev/rules.d/70-persistent-net.rules")
    assert set(listing(image, "/tmp")) == set()
    assert listing(image, "/")["tmp"][0] == 0o41777
    assert listing(image, "/etc")["machine-id"] == (0o100444, 0, 0, 0)
    assert listing(image, "/home/alice")["notes.txt"] == (0o100644, ALICE, ALICE, 8)
    clean, output = e2fsck_clean(image)
    assert clean, output

    # The report says the same.
    reported = {(c.action, c.path) for op in report.operations for c in op.changes}
    assert {p for a, p in reported if a == "delete"} == DELETED - NESTED
    assert {p for a, p in reported if a == "truncate"} == EMPTIED
    assert {p for a, p in reported if a == "edit"} == EDITED
    assert {p for a, p in reported if a == "link"} == LINKED
    assert [op.name for op in report.operations] == list(DEFAULTS)
    assert report.format == "raw" and report.filesystem.startswith("partition 2 (ext4)")


def test_second_run_changes_nothing_and_leaves_the_file_alone(image: GuestImage) -> None:
    prepare(image.path)
    before = sha256_file(image.path)
    inode = image.path.stat().st_ino
    report = prepare(image.path)
    assert report.change_count == 0
    assert sha256_file(image.path) == before
    assert image.path.stat().st_ino == inode


def test_dry_run_lists_the_same_changes_and_changes_nothing(image: GuestImage, tmp_path: Path) -> None:
    before = sha256_file(image.path)
    options = PrepareOptions(
        dns=("192.0.2.53",), modules=("acpiphp",), agent=True, agent_script=b"#!/bin/sh\n"
    )
    dry = prepare(image.path, dry_run=True, options=options)
    assert sha256_file(image.path) == before
    assert dry.dry_run and dry.change_count > DEFAULT_CHANGES
    assert [p.name for p in tmp_path.iterdir()] == ["disk.raw"]
    real = prepare(image.path, options=options)
    assert [c.to_dict() for op in dry.operations for c in op.changes] == [
        c.to_dict() for op in real.operations for c in op.changes
    ]
    assert sha256_file(image.path) != before


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk"])
def test_dry_run_of_other_formats_keeps_the_hash(fmt: str, mbr_template: GuestImage, tmp_path: Path) -> None:
    image = converted(mbr_template, fmt, tmp_path / f"disk.{fmt}")
    before = sha256_file(image.path)
    report = prepare(image.path, dry_run=True)
    assert report.change_count == DEFAULT_CHANGES
    assert sha256_file(image.path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"disk.{fmt}"]


def test_qcow2_stays_qcow2_with_its_cluster_size(
    mbr_template: GuestImage, tmp_path: Path, baseline: Manifest
) -> None:
    image = converted(mbr_template, "qcow2", tmp_path / "disk.qcow2", "cluster_size=65536", "compat=0.10")
    report = prepare(image.path)
    info = qemu_img_info(image.path, "qcow2")
    assert info["format"] == "qcow2" and info["cluster-size"] == 65536
    assert info["format-specific"]["data"]["compat"] == "0.10"
    check = json.loads(run("qemu-img", "check", "-f", "qcow2", "--output=json", image.path).stdout)
    assert check["check-errors"] == 0
    raw = to_raw(image, tmp_path / "back.raw")
    assert e2fsck_clean(raw)[0]
    touched = DELETED | EMPTIED | EDITED | LINKED
    assert unchanged_part(manifest(raw, tmp_path), touched) == unchanged_part(baseline, touched)
    assert report.format == "qcow2"


def test_vmdk_stream_optimized_stays_stream_optimized(mbr_template: GuestImage, tmp_path: Path) -> None:
    image = converted(mbr_template, "vmdk", tmp_path / "disk.vmdk", "subformat=streamOptimized")
    prepare(image.path)
    info = qemu_img_info(image.path, "vmdk")
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    raw = to_raw(image, tmp_path / "back.raw")
    assert "ssh_host_rsa_key" not in listing(raw, "/etc/ssh")
    assert e2fsck_clean(raw)[0]


def test_flat_and_gpt_images(tree: Path, tmp_path: Path) -> None:
    for image in (
        flat_ext4(tree, tmp_path / "flat.raw"),
        partitioned_ext4(tree, tmp_path / "gpt.raw", table="gpt"),
    ):
        report = prepare(image.path)
        assert report.change_count == DEFAULT_CHANGES
        assert "ssh_host_rsa_key" not in listing(image, "/etc/ssh")
        assert e2fsck_clean(image)[0]


# ---- options ------------------------------------------------------------------------------


def test_dns_and_modules(image: GuestImage) -> None:
    options = PrepareOptions(dns=("192.0.2.53", "2001:db8::53"), modules=("acpiphp", "loop", "virtio_net"))
    report = prepare(image.path, operations=["resolv-conf", "modules"], options=options)
    assert [op.name for op in report.operations] == ["resolv-conf", "modules"]
    assert cat(image, "/etc/resolv.conf") == (
        b"# Written by imagewright prepare --dns.\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"
    )
    assert cat(image, "/etc/modules") == (
        b"# /etc/modules: kernel modules to load at boot time.\nloop\nacpiphp\nvirtio_net\n"
    )
    again = prepare(image.path, operations=["resolv-conf", "modules"], options=options)
    assert again.change_count == 0


def test_resolv_conf_link_is_replaced_and_modules_load_d_is_used(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree, "etc/hostname", "x\n")
    (tree / "etc" / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    (tree / "etc" / "modules-load.d").mkdir()
    image = flat_ext4(tree, tmp_path / "rhel.raw", size_mib=8)
    report = prepare(
        image.path, operations=["-tmp"], options=PrepareOptions(dns=("10.0.0.2",), modules=("acpiphp",))
    )
    changes = {c.path: c for op in report.operations for c in op.changes}
    assert (
        "replaces the link to ../run/systemd/resolve/stub-resolv.conf" in changes["/etc/resolv.conf"].detail
    )
    assert listing(image, "/etc")["resolv.conf"][0] == 0o100644
    assert cat(image, "/etc/resolv.conf").endswith(b"nameserver 10.0.0.2\n")
    assert cat(image, "/etc/modules-load.d/imagewright.conf") == b"acpiphp\n"


def test_root_password_is_locked_and_nothing_else_in_shadow_changes(image: GuestImage) -> None:
    prepare(image.path, operations=["root-password"])
    assert cat(image, "/etc/shadow") == (
        b"root:!$6$salt$hashhashhash:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
    )
    assert listing(image, "/etc")["shadow"][:3] == (0o100640, 0, 0)
    assert prepare(image.path, operations=["root-password"]).change_count == 0


def test_empty_root_password_becomes_a_star(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree, "etc/shadow", "root::19000:0:99999:7:::\n", 0o600)
    image = flat_ext4(tree, tmp_path / "open.raw", size_mib=8)
    prepare(image.path, operations=["root-password"])
    assert cat(image, "/etc/shadow") == b"root:*:19000:0:99999:7:::\n"


def test_ssh_userdir(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree, "etc/hostname", "x\n")
    write(tree, "root/.ssh/authorized_keys", "ssh-ed25519 AAAA builder\n", 0o600)
    write(tree, "home/bob/.ssh/id_rsa", "key\n", 0o600, 1001)
    image = flat_ext4(tree, tmp_path / "keys.raw", size_mib=8)
    assert "ssh-userdir" not in DEFAULTS
    prepare(image.path, operations=["ssh-userdir"])
    assert ".ssh" not in listing(image, "/root") and ".ssh" not in listing(image, "/home/bob")


# ---- selection ----------------------------------------------------------------------------


def test_selection_rules() -> None:
    none = PrepareOptions()
    assert [op.name for op in select(None, none)] == list(DEFAULTS)
    assert [op.name for op in select(["-tmp,-logfiles"], none)] == [
        n for n in DEFAULTS if n not in ("tmp", "logfiles")
    ]
    assert [op.name for op in select(["logfiles,ssh-hostkeys"], none)] == ["ssh-hostkeys", "logfiles"]
    assert [op.name for op in select(["defaults", "root-password"], none)] == [*DEFAULTS, "root-password"]
    assert "ssh-userdir" in [op.name for op in select(["all"], none)]
    assert "agent" not in [op.name for op in select(["all"], none)]
    assert [op.name for op in select(None, PrepareOptions(agent=True))][-1] == "agent"
    assert "resolv-conf" in [op.name for op in select(None, PrepareOptions(dns=("10.0.0.1",)))]
    assert "resolv-conf" not in [
        op.name for op in select(["-resolv-conf"], PrepareOptions(dns=("10.0.0.1",)))
    ]
    with pytest.raises(InvalidArgumentError) as caught:
        select(["ssh-hostkeys,frobnicate"], none)
    assert str(caught.value).startswith(
        "'frobnicate' is not a prepare operation; valid names are ssh-hostkeys,"
    )
    with pytest.raises(InvalidArgumentError, match="resolv-conf needs --dns"):
        select(["resolv-conf"], none)
    assert set(BY_NAME) >= {
        "ssh-hostkeys",
        "net-persistent",
        "net-hwaddr",
        "machine-id",
        "logfiles",
        "bash-history",
        "tmp",
        "dhcp-leases",
        "package-cache",
        "resolv-conf",
        "modules",
        "root-password",
        "agent",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (PrepareOptions(dns=("10.0.0.300",)), "'10.0.0.300' is not an IPv4 or IPv6 address for --dns."),
        (PrepareOptions(dns=("1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4")), "at most 3 name servers"),
        (PrepareOptions(modules=("acpi php",)), "'acpi php' is not a kernel module name"),
    ],
)
def test_bad_options_leave_the_image_untouched(
    image: GuestImage, options: PrepareOptions, message: str
) -> None:
    before = sha256_file(image.path)
    with pytest.raises(InvalidArgumentError) as caught:
        prepare(image.path, options=options)
    assert message in str(caught.value)
    assert sha256_file(image.path) == before


# ---- refusals and failures ----------------------------------------------------------------


def test_guest_without_etc_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree, "data/file", "not an OS\n")
    image = flat_ext4(tree, tmp_path / "data.raw", size_mib=8)
    before = sha256_file(image.path)
    with pytest.raises(GuestFilesystemError) as caught:
        prepare(image.path)
    assert str(caught.value) == (
        "the filesystem of the whole disk (ext4) of data.raw has no /etc; it does not look like a Linux root "
        "filesystem."
    )
    assert sha256_file(image.path) == before


def test_unsafe_image_is_refused(image: GuestImage, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", image.path, overlay)
    before = sha256_file(overlay), sha256_file(image.path)
    with pytest.raises(UnsafeImageError):
        prepare(overlay)
    assert (sha256_file(overlay), sha256_file(image.path)) == before


def test_failure_midway_leaves_the_image_byte_identical(
    image: GuestImage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = sha256_file(image.path)
    original = BY_NAME["ssh-hostkeys"]

    def fails_after_writing(ctx: PrepareContext) -> None:
        original.run(ctx)
        ctx.guest.flush()  # the deletions really reach the working copy
        raise GuestFilesystemError("injected failure in ssh-hostkeys")

    broken = dataclasses.replace(original, run=fails_after_writing)
    monkeypatch.setattr(
        operations_module,
        "OPERATIONS",
        tuple(broken if op is original else op for op in operations_module.OPERATIONS),
    )
    with pytest.raises(ImagewrightError, match="injected"):
        prepare(image.path, operations=["net-hwaddr", "machine-id", "ssh-hostkeys", "tmp"])
    assert sha256_file(image.path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["disk.raw"]


def test_xfs_guest_without_libguestfs_is_refused_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libguestfs is installed here (tests/guest/test_libguestfs.py uses it): take it away.
    monkeypatch.setattr(libguestfs, "available", lambda: False)
    disk = tmp_path / "xfs.raw"
    with disk.open("wb") as f:
        f.truncate(320 * 1024 * 1024)
    run("mkfs.xfs", "-q", disk)
    before = sha256_file(disk)
    with pytest.raises(GuestFilesystemError) as caught:
        prepare(disk)
    assert str(caught.value) == (
        "The root filesystem is xfs; imagewright edits ext2/3/4 directly and needs libguestfs "
        "(Debian: libguestfs-tools) for xfs."
    )
    assert sha256_file(disk) == before


def test_mac_address_everywhere_is_gone(image: GuestImage, tmp_path: Path) -> None:
    prepare(image.path)
    out = tmp_path / "dump"
    out.mkdir()
    run("debugfs", "-R", f"rdump /etc {out}", image.device)
    for path in out.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert MAC.encode() not in path.read_bytes(), path
