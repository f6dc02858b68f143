"""agent-tools: what the imagewright agent uses in the guest; the agent itself comes after.

With ``--agent``: ``fdisk`` (sfdisk, to grow the root partition), ``iproute2`` (ip, for a
static network from the context) and ``cloud-guest-utils`` (growpart, tried first). The agent
script and its systemd unit are installed on the built disk by prepare's ``agent`` operation
(the one way imagewright installs it), reported with the prepare phase.
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization

CUSTOMIZATION = Customization(
    name="agent-tools",
    summary="the programs the imagewright agent uses (sfdisk, ip, growpart)",
    why="with --agent: the agent grows the root disk and configures the network with them",
    applies=lambda plan: plan.context == "agent",
    packages=lambda plan: ("fdisk", "iproute2", "cloud-guest-utils"),
    done_elsewhere="installed fdisk, iproute2 and cloud-guest-utils; prepare installs the agent",
)
