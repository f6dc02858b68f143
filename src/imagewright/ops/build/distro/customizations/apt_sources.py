"""apt-sources: the guest's apt checks its archive with its own copy of the vendor's keyring.

The vendor's keyring package (``debian-archive-keyring``, ``ubuntu-keyring``) is installed, so
the key the image's ``/etc/apt/sources.list`` names (``signed-by=``) is the guest's own and is
updated with the guest. When the build machine had no such keyring and the build checked the
archive with the copy imagewright ships (``release.py``, NOTE on the Ubuntu keyring), the
``signed-by=`` paths mmdebstrap wrote into the guest name that host file; they are pointed at
the guest's keyring instead.
"""

from __future__ import annotations

import shlex

from imagewright.ops.build.distro.customizations.base import Customization, TargetScript
from imagewright.ops.build.distro.plan import DistroPlan


def _customize(plan: DistroPlan, script: TargetScript) -> None:
    used, guest = str(plan.release.keyring), str(plan.release.vendor.keyring)
    if used == guest:
        return
    expression = shlex.quote(f"s|signed-by={used}|signed-by={guest}|g")
    script.run(
        f"for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do "
        f'[ -f "$f" ] && sed -i {expression} "$f"; done; true',
        f"pointed /etc/apt/sources.list at the guest's {guest} (the build used imagewright's copy)",
    )


CUSTOMIZATION = Customization(
    name="apt-sources",
    summary="the vendor's keyring package; sources.list names the guest's own keyring",
    why="the guest must go on checking its archive's signatures after it boots",
    packages=lambda plan: (plan.release.vendor.keyring_package,),
    customize=_customize,
)
