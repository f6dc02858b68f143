"""``build --from ubuntu:noble`` (and ``ubuntu:jammy``): real builds from Ubuntu's archive, booted under QEMU.

One build (``--cloud-init``, the default hybrid GPT disk) from archive.ubuntu.com, checked with
the Ubuntu archive key (the host's ubuntu-keyring or the copy imagewright ships), then:

- what is in it, read without mounting (``imagewright cat``) and from the package manifest:
  Ubuntu's virtual kernel, both GRUB packages and shim, ubuntu-keyring, the guest's sources
  naming the guest's own keyring, cloud-init with imagewright's datasource list last;
- a BIOS boot (SeaBIOS) with a NoCloud seed: cloud-init sets the hostname, the default user's
  key and runs the user-data; the root filesystem grew;
- a UEFI boot (OVMF) of the built disk: the kernel reports EFI, systemd starts from the root.

Timings measured here (2 cores, TCG, load 10–14, another build running): the cold build 5.3 min
(fetch 19 s, unpack 45 s, configure 90 s, customize 3 s, pack 66 s, image 88 s); the BIOS boot
to the user-data line 8.3 min (cloud-init's local stage at 188 s of uptime, final at 465 s); the
hybrid build 3.7 min with a warm package cache; its UEFI boot (OVMF, Secure Boot off) to
systemd's hostname line 61 s.

Secure Boot (``test_*_boots_with_secure_boot``): ``--agent`` builds of noble and jammy, whose
ESP holds Ubuntu's own shim (Microsoft-signed) and GRUB (Canonical-signed) in ``EFI/ubuntu``,
each booted under OVMF with Microsoft's keys enrolled and Secure Boot enforced
(``OVMF_VARS_4M.ms.fd``) with a NoCloud seed: the kernel says "Secure boot enabled", the guest's
own ``mokutil --sb-state`` (run by the user-data) says "SecureBoot enabled", and the agent's
ready line shows the seed's hostname. Measured here (2 cores, TCG, load 16–20, other helpers'
boots running): cold builds 4.5 min (noble) and 5.1 min (jammy), 100 s each with the root
filesystem cached; the Secure Boot tests 6.8 min (noble) and 5.7 min (jammy) on two workers
(the agent's ready line at 189 s of jammy's uptime).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_program
from tests.ops.test_build_distro import BOOT_TIMEOUT, BUILD_TIMEOUT, cat, imagewright, root_partition_bytes

from imagewright.agent import READY_PREFIX, find_ready_line
from imagewright.ops.build.distro import build_distribution
from imagewright.ops.build.distro.customizations.cloud_init import CONFIG_FILE, DATASOURCES

SOURCE_DATE_EPOCH = 1_700_000_000


@pytest.fixture(scope="module")
def noble(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    directory = tmp_path_factory.mktemp("noble")
    disk = directory / "disk.qcow2"
    report = build_distribution(
        "ubuntu:noble", disk, context="cloud-init", source_date_epoch=SOURCE_DATE_EPOCH, size=3 << 30
    )
    return disk, report.to_dict()


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_noble_builds_boots_under_bios_with_nocloud_and_under_uefi(
    noble: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    built, report = noble
    assert report["release"] == "ubuntu:noble"
    assert str(report["sources"]).startswith("http://archive.ubuntu.com/ubuntu")
    # dpkg-query names Multi-Arch: same packages with their architecture (shim-signed:amd64).
    packages = {
        line.split("\t")[0].split(":")[0] for line in Path(f"{built}.packages").read_text().splitlines()
    }
    assert any(re.fullmatch(r"linux-image-[0-9.]+-\d+-generic", name) for name in packages)
    for name in (
        "linux-image-virtual", "grub-pc", "grub-efi-amd64-signed", "shim-signed", "ubuntu-keyring",
        "cloud-init", "systemd-resolved", "openssh-server",
    ):  # fmt: skip
        assert name in packages, name
    disk_report = report["disk"]
    assert isinstance(disk_report, dict)
    assert disk_report["boot_loader_package_program"] == "/usr/sbin/update-grub"
    assert disk_report["kernel_hooks"] == []
    sources = cat(built, "/etc/apt/sources.list", tmp_path)
    guest_keyring = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
    assert re.findall(r"^deb \[signed-by=(\S+)\] (\S+) (\S+)", sources, re.MULTILINE) == [
        (guest_keyring, "http://archive.ubuntu.com/ubuntu", "noble"),
        (guest_keyring, "http://archive.ubuntu.com/ubuntu", "noble-updates"),
        (guest_keyring, "http://security.ubuntu.com/ubuntu", "noble-security"),
    ]
    cloud_cfg = cat(built, CONFIG_FILE, tmp_path)
    assert f"datasource_list: [{', '.join(DATASOURCES)}]" in cloud_cfg and "locale: false" in cloud_cfg
    inspected = json.loads(imagewright("inspect", "--json", built, cwd=tmp_path).stdout)
    partitions = inspected["disk"]["partition_table"]["partitions"]
    assert inspected["disk"]["partition_table"]["kind"] == "gpt"
    types = [str((p.get("filesystem") or {}).get("type", "")).lower() for p in partitions]
    assert any(t.startswith(("vfat", "fat")) for t in types) and "ext4" in types, types

    # BIOS, with a NoCloud seed.
    disk = tmp_path / "disk.qcow2"
    shutil.copyfile(built, disk)
    subprocess.run([require_program("qemu-img"), "resize", "-q", str(disk), "+1G"], check=True)
    before = root_partition_bytes(disk, tmp_path)
    key = tmp_path / "id.pub"
    key.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBpUNuWcQAx8ZDPcOwCc2jPvhwtEWZxkJXgn0hHL6wPB noble@test\n"
    )
    userdata = tmp_path / "user-data"
    userdata.write_text(
        "#!/bin/sh\necho ran-noble > /root/userdata-ran\nsync\n"
        "echo 'imagewright-test: noble user-data ran' > /dev/console\n"
    )
    seed = tmp_path / "seed.iso"
    imagewright(
        "context", "build", "--kind", "nocloud", "--instance-id", "i-noble", "--hostname", "noble-ci",
        "--ssh-key", key, "--user-data", userdata, "-o", seed, cwd=tmp_path,
    )  # fmt: skip
    imagewright(
        "boot", disk, "--firmware", "bios", "--cdrom", seed, "--memory", "1024",
        "--expect", "imagewright-test: noble user-data ran", "--timeout", "900",
        "--console-log", tmp_path / "console-bios.log", cwd=tmp_path,
    )  # fmt: skip
    assert cat(disk, "/etc/hostname", tmp_path).strip() == "noble-ci"
    assert key.read_text().strip() in cat(disk, "/home/ubuntu/.ssh/authorized_keys", tmp_path).splitlines()
    assert cat(disk, "/root/userdata-ran", tmp_path).strip() == "ran-noble"
    assert root_partition_bytes(disk, tmp_path) > before

    # UEFI: OVMF starts the ESP's loader, GRUB the root's menu, the kernel sees EFI.
    result = json.loads(
        imagewright(
            "boot",
            built,
            "--snapshot",
            "--firmware",
            "uefi",
            "--memory",
            "1024",
            "--json",
            "--expect",
            "systemd[1]: Hostname set to",
            "--timeout",
            BOOT_TIMEOUT,
            cwd=tmp_path,
        ).stdout
    )
    assert result["matched"] and result["firmware"] == "uefi"
    assert result["kernel_efi"], "the kernel did not report UEFI firmware"


# ---- Secure Boot: Ubuntu's own chain on the ESP -------------------------------------------------


def ubuntu_agent_build(release: str, directory: Path) -> tuple[Path, dict[str, object]]:
    disk = directory / "disk.qcow2"
    report = build_distribution(
        release, disk, context="agent", source_date_epoch=SOURCE_DATE_EPOCH, size=3 << 30
    )
    return disk, report.to_dict()


@pytest.fixture(scope="module")
def noble_agent(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    return ubuntu_agent_build("ubuntu:noble", tmp_path_factory.mktemp("noble-agent"))


@pytest.fixture(scope="module")
def jammy_agent(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    return ubuntu_agent_build("ubuntu:jammy", tmp_path_factory.mktemp("jammy-agent"))


def assert_ubuntu_chain_on_the_esp(built: Path, report: dict[str, object], tmp_path: Path) -> None:
    """The build report and the disk itself (read with inspect) say the ESP starts Ubuntu's chain."""
    disk_report = report["disk"]
    assert isinstance(disk_report, dict)
    loader = disk_report["uefi"]["loader"]
    assert (loader["owner"], loader["kind"], loader["vendor_directory"]) == ("guest", "signed", "ubuntu")
    binaries = {b["name"]: b for b in loader["binaries"]}
    assert "Microsoft Corporation UEFI CA 2011" in binaries["shimx64.efi"]["signers"]
    assert any(name.startswith("Canonical Ltd.") for name in binaries["grubx64.efi"]["signers"])
    assert (
        binaries["grubx64.efi"]["origin"] == "the guest's /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
    )
    assert any("the guest's own signed shim and GRUB (EFI/ubuntu)" in n for n in disk_report["notes"])
    assert not any("Secure Boot off only" in str(n) for n in report["notes"])  # type: ignore[attr-defined]
    inspected = json.loads(imagewright("inspect", "--json", built, cwd=tmp_path).stdout)
    files = {f["path"]: f for f in inspected["disk"]["boot"]["efi_files"]}
    assert files["EFI/BOOT/BOOTX64.EFI"]["loader"] == "shim" and files["EFI/ubuntu/grubx64.efi"]["signed"]
    assert files["EFI/BOOT/BOOTX64.EFI"]["size"] == binaries["shimx64.efi"]["size"]
    # Their SBAT sections name Ubuntu's builds (inspect reads them; shim refuses revoked ones).
    assert any(line.startswith("shim.ubuntu,") for line in files["EFI/BOOT/BOOTX64.EFI"]["sbat"])
    assert any(line.startswith("grub.ubuntu,") for line in files["EFI/ubuntu/grubx64.efi"]["sbat"])


def boot_with_secure_boot(built: Path, name: str, tmp_path: Path) -> tuple[dict[str, object], str]:
    """Boot a copy of ``built`` under OVMF with Secure Boot enforced and a NoCloud seed whose
    user-data prints the guest's own ``mokutil --sb-state``; the boot result and the console."""
    key = tmp_path / "id.pub"
    key.write_text(
        f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBpUNuWcQAx8ZDPcOwCc2jPvhwtEWZxkJXgn0hHL6wPB {name}@test\n"
    )
    userdata = tmp_path / "user-data"
    userdata.write_text(
        "#!/bin/sh\nmokutil --sb-state 2>&1 | sed 's/^/imagewright-test: mokutil: /' > /dev/console\n"
    )
    seed = tmp_path / "seed.iso"
    imagewright(
        "context", "build", "--kind", "nocloud", "--instance-id", f"i-{name}", "--hostname", f"{name}-sb",
        "--ssh-key", key, "--user-data", userdata, "-o", seed, cwd=tmp_path,
    )  # fmt: skip
    console = tmp_path / "console.log"
    result = json.loads(
        imagewright(
            "boot", built, "--snapshot", "--secure-boot", "--cdrom", seed, "--memory", "1024", "--json",
            "--expect", READY_PREFIX, "--timeout", "1500", "--console-log", console, cwd=tmp_path,
        ).stdout
    )  # fmt: skip
    return result, console.read_text(errors="replace")


def assert_booted_with_secure_boot(result: dict[str, object], console: str, name: str) -> None:
    assert result["matched"], result["last_lines"]
    assert result["firmware"] == "uefi" and result["secure_boot"] is True
    # boot's own check: the kernel's "secureboot: Secure boot enabled" on the serial console.
    assert result["kernel_secure_boot"] == "enabled" and result["secure_boot_verified"]
    # The guest's own tool agrees (it reads the SecureBoot EFI variable).
    assert "imagewright-test: mokutil: SecureBoot enabled" in console
    ready = find_ready_line(console)
    assert ready is not None and ready.hostname == f"{name}-sb" and ready.source == "nocloud"


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_noble_boots_with_secure_boot(noble_agent: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    built, report = noble_agent
    assert_ubuntu_chain_on_the_esp(built, report, tmp_path)
    result, console = boot_with_secure_boot(built, "noble", tmp_path)
    assert_booted_with_secure_boot(result, console, "noble")
    assert re.search(r"Linux version 6\.8\.0-\d+-generic .*Ubuntu", console)


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_jammy_builds_and_boots_with_secure_boot(
    jammy_agent: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    built, report = jammy_agent
    assert report["release"] == "ubuntu:jammy"
    packages = {
        line.split("\t")[0].split(":")[0] for line in Path(f"{built}.packages").read_text().splitlines()
    }
    assert any(re.fullmatch(r"linux-image-5\.15\.0-\d+-generic", name) for name in packages), packages
    for name in ("linux-image-virtual", "grub-pc", "grub-efi-amd64-signed", "shim-signed", "mokutil"):
        assert name in packages, name
    assert_ubuntu_chain_on_the_esp(built, report, tmp_path)
    result, console = boot_with_secure_boot(built, "jammy", tmp_path)
    assert_booted_with_secure_boot(result, console, "jammy")
    assert re.search(r"Linux version 5\.15\.0-\d+-generic .*Ubuntu", console)
