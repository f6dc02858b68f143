"""The local package cache: apt's own files, kept on the host between builds.

``${IMAGEWRIGHT_CACHE:-~/.cache/imagewright}/apt/VENDOR-ARCH/`` holds ``archives/`` (the
``.deb`` files, as apt's ``/var/cache/apt/archives``) and ``lists/`` (the package lists, as
``/var/lib/apt/lists``). mmdebstrap's hooks move them (mmdebstrap(1), EXAMPLES, "sync-in and
sync-out special hooks"):

- ``--setup-hook``: ``sync-in`` both into the new chroot before ``apt-get update``, so apt
  finds the lists current (``Hit:``, nothing fetched) and every package already downloaded
  (``--skip=essential/unlink`` keeps mmdebstrap from deleting those it was given);
- ``--customize-hook``, before any customisation: ``sync-out`` both back, so the cache gains
  what this build downloaded. mmdebstrap's own cleanup then removes them from the image.

apt checks every ``.deb`` against the hashes of the signed lists before using it, so a cache
file that was damaged or swapped is downloaded again, never installed. One build at a time
uses a cache directory (an exclusive ``flock`` on ``.lock``); another waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
from collections.abc import Iterator
from pathlib import Path

from imagewright.errors import ImageIOError, InvalidArgumentError
from imagewright.ops.build.distro.release import Release
from imagewright.programs.mmdebstrap import Hook

ARCHIVES = "/var/cache/apt/archives"
LISTS = "/var/lib/apt/lists"


def default_cache_root() -> Path:
    """``${IMAGEWRIGHT_CACHE:-~/.cache/imagewright}``."""
    configured = os.environ.get("IMAGEWRIGHT_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "imagewright"


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class PackageCache:
    def __init__(self, root: Path, release: Release) -> None:
        self.directory = root / "apt" / f"{release.vendor.name}-{_architecture()}"
        self.archives = self.directory / "archives"
        self.lists = self.directory / "lists"
        if any(ch.isspace() for ch in str(self.directory)):
            # mmdebstrap's special hooks split their arguments at blanks.
            raise InvalidArgumentError(
                f"The package cache {self.directory} has a blank in its path; choose another."
            )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            for path in (self.archives, self.lists / "partial"):
                path.mkdir(parents=True, exist_ok=True)
            handle = (self.directory / ".lock").open("a+b")
        except OSError as err:
            raise ImageIOError(
                f"The package cache {self.directory} cannot be used: {err.strerror}."
            ) from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def hooks(self) -> tuple[tuple[Hook, ...], tuple[Hook, ...], tuple[str, ...]]:
        """(setup hooks, hooks that save the cache, ``--skip`` stages)."""
        setup = (
            Hook("setup", f'mkdir -p "$1"{ARCHIVES} "$1"{LISTS}'),
            Hook("setup", f"sync-in {self.archives} {ARCHIVES}/"),
            Hook("setup", f"sync-in {self.lists} {LISTS}/"),
        )
        save = (
            Hook("customize", f"sync-out {ARCHIVES} {self.archives}"),
            Hook("customize", f"sync-out {LISTS} {self.lists}"),
        )
        return setup, save, ("essential/unlink",)
