"""boot-loader: the guest's own GRUB packages, configured so that the guest keeps its menu itself.

build places GRUB's boot code and core image itself (``ops/build/bootloader.py``) and writes a
``grub.cfg``; this customisation makes the guest able to maintain both after it boots:

- ``grub-pc`` is installed, so ``update-grub`` and ``grub-mkconfig`` exist (virt-v2v needs the
  latter) and the kernel packages' ``/etc/kernel/postinst.d/zz-update-grub`` rewrites the menu
  whenever a kernel is installed or removed.
- For a disk that boots under UEFI (``--firmware hybrid``, the default, or ``uefi``) also
  ``grub-efi-amd64-signed`` and ``shim-signed`` (with ``shim-helpers-amd64-signed`` and
  ``grub-efi-amd64-bin`` as their dependencies): the signed boot chain the ESP carries is then
  a package of the guest, upgraded with it and at hand for ``grub-install --target=x86_64-efi
  --uefi-secure-boot`` (virt-v2v and the guest's admin find it). grub-pc stays the platform
  package: ``grub-efi-amd64`` conflicts with it, and one ``update-grub`` writes the one
  ``/boot/grub/grub.cfg`` that both BIOS GRUB and the ESP's GRUB read (build's ESP
  ``grub.cfg`` finds the root by UUID and loads that file), so a kernel installed in the guest
  reaches both menus. Neither package's maintainer scripts install to an ESP here: with grub-pc
  as the platform, shim-signed and grub-efi-amd64-signed run no ``grub-install``; build copies
  these packages' signed binaries from the root filesystem to the ESP itself
  (``efiloader.guest_loader``; Ubuntu's into ``EFI/ubuntu``, where Ubuntu's signed GRUB looks),
  and the guest refreshes them with that ``grub-install`` when wanted.
- debconf is told, before grub-pc is configured, that there is no install device yet
  (``grub-pc/install_devices`` empty, ``install_devices_empty`` true): there is no disk inside
  mmdebstrap's chroot, and grub-pc's postinst must not try ``grub-install`` there.
- At first boot a oneshot unit records the disk the root filesystem is on as the install device
  (``/dev/disk/by-id/...`` when udev gives the disk one, else ``/dev/vda``-style), as the
  Debian installer would have; from then on a ``grub-pc`` upgrade reinstalls GRUB on it. It
  runs in the idle scheduling classes (CPU and I/O, as e2fsprogs' ``e2scrub_reap.service``
  does): ``debconf-set-selections`` is Perl, and on a one-vCPU instance under TCG it ran for
  17 s (busy host) beside cloud-init's stages, which the login prompt waits for.
- GRUB's i386-pc modules are copied to ``/boot/grub/i386-pc`` from the guest's own grub-pc-bin,
  as ``grub-install`` does: the menu ``update-grub`` writes loads some (``gzio``, ``all_video``)
  that build's core image does not carry. (build links its core image with the build machine's
  GRUB; a guest of another GRUB version gets its own core image at its first grub-pc upgrade,
  through the install device recorded below.)
- ``/etc/default/grub.d/50-imagewright.cfg`` makes ``update-grub`` write the menu build wrote:
  the serial console and the screen, a one-second menu, no "quiet", no recovery entries or
  submenu, and ``root=UUID=`` (grub-mkconfig's default).

Sources: grub-pc's templates and postinst (debconf questions install_devices,
install_devices_empty); grub-mkconfig's /etc/default/grub keys (GRUB manual, "Simple
configuration handling").
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization, TargetScript
from imagewright.ops.build.distro.plan import DistroPlan
from imagewright.ops.build.grubcfg import CONSOLE_ARGUMENTS, MENU_TIMEOUT_SECONDS, kernel_parameters

GRUB_DEFAULTS = "/etc/default/grub.d/50-imagewright.cfg"
DEVICE_SCRIPT = "/usr/local/sbin/imagewright-grub-install-device"
#: The signed UEFI chain of a disk that boots under UEFI (see the module docstring).
UEFI_PACKAGES = ("grub-efi-amd64-signed", "shim-signed")
DEVICE_UNIT = "/etc/systemd/system/imagewright-grub-install-device.service"
DEVICE_MARKER = "/var/lib/imagewright/grub-install-device"


def grub_defaults(append: str) -> str:
    """The ``/etc/default/grub.d`` snippet that makes update-grub write build's menu."""
    parameters = " ".join([*CONSOLE_ARGUMENTS, *kernel_parameters(append)])
    return (
        "# Written by imagewright build: update-grub writes the menu build wrote\n"
        "# (serial console and screen, no quiet, no recovery entries or submenu).\n"
        f"GRUB_TIMEOUT={MENU_TIMEOUT_SECONDS}\n"
        'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
        f'GRUB_CMDLINE_LINUX="{parameters}"\n'
        'GRUB_TERMINAL="serial console"\n'
        'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n'
        "GRUB_DISABLE_RECOVERY=true\n"
        "GRUB_DISABLE_SUBMENU=y\n"
        "GRUB_DISABLE_OS_PROBER=true\n"
    )


DEVICE_SCRIPT_TEXT = f"""#!/bin/sh
# Written by imagewright build: record the disk / is on as grub-pc's install device, once,
# so that a grub-pc upgrade reinstalls GRUB there (the Debian installer records it the same way).
set -eu
source=$(findmnt -n -o SOURCE /)
disk=$(lsblk -n -d -o PKNAME "$source" 2>/dev/null | head -n 1)
[ -n "$disk" ] || exit 0
device=/dev/$disk
for link in /dev/disk/by-id/*; do
    [ -e "$link" ] || continue
    if [ "$(readlink -f "$link")" = "$device" ]; then device=$link; break; fi
done
printf '%s\\n' "grub-pc grub-pc/install_devices multiselect $device" \\
    "grub-pc grub-pc/install_devices_empty boolean false" | debconf-set-selections
mkdir -p {DEVICE_MARKER.rsplit("/", 1)[0]}
echo "$device" > {DEVICE_MARKER}
"""

DEVICE_UNIT_TEXT = f"""[Unit]
Description=Record the boot disk as GRUB's install device (imagewright)
ConditionPathExists=!{DEVICE_MARKER}
After=local-fs.target systemd-udev-settle.service

[Service]
Type=oneshot
# Bookkeeping for a later grub-pc upgrade: never in the way of the first boot's own work.
CPUSchedulingPolicy=idle
IOSchedulingClass=idle
ExecStart={DEVICE_SCRIPT}

[Install]
WantedBy=multi-user.target
"""


def _essential(plan: DistroPlan, script: TargetScript) -> None:
    script.run(
        "printf '%s\\n' 'grub-pc grub-pc/install_devices multiselect' "
        "'grub-pc grub-pc/install_devices_empty boolean true' | debconf-set-selections",
        "told debconf grub-pc has no install device inside the build (no grub-install there)",
    )


def _customize(plan: DistroPlan, script: TargetScript) -> None:
    script.run(
        "mkdir -p /boot/grub/i386-pc && cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst "
        "/boot/grub/i386-pc/",
        "copied the guest's GRUB modules to /boot/grub/i386-pc (as grub-install does)",
    )
    script.write_file(
        GRUB_DEFAULTS,
        grub_defaults(plan.append),
        change=f"wrote {GRUB_DEFAULTS} (update-grub's menu = build's)",
    )
    script.write_file(DEVICE_SCRIPT, DEVICE_SCRIPT_TEXT, mode=0o755)
    script.write_file(DEVICE_UNIT, DEVICE_UNIT_TEXT)
    script.symlink(
        DEVICE_UNIT,
        "/etc/systemd/system/multi-user.target.wants/imagewright-grub-install-device.service",
        "enabled the first-boot unit that records the boot disk as grub-pc's install device",
    )


CUSTOMIZATION = Customization(
    name="boot-loader",
    summary="the guest's own grub-pc (+ signed shim and GRUB for UEFI), keeping build's menu (update-grub)",
    why="an apt upgrade of a kernel must reach the boot menu; virt-v2v needs grub-mkconfig",
    packages=lambda plan: ("grub-pc", *UEFI_PACKAGES) if plan.uefi else ("grub-pc",),
    essential=_essential,
    customize=_customize,
)
