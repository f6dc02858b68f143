"""Every GuestFS operation on a real ext4 image, checked with debugfs and e2fsck directly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from tests.guest.images import (
    ALICE,
    GuestImage,
    cat,
    debugfs,
    e2fsck_clean,
    flat_ext4,
    listing,
    stat_of,
)

from imagewright.errors import GuestFilesystemError, InvalidArgumentError
from imagewright.guest import FileType, GuestFileNotFoundError, open_guest

pytestmark = pytest.mark.integration


def assert_clean(image: GuestImage) -> None:
    clean, output = e2fsck_clean(image)
    assert clean, output


def test_reads_files_directories_and_metadata(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path) as guest:
        assert guest.read_file("/etc/hostname") == b"used-vm\n"
        names = {e.name: e for e in guest.listdir("/etc/ssh")}
        assert set(names) == {
            "ssh_host_rsa_key",
            "ssh_host_rsa_key.pub",
            "ssh_host_ecdsa_key",
            "ssh_host_ecdsa_key.pub",
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "sshd_config",
        }
        assert names["ssh_host_rsa_key"].mode == 0o600
        assert names["ssh_host_rsa_key"].type is FileType.REGULAR
        notes = guest.stat("/home/alice/notes.txt")
        assert (notes.uid, notes.gid, notes.mode, notes.size) == (ALICE, ALICE, 0o644, 8)
        assert notes.mtime > 1_600_000_000
        init = guest.stat("/sbin/init")
        assert init.type is FileType.SYMLINK
        assert init.link_target == "/lib/systemd/systemd"
        assert guest.readlink("/sbin/init") == "/lib/systemd/systemd"
        assert guest.stat("/sbin/init", follow=True).path == "/lib/systemd/systemd"
        assert guest.stat("/tmp").mode == 0o1777
        assert guest.exists("/etc/machine-id")
        assert not guest.exists("/etc/nothing")
        assert guest.is_dir("/var/log") and not guest.is_file("/var/log")
        with pytest.raises(GuestFileNotFoundError):
            guest.read_file("/etc/nothing")
        with pytest.raises(GuestFilesystemError, match="not a file"):
            guest.read_file("/etc")


def test_stat_matches_debugfs(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path) as guest:
        found = guest.stat("/etc/shadow")
    text = stat_of(flat_image, "/etc/shadow")
    assert f"Inode: {found.inode} " in text
    assert f"Mode:  0{found.mode:o}" in text
    assert found.mode == 0o640


def test_glob_matches_dotfiles_and_several_levels(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path) as guest:
        assert guest.glob("/etc/ssh/ssh_host_*_key") == [
            "/etc/ssh/ssh_host_ecdsa_key",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_rsa_key",
        ]
        assert "/tmp/.X11-unix" in guest.glob("/tmp/*")
        assert guest.glob("/home/*/.bash_history") == ["/home/alice/.bash_history"]
        assert guest.glob("/nothing/*/x") == []
        assert guest.glob("/etc/hostname") == ["/etc/hostname"]


def test_write_new_file_with_mode_and_owner(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path, writable=True) as guest:
        guest.write_file("/etc/motd", b"hello\n", mode=0o640, uid=ALICE, gid=4)
    assert cat(flat_image, "/etc/motd") == b"hello\n"
    assert listing(flat_image, "/etc")["motd"] == (0o100640, ALICE, 4, 6)
    assert_clean(flat_image)


def test_new_file_defaults_to_root_0644(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path, writable=True) as guest:
        guest.write_file("/etc/new", b"x")
    assert listing(flat_image, "/etc")["new"] == (0o100644, 0, 0, 1)


def test_overwrite_keeps_owner_and_mode(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path, writable=True) as guest:
        guest.write_file("/home/alice/notes.txt", b"changed\n")
        guest.write_file("/etc/shadow", b"root:*:1::::::\n")
    assert cat(flat_image, "/home/alice/notes.txt") == b"changed\n"
    assert listing(flat_image, "/home/alice")["notes.txt"] == (0o100644, ALICE, ALICE, 8)
    assert listing(flat_image, "/etc")["shadow"][:3] == (0o100640, 0, 0)
    assert_clean(flat_image)


def test_overwrite_with_explicit_mode_replaces_it(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path, writable=True) as guest:
        guest.write_file("/home/alice/notes.txt", b"x", mode=0o600, uid=0)
    assert listing(flat_image, "/home/alice")["notes.txt"] == (0o100600, 0, ALICE, 1)


@pytest.mark.parametrize(
    "name",
    ["a file with spaces", 'it\'s "quoted"', '""', "tab\there", "ünïcødé ☃", "-starts-with-dash", "#hash"],
)
def test_names_with_spaces_quotes_and_unicode(flat_image: GuestImage, name: str) -> None:
    path = f"/etc/{name}"
    with open_guest(flat_image.path, writable=True) as guest:
        guest.mkdir(f"/var/{name}/sub dir", parents=True)
        guest.write_file(path, name.encode())
        guest.symlink(path, f"/var/{name}/sub dir/link")
    with open_guest(flat_image.path) as guest:
        assert guest.read_file(path) == name.encode()
        assert guest.read_file(f"/var/{name}/sub dir/link") == name.encode()
        assert name in {e.name for e in guest.listdir("/etc")}
    assert name in listing(flat_image, "/etc")
    assert_clean(flat_image)


def test_existing_awkward_names_are_read_and_deleted(flat_image: GuestImage) -> None:
    awkward = '/tmp/dir with spaces/it\'s "quoted".txt'
    with open_guest(flat_image.path, writable=True) as guest:
        assert guest.read_file(awkward) == b"q\n"
        guest.delete("/tmp/dir with spaces", recursive=True)
    assert "dir with spaces" not in listing(flat_image, "/tmp")
    assert_clean(flat_image)


def test_symlinks_fast_and_slow(flat_image: GuestImage) -> None:
    long_target = "/usr/share/" + "d" * 120 + "/file"
    with open_guest(flat_image.path, writable=True) as guest:
        guest.symlink("/dev/null", "/etc/fast")
        guest.symlink(long_target, "/etc/slow")
        guest.symlink("../etc/hostname", "/var/relative")
    with open_guest(flat_image.path) as guest:
        assert guest.readlink("/etc/fast") == "/dev/null"
        assert guest.readlink("/etc/slow") == long_target
        assert guest.stat("/etc/slow").size == len(long_target)
        assert guest.read_file("/var/relative") == b"used-vm\n"
        with pytest.raises(GuestFileNotFoundError):
            guest.read_file("/etc/slow")
    assert 'Fast link dest: "/dev/null"' in stat_of(flat_image, "/etc/fast")
    assert cat(flat_image, "/etc/slow") == long_target.encode()
    assert_clean(flat_image)


def test_symlink_refuses_existing_path(flat_image: GuestImage) -> None:
    with (
        open_guest(flat_image.path, writable=True) as guest,
        pytest.raises(GuestFilesystemError, match="exists"),
    ):
        guest.symlink("/x", "/etc/hostname")


def test_writes_through_a_symlinked_parent_land_in_the_real_directory(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path, writable=True) as guest:
        guest.mkdir("/run")
        guest.symlink("/run", "/var/run")
        guest.write_file("/var/run/pid", b"1\n")
        guest.mkdir("/var/run/sub")
    assert cat(flat_image, "/run/pid") == b"1\n"
    assert "sub" in listing(flat_image, "/run")
    assert_clean(flat_image)


def test_mkdir_chmod_chown(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path, writable=True) as guest:
        guest.mkdir("/srv/a/b/c", parents=True, mode=0o750, uid=ALICE, gid=ALICE)
        guest.mkdir("/srv/a/b/c", parents=True)  # exists: nothing to do
        guest.chmod("/etc/hostname", 0o4711)
        guest.chown("/etc/hostname", 12, 34)
        with pytest.raises(GuestFilesystemError, match="already exists"):
            guest.mkdir("/srv")
        with pytest.raises(GuestFileNotFoundError):
            guest.mkdir("/no/such/parent")
    assert listing(flat_image, "/srv/a/b")["c"][:3] == (0o40750, ALICE, ALICE)
    assert listing(flat_image, "/srv")["a"][:3] == (0o40750, ALICE, ALICE)
    assert listing(flat_image, "/etc")["hostname"][:3] == (0o104711, 12, 34)
    assert_clean(flat_image)


def test_five_mebibyte_file(flat_image: GuestImage, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024)
    with open_guest(flat_image.path, writable=True) as guest:
        guest.write_file("/var/big.bin", data)
    assert hashlib.sha256(cat(flat_image, "/var/big.bin")).digest() == hashlib.sha256(data).digest()
    with open_guest(flat_image.path) as guest:
        out = tmp_path / "out.bin"
        guest.copy_out("/var/big.bin", out)
        assert out.read_bytes() == data
        with pytest.raises(GuestFilesystemError, match="more than"):
            guest.read_file("/var/big.bin", limit=1024)
    assert_clean(flat_image)


def test_copy_in_from_a_host_path_with_spaces(flat_image: GuestImage, tmp_path: Path) -> None:
    source = tmp_path / 'a "host" file'
    source.write_bytes(b"from host\n")
    with open_guest(flat_image.path, writable=True) as guest:
        guest.copy_in(source, "/root/copied", mode=0o600)
    assert cat(flat_image, "/root/copied") == b"from host\n"
    assert listing(flat_image, "/root")["copied"] == (0o100600, 0, 0, 10)


def test_delete_file_link_and_tree(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path, writable=True) as guest:
        guest.delete("/etc/ssh/ssh_host_rsa_key")
        guest.delete("/sbin/init")  # the link, not its target
        with pytest.raises(GuestFilesystemError, match="not empty"):
            guest.delete("/var/cache")
        guest.delete("/var/cache", recursive=True)
        guest.delete("/etc/nothing", missing_ok=True)
        with pytest.raises(GuestFileNotFoundError):
            guest.delete("/etc/nothing")
        with pytest.raises(GuestFilesystemError, match="root directory"):
            guest.delete("/", recursive=True)
    assert "ssh_host_rsa_key" not in listing(flat_image, "/etc/ssh")
    assert "ssh_host_rsa_key.pub" in listing(flat_image, "/etc/ssh")
    assert "init" not in listing(flat_image, "/sbin")
    assert "systemd" in listing(flat_image, "/lib/systemd")
    assert "cache" not in listing(flat_image, "/var")
    assert_clean(flat_image)


def test_truncate_keeps_inode_owner_and_mode(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path, writable=True) as guest:
        before = guest.stat("/var/log/syslog")
        guest.truncate("/var/log/syslog")
        after = guest.stat("/var/log/syslog")
    assert before.size > 0
    assert (after.inode, after.mode, after.size) == (before.inode, 0o640, 0)
    assert cat(flat_image, "/var/log/syslog") == b""
    assert_clean(flat_image)


def test_read_only_guest_refuses_writes(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path) as guest, pytest.raises(GuestFilesystemError, match="read-only"):
        guest.write_file("/etc/x", b"")


@pytest.mark.parametrize("bad", ["relative/path", "/etc/a\nb", "/etc/nul\0", "/etc/cr\r", ""])
def test_bad_paths_are_refused(flat_image: GuestImage, bad: str) -> None:
    with open_guest(flat_image.path) as guest, pytest.raises(InvalidArgumentError):
        guest.stat(bad)


def test_paths_are_normalised(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path) as guest:
        assert guest.read_file("//etc/./ssh/../hostname") == b"used-vm\n"


def test_guest_file_name_with_line_break_is_listed_exactly(tmp_path: Path) -> None:
    # A guest name holding a line break and text that looks like debugfs output must not
    # confuse the parsers (names never contain '/', so ls -p records stay unambiguous).
    tricky = 'evil\ndebugfs: stat "x"\nx: File not found by ext2_lookup \n'

    tree = tmp_path / "tree"
    (tree / "tmp").mkdir(parents=True)
    (tree / "tmp" / tricky).write_bytes(b"payload")
    (tree / "tmp" / "passwd").write_bytes(b"real")
    image = flat_ext4(tree, tmp_path / "tricky.raw", size_mib=8)
    with open_guest(image.path, writable=True) as guest:
        entries = {e.name: e for e in guest.listdir("/tmp")}
        assert set(entries) == {tricky, "passwd"}
        assert entries[tricky].size == 7
        with pytest.raises(InvalidArgumentError, match="line break"):
            guest.delete(f"/tmp/{tricky}")
        guest.delete("/tmp/passwd")
    raw_listing = debugfs(image, "ls -p /tmp")
    assert "/passwd/" not in raw_listing
    assert "/evil\n" in raw_listing


def test_many_writes(flat_image: GuestImage) -> None:
    with open_guest(flat_image.path, writable=True) as guest:
        guest.mkdir("/srv")
        for i in range(100):
            guest.write_file(f"/srv/file {i}", str(i).encode())
        assert len(guest.listdir("/srv")) == 100
        assert guest.read_file("/srv/file 42") == b"42"
    assert len(listing(flat_image, "/srv")) == 100
    assert_clean(flat_image)
