"""cloud-init: cloud-init, asked to look only for the sources imagewright serves.

With ``--cloud-init``: the ``cloud-init`` package (and ``cloud-guest-utils`` for growpart, so
the root partition grows to the disk), and a ``datasource_list`` naming the context kinds
``imagewright context build`` writes (NoCloud, ConfigDrive, OpenNebula) and the metadata trees
its metadata service answers (OpenStack, Ec2), then None. ds-identify still checks which of
them is present before cloud-init waits for any.

The file is named ``99-…``: cloud-init reads ``cloud.cfg.d/*.cfg`` in name order, later files
winning, and the package's own debconf-written ``90_dpkg.cfg`` (Debian's and Ubuntu's, with a
datasource_list of every source) sorts after ``90-…`` ("-" before "_"), so a ``90-`` name lost.

``locale: false`` turns cloud-init's locale module off: the locale-timezone customisation has
set C.UTF-8 (built into glibc), and the module runs ``update-locale`` (Ubuntu: it failed the
Config stage of a noble minbase image, which has no ``locales`` package).

Sources: cloud-init 22.4 docs, "Datasources" and "ds-identify".
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization, TargetScript
from imagewright.ops.build.distro.plan import DistroPlan

DATASOURCES = ("NoCloud", "ConfigDrive", "OpenNebula", "OpenStack", "Ec2", "None")
CONFIG_FILE = "/etc/cloud/cloud.cfg.d/99-imagewright.cfg"
CONFIG_TEXT = (
    "# Written by imagewright build: the sources imagewright's context media and metadata\n"
    "# service provide.\n"
    f"datasource_list: [{', '.join(DATASOURCES)}]\n"
    "# The image's locale is set (C.UTF-8, /etc/default/locale); cloud-init's locale module would\n"
    "# run locale-gen/update-locale of the locales package, which a minimal image does not have.\n"
    "locale: false\n"
)


def _customize(plan: DistroPlan, script: TargetScript) -> None:
    script.write_file(
        CONFIG_FILE, CONFIG_TEXT, change=f"wrote {CONFIG_FILE} ({', '.join(DATASOURCES)}; locale module off)"
    )


CUSTOMIZATION = Customization(
    name="cloud-init",
    summary="cloud-init with the datasources imagewright serves",
    why="with --cloud-init: the instance takes its hostname, keys and user-data from its context",
    applies=lambda plan: plan.context == "cloud-init",
    packages=lambda plan: ("cloud-init", "cloud-guest-utils"),
    customize=_customize,
)
