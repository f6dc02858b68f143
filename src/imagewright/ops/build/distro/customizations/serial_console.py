"""serial-console: the kernel, GRUB and a login prompt on the first serial port.

Clouds record the serial port as the instance's console log. build's ``grub.cfg`` (and
update-grub's, through boot-loader's defaults) start the kernel with ``console=tty0
console=ttyS0,115200``; systemd's getty generator then starts ``serial-getty@ttyS0`` because
ttyS0 is the last ``console=``. Nothing to write here beyond that, but it is part of what a
cloud image needs, so it is reported.
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization
from imagewright.ops.build.grubcfg import CONSOLE_ARGUMENTS

CUSTOMIZATION = Customization(
    name="serial-console",
    summary="kernel messages, GRUB and a getty on ttyS0 (115200 baud)",
    why="a cloud's console log is the serial port",
    done_elsewhere=(
        f"the menu passes {' '.join(CONSOLE_ARGUMENTS)}; systemd starts serial-getty@ttyS0 for it"
    ),
)
