"""ssh: an SSH server whose host keys are made at first boot, not at build time.

openssh-server's postinst generates host keys inside the build; every instance of the image
would share them (and they would differ between two builds, which are meant to be identical).
They are deleted, and a oneshot unit ordered before ``ssh.service`` runs ``ssh-keygen -A`` when
a key is missing. cloud-init and the imagewright agent make fresh keys per instance anyway;
this unit covers an image booted without either.
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization, TargetScript
from imagewright.ops.build.distro.plan import DistroPlan

KEYGEN_UNIT = "/etc/systemd/system/imagewright-ssh-host-keys.service"
KEYGEN_UNIT_TEXT = """[Unit]
Description=Generate missing SSH host keys (imagewright)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""


def _customize(plan: DistroPlan, script: TargetScript) -> None:
    script.run(
        "rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub",
        "deleted the SSH host keys made at build time",
    )
    script.write_file(KEYGEN_UNIT, KEYGEN_UNIT_TEXT)
    script.symlink(
        KEYGEN_UNIT,
        "/etc/systemd/system/ssh.service.wants/imagewright-ssh-host-keys.service",
        "enabled host key generation before ssh.service",
    )


CUSTOMIZATION = Customization(
    name="ssh",
    summary="openssh-server, host keys generated at first boot",
    why="the only way into a cloud instance; clones must not share host keys",
    packages=lambda plan: ("openssh-server",),
    customize=_customize,
)
