"""recipe-commands: the commands a recipe runs inside the target at build time (``commands``).

Each runs under the guest's ``/bin/sh -c`` inside mmdebstrap's chroot, after every package and
file is in place, in recipe order; the first one that fails stops the build with its exit status.
Services are not started there (mmdebstrap installs a ``policy-rc.d`` that forbids it).
"""

from __future__ import annotations

import shlex

from imagewright.ops.build.distro.customizations.base import Customization, TargetScript
from imagewright.ops.build.distro.plan import DistroPlan


def _customize(plan: DistroPlan, script: TargetScript) -> None:
    for number, command in enumerate(plan.commands, start=1):
        failed = f'{{ echo "E: recipe command {number} failed with exit $?" >&2; exit 1; }}'
        script.run(f"sh -c {shlex.quote(command)} || {failed}", f"ran: {command}")


CUSTOMIZATION = Customization(
    name="recipe-commands",
    summary="the recipe's commands, run inside the target",
    why="what a package install alone does not do (enable a service, add a user)",
    applies=lambda plan: bool(plan.commands),
    customize=_customize,
)
