"""imagewright build from a rootfs tarball: hostile members are refused in one sentence with
nothing written outside, and what the tarball says about owners, modes, device nodes, links and
extended attributes comes out in the filesystem, checked with debugfs (also when build runs as
an ordinary user)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import mounted_tmpfs, run, sfdisk_json

from imagewright import files
from imagewright.compute.testguest import TestGuest

pytestmark = pytest.mark.integration

SECTOR = 512


def dir_member(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode, info.uid, info.gid = mode, uid, gid
    return info


def add_file(
    tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0,
    xattrs: dict[str, str] | None = None,
) -> None:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid = len(data), mode, uid, gid
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    tar.addfile(info, io.BytesIO(data))


def link_member(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, 0o777
    return info


def skeleton(tar: tarfile.TarFile) -> None:
    """The few directories a rootfs has, so build has something ordinary around the oddities."""
    for name in ("bin", "boot", "dev", "etc", "tmp", "usr"):
        tar.addfile(dir_member(name))
    add_file(tar, "etc/hostname", b"tarball\n")


def assert_refused(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("imagewright: error:"), result.stderr
    return lines[0]


# --- hostile members ------------------------------------------------------------------------


def hostile_members(tar: tarfile.TarFile, case: str, outside: Path) -> None:
    if case == "dotdot":
        add_file(tar, "../escaped", b"out\n")
    elif case == "absolute":
        add_file(tar, str(outside / "escaped"), b"out\n")
    elif case == "through-symlink":
        tar.addfile(link_member("link", tarfile.SYMTYPE, str(outside)))
        add_file(tar, "link/escaped", b"out\n")
    elif case == "through-root-symlink":
        tar.addfile(link_member("rootlink", tarfile.SYMTYPE, "/"))
        add_file(tar, f"rootlink{outside}/escaped", b"out\n")
    elif case == "hardlink-outside":
        tar.addfile(link_member("escaped", tarfile.LNKTYPE, "../outside"))
    else:
        raise AssertionError(case)


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A directory next to the test's own, where an escaping member would land."""
    where = tmp_path.parent / f"{tmp_path.name}-outside"
    where.mkdir()
    (tmp_path.parent / "outside").touch(exist_ok=True)
    yield where
    shutil.rmtree(where)


#: A fragment each refusal must name, so a test cannot pass on an unrelated error.
REASONS = {
    "dotdot": "'..' component",
    "absolute": "absolute path",
    "through-symlink": "under the symbolic link member 'link'",
    "through-root-symlink": "under the symbolic link member 'rootlink'",
    "hardlink-outside": "hard link to '../outside'",
}


@pytest.mark.parametrize("case", sorted(REASONS))
def test_hostile_member_refused(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, tmp_path: Path, outside: Path, case: str
) -> None:
    # The build runs with tmp_path/work as its cwd, so "../escaped" would be tmp_path/escaped.
    work = tmp_path / "work"
    work.mkdir()
    archive = tmp_path / "rootfs.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        skeleton(tar)
        hostile_members(tar, case, outside)
    out = tmp_path / "out"
    out.mkdir()
    before = sorted(os.listdir(tmp_path.parent))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        result = run_cli([
            "build", "--from", archive, "--kernel", testguest_rootfs.kernel,
            "--initrd", testguest_rootfs.initrd, "-o", out / "disk.raw", "--size", "64M",
        ])  # fmt: skip
    finally:
        os.chdir(cwd)
    message = assert_refused(result)
    assert REASONS[case] in message and "nothing was written" in message, message
    assert os.listdir(out) == []
    assert os.listdir(outside) == []
    assert os.listdir(work) == []
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path.parent / "escaped").exists()
    assert sorted(os.listdir(tmp_path.parent)) == before
    assert sorted(os.listdir(tmp_path)) == ["out", "rootfs.tar", "work"]


# --- fidelity -------------------------------------------------------------------------------


def fidelity_tarball(path: Path, compression: str) -> Path:
    if compression == "zst":
        # Python 3.11's tarfile cannot write zstd; the real zstd program compresses a plain tar.
        plain = fidelity_tarball(path.with_name(path.name.removesuffix(".zst")), "")
        run("zstd", "-q", "--rm", "-o", path, plain)
        return path
    with tarfile.open(path, f"w:{compression}" if compression else "w", format=tarfile.PAX_FORMAT) as tar:
        skeleton(tar)
        tar.addfile(dir_member("home"))
        tar.addfile(dir_member("home/user", mode=0o750, uid=1000, gid=1000))
        add_file(tar, "usr/suid", b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000)
        tar.addfile(dir_member("shared", mode=0o1777))
        dev = tarfile.TarInfo("dev/null")
        dev.type, dev.mode, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 0o666, 1, 3
        tar.addfile(dev)
        tar.addfile(link_member("etc/motd-link", tarfile.SYMTYPE, "../usr/suid"))
        tar.addfile(link_member("bin/sh-abs", tarfile.SYMTYPE, "/usr/suid"))
        add_file(tar, "etc/first", b"shared inode\n", mode=0o640, uid=0, gid=42)
        tar.addfile(link_member("etc/second", tarfile.LNKTYPE, "etc/first"))
        add_file(tar, "etc/tagged", b"attr\n", xattrs={"user.test": "hello"})
    return path


def debugfs(device: Path, request: str) -> str:
    done = run("debugfs", "-R", request, device)
    return done.stdout.decode()


def stat_fields(device: Path, path: str) -> str:
    out = debugfs(device, f"stat {path}")
    assert "Inode:" in out, (path, out)
    return out


def inode_number(stat: str) -> int:
    return int(stat.split("Inode:")[1].split(maxsplit=1)[0])


def extract_root(image: Path, dest: Path) -> Path:
    (part,) = [p for p in sfdisk_json(image)["partitions"] if p["type"] == "83"]
    run(
        "dd", f"if={image}", f"of={dest}", "bs=512", f"skip={part['start']}",
        f"count={part['size']}", "conv=sparse", "status=none",
    )  # fmt: skip
    return dest


def assert_fidelity(image: Path, scratch: Path) -> None:
    root = extract_root(image, scratch / "root.part")
    fsck = run("e2fsck", "-fn", root, check=False)
    assert fsck.returncode == 0, fsck.stdout.decode()

    suid = stat_fields(root, "/usr/suid")
    assert "Type: regular" in suid and "Mode:  04755" in suid, suid
    assert "User:  1000" in suid and "Group:  1000" in suid, suid

    home = stat_fields(root, "/home/user")
    assert "Type: directory" in home and "Mode:  0750" in home and "User:  1000" in home, home

    shared = stat_fields(root, "/shared")
    assert "Type: directory" in shared and "Mode:  01777" in shared and "User:     0" in shared, shared

    null = stat_fields(root, "/dev/null")
    assert "Type: character special" in null and "Mode:  0666" in null, null
    assert "Device major/minor number: 01:03" in null, null

    link = stat_fields(root, "/etc/motd-link")
    assert "Type: symlink" in link and 'Fast link dest: "../usr/suid"' in link, link
    abslink = stat_fields(root, "/bin/sh-abs")
    assert 'Fast link dest: "/usr/suid"' in abslink, abslink

    first, second = stat_fields(root, "/etc/first"), stat_fields(root, "/etc/second")
    assert inode_number(first) == inode_number(second)
    assert "Links: 2" in first and "Group:    42" in first and "Mode:  0640" in first, first
    assert debugfs(root, "cat /etc/second") == "shared inode\n"

    assert debugfs(root, "ea_get /etc/tagged user.test").strip() == 'user.test (5) = "hello"'
    assert debugfs(root, "cat /etc/tagged") == "attr\n"


@pytest.fixture
def memory_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A small tmpfs standing in for /dev/shm: where build's staging tree goes when it fits."""
    with mounted_tmpfs(tmp_path / "shm", "48m") as shm:
        monkeypatch.setattr(files, "MEMORY_SCRATCH_ROOT", shm)
        yield shm


@pytest.mark.parametrize(
    ("compression", "staging"),
    [("", "memory"), ("", "disk"), ("gz", "memory"), ("xz", "memory"), ("zst", "disk")],
)
def test_tarball_metadata_preserved(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, tmp_path: Path, compression: str,
    staging: str, memory_root: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    if staging == "disk":
        monkeypatch.setenv("IMAGEWRIGHT_MEMORY_SCRATCH", "0")
    suffix = f".tar.{compression}" if compression else ".tar"
    archive = fidelity_tarball(tmp_path / f"rootfs{suffix}", compression)
    image = tmp_path / "disk.raw"
    result = run_cli([
        "build", "--from", archive, "--kernel", testguest_rootfs.kernel,
        "--initrd", testguest_rootfs.initrd, "-o", image, "--size", "64M", "--firmware", "bios",
    ])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert_fidelity(image, tmp_path)
    # The staging tree was made where asked, and is gone.
    assert os.listdir(memory_root) == ([f"imagewright-{os.getuid()}"] if staging == "memory" else [])
    if staging == "memory":
        assert os.listdir(memory_root / f"imagewright-{os.getuid()}") == []
    assert not [name for name in os.listdir(tmp_path) if ".iw-" in name]


def test_a_failure_while_staging_in_memory_leaves_nothing(
    run_cli: Callable[..., Result], testguest_rootfs: TestGuest, tmp_path: Path, memory_root: Path
) -> None:
    # Inspection accepts a directory replaced by a file; extraction refuses it, half-way through.
    archive = tmp_path / "rootfs.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        skeleton(tar)
        tar.addfile(dir_member("etc/x"))
        add_file(tar, "etc/x", b"not a directory\n")
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli([
        "build", "--from", archive, "--kernel", testguest_rootfs.kernel,
        "--initrd", testguest_rootfs.initrd, "-o", out / "disk.raw", "--size", "64M",
        "--firmware", "bios",
    ])  # fmt: skip
    message = assert_refused(result)
    assert "a directory and then a non-directory at /etc/x" in message, message
    assert os.listdir(out) == []
    assert os.listdir(memory_root) == [f"imagewright-{os.getuid()}"]
    assert os.listdir(memory_root / f"imagewright-{os.getuid()}") == []


def test_tarball_metadata_preserved_as_ordinary_user(testguest_rootfs: TestGuest, tmp_path: Path) -> None:
    # As root, the build runs as nobody through setpriv; as anyone else it already is unprivileged.
    as_root = os.geteuid() == 0
    become = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_root else []
    builder_uid = 65534 if as_root else os.geteuid()
    # pytest's tmp dirs are private to root; the unprivileged build needs a world-usable one.
    with tempfile.TemporaryDirectory(prefix="iw-tar-user-") as shared_dir:
        work = Path(shared_dir)
        work.chmod(0o777)
        archive = fidelity_tarball(work / "rootfs.tar.gz", "gz")
        kernel, initrd = work / "vmlinuz", work / "initrd.img"
        shutil.copyfile(testguest_rootfs.kernel, kernel)
        shutil.copyfile(testguest_rootfs.initrd, initrd)
        for item in (archive, kernel, initrd):
            item.chmod(0o644)
        image = work / "disk.raw"
        venv_bin = str(Path(sys.executable).parent)
        env = {
            "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(work),
            "TMPDIR": str(work),
            "LANG": "C.UTF-8",
        }
        done = subprocess.run(
            [
                *become, os.path.join(venv_bin, "imagewright"), "build", "--from", str(archive),
                "--kernel", str(kernel), "--initrd", str(initrd), "-o", str(image), "--size", "64M",
                "--firmware", "bios",
            ],
            env=env, cwd=work, capture_output=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        assert image.stat().st_uid == builder_uid
        assert_fidelity(image, tmp_path)
