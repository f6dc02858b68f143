"""locale-timezone: C.UTF-8 and UTC.

A cloud image serves no one place; UTC keeps logs comparable across instances, and C.UTF-8
(built into glibc, no locales package needed) keeps programs in UTF-8 without generating
locales.
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization, TargetScript
from imagewright.ops.build.distro.plan import DistroPlan


def _customize(plan: DistroPlan, script: TargetScript) -> None:
    script.write_file(
        "/etc/default/locale", "LANG=C.UTF-8\n", change="wrote /etc/default/locale (LANG=C.UTF-8)"
    )
    script.write_file("/etc/timezone", "Etc/UTC\n")
    script.symlink("/usr/share/zoneinfo/Etc/UTC", "/etc/localtime", "linked /etc/localtime to UTC")


CUSTOMIZATION = Customization(
    name="locale-timezone",
    summary="locale C.UTF-8, timezone UTC",
    why="instances serve no one place; UTC logs compare across machines",
    customize=_customize,
)
