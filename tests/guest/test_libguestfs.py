"""The libguestfs backend (guestfish) on xfs guests: file operations and prepare, checked with
guestfish and xfs_repair directly. Each open starts an appliance VM (13-20 s under TCG)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from tests.fixtures.tools import run, sfdisk
from tests.guest.images import MAC, sha256_file, sysprep_tree

from imagewright.errors import GuestFilesystemError
from imagewright.guest import FileType, GuestFileNotFoundError, open_guest
from imagewright.ops.prepare import prepare
from imagewright.programs.guestfish import environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1 << 20
XFS_SIZE = 320 * MIB  # mkfs.xfs wants at least 300 MB


@pytest.fixture(autouse=True)
def libguestfs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same libguestfs settings for the guestfish the tests run as for imagewright's."""
    for key, value in environment().items():
        monkeypatch.setenv(key, value)


def guestfish(*args: str | Path) -> str:
    return run("guestfish", *args).stdout.decode("utf-8", "replace")


def tree_tarball(tree: Path, out: Path) -> Path:
    """The tree as a tar with numeric owners (guestfish tar-in keeps them)."""
    with tarfile.open(out, "w") as tar:
        for path in sorted(tree.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(tree)), recursive=False)
    return out


def xfs_protofile(tree: Path, out: Path) -> Path:
    """``tree`` as an mkfs.xfs prototype file (man mkfs.xfs, -p): directories, regular files
    (their bytes read from the tree) and symbolic links, with the tree's permission bits and
    owners. Names with blanks cannot be written in one and are refused."""

    def spec(path: Path) -> str:
        info = path.lstat()
        kind = "l" if path.is_symlink() else "d" if path.is_dir() else "-"
        assert kind == "l" or path.is_dir() or path.is_file(), path
        setuid = "u" if info.st_mode & 0o4000 else "-"
        setgid = "g" if info.st_mode & 0o2000 else "-"
        return f"{kind}{setuid}{setgid}{info.st_mode & 0o777:03o} {info.st_uid} {info.st_gid}"

    def entries(directory: Path, depth: int) -> list[str]:
        lines = []
        for path in sorted(directory.iterdir()):
            assert not any(c.isspace() for c in path.name), path
            indent = " " * depth
            if path.is_symlink():
                lines.append(f"{indent}{path.name} {spec(path)} {path.readlink()}")
            elif path.is_dir():
                lines += [f"{indent}{path.name} {spec(path)}", *entries(path, depth + 1), f"{indent}$"]
            else:
                lines.append(f"{indent}{path.name} {spec(path)} {path}")
        return lines

    out.write_text("\n".join(["/dev/null", "0 0", spec(tree), *entries(tree, 1), "$", ""]))
    return out


def xfs_disk(tmp_path: Path, tree: Path | None, *, fill: str = "guestfish") -> Path:
    """GPT disk: partition 1 an empty xfs "/boot", partition 2 an xfs root holding ``tree``,
    copied in by ``guestfish tar-in`` (``fill="guestfish"``: an appliance boot) or written by
    ``mkfs.xfs -p`` from a prototype file (``fill="mkfs"``)."""
    disk = tmp_path / "xfs-disk.raw"
    with disk.open("wb") as f:
        f.truncate(2 * MIB + 2 * XFS_SIZE)
    part_sectors = XFS_SIZE // 512
    sfdisk(
        disk,
        f"label: gpt\nstart=2048, size={part_sectors}, type=linux\n"
        f"start={2048 + part_sectors}, size={part_sectors}, type=linux\n",
    )
    for index in (0, 1):
        part = tmp_path / f"part{index}.xfs"
        with part.open("wb") as f:
            f.truncate(XFS_SIZE)
        proto = []
        if tree is not None and fill == "mkfs" and index == 1:
            proto = ["-p", str(xfs_protofile(tree, tmp_path / "root.proto"))]
        run("mkfs.xfs", "-q", *proto, part)
        offset_mib = 1 + index * (XFS_SIZE // MIB)
        run(
            "dd",
            f"if={part}",
            f"of={disk}",
            "bs=1M",
            f"seek={offset_mib}",
            "conv=notrunc,sparse",
            "status=none",
        )
        part.unlink()
    if tree is not None and fill == "guestfish":
        tarball = tree_tarball(tree, tmp_path / "tree.tar")
        guestfish("--format=raw", "-a", disk, "-m", "/dev/sda2", "tar-in", tarball, "/")
    return disk


def xfs_repair_clean(disk: Path, partition: int, tmp_path: Path) -> bool:
    part = tmp_path / "check.xfs"
    skip = 1 + (partition - 1) * (XFS_SIZE // MIB)
    run("dd", f"if={disk}", f"of={part}", "bs=1M", f"skip={skip}", f"count={XFS_SIZE // MIB}", "status=none")
    clean = run("xfs_repair", "-n", part, check=False).returncode == 0
    part.unlink()
    return clean


@pytest.mark.long  # 58-83 s of TCG appliance; libguestfs on XFS stays in the normal suite via
# tests/ops/test_inspect_os_libguestfs.py (43 s)
def test_file_operations_on_a_flat_xfs(tmp_path: Path) -> None:
    image = tmp_path / "flat.xfs"
    with image.open("wb") as f:
        f.truncate(XFS_SIZE)
    run("mkfs.xfs", "-q", image)
    awkward = '/etc/a "quoted" name'
    with open_guest(image, writable=True) as guest:
        assert guest.description == "the filesystem of the whole disk (xfs) of flat.xfs"
        guest.mkdir("/etc/ssh/sub", parents=True, mode=0o700)
        guest.write_file(awkward, b"first", mode=0o600, uid=5, gid=6)
        guest.write_file(awkward, b"second")  # keeps mode and owner
        guest.symlink(awkward, "/etc/link")
        with pytest.raises(GuestFileNotFoundError, match="The directory /var/log does not exist"):
            guest.write_file("/var/log/syslog", b"x")
        guest.mkdir("/var/log", parents=True)
        guest.write_file("/var/log/syslog", b"x" * 1000)
        guest.truncate("/var/log/syslog")
        found = guest.stat(awkward)
        assert (found.mode, found.uid, found.gid, found.size) == (0o600, 5, 6, 6)
        assert guest.read_file("/etc/link") == b"second"
        assert guest.readlink("/etc/link") == awkward
        assert {e.name: e.type for e in guest.listdir("/etc")} == {
            "ssh": FileType.DIRECTORY,
            'a "quoted" name': FileType.REGULAR,
            "link": FileType.SYMLINK,
        }
        with pytest.raises(GuestFilesystemError, match="not empty"):
            guest.delete("/etc/ssh")
        guest.delete("/etc/ssh", recursive=True)
        guest.chown("/var/log/syslog", 7, 8)
        guest.chmod("/var/log/syslog", 0o640)
        with pytest.raises(GuestFileNotFoundError):
            guest.read_file("/etc/nothing")
    listing = guestfish(
        "--ro", "--format=raw", "-a", image, "-m", "/dev/sda", "ll", "/etc", ":", "cat", awkward
    )
    assert "ssh" not in listing
    assert listing.rstrip().endswith("second")
    stat = guestfish("--ro", "--format=raw", "-a", image, "-m", "/dev/sda", "lstatns", "/var/log/syslog")
    assert "st_size: 0\n" in stat and "st_uid: 7\n" in stat and f"st_mode: {0o100640}\n" in stat
    assert run("xfs_repair", "-n", image, check=False).returncode == 0


@pytest.mark.long  # 58-83 s of TCG appliance; libguestfs on XFS stays in the normal suite via
# tests/ops/test_inspect_os_libguestfs.py (43 s)
def test_prepare_finds_the_xfs_root_and_edits_it(tmp_path: Path) -> None:
    tree = sysprep_tree(tmp_path / "tree")
    disk = xfs_disk(tmp_path, tree)
    report = prepare(disk)
    assert report.filesystem == "the root filesystem (xfs) of xfs-disk.raw"
    changed = {c.path for op in report.operations for c in op.changes}
    assert {"/etc/ssh/ssh_host_rsa_key", "/etc/machine-id", "/etc/netplan/50-cloud-init.yaml"} <= changed
    out = guestfish(
        "--ro", "--format=raw", "-a", disk, "-m", "/dev/sda2",
        "ls", "/etc/ssh", ":",
        "cat", "/etc/netplan/50-cloud-init.yaml", ":",
        "readlink", "/etc/udev/rules.d/70-persistent-net.rules", ":",
        "cat", "/etc/sysconfig/network-scripts/ifcfg-eth0", ":",
        "filesize", "/etc/machine-id", ":",
        "ls", "/tmp",
    )  # fmt: skip
    assert "ssh_host" not in out and "sshd_config" in out
    assert MAC not in out
    assert "/dev/null" in out
    assert "DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\n" in out
    assert "\n0\n" in out
    assert xfs_repair_clean(disk, 2, tmp_path)
    assert xfs_repair_clean(disk, 1, tmp_path)


def test_failure_leaves_the_xfs_image_untouched(tmp_path: Path) -> None:
    image = tmp_path / "flat.xfs"
    with image.open("wb") as f:
        f.truncate(XFS_SIZE)
    run("mkfs.xfs", "-q", image)
    before = sha256_file(image)
    with pytest.raises(RuntimeError), open_guest(image, writable=True) as guest:
        guest.write_file("/etc-file", b"written, then abandoned")
        raise RuntimeError("stop")
    assert sha256_file(image) == before
    assert not [p for p in tmp_path.iterdir() if ".imagewright-" in p.name]
