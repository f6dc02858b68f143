"""``build --from debian:bookworm``: real builds from the Debian archive, booted under QEMU.

The two images (``--agent``, ``--cloud-init``) come from the session fixtures of
tests/fixtures/debian_guest.py, built once per session. Each test boots a copy grown by 1 GiB
with a NoCloud seed and reads back what the guest did, without mounting (``imagewright cat``),
as tests/e2e/test_context_boot.py does. The cloud-init image also installs a newer kernel
package with its own dpkg; the next boot must run that kernel.

Timings here (2 cores, TCG, busy machine): a build with a warm package cache 2–4 min, a boot to
the agent's ready line 40–90 s (up to 4 min while other TCG guests run), the kernel
installation inside the TCG guest 2–5 min.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from tests.conftest import require_program
from tests.fixtures.debian_guest import RELEASE, SOURCE_DATE_EPOCH, DebianGuest, debian_mirror
from tests.fixtures.tools import mounted_tmpfs

from imagewright.errors import BuildError
from imagewright.ops.build import build, distro
from imagewright.ops.build.distro import build_distribution
from imagewright.ops.build.kernelhook import HOOK_PATHS
from imagewright.programs import apt

IMAGEWRIGHT = str(Path(sys.executable).parent / "imagewright")
#: A debootstrapped Debian with systemd reaches login in 32–60 s under TCG here; room for load.
BOOT_TIMEOUT = "300"
#: pytest-timeout counts fixture setup: the first test to ask for the session images builds them
#: (up to 10 min each on a loaded machine; one test asks for both), and a test on the other
#: worker waits for that build under the fixtures' lock before its own boot.
BUILD_TIMEOUT = 3600


def imagewright(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [IMAGEWRIGHT, *(str(a) for a in args)], cwd=cwd, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"imagewright {' '.join(str(a) for a in args)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def cat(disk: Path, path: str, cwd: Path) -> str:
    return imagewright("cat", f"{disk}:{path}", cwd=cwd).stdout


def root_partition_bytes(disk: Path, cwd: Path) -> int:
    """The size of the root filesystem, as its superblock says (grown = partition and fs grown)."""
    report = json.loads(imagewright("inspect", "--json", disk, cwd=cwd).stdout)
    partitions = report["disk"]["partition_table"]["partitions"]
    root = max(partitions, key=lambda p: int(p["size"]))
    return int(root["filesystem"]["size_bytes"])


def grown_copy(guest: DebianGuest, tmp_path: Path) -> Path:
    disk = tmp_path / "disk.qcow2"
    shutil.copyfile(guest.disk, disk)
    subprocess.run([require_program("qemu-img"), "resize", "-q", str(disk), "+1G"], check=True)
    return disk


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("distro-key") / "id_test"
    subprocess.run(
        [
            require_program("ssh-keygen"),
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "distro@imagewright",
            "-f",
            str(key),
        ],
        check=True,
    )
    return key.with_suffix(".pub")


# ---- what the builds made --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("context", ["agent", "cloud-init"])
def test_the_image_is_a_maintainable_cloud_image(
    context: str, debian_agent_guest: DebianGuest, debian_cloud_init_guest: DebianGuest, tmp_path: Path
) -> None:
    guest = debian_agent_guest if context == "agent" else debian_cloud_init_guest
    disk = guest.disk
    packages = guest.packages()
    kernels = [name for name in packages if re.fullmatch(r"linux-image-[0-9.]+-\d+-cloud-amd64", name)]
    assert len(kernels) == 1
    for name in ("grub-pc", "openssh-server", "systemd-sysv", "systemd-resolved", "initramfs-tools"):
        assert name in packages
    assert ("cloud-init" in packages) == (context == "cloud-init")
    report = guest.report
    names = [c["name"] for c in report["customizations"]]  # type: ignore[index]
    assert names[:3] == ["init-system", "kernel", "boot-loader"] and names[-1] == "cleanup"
    assert ("cloud-init" in names) == (context == "cloud-init")
    disk_report = report["disk"]
    assert disk_report["boot_loader_package_program"] == "/usr/sbin/update-grub"  # type: ignore[index]
    assert disk_report["kernel_hooks"] == []  # type: ignore[index]
    if context == "agent":
        assert [op["name"] for op in report["prepare"]] == ["agent"]  # type: ignore[union-attr]
        assert "imagewright-agent" in cat(disk, "/etc/systemd/system/imagewright-agent.service", tmp_path)

    # The guest's own tools: update-grub writes build's command line; debconf has no device yet.
    defaults = cat(disk, "/etc/default/grub.d/50-imagewright.cfg", tmp_path)
    assert 'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"' in defaults
    grub_cfg = cat(disk, "/boot/grub/grub.cfg", tmp_path)
    assert f"vmlinuz-{kernels[0].removeprefix('linux-image-')}" in grub_cfg
    assert imagewright("ls", f"{disk}:/usr/sbin/grub-mkconfig", cwd=tmp_path).returncode == 0
    assert imagewright("ls", f"{disk}:/boot/grub/i386-pc/gzio.mod", cwd=tmp_path).returncode == 0
    assert "--timeout=30" in cat(
        disk, "/etc/systemd/system/systemd-networkd-wait-online.service.d/50-imagewright.conf", tmp_path
    )
    # Clones must not share identities; the build machine leaves nothing of itself.
    assert cat(disk, "/etc/machine-id", tmp_path) == ""
    assert cat(disk, "/etc/hostname", tmp_path).strip() == "localhost"
    keys = imagewright("ls", f"{disk}:/etc/ssh", cwd=tmp_path).stdout
    assert "ssh_host_" not in keys
    assert cat(disk, "/etc/default/locale", tmp_path).strip() == "LANG=C.UTF-8"
    lists = imagewright("ls", f"{disk}:/var/lib/apt/lists", cwd=tmp_path).stdout
    assert "Packages" not in lists
    fstab = cat(disk, "/etc/fstab", tmp_path)
    assert re.search(r"^UUID=[0-9a-f-]+\s+/\s+ext4", fstab, re.MULTILINE)


# ---- booted with a NoCloud seed ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_agent_image_boots_and_applies_its_context(
    debian_agent_guest: DebianGuest, ssh_key: Path, tmp_path: Path
) -> None:
    disk = grown_copy(debian_agent_guest, tmp_path)
    before = root_partition_bytes(disk, tmp_path)
    userdata = tmp_path / "user-data"
    userdata.write_text("#!/bin/sh\necho ran-i-distro-agent > /root/userdata-ran\n")
    seed = tmp_path / "seed.iso"
    imagewright(
        "context", "build", "--kind", "nocloud", "--instance-id", "i-distro-agent", "--hostname", "deb-agent",
        "--ssh-key", ssh_key, "--user-data", userdata, "-o", seed, cwd=tmp_path,
    )  # fmt: skip
    expect = "imagewright-agent: ready instance-id=i-distro-agent hostname=deb-agent source=nocloud"
    imagewright(
        "boot", disk, "--cdrom", seed, "--expect", expect, "--timeout", BOOT_TIMEOUT,
        "--console-log", tmp_path / "console.log", cwd=tmp_path,
    )  # fmt: skip
    assert cat(disk, "/etc/hostname", tmp_path).strip() == "deb-agent"
    assert ssh_key.read_text().strip() in cat(disk, "/root/.ssh/authorized_keys", tmp_path).splitlines()
    assert cat(disk, "/root/userdata-ran", tmp_path).strip() == "ran-i-distro-agent"
    assert root_partition_bytes(disk, tmp_path) > before + (512 << 20)
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert "GRUB" in console or "Linux version" in console


def newer_kernel_package(installed: dict[str, str], directory: Path) -> tuple[Path, str]:
    """A cloud kernel package newer than the image's, downloaded by this machine's apt."""
    depends = [n for n in apt.package_depends("linux-image-cloud-amd64") if n.startswith("linux-image-")]
    assert depends, "apt names no kernel behind linux-image-cloud-amd64"
    package = depends[0]
    assert package not in installed, (
        f"{package} is what the image already has: this machine's apt knows no newer cloud kernel"
    )
    return apt.download_package(package, directory), package.removeprefix("linux-image-")


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_cloud_init_image_boots_installs_a_kernel_and_boots_that(
    debian_cloud_init_guest: DebianGuest, ssh_key: Path, tmp_path: Path
) -> None:
    disk = grown_copy(debian_cloud_init_guest, tmp_path)
    before = root_partition_bytes(disk, tmp_path)
    installed = debian_cloud_init_guest.packages()
    medium_dir = tmp_path / "kernels"
    deb, release = newer_kernel_package(installed, medium_dir)
    # The package reaches the guest on an ext4 disk labelled KERNELS; the guest's dpkg installs it.
    medium = tmp_path / "kernels.img"
    size_k = (deb.stat().st_size >> 10) + 16384
    subprocess.run(
        [
            require_program("mke2fs"),
            "-q",
            "-t",
            "ext4",
            "-L",
            "KERNELS",
            "-d",
            str(medium_dir),
            str(medium),
            f"{size_k}k",
        ],
        check=True,
    )
    userdata = tmp_path / "user-data"
    userdata.write_text(
        "#!/bin/sh\nset -e\necho ran-i-distro-ci > /root/userdata-ran\n"
        "mkdir -p /mnt/kernels && mount -o ro /dev/disk/by-label/KERNELS /mnt/kernels\n"
        "dpkg -i /mnt/kernels/*.deb > /root/kernel-install.log 2>&1\n"
        "umount /mnt/kernels\nsync\necho 'imagewright-test: kernel installed' > /dev/console\n"
    )
    seed = tmp_path / "seed.iso"
    imagewright(
        "context", "build", "--kind", "nocloud", "--instance-id", "i-distro-ci", "--hostname", "deb-ci",
        "--ssh-key", ssh_key, "--user-data", userdata, "-o", seed, cwd=tmp_path,
    )  # fmt: skip
    imagewright(
        "boot", disk, "--cdrom", seed, "--drive", medium, "--memory", "1024",
        "--expect", "imagewright-test: kernel installed", "--timeout", "1500",
        "--console-log", tmp_path / "console-1.log", cwd=tmp_path,
    )  # fmt: skip
    assert cat(disk, "/etc/hostname", tmp_path).strip() == "deb-ci"
    authorized = cat(disk, "/home/debian/.ssh/authorized_keys", tmp_path)
    assert ssh_key.read_text().strip() in authorized.splitlines()
    assert cat(disk, "/root/userdata-ran", tmp_path).strip() == "ran-i-distro-ci"
    assert root_partition_bytes(disk, tmp_path) > before + (512 << 20)
    # The guest's zz-update-grub ran update-grub: the menu now starts with the new kernel.
    grub_cfg = cat(disk, "/boot/grub/grub.cfg", tmp_path)
    assert "/etc/grub.d/10_linux" in grub_cfg
    entries = re.findall(r"^\s*linux\s+(\S+)", grub_cfg, re.MULTILINE)
    assert entries and entries[0].endswith(f"vmlinuz-{release}"), entries
    assert "console=ttyS0,115200" in grub_cfg
    # The next boot runs it.
    imagewright(
        "boot", disk, "--snapshot", "--expect", f"Linux version {release}", "--timeout", BOOT_TIMEOUT,
        cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_the_hybrid_image_boots_under_uefi_with_secure_boot(
    debian_cloud_init_guest: DebianGuest, tmp_path: Path
) -> None:
    """The default disk is hybrid: OVMF with Microsoft's keys verifies shim, GRUB and the kernel."""
    # dpkg-query names Multi-Arch: same packages with their architecture (shim-signed:amd64).
    packages = {name.split(":")[0] for name in debian_cloud_init_guest.packages()}
    for name in ("grub-pc", "grub-efi-amd64-signed", "shim-signed"):
        assert name in packages, name
    disk_report = debian_cloud_init_guest.report["disk"]
    assert isinstance(disk_report, dict) and disk_report["boots_under"] == ["bios", "uefi"]
    # The ESP carries the guest's own Debian chain, copied from its root filesystem.
    loader = disk_report["uefi"]["loader"]
    assert (loader["owner"], loader["vendor_directory"]) == ("guest", "debian")
    assert {b["name"] for b in loader["binaries"]} == {"shimx64.efi", "grubx64.efi", "mmx64.efi"}
    result = json.loads(
        imagewright(
            "boot", debian_cloud_init_guest.disk, "--snapshot", "--secure-boot", "--json",
            "--expect", "systemd[1]: Hostname set to", "--timeout", BOOT_TIMEOUT, cwd=tmp_path,
        ).stdout
    )  # fmt: skip
    assert result["matched"] and result["secure_boot_verified"], result["last_lines"]


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_a_second_build_reuses_the_cached_root_filesystem(
    debian_agent_guest: DebianGuest, tmp_path: Path
) -> None:
    """Same release, packages, mirror, epoch and archive: mmdebstrap does not run again."""
    disk = tmp_path / "again.qcow2"
    report = build_distribution(
        RELEASE, disk, context="agent", mirror=debian_agent_guest.mirror, source_date_epoch=SOURCE_DATE_EPOCH,
        size=2 << 30,
    )  # fmt: skip
    assert report.rootfs_cache == "hit" and report.chroot is None
    assert report.rootfs_key == debian_agent_guest.report["rootfs_key"]
    assert report.packages_downloaded == 0 and "fetch" not in report.phase_seconds
    assert set(report.phase_seconds) <= {"cache", "image", "prepare"}
    assert (tmp_path / "again.qcow2.packages").read_text() == debian_agent_guest.manifest.read_text()
    for path in ("/etc/apt/sources.list", "/etc/systemd/network/90-imagewright-dhcp.network"):
        assert cat(disk, path, tmp_path) == cat(debian_agent_guest.disk, path, tmp_path)


# ---- reproducible, and the package cache --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_two_builds_with_the_same_epoch_give_the_same_tarball(
    debian_agent_guest: DebianGuest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first build had mmdebstrap's chroot on tmpfs (this machine has the memory); the second
    # has it on disk: where the chroot was must not change a byte.
    assert debian_agent_guest.report["chroot"] == "memory"
    monkeypatch.setenv("IMAGEWRIGHT_MEMORY_SCRATCH", "0")
    again = tmp_path / "rootfs.tar"
    report = build_distribution(
        RELEASE, again, context="agent", mirror=debian_agent_guest.mirror, source_date_epoch=SOURCE_DATE_EPOCH
    )
    assert report.chroot == "disk"
    # The first build filled the cache: the second downloads no package.
    assert report.packages_downloaded == 0
    first = debian_agent_guest.rootfs.read_bytes()
    second = again.read_bytes()
    if first != second:
        pytest.fail(f"the two tarballs differ: {differing_members(debian_agent_guest.rootfs, again)}")
    assert (tmp_path / "rootfs.tar.packages").read_text() == debian_agent_guest.manifest.read_text()


def differing_members(a: Path, b: Path) -> list[str]:
    def members(path: Path) -> dict[str, tuple[object, ...]]:
        found: dict[str, tuple[object, ...]] = {}
        with tarfile.open(path) as tar:
            for info in tar:
                data = tar.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
                found[info.name] = (
                    info.mode,
                    info.uid,
                    info.gid,
                    info.mtime,
                    info.linkname,
                    data,
                    info.pax_headers,
                )
        return found

    left, right = members(a), members(b)
    names = sorted(set(left) | set(right))
    return [name for name in names if left.get(name) != right.get(name)][:40]


# ---- guests without a boot loader package -----------------------------------------------------


def test_a_guest_without_grub_package_gets_the_kernel_hook(testguest_tarball: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    report = build(testguest_tarball, disk, size=256 << 20)
    assert report.boot_loader_package_program is None
    assert report.kernel_hooks == list(HOOK_PATHS)
    assert any("no boot loader package" in note for note in report.notes)
    for path in HOOK_PATHS:
        text = cat(disk, path, tmp_path)
        assert f"root=UUID={report.root.uuid}" in text
    listing = imagewright("ls", "-l", f"{disk}:/etc/kernel/postinst.d", cwd=tmp_path).stdout
    assert "rwxr-xr-x" in listing


# ---- bad input: one sentence, nothing left --------------------------------------------------------


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--from", "debian:bookwrm"], "'bookwrm' is not a Debian release imagewright knows"),
        (["--from", "debian:bookworm", "--snapshot", "yesterday"], "is not a snapshot time"),
        (["--from", "debian:bookworm", "--kernel", "tiny"], "is not a kernel flavour"),
        (["--from", "debian:bookworm", "--packages", "Bad_Name"], "is not a Debian package name"),
        (["--from", "debian:bookworm", "--table", "mbr", "--firmware", "uefi"], "needs a GPT disk"),
        (["--from", "ubuntu:noble", "--snapshot", "20250520T000000Z"], "imagewright knows only Debian's"),
        (["--from", "ubuntu:lucid"], "'lucid' is not an Ubuntu release imagewright knows"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(args: list[str], words: str, tmp_path: Path) -> None:
    proc = imagewright("build", *args, "-o", "out.qcow2", cwd=tmp_path, check=False)
    assert proc.returncode in (1, 2)
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _leftovers(tmp_path, set()) == []


def test_a_bad_recipe_is_refused_naming_the_field(tmp_path: Path) -> None:
    recipe = tmp_path / "web.toml"
    recipe.write_text('release = "debian:bookworm"\npackages = "nginx"\n[disk]\nsize = "4G"\n')
    proc = imagewright("build", "--recipe", recipe, cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "web.toml: packages must be a list of texts, not a text ('nginx')." in proc.stderr
    assert _leftovers(tmp_path, {"web.toml"}) == []


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_an_unreachable_mirror_is_one_sentence_and_leaves_nothing(tmp_path: Path) -> None:
    # Nothing listens on port 9 of the loopback address: the connection is refused at once.
    proc = imagewright(
        "build", "--from", "debian:bookworm", "--mirror", "http://127.0.0.1:9/debian", "--no-cache",
        "-o", "out.qcow2", cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "The mirror http://127.0.0.1:9/debian cannot be reached" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _leftovers(tmp_path, set()) == []


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_a_package_that_does_not_exist_is_one_sentence_and_leaves_nothing(tmp_path: Path) -> None:
    proc = imagewright(
        "build", "--from", "debian:bookworm", "--mirror", debian_mirror(), "--packages",
        "imagewright-no-such-package", "-o", "out.qcow2", cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "The package 'imagewright-no-such-package' does not exist in debian:bookworm" in proc.stderr
    assert _leftovers(tmp_path, set()) == []


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_a_recipe_reaches_the_build(tmp_path: Path) -> None:
    """The recipe's mirror, packages and output are what the build uses (it stops at the mirror)."""
    (tmp_path / "motd").write_text("hello\n")
    recipe = tmp_path / "web.toml"
    recipe.write_text(
        'release = "debian:bookworm"\nmirror = "http://127.0.0.1:9/debian"\npackages = ["nginx"]\n'
        'outputs = ["web.qcow2"]\n[[files]]\nsource = "motd"\ndestination = "/etc/motd"\n'
    )
    proc = imagewright("build", "--recipe", recipe, "--no-cache", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "The mirror http://127.0.0.1:9/debian cannot be reached" in proc.stderr
    assert _leftovers(tmp_path, {"web.toml", "motd"}) == []


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_a_chroot_that_fills_the_memory_scratch_is_built_again_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 4 MiB tmpfs, taken as room enough (the guess made tiny), cannot hold even the package
    # lists: mmdebstrap fails there with ENOSPC, and the build runs again with its chroot on
    # disk, where it gets as far as resolving the packages. The package asked for does not exist,
    # so the second run ends quickly, in that package's sentence — not in the full tmpfs.
    monkeypatch.setattr(distro, "_CHROOT_BYTES", 1 << 20)
    monkeypatch.setattr(distro, "_CHROOT_BYTES_PER_PACKAGE", 0)
    lines: list[str] = []
    out = tmp_path / "out"
    out.mkdir()
    with mounted_tmpfs(tmp_path / "shm", "4m") as shm:
        monkeypatch.setenv("IMAGEWRIGHT_MEMORY_SCRATCH", str(shm))
        with pytest.raises(BuildError, match="The package 'imagewright-no-such-package' does not exist"):
            build_distribution(
                RELEASE, out / "out.qcow2", packages=["imagewright-no-such-package"],
                mirror=debian_mirror(), log=lines.append,
            )  # fmt: skip
        assert any("No space left on device" in line for line in lines), lines[-20:]
        assert any("building it on disk instead" in line for line in lines), lines[-20:]
        assert os.listdir(shm) == [f"imagewright-{os.getuid()}"]
        assert os.listdir(shm / f"imagewright-{os.getuid()}") == []
    assert _leftovers(out, set()) == []
