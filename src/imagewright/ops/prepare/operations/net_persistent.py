"""net-persistent: turn udev's persistent network naming rules into links to /dev/null.

Older udev (Debian up to 7, RHEL/CentOS 6, Ubuntu up to 14.04) ships
``75-persistent-net-generator.rules``, which at every boot writes the MAC address of each new
NIC into ``/etc/udev/rules.d/70-persistent-net.rules`` with the next free name. An instance
cloned from the image has a new MAC, so it gets ``eth1`` while the network configuration
waits for ``eth0``: the instance boots and cannot be reached.

Deleting the rules file is not enough: the generator writes it again at the first boot, and
the next image made from that instance is broken again. A rules file in /etc/udev/rules.d
with the name of a rules file in /lib/udev/rules.d replaces it, and a link to /dev/null is an
empty file that nothing can write a rule into. So 70-persistent-net.rules becomes such a
link (written rules go to /dev/null), and so does 75-persistent-net-generator.rules when the
guest ships the generator (which masks it). Old Debian and Ubuntu cloud images did exactly this.
"""

from __future__ import annotations

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

RULES_DIR = "/etc/udev/rules.d"
PERSISTENT_RULES = f"{RULES_DIR}/70-persistent-net.rules"
GENERATOR = "75-persistent-net-generator.rules"
GENERATOR_HOMES = ("/lib/udev/rules.d", "/usr/lib/udev/rules.d")
UDEV_MARKERS = ("/etc/udev", "/lib/udev", "/usr/lib/udev")


def run(ctx: PrepareContext) -> None:
    if not any(ctx.guest.is_dir(path) for path in UDEV_MARKERS):
        ctx.note = "the guest has no udev"
        return
    ctx.mkdir(RULES_DIR)
    ctx.symlink("/dev/null", PERSISTENT_RULES)
    if any(ctx.guest.exists(f"{home}/{GENERATOR}") for home in GENERATOR_HOMES):
        ctx.symlink("/dev/null", f"{RULES_DIR}/{GENERATOR}", detail="masks the rule generator")


OPERATION = Operation(
    name="net-persistent",
    default=True,
    summary="Link udev's 70-persistent-net.rules (and the generator rules) to /dev/null",
    why="a clone's new MAC would become eth1 while its network configuration waits for eth0",
    run=run,
)
