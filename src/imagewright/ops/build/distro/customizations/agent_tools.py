"""agent-tools: what the imagewright agent uses in the guest; the agent itself comes after.

With ``--agent``: ``fdisk`` (sfdisk, to grow the root partition), ``iproute2`` (ip, for a
static network from the context), ``cloud-guest-utils`` (growpart, tried first), ``udhcpc``
(busybox's DHCP client, Debian main / Ubuntu universe) and ``curl`` (the agent's HTTP client
for the EC2 metadata service's IMDSv2 token PUT; minbase has neither curl, wget nor nc). The
agent runs before network-pre.target, so the image's systemd-networkd has not started when the
agent needs a lease to reach the metadata service: without a DHCP client of its own it found no
network at all. The agent script and its systemd unit are installed on the built disk by
prepare's ``agent`` operation (the one way imagewright installs it), reported with the
prepare phase.
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization

CUSTOMIZATION = Customization(
    name="agent-tools",
    summary="the programs the imagewright agent uses (sfdisk, ip, growpart, udhcpc, curl)",
    why="with --agent: the agent grows the root disk and configures the network with them",
    applies=lambda plan: plan.context == "agent",
    packages=lambda plan: ("fdisk", "iproute2", "cloud-guest-utils", "udhcpc", "curl"),
    done_elsewhere=(
        "installed fdisk, iproute2, cloud-guest-utils, udhcpc and curl; prepare installs the agent"
    ),
)
