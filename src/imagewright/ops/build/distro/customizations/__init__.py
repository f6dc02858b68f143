"""The registry of build-time customisations of a distribution build, in the order they run.

Each is one module with a ``CUSTOMIZATION`` record (``base.py``), the shape of prepare's
operations. All of them run for every build unless their ``applies`` says otherwise:

================  ===========================================================================
customisation     what, and why
================  ===========================================================================
init-system       systemd-sysv, udev, dbus — a minimal tree has no init
kernel            the cloud (or generic) kernel and its initrd — the disk boots itself
initramfs         MODULES=list + a hook adding cloud machines' disk drivers — a small initrd
                  (BIOS GRUB reads it, the kernel unpacks it: every boot)
boot-loader       grub-pc + debconf + update-grub defaults — kernels updated in the guest
                  reach the menu; virt-v2v finds grub-mkconfig
serial-console    console=ttyS0 and a serial getty — a cloud's console log
network           DHCP on every Ethernet interface (networkd, any name) — reachable clones
ssh               openssh-server, host keys made at first boot — no shared host keys
apt-sources       the vendor's keyring package; sources.list names the guest's keyring —
                  the guest keeps checking its archive
cloud-init        with --cloud-init: cloud-init + the datasources imagewright serves
agent-tools       with --agent: sfdisk, ip, growpart (prepare installs the agent itself)
locale-timezone   C.UTF-8, UTC
recipe-files      a recipe's files
recipe-commands   a recipe's commands, inside the target
cleanup           empty machine-id, neutral hostname/resolv.conf, no logs — clones and
                  reproducible builds
================  ===========================================================================

fstab by UUID, the boot code and ``grub.cfg`` are written by ``build`` itself when it makes the
disk, and the agent is installed by prepare's ``agent`` operation; both are reported with their
phase.
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations import (
    agent_tools,
    apt_sources,
    boot_loader,
    cleanup,
    cloud_init,
    init_system,
    initramfs,
    kernel,
    locale_timezone,
    network,
    recipe_commands,
    recipe_files,
    serial_console,
    ssh,
)
from imagewright.ops.build.distro.customizations.base import Customization, TargetScript

#: Every customisation, in run order (cleanup last, after everything that writes files).
CUSTOMIZATIONS: tuple[Customization, ...] = (
    init_system.CUSTOMIZATION,
    kernel.CUSTOMIZATION,
    initramfs.CUSTOMIZATION,
    boot_loader.CUSTOMIZATION,
    serial_console.CUSTOMIZATION,
    network.CUSTOMIZATION,
    ssh.CUSTOMIZATION,
    apt_sources.CUSTOMIZATION,
    cloud_init.CUSTOMIZATION,
    agent_tools.CUSTOMIZATION,
    locale_timezone.CUSTOMIZATION,
    recipe_files.CUSTOMIZATION,
    recipe_commands.CUSTOMIZATION,
    cleanup.CUSTOMIZATION,
)
BY_NAME: dict[str, Customization] = {c.name: c for c in CUSTOMIZATIONS}

__all__ = ["BY_NAME", "CUSTOMIZATIONS", "Customization", "TargetScript"]
