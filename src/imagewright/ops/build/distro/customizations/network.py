"""network: DHCP on the Ethernet interfaces, whatever udev names them.

systemd-networkd (part of ``systemd``) with one ``.network`` file that matches every Ethernet
interface by type, so the predictable names (``ens3``, ``enp0s3``, ``eth0`` on Xen) need not be
known when the image is built and a clone with a new MAC address still comes up. It is named
``90-…`` so that a cloud-init network configuration (``10-cloud-init-*.network``) or a file of
the user's sorts before it and wins. ``systemd-resolved`` puts the DNS servers DHCP hands out
into ``/etc/resolv.conf``. ``systemd-networkd-wait-online`` (which cloud-init's network stage
waits for) is content with any one interface online and gives up after 30 s instead of two
minutes, so an instance without a network, or with a NIC nobody configured, still boots in
reasonable time.

Sources: systemd.network(5) ([Match] Type=, Name=; [Network] DHCP=).
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization, TargetScript
from imagewright.ops.build.distro.plan import DistroPlan

NETWORK_FILE = "/etc/systemd/network/90-imagewright-dhcp.network"
NETWORK_TEXT = """# Written by imagewright build: DHCP on every Ethernet interface, whatever its name.
[Match]
Type=ether
Name=en* eth*

[Network]
DHCP=yes
"""


WAIT_ONLINE_DROP_IN = "/etc/systemd/system/systemd-networkd-wait-online.service.d/50-imagewright.conf"
WAIT_ONLINE_TEXT = """# Written by imagewright build: any interface online is enough; give up after 30 s.
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
"""


def _customize(plan: DistroPlan, script: TargetScript) -> None:
    script.write_file(NETWORK_FILE, NETWORK_TEXT)
    script.write_file(
        WAIT_ONLINE_DROP_IN, WAIT_ONLINE_TEXT, change="wait-online: any interface, 30 s at most"
    )
    script.run(
        "systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1",
        "enabled systemd-networkd and systemd-resolved",
    )


CUSTOMIZATION = Customization(
    name="network",
    summary="DHCP on every Ethernet interface (systemd-networkd, any interface name)",
    why="an instance must be reachable without knowing its NIC's name or MAC",
    # Part of systemd itself in older releases (release.py: resolved_in_systemd).
    packages=lambda plan: ("systemd-resolved",) if plan.release.has_resolved_package else (),
    customize=_customize,
)
