"""initramfs: an initrd with the drivers a cloud instance boots from, not every driver there is.

initramfs-tools' default, ``MODULES=most``, copies nearly every storage, USB, HID, bus and
clock driver of the kernel into the initrd (hook-functions ``auto_add_modules``): for
Debian 12's ``linux-image-amd64`` that is 747 modules, 127 MB unpacked, 30 MB as zstd. A
virtual machine pays for it at every boot: BIOS GRUB reads the initrd through int 13h at most
one track (63 sectors) at a time (grub-core/disk/i386/pc/biosdisk.c, ``get_safe_sectors``),
and the kernel unpacks all of it before /init runs. ``MODULES=dep`` (only what this machine
uses) is wrong inside a build: it would look at the build machine's devices, not the
instance's.

So the image gets, in ``/etc/initramfs-tools`` (where the guest's own ``update-initramfs``
reads them, so a kernel installed later gets the same initrd):

- ``conf.d/50-imagewright.conf``: ``MODULES=list`` — only the modules asked for below, and
  those initramfs-tools' own hooks add (udev, kmod, fsck, the "hidden dependencies" such as
  crc32c for ext4);
- ``hooks/imagewright-cloud-drivers``: initramfs-tools' ``manual_add_modules`` for the disk
  controllers of the machines clouds run (:data:`CLOUD_DISK_DRIVERS`: virtio, IDE/SATA,
  NVMe, Xen, Hyper-V, VMware, LSI SCSI) and the root filesystem's module (ext4, the
  filesystem build makes, and whatever ``/etc/fstab`` names for ``/``). Not
  ``/etc/initramfs-tools/modules``: every module listed there is also force-loaded at boot
  (``load_modules`` in scripts/functions), drivers for absent hardware included; added by a
  hook, udev in the initramfs loads the one the instance's hardware asks for (its modalias),
  as under ``MODULES=most``. The CD-ROM driver is among them although no root is on a CD:
  cloud-init's ``ds-identify`` runs as a systemd generator, before the real root's udev has
  loaded anything, and finds a context medium only among the block devices the initramfs
  made — without ``sr_mod`` there a NoCloud seed on a CD-ROM was not seen, and with
  more than one datasource in its list cloud-init disabled itself for the boot.

Both are written in mmdebstrap's essential hook, before the kernel package is configured, so
its postinst builds this initrd at once (no second ``update-initramfs`` run). Measured for
``linux-image-amd64`` 6.1: 47 modules, 21 MB unpacked, 7.0 MB as zstd (against 30 MB, 747 modules); the
rest of it is udev, kmod and their libraries. For the cloud kernel the difference is smaller.

Sources: initramfs-tools(7) and initramfs.conf(5) (MODULES, hook scripts, PREREQ),
``/usr/share/initramfs-tools/hook-functions`` and ``mkinitramfs`` of initramfs-tools 0.142.
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization, TargetScript
from imagewright.ops.build.distro.plan import DistroPlan

CONF_FILE = "/etc/initramfs-tools/conf.d/50-imagewright.conf"
HOOK_FILE = "/etc/initramfs-tools/hooks/imagewright-cloud-drivers"
#: The disk controllers of cloud hypervisors, by the machine they serve; modprobe names.
CLOUD_DISK_DRIVERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("KVM/QEMU virtio", ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod")),
    ("IDE and SATA (QEMU pc and q35, VMware SATA)", ("ata_piix", "ata_generic", "ahci")),
    ("NVMe (QEMU, AWS Nitro, VMware)", ("nvme",)),
    ("Xen (AWS Xen instances, XenServer)", ("xen_blkfront",)),
    ("Hyper-V and Azure", ("hv_storvsc",)),
    ("VMware SCSI and QEMU's LSI controllers", ("vmw_pvscsi", "mptspi", "mptsas", "sym53c8xx")),
    ("CD-ROMs: a context medium (NoCloud, config drive, OpenNebula) seen by ds-identify", ("sr_mod",)),
)
#: The root filesystem build makes (ops/build: mke2fs -t ext4).
ROOT_FILESYSTEM_MODULES = ("ext4",)

CONF_TEXT = """\
# Written by imagewright build: the initrd carries only the modules hooks ask for
# (hooks/imagewright-cloud-drivers: the disk drivers of cloud machines), not MODULES=most.
MODULES=list
"""


def hook_text() -> str:
    """The initramfs-tools hook script (POSIX sh, run by mkinitramfs with hook-functions)."""
    groups = "\n".join(
        f"# {machine}\nmanual_add_modules {' '.join(modules)}" for machine, modules in CLOUD_DISK_DRIVERS
    )
    return f"""#!/bin/sh
# Written by imagewright build: the disk drivers of cloud machines and the root filesystem's
# module; udev in the initrd loads the one the hardware asks for (see conf.d/50-imagewright.conf).
PREREQ=""
prereqs() {{ echo "$PREREQ"; }}
case "$1" in
prereqs) prereqs; exit 0 ;;
esac
. /usr/share/initramfs-tools/hook-functions
{groups}
# The root filesystem: the one build makes, and the one /etc/fstab names for / (if another).
manual_add_modules {" ".join(ROOT_FILESYSTEM_MODULES)}
root_type=$(awk '$1 !~ /^#/ && $2 == "/" {{ print $3; exit }}' /etc/fstab 2>/dev/null || true)
case "$root_type" in
""|auto|ext4) ;;
*) manual_add_modules "$root_type" ;;
esac
exit 0
"""


def _essential(plan: DistroPlan, script: TargetScript) -> None:
    script.write_file(CONF_FILE, CONF_TEXT, change=f"wrote {CONF_FILE} (MODULES=list)")
    script.write_file(
        HOOK_FILE,
        hook_text(),
        mode=0o755,
        change=f"wrote {HOOK_FILE} (virtio, IDE/SATA, NVMe, Xen, Hyper-V, VMware/LSI disk drivers; ext4)",
    )


CUSTOMIZATION = Customization(
    name="initramfs",
    summary="an initrd with the disk drivers of cloud machines (MODULES=list + a hook), not MODULES=most",
    why="a quarter of the size: BIOS GRUB reads it and the kernel unpacks it at every boot",
    essential=_essential,
    done_elsewhere="",
)
