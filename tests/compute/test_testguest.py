"""The test guest tree has what it promises; its tarball and flat ext4 are right (real tools)."""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from pathlib import Path

import pytest
from tests.fixtures.testguest import FLAT_EXT4_UUID
from tests.fixtures.tools import run

from imagewright.compute.testguest import (
    GUEST_MODULES,
    HOST_TOOLS,
    FlatFilesystem,
    TestGuest,
    build_testguest_rootfs,
    rootfs_tarball,
    tree_size,
)
from imagewright.compute.testguest.kernel import _closure, cached_bundles
from imagewright.compute.testguest.kernel import testguest_cache_root as cache_root
from imagewright.compute.testguest.rootfs import merged_path
from imagewright.errors import BuildError, OutputExistsError

pytestmark = pytest.mark.integration


def test_kernel_and_initramfs_are_in_boot(testguest_rootfs: TestGuest) -> None:
    guest = testguest_rootfs
    assert guest.kernel == guest.root / "boot" / f"vmlinuz-{guest.kernel_version}"
    assert guest.kernel_in_guest == f"/boot/vmlinuz-{guest.kernel_version}"
    assert guest.initrd_in_guest == f"/boot/initrd.img-{guest.kernel_version}"
    assert b"HdrS" in guest.kernel.read_bytes()[:4096]  # the x86 boot protocol header
    assert guest.kernel_version.endswith("-amd64")
    # The release is what linux-image-amd64 depends on (the package name carries it).
    depends = run("apt-cache", "depends", "linux-image-amd64").stdout.decode()
    assert f"linux-image-{guest.kernel_version}" in depends


def test_initramfs_holds_init_console_busybox_and_modules(testguest_rootfs: TestGuest) -> None:
    guest = testguest_rootfs
    archive = gzip.decompress(guest.initrd.read_bytes())
    names = set(run("cpio", "-it", "--quiet", input=archive).stdout.decode().splitlines())
    listing = run("cpio", "-itv", "--quiet", input=archive).stdout.decode()
    assert {"init", "dev/console", "usr/bin/busybox", "usr/sbin/switch_root", "usr/sbin/findfs"} <= names
    modules = f"usr/lib/modules/{guest.kernel_version}/kernel"
    for module in (
        "drivers/block/virtio_blk.ko",
        "fs/ext4/ext4.ko",
        "drivers/ata/ata_piix.ko",
        "fs/isofs/isofs.ko",
    ):
        assert f"{modules}/{module}" in names
    console = next(line for line in listing.splitlines() if line.endswith(" dev/console"))
    assert console.startswith("crw") and console.split()[4:6] == ["5,", "1"]


def test_modules_and_their_dependencies_are_in_the_tree(testguest_rootfs: TestGuest) -> None:
    modules = testguest_rootfs.root / "usr/lib/modules" / testguest_rootfs.kernel_version
    dep = (modules / "modules.dep").read_text()
    names = {Path(line.split(":")[0]).name.removesuffix(".ko").replace("-", "_") for line in dep.splitlines()}
    for wanted in GUEST_MODULES:
        assert wanted.replace("-", "_") in names
    for needed in (
        "jbd2",
        "mbcache",
        "crc16",
        "cdrom",
        "fat",
        "failover",
        "net_failover",
        "scsi_mod",
        "libata",
    ):
        assert needed in names
    for line in dep.splitlines():  # every file modules.dep names is there
        for path in line.replace(":", " ").split():
            assert (modules / path).is_file(), path
    etc_modules = (testguest_rootfs.root / "etc/modules").read_text().split()
    assert "virtio_blk" in etc_modules and "ext4" in etc_modules


def test_busybox_init_and_applets(testguest_rootfs: TestGuest) -> None:
    root = testguest_rootfs.root
    assert os.readlink(root / "sbin") == "usr/sbin" and os.readlink(root / "lib64") == "usr/lib64"
    assert os.readlink(root / "usr/sbin/init") == "/usr/bin/busybox"
    assert os.readlink(root / "usr/bin/sh") == "/usr/bin/busybox"
    assert os.readlink(root / "usr/sbin/swapon") == "/usr/bin/busybox"
    assert (root / "usr/bin/busybox").stat().st_mode & 0o111
    inittab = (root / "etc/inittab").read_text()
    assert "::sysinit:/etc/init.d/rcS" in inittab
    rcs = (root / "etc/init.d/rcS").read_text()
    assert "swapon -a" in rcs and "/etc/rc.local" in rcs and "imagewright-testguest: up" in rcs
    assert "imagewright.poweroff" in rcs and "poweroff -f" in rcs


def test_host_tools_come_with_their_libraries(testguest_rootfs: TestGuest) -> None:
    root = testguest_rootfs.root
    for tool in HOST_TOOLS:
        host = Path(run("sh", "-c", f"command -v {tool} || echo /usr/sbin/{tool}").stdout.decode().strip())
        inside = root / merged_path(str(host))
        assert inside.is_file() and not inside.is_symlink(), tool
        assert inside.read_bytes() == host.read_bytes()
        for line in run("ldd", host).stdout.decode().splitlines():
            target = line.split("=>")[-1].split("(")[0].strip()
            if target.startswith("/"):
                assert (root / merged_path(target)).is_file(), f"{tool} needs {target}"
    # The tools really run from the tree, with the tree's loader and libraries only.
    loader = root / "usr/lib64/ld-linux-x86-64.so.2"
    libs = f"{root}/usr/lib/x86_64-linux-gnu"
    version = run(loader, "--library-path", libs, root / "usr/sbin/sfdisk", "--version").stdout.decode()
    assert "sfdisk from util-linux" in version


def test_configuration_files(testguest_rootfs: TestGuest) -> None:
    root = testguest_rootfs.root
    assert (root / "etc/hostname").read_text() == "testguest\n"
    assert "127.0.1.1\ttestguest" in (root / "etc/hosts").read_text()
    assert (root / "etc/passwd").read_text().startswith("root:x:0:0:root:/root:/bin/sh\n")
    assert (root / "etc/shadow").read_text().startswith("root:!:")  # locked
    assert stat.S_IMODE((root / "etc/shadow").stat().st_mode) == 0o600
    assert "root:x:0:" in (root / "etc/group").read_text()
    rc_local = root / "etc/rc.local"
    assert rc_local.stat().st_mode & 0o111
    assert rc_local.read_text().rstrip().splitlines()[-1] == "exit 0"
    assert list((root / "etc/network").iterdir()) == []
    assert (root / "etc/ssh").is_dir()
    # Where Debian's busybox udhcpc looks for its lease script (strings in the binary).
    assert (root / "etc/udhcpc/default.script").stat().st_mode & 0o111
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "root").stat().st_mode) == 0o700


def test_tree_is_small(testguest_rootfs: TestGuest) -> None:
    size = tree_size(testguest_rootfs.root)
    assert 10 << 20 < size < 64 << 20, size


def _cache_state() -> dict[Path, tuple[int, int]]:
    root = cache_root()
    return {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in root.rglob("*") if path.is_file()}


def test_second_build_comes_from_the_cache(testguest_rootfs: TestGuest, tmp_path: Path) -> None:
    # From the cache: nothing downloaded, cut down or rebuilt (every cached file the same inode
    # and mtime, none added); the lock file is the only one a build may touch.
    before = _cache_state()
    again = build_testguest_rootfs(tmp_path / "again")
    after = _cache_state()
    lock = cache_root() / ".lock"
    assert {k: v for k, v in after.items() if k != lock} == {k: v for k, v in before.items() if k != lock}
    assert again.kernel_version == testguest_rootfs.kernel_version
    assert again.initrd.read_bytes() == testguest_rootfs.initrd.read_bytes()
    bundle = cached_bundles()[-1]
    assert bundle.release == again.kernel_version
    assert not list(bundle.directory.glob("*.deb"))  # the 70 MB package is not kept


def test_build_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(OutputExistsError):
        build_testguest_rootfs(tmp_path / "busy")


def test_tarball_members_are_relative_and_owned_by_root(testguest_tarball: Path) -> None:
    with tarfile.open(testguest_tarball) as tar:
        members = tar.getmembers()
    names = {m.name for m in members}
    assert "./etc/init.d/rcS" in names and "./usr/bin/busybox" in names
    assert all(m.uid == 0 and m.gid == 0 for m in members)
    assert all(not m.name.startswith("/") and ".." not in m.name.split("/") for m in members)
    sbin = next(m for m in members if m.name == "./sbin")
    assert sbin.issym() and sbin.linkname == "usr/sbin"
    listing = run("tar", "-tzvf", testguest_tarball).stdout.decode()
    assert "root/root" in listing
    with pytest.raises(OutputExistsError):
        rootfs_tarball(Path("/nonexistent"), testguest_tarball)


def test_flat_ext4_is_clean_and_holds_the_tree(testguest_flat_ext4: FlatFilesystem) -> None:
    fs = testguest_flat_ext4
    assert fs.uuid == FLAT_EXT4_UUID
    probe = run("blkid", "-p", "-o", "export", fs.path).stdout.decode()
    assert "TYPE=ext4" in probe and f"UUID={FLAT_EXT4_UUID}" in probe and "LABEL=testroot" in probe
    run("e2fsck", "-fn", fs.path)
    hostname = run("debugfs", "-R", "cat /etc/hostname", fs.path).stdout.decode()
    assert hostname == "testguest\n"
    init = run("debugfs", "-R", "stat /usr/sbin/init", fs.path).stdout.decode()
    assert "Type: symlink" in init and "/usr/bin/busybox" in init
    assert fs.size_bytes % (1 << 20) == 0 and fs.path.stat().st_size == fs.size_bytes


def test_module_closure_orders_dependencies_first() -> None:
    dependencies = {
        "kernel/fs/ext4/ext4.ko": ("kernel/lib/crc16.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko"),
        "kernel/lib/crc16.ko": (),
        "kernel/fs/mbcache.ko": (),
        "kernel/fs/jbd2/jbd2.ko": (),
        "kernel/drivers/block/virtio_blk.ko": ("kernel/drivers/virtio/virtio.ko",),
        "kernel/drivers/virtio/virtio.ko": (),
    }
    names, order = _closure(dependencies, ("virtio_blk", "ext4", "crc32c-intel"))
    assert names == ("virtio_blk", "ext4")  # absent modules are skipped
    assert order.index("kernel/drivers/virtio/virtio.ko") < order.index("kernel/drivers/block/virtio_blk.ko")
    assert order.index("kernel/fs/jbd2/jbd2.ko") < order.index("kernel/fs/ext4/ext4.ko")
    with pytest.raises(BuildError, match="ext4"):
        _closure({"kernel/drivers/block/virtio_blk.ko": ()}, ("virtio_blk", "ext4"))
    assert _closure({"kernel/drivers/block/virtio_blk.ko": ()}, ("virtio_blk", "ext4"), frozenset({"ext4"}))[
        0
    ] == ("virtio_blk",)


def test_command_line_builds_tree_tarball_and_image(tmp_path: Path, testguest_rootfs: TestGuest) -> None:
    import sys

    proc = run(
        sys.executable,
        "-m",
        "imagewright.compute.testguest",
        "--output",
        tmp_path / "tree",
        "--tar",
        tmp_path / "rootfs.tar.gz",
        "--flat-ext4",
        tmp_path / "rootfs.ext4",
    )
    out = proc.stdout.decode()
    assert f"kernel {testguest_rootfs.kernel_version}" in out and "flat ext4" in out
    assert (tmp_path / "tree/etc/init.d/rcS").is_file()
    assert tarfile.is_tarfile(tmp_path / "rootfs.tar.gz")
    assert "TYPE=ext4" in run("blkid", "-p", "-o", "export", tmp_path / "rootfs.ext4").stdout.decode()
