"""inspect --os on Debian 12 and Alpine 3.19 roots written by the tests: every field against the
truth, read independently (the stdlib's os-release parser, dpkg-query over the same status
database, readelf over the same program, the tree itself)."""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import blkid, run, sfdisk_json
from tests.guest.images import GuestImage, converted, flat_ext4, partitioned_ext4, write
from tests.ops.os_trees import (
    APK_PACKAGES,
    HOST_SYSTEMD,
    RPM_PACKAGES,
    alpine_tree,
    alpine_truth,
    debian_tree,
    debian_truth,
    fedora_tree,
)

from imagewright.guest import open_guest
from imagewright.ops.inspect_os import OsInspection, inspect_os
from imagewright.ops.inspect_os.model import OsFacts

pytestmark = pytest.mark.integration
RunCli = Callable[..., Result]


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return debian_tree(tmp_path_factory.mktemp("debian") / "root")


@pytest.fixture(scope="module")
def debian_image(debian_root: Path) -> GuestImage:
    return partitioned_ext4(debian_root, debian_root.parent / "debian.raw", table="gpt", size_mib=64)


@pytest.fixture(scope="module")
def dpkg_truth(debian_root: Path) -> set[str]:
    """What dpkg itself says is installed, from the status file the tree holds (a copy of this
    machine's, taken when the tree was written)."""
    out = run(
        "dpkg-query",
        "--admindir",
        str(debian_root / "var/lib/dpkg"),
        "-W",
        "-f",
        "${db:Status-Status} ${Package}:${Architecture} ${Version}\n",
    ).stdout.decode()
    return {line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("installed ")}


@pytest.fixture(scope="module")
def alpine_image(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    base = tmp_path_factory.mktemp("alpine")
    return flat_ext4(alpine_tree(base / "root"), base / "alpine.raw")


@pytest.fixture(scope="module")
def debian(debian_image: GuestImage) -> OsInspection:
    return inspect_os(debian_image.path)


def only_root(found: OsInspection) -> OsFacts:
    assert len(found.roots) == 1, found.notes
    return found.roots[0]


def readelf_machine(path: Path) -> str:
    out = run("readelf", "-h", str(path)).stdout.decode()
    match = re.search(r"Machine:\s+(.+)", out)
    assert match is not None
    return match.group(1).strip()


def test_debian_distribution_is_what_its_os_release_says(debian: OsInspection) -> None:
    facts = only_root(debian)
    truth = platform.freedesktop_os_release()  # the stdlib's own parser of the same file
    dist = facts.distribution
    assert dist.id == truth["ID"] == debian_truth().os_id
    assert dist.version_id == truth["VERSION_ID"]
    assert dist.codename == truth["VERSION_CODENAME"]
    assert dist.name == truth["NAME"]
    assert dist.pretty_name == truth["PRETTY_NAME"]
    assert dist.os_distro == "debian"
    # /etc/os-release is a relative link into /usr/lib, followed inside the guest.
    assert dist.sources[0] == "/etc/os-release"
    assert "/etc/debian_version" in dist.sources
    assert facts.os_type == "linux"


def test_debian_architecture_is_the_elf_machine_readelf_reads(debian: OsInspection) -> None:
    facts = only_root(debian)
    assert readelf_machine(HOST_SYSTEMD) == "Advanced Micro Devices X86-64"
    assert facts.architecture == "x86_64" == debian_truth().architecture
    # /sbin -> usr/sbin, usr/sbin/init -> ../lib/systemd/systemd: both links resolved in the guest.
    assert facts.architecture_source == "/sbin/init -> /usr/lib/systemd/systemd"
    assert facts.init_system == "systemd"


def test_debian_packages_are_what_dpkg_query_says(debian: OsInspection, dpkg_truth: set[str]) -> None:
    facts = only_root(debian)
    [database] = facts.packages
    assert (database.format, database.path, database.truncated) == ("deb", "/var/lib/dpkg/status", False)
    ours = {f"{p.name}:{p.architecture} {p.version}" for p in database.packages}
    assert ours == dpkg_truth
    assert database.count == len(dpkg_truth) > 100


def test_debian_boot_files_and_grub_default(debian: OsInspection) -> None:
    facts = only_root(debian)
    truth = debian_truth()
    assert [k.path for k in facts.kernels] == truth.kernels
    assert [i.path for i in facts.initrds] == truth.initrds
    assert [k.release for k in facts.kernels] == ["6.1.0-17-amd64", "6.1.0-18-amd64"]
    assert all(k.size == 1024 for k in facts.kernels)
    entry = facts.boot_default
    assert entry is not None
    assert (entry.loader, entry.config, entry.title) == ("grub2", "/boot/grub/grub.cfg", "Debian GNU/Linux")
    assert entry.kernel == truth.default_kernel
    assert entry.initrd == "/boot/initrd.img-6.1.0-18-amd64"


def test_debian_hostname_fstab_cloud_init_ssh(debian: OsInspection, debian_image: GuestImage) -> None:
    facts = only_root(debian)
    assert facts.hostname == debian_truth().hostname
    root_label = blkid(debian_image.path, debian_image.offset)["LABEL"]
    assert root_label == "root"
    assert [(e.spec, e.mountpoint, e.fs_type, e.on_this_disk) for e in facts.fstab] == [
        ("LABEL=root", "/", "ext4", True),  # blkid reads that label on partition 2
        ("UUID=0b9b1c6e-0000-4000-8000-000000000001", "/srv", "ext4", False),
        ("/dev/sr0", "/media/cdrom0", "udf,iso9660", None),
        ("tmpfs", "/tmp", "tmpfs", None),
    ]
    assert facts.cloud_init.present
    # cloud-init is not in the host's dpkg database: the version comes from cloudinit/version.py.
    assert facts.cloud_init.version == "22.4.2"
    assert facts.cloud_init.datasources == ["NoCloud", "ConfigDrive", "OpenStack", "Ec2", "None"]
    assert facts.ssh_server == "openssh"
    assert facts.agent is None
    assert facts.notes == []


def test_a_separate_boot_filesystem_is_named(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, "etc/os-release", "ID=rhel\nVERSION_ID=9.3\n")
    write(root, "etc/fstab", "UUID=1111 / xfs defaults 0 0\nUUID=2222 /boot xfs defaults 0 0\n")
    (root / "boot").mkdir()
    image = flat_ext4(root, tmp_path / "rhel.raw", size_mib=8)
    facts = only_root(inspect_os(image.path))
    assert facts.kernels == []
    assert facts.notes == [
        "/boot is a filesystem of its own (UUID=2222); the kernels and boot loader configuration on it "
        "were not looked at"
    ]


def test_a_separate_boot_filesystem_is_read_where_fstab_mounts_it(run_cli: RunCli, tmp_path: Path) -> None:
    release = "5.14.0-362.8.1.el9_3.x86_64"
    root = tmp_path / "root"
    write(root, "etc/os-release", 'NAME="Rocky Linux"\nID="rocky"\nVERSION_ID="9.3"\n')
    write(root, "etc/fstab", "LABEL=root / ext4 defaults 0 0\nLABEL=boot /boot ext2 defaults 1 2\n")
    (root / "boot").mkdir()
    boot = tmp_path / "boot"
    write(boot, f"vmlinuz-{release}", b"MZ" + bytes(1022))
    write(boot, f"initramfs-{release}.img", b"\x1f\x8b" + bytes(510))
    write(boot, "vmlinuz-0-rescue-abc", b"MZ" + bytes(1022))
    (boot / "vmlinuz").symlink_to(f"/boot/vmlinuz-{release}")  # absolute, as the running system sees it
    write(boot, "grub2/grub.cfg", 'set default="${saved_entry}"\ninsmod blscfg\nblscfg\n')
    write(boot, "grub2/grubenv", f"# GRUB Environment Block\nsaved_entry=abc-{release}\n" + "#" * 950)
    write(
        boot,
        f"loader/entries/abc-{release}.conf",
        f"title Rocky Linux ({release}) 9.3\nlinux /vmlinuz-{release}\ninitrd /initramfs-{release}.img\n",
    )
    image = partitioned_ext4(root, tmp_path / "rocky.raw", table="gpt", size_mib=48, boot_tree=boot)
    assert blkid(image.path, 1 << 20)["LABEL"] == "boot"  # blkid's own reading of partition 1
    facts = only_root(inspect_os(image.path))
    assert facts.boot_filesystem is not None and facts.boot_filesystem.startswith("partition 1 (ext2)")
    assert [k.path for k in facts.kernels] == ["/boot/vmlinuz", f"/boot/vmlinuz-{release}"]
    assert [(i.path, i.size) for i in facts.initrds] == [(f"/boot/initramfs-{release}.img", 512)]
    assert facts.boot_default is not None
    # grubenv's saved entry, found through the mount: the entry names its kernel as GRUB on that
    # filesystem does (relative to its own root).
    assert (facts.boot_default.config, facts.boot_default.kernel) == (
        f"/boot/loader/entries/abc-{release}.conf",
        f"/vmlinuz-{release}",
    )
    assert facts.boot_default.title == f"Rocky Linux ({release}) 9.3"
    assert not any("/boot is a filesystem of its own" in note for note in facts.notes)
    assert facts.distribution.os_distro == "rocky"
    shown = run_cli(["inspect", "--os", str(image.path)])
    assert shown.exit_code == 0, shown.output
    assert re.search(r"/boot:\s+partition 1 \(ext2\)", shown.output)
    assert re.search(rf"kernel:\s+/boot/vmlinuz-{re.escape(release)}\s+\(boots by default\)", shown.output)


def test_a_boot_mount_that_names_the_root_itself_finds_nothing_and_ends(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, "etc/os-release", "ID=rhel\nVERSION_ID=9.3\n")
    write(root, "etc/fstab", "LABEL=root / ext4 defaults 0 0\nLABEL=root /boot ext4 defaults 0 0\n")
    (root / "boot").mkdir()
    (root / "loop").symlink_to("/boot/loop")
    image = partitioned_ext4(root, tmp_path / "self.raw", table="dos", size_mib=32)
    facts = only_root(inspect_os(image.path))
    assert facts.boot_filesystem is not None and facts.boot_filesystem.startswith("partition 2 (ext4)")
    assert facts.kernels == [] and facts.boot_default is None


def test_fstab_specs_are_resolved_against_this_disk(tmp_path: Path) -> None:
    image = partitioned_ext4(debian_tree(tmp_path / "root"), tmp_path / "disk.raw", table="dos", size_mib=64)
    uuid = blkid(image.path, image.offset)["UUID"]  # blkid's own reading of partition 2
    disk_id = sfdisk_json(image.path)["id"].removeprefix("0x")
    fstab = (
        f"UUID={uuid.upper()} / ext4 defaults 0 1\n"  # UUIDs compare without case
        f"PARTUUID={disk_id}-01 /boot ext2 defaults 0 2\n"  # blkid's MBR PARTUUID: disk id - number
        f"PARTUUID={disk_id}-07 /srv ext4 defaults 0 2\n"
        "/dev/disk/by-label/root /mnt ext4 defaults 0 2\n"
        "/dev/disk/by-label/elsewhere /data ext4 defaults 0 2\n"
        "LABEL=ROOT /x ext4 defaults 0 2\n"  # labels compare with case
        "/dev/vda1 /y ext4 defaults 0 2\n"
        "server:/export /nfs nfs defaults 0 0\n"
    )
    with open_guest(image.path, writable=True) as guest:
        guest.write_text("/etc/fstab", fstab)
    facts = only_root(inspect_os(image.path))
    # The tree has its kernels in /boot: a /boot entry alone is no reason for a note.
    assert not any(note.startswith("/boot is a filesystem of its own") for note in facts.notes)
    assert [(e.mountpoint, e.on_this_disk) for e in facts.fstab] == [
        ("/", True),
        ("/boot", True),
        ("/srv", False),
        ("/mnt", True),
        ("/data", False),
        ("/x", False),
        ("/y", None),
        ("/nfs", None),
    ]


def test_alpine_every_field(alpine_image: GuestImage) -> None:
    facts = only_root(inspect_os(alpine_image.path))
    truth = alpine_truth()
    dist = facts.distribution
    assert (dist.id, dist.version_id, dist.version, dist.codename) == ("alpine", "3.19.1", "3.19.1", None)
    assert dist.os_distro == "alpinelinux"  # libosinfo's and virt-inspector's name
    assert dist.pretty_name == "Alpine Linux v3.19"
    assert dist.sources == ["/etc/os-release", "/etc/alpine-release"]
    assert facts.architecture == readelf_arch_name(Path("/bin/busybox")) == truth.architecture
    assert facts.architecture_source == "/sbin/init -> /bin/busybox"
    assert facts.init_system == "openrc"
    [database] = facts.packages
    assert (database.format, database.count, database.truncated) == ("apk", len(APK_PACKAGES), False)
    assert [(p.name, p.version, p.architecture) for p in database.packages] == APK_PACKAGES
    assert [k.path for k in facts.kernels] == truth.kernels
    assert [i.path for i in facts.initrds] == truth.initrds
    entry = facts.boot_default
    assert entry is not None
    assert (entry.loader, entry.title, entry.kernel, entry.initrd) == (
        "extlinux",
        "Linux virt",
        "vmlinuz-virt",
        "initramfs-virt",
    )
    assert facts.hostname == truth.hostname
    assert facts.cloud_init.version == "23.4.1-r1"  # from the apk database
    assert facts.cloud_init.datasources == ["NoCloud", "ConfigDrive", "None"]
    assert [(e.spec, e.on_this_disk) for e in facts.fstab] == [
        ("UUID=deadbeef-0000-4000-8000-000000000002", False)
    ]
    assert facts.ssh_server == "openssh"


def readelf_arch_name(path: Path) -> str:
    return {"Advanced Micro Devices X86-64": "x86_64", "AArch64": "aarch64"}[readelf_machine(path)]


def test_qcow2_image_gives_the_same_facts(
    debian_image: GuestImage, debian: OsInspection, tmp_path: Path
) -> None:
    qcow2 = converted(debian_image, "qcow2", tmp_path / "debian.qcow2")
    again = inspect_os(qcow2.path)
    first, second = only_root(debian).to_dict(), only_root(again).to_dict()
    first.pop("filesystem")
    second.pop("filesystem")
    assert first == second
    assert "debian.qcow2" in only_root(again).filesystem


def test_cli_os_text_and_json(
    run_cli: RunCli, debian_image: GuestImage, alpine_image: GuestImage, dpkg_truth: set[str]
) -> None:
    result = run_cli(["inspect", "--os", str(debian_image.path)])
    assert result.exit_code == 0, result.output
    assert (
        "os:             Debian GNU/Linux 12 (bookworm) (partition 2 (ext4) of debian.raw)" in result.output
    )
    assert "kernel:       /boot/vmlinuz-6.1.0-18-amd64  (boots by default)" in result.output
    assert f"packages:     {len(dpkg_truth)} deb packages installed" in result.output
    result = run_cli(["inspect", "--os", "--json", str(debian_image.path), str(alpine_image.path)])
    assert result.exit_code == 0, result.output
    documents = json.loads(result.output)
    assert [d["os"]["roots"][0]["distribution"]["id"] for d in documents] == ["debian", "alpine"]
    assert [d["os"]["roots"][0]["architecture"] for d in documents] == ["x86_64", "x86_64"]
    assert documents[0]["os"]["roots"][0]["distribution"]["os_distro"] == "debian"
    assert documents[0]["verdict"]["safe"] is True
    assert "audit" not in documents[0]


def test_an_image_without_a_linux_root_says_so(run_cli: RunCli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write(empty, "data/file.txt", "no /etc here\n")
    image = flat_ext4(empty, tmp_path / "data.raw", size_mib=8)
    result = run_cli(["inspect", "--os", "--json", str(image.path)])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["os"]
    assert found["roots"] == []
    assert found["notes"] == ["no filesystem of the image holds /etc (no Linux root filesystem found)"]


def test_a_refused_image_is_not_looked_into(run_cli: RunCli, tmp_path: Path) -> None:
    image = tmp_path / "backed.qcow2"
    run("qemu-img", "create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(image))
    result = run_cli(["inspect", "--os", "--json", str(image)])
    assert result.exit_code == 1
    assert json.loads(result.output)["os"]["notes"] == ["the image was refused; nothing inside it was read"]


def test_fedora_rpm_database_and_bls_default(tmp_path: Path) -> None:
    root = fedora_tree(tmp_path / "root")
    truth = run(
        "rpm",
        "--dbpath",
        str(root / "usr/lib/sysimage/rpm"),
        "-qa",
        "--qf",
        "%{NAME} %{VERSION}-%{RELEASE} %{ARCH}\n",
    ).stdout.decode()
    image = partitioned_ext4(root, tmp_path / "fedora.raw", table="gpt", size_mib=64)
    facts = only_root(inspect_os(image.path))
    dist = facts.distribution
    # The codename is what redhat-release says (os-release leaves it empty).
    assert (dist.id, dist.version_id, dist.codename, dist.os_distro) == ("fedora", "40", "Forty", "fedora")
    assert dist.sources == ["/etc/os-release", "/etc/redhat-release"]
    [database] = facts.packages
    # /var/lib/rpm is a link to /usr/lib/sysimage/rpm: the database is read once, by its first name.
    assert (database.format, database.path, database.truncated) == ("rpm", "/var/lib/rpm/rpmdb.sqlite", False)
    ours = {f"{p.name} {p.version} {p.architecture}" for p in database.packages}
    assert ours == set(truth.splitlines())
    assert database.count == len(RPM_PACKAGES)
    entry = facts.boot_default
    assert entry is not None
    assert (entry.loader, entry.config) == (
        "grub2 (bls)",
        "/boot/loader/entries/abc-6.8.5-301.fc40.x86_64.conf",
    )
    assert entry.kernel == "/boot/vmlinuz-6.8.5-301.fc40.x86_64"
    assert entry.initrd == "/boot/initramfs-6.8.5-301.fc40.x86_64.img"
    assert [k.path for k in facts.kernels] == ["/boot/vmlinuz-6.8.5-301.fc40.x86_64"]
    assert [i.release for i in facts.initrds] == ["6.8.5-301.fc40.x86_64"]
    assert facts.notes == []
