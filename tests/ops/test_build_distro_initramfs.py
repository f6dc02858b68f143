"""build's initramfs customisation: what the real ``mkinitramfs`` makes of its two files.

The configuration and hook the customisation writes into the target are given to this
machine's own initramfs-tools (``mkinitramfs -d CONFDIR``) with this machine's Debian kernel
(``linux-image-amd64``, installed by ``make test``), and the initrd it writes is read back with
``lsinitramfs`` (initramfs-tools-core, an independent reader) and ``cpio``: the cloud machines'
disk drivers and ext4 are in it, the rest of MODULES=most is not, and nothing is force-loaded.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_program

from imagewright.ops.build.distro.customizations import BY_NAME, CUSTOMIZATIONS, TargetScript
from imagewright.ops.build.distro.customizations.initramfs import (
    CLOUD_DISK_DRIVERS,
    CONF_FILE,
    CONF_TEXT,
    HOOK_FILE,
    hook_text,
)
from imagewright.ops.build.distro.plan import DistroPlan
from imagewright.ops.build.distro.release import parse_release
from imagewright.ops.build.distro.sources import choose_sources

BOOKWORM = parse_release("debian:bookworm")
#: Module files that must be in the initrd (name stems; modprobe's '_' is '-' in some file names).
EXPECTED = (
    "virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ata_piix", "ahci", "ata_generic",
    "nvme", "xen-blkfront", "hv_storvsc", "hv_vmbus", "vmw_pvscsi", "mptspi", "mptsas",
    "sym53c8xx", "sr_mod", "cdrom", "ext4", "jbd2", "crc32c_generic",
)  # fmt: skip
#: MODULES=most would add these; a cloud machine boots without them.
NOT_EXPECTED = ("usb-storage", "e1000e", "btrfs", "xfs", "nouveau", "uas", "mmc_block", "firewire-ohci")


def _plan() -> DistroPlan:
    return DistroPlan(
        release=BOOKWORM, variant="minbase", packages=(), context="cloud-init", kernel_flavour="generic",
        sources=choose_sources(BOOKWORM, mirror="http://m.example/debian"), source_date_epoch=0,
    )  # fmt: skip


def _host_kernel() -> str:
    versions = sorted(p.name for p in Path("/lib/modules").glob("*") if (p / "modules.dep").is_file())
    if not versions:
        pytest.fail(
            "no kernel modules on this machine (linux-image-amd64); run `make test`, which installs it"
        )
    return versions[-1]


def test_the_customisation_writes_both_files_before_the_kernel_is_configured() -> None:
    custom = BY_NAME["initramfs"]
    names = [c.name for c in CUSTOMIZATIONS]
    assert names.index("initramfs") == names.index("kernel") + 1
    assert custom.customize is None and custom.essential is not None and custom.applies(_plan())
    script = TargetScript()
    custom.essential(_plan(), script)
    text = script.text()
    assert f"cat > {CONF_FILE} <<" in text and f"cat > {HOOK_FILE} <<" in text
    assert f"chmod 0755 {HOOK_FILE}" in text and f"chmod 0644 {CONF_FILE}" in text
    assert "MODULES=list" in CONF_TEXT
    for _machine, modules in CLOUD_DISK_DRIVERS:
        assert f"manual_add_modules {' '.join(modules)}" in hook_text()


def test_the_hook_passes_shellcheck(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.write_text(hook_text())
    # SC1091: hook-functions is initramfs-tools', not here to follow.
    subprocess.run([require_program("shellcheck"), "-s", "sh", "-e", "SC1091", str(hook)], check=True)


@pytest.mark.slow
def test_mkinitramfs_with_the_customisation_writes_a_cloud_initrd(tmp_path: Path) -> None:
    mkinitramfs = require_program("mkinitramfs")
    lsinitramfs = require_program("lsinitramfs")
    version = _host_kernel()
    conf = tmp_path / "initramfs-tools"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "hooks").mkdir()
    (conf / "scripts").mkdir()
    # The distribution's defaults (MODULES=most, zstd) as initramfs-tools installs them.
    shutil.copyfile("/etc/initramfs-tools/initramfs.conf", conf / "initramfs.conf")
    (conf / "modules").write_text("")
    (conf / CONF_FILE.removeprefix("/etc/initramfs-tools/")).write_text(CONF_TEXT)
    hook = conf / HOOK_FILE.removeprefix("/etc/initramfs-tools/")
    hook.write_text(hook_text())
    hook.chmod(0o755)
    initrd = tmp_path / "initrd.img"
    subprocess.run(
        [mkinitramfs, "-d", str(conf), "-o", str(initrd), version], check=True, capture_output=True
    )

    listing = subprocess.run([lsinitramfs, str(initrd)], check=True, capture_output=True, text=True).stdout
    modules = {Path(line).name.split(".ko")[0] for line in listing.splitlines() if ".ko" in line}
    for name in EXPECTED:
        assert name in modules or name.replace("_", "-") in modules, f"{name} is not in the initrd"
    for name in NOT_EXPECTED:
        assert name not in modules and name.replace("-", "_") not in modules, f"{name} is in the initrd"
    assert len(modules) < 100
    # None of the drivers is force-loaded at boot (hook-added modules are left to udev; this
    # machine's own hooks, mdadm's, may force some), and the initrd's own copy of the
    # configuration says MODULES=list.
    unpacked = tmp_path / "unpacked"
    subprocess.run([require_program("unmkinitramfs"), str(initrd), str(unpacked)], check=True)
    main = unpacked / "main" if (unpacked / "main").is_dir() else unpacked
    forced = (main / "conf/modules").read_text() if (main / "conf/modules").exists() else ""
    forced_names = {
        line.split()[0] for line in forced.splitlines() if line.strip() and not line.startswith("#")
    }
    assert not forced_names & {m for _machine, group in CLOUD_DISK_DRIVERS for m in group}
    assert "MODULES=list" in (main / "conf/conf.d" / Path(CONF_FILE).name).read_text()
    # Unpacked with cpio (unmkinitramfs): the ext4 module is the kernel's, byte for byte.
    ext4 = next(main.glob(f"usr/lib/modules/{version}/kernel/fs/ext4/ext4.ko*"))
    assert ext4.read_bytes() == (Path(f"/lib/modules/{version}/kernel/fs/ext4") / ext4.name).read_bytes()
