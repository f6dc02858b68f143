"""package-cache: remove downloaded packages and package indexes caches (apt, yum, dnf, zypper, apk).

Only caches go: the package databases (/var/lib/dpkg, /var/lib/rpm) and the apt lists stay,
and the cache directories themselves are kept (apt wants /var/cache/apt/archives/partial).
"""

from __future__ import annotations

from imagewright.guest.model import join
from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

FILE_PATTERNS = (
    "/var/cache/apt/archives/*.deb",
    "/var/cache/apt/archives/partial/*",
    "/var/cache/apt/*.bin",
)
#: Directories whose content is all cache.
CACHE_DIRECTORIES = ("/var/cache/yum", "/var/cache/dnf", "/var/cache/zypp/packages", "/var/cache/apk")


def run(ctx: PrepareContext) -> None:
    doomed = [path for pattern in FILE_PATTERNS for path in ctx.guest.glob(pattern)]
    directories = ctx.guest.existing_dirs(CACHE_DIRECTORIES)
    listings = ctx.guest.listdir_many(directories) if directories else {}
    doomed += [
        join(d, entry.name) for d in directories for entry in sorted(listings[d], key=lambda e: e.name)
    ]
    ctx.delete_many(doomed)


OPERATION = Operation(
    name="package-cache",
    default=True,
    summary="Remove package caches (apt archives, yum, dnf, zypper, apk)",
    why="dead weight in every copy of the image; the package managers refill them on demand",
    run=run,
)
