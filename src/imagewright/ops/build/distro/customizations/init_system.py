"""init-system: systemd as init, udev and D-Bus.

mmdebstrap's ``minbase`` (like debootstrap's) installs no init at all: a container needs none.
A machine does: ``systemd-sysv`` makes systemd ``/sbin/init``, ``udev`` names and loads the
devices (NICs, disks, the CD-ROM a context medium comes on), and D-Bus is what hostnamectl,
networkctl and logind talk over.
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization

CUSTOMIZATION = Customization(
    name="init-system",
    summary="systemd as init, with udev and D-Bus",
    why="a minimal Debian tree has no init: it boots to nothing without one",
    packages=lambda plan: ("systemd-sysv", "udev", "dbus"),
    done_elsewhere="installed systemd-sysv, udev and dbus",
)
