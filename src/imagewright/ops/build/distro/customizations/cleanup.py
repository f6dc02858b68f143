"""cleanup: what would make instances collide, or two builds differ, goes last.

- ``/etc/machine-id`` empty (systemd makes a new one at first boot; mmdebstrap empties it too),
  ``/var/lib/dbus/machine-id`` removed;
- ``/etc/hostname`` set to ``localhost`` and ``/etc/resolv.conf`` emptied when it is a file:
  mmdebstrap copies both from the build machine (mmdebstrap(1), SOURCE_DATE_EPOCH);
- files that only record the build: ``*-old`` backups of debconf and dpkg databases,
  ``/var/log`` files the installation wrote, ``/var/cache/ldconfig/aux-cache``;
- apt's package lists and downloaded packages (mmdebstrap's own cleanup removes them after the
  hooks; the local package cache keeps them on the host).
"""

from __future__ import annotations

from imagewright.ops.build.distro.customizations.base import Customization, TargetScript
from imagewright.ops.build.distro.plan import DistroPlan


def _customize(plan: DistroPlan, script: TargetScript) -> None:
    script.run(": > /etc/machine-id; rm -f /var/lib/dbus/machine-id", "emptied /etc/machine-id")
    script.write_file(
        "/etc/hostname",
        "localhost\n",
        change="wrote /etc/hostname (localhost; the instance's own comes at boot)",
    )
    script.run(
        "if [ -f /etc/resolv.conf ] && [ ! -L /etc/resolv.conf ]; then : > /etc/resolv.conf; fi",
        "emptied /etc/resolv.conf (the build machine's)",
    )
    script.run(
        "rm -f /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/cache/ldconfig/aux-cache "
        "/var/log/dpkg.log /var/log/alternatives.log /var/log/apt/*.log /var/log/bootstrap.log",
        "deleted the installation's logs and database backups",
    )


CUSTOMIZATION = Customization(
    name="cleanup",
    summary="empty machine-id, no build-machine hostname/resolv.conf, no logs or apt lists/caches",
    why="clones must not share identities; two builds must give the same bytes",
    customize=_customize,
    done_elsewhere="mmdebstrap removed apt's lists and package cache",
)
