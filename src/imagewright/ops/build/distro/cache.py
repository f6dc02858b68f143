"""The local caches of distribution builds: apt's own files, and finished root filesystems.

**The package cache.** ``CACHE/apt/VENDOR-ARCH/`` (``CACHE`` is ``files.default_cache_dir``,
``${IMAGEWRIGHT_CACHE:-~/.cache/imagewright}``) holds ``archives/`` (the ``.deb`` files, as
apt's ``/var/cache/apt/archives``) and ``lists/`` (the package lists, as
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

**The root filesystem cache** (:class:`RootfsCache`), ``CACHE/rootfs/KEY/``: the tarball
mmdebstrap wrote (``rootfs.tar``), the guest's package listing (``packages``) and
``manifest.json``, written last (an entry without it is incomplete and ignored). A build whose
key matches reuses the tarball and skips mmdebstrap altogether: only the image and prepare
steps run. The key (:func:`rootfs_key`) is the SHA-256 of everything that decides the
tarball's bytes — the release, architecture, variant and package list, the apt sources, the
archive's state (the SHA-256 of each suite's ``InRelease``, so a new package in -updates or
-security is a new key; a snapshot never changes), ``SOURCE_DATE_EPOCH``, mmdebstrap's mode,
options and version, every customisation script (they carry the recipe's files and commands),
and imagewright's version. A different package list, mirror, epoch, customisation or archive
state is a different entry. The cache is bounded: after each store, the least recently used
entries beyond ``max_entries`` or ``max_bytes`` are deleted (a hit counts as a use).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagewright.errors import ImageIOError, InvalidArgumentError
from imagewright.files import cache_lock, read_manifest
from imagewright.ops.build.distro.release import Release
from imagewright.programs.mmdebstrap import Hook

ARCHIVES = "/var/cache/apt/archives"
LISTS = "/var/lib/apt/lists"


def architecture() -> str:
    """The Debian architecture of this machine (the guest's)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class PackageCache:
    def __init__(self, root: Path, release: Release) -> None:
        self.directory = root / "apt" / f"{release.vendor.name}-{architecture()}"
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


ROOTFS_MANIFEST = "manifest.json"
_ROOTFS_MANIFEST_VERSION = 1
#: Root filesystems kept by default: a few releases or package sets side by side.
DEFAULT_ROOTFS_ENTRIES = 4
#: And at most this many bytes of tarballs (a cloud-init minbase tarball is ~0.7 GiB).
DEFAULT_ROOTFS_BYTES = 8 << 30


def rootfs_key(inputs: Mapping[str, Any]) -> str:
    """The cache key of a root filesystem: SHA-256 of its inputs as canonical JSON."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class RootfsEntry:
    key: str
    directory: Path
    tarball: Path
    #: The guest's ``dpkg-query`` listing (build's manifest hook output).
    listing: Path
    size: int


class RootfsCache:
    """Finished root filesystem tarballs by key (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        max_entries: int = DEFAULT_ROOTFS_ENTRIES,
        max_bytes: int = DEFAULT_ROOTFS_BYTES,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise InvalidArgumentError("The root filesystem cache must keep at least one entry.")
        self.directory = root / "rootfs"
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def _entry(self, key: str) -> RootfsEntry | None:
        directory = self.directory / key
        data = read_manifest(directory / ROOTFS_MANIFEST, _ROOTFS_MANIFEST_VERSION)
        if data is None or data.get("key") != key:
            return None
        tarball, listing = directory / "rootfs.tar", directory / "packages"
        try:
            size = tarball.stat().st_size
            listing_ok = listing.is_file()
        except OSError:
            return None
        if size != data.get("size") or not listing_ok:
            return None  # damaged or half-deleted: rebuilt and replaced
        return RootfsEntry(key, directory, tarball, listing, size)

    def lookup(self, key: str) -> RootfsEntry | None:
        """The entry of ``key`` (its use recorded for eviction), or None."""
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"{key!r} is not a root filesystem cache key")
        entry = self._entry(key)
        if entry is not None:
            with contextlib.suppress(OSError):
                os.utime(entry.directory / ROOTFS_MANIFEST)
        return entry

    def store(self, key: str, tarball: Path, listing: Path, inputs: Mapping[str, Any]) -> RootfsEntry:
        """Move ``tarball`` and copy ``listing`` into the entry of ``key``; evict old entries."""
        with cache_lock(self.directory):
            existing = self._entry(key)
            if existing is not None:
                # Another build of the same key stored it meanwhile (and may be reading it):
                # the same inputs made the same tarball, so that one stays.
                tarball.unlink(missing_ok=True)
                return existing
            staging = self.directory / f".staging-{key[:16]}-{os.getpid()}"
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(mode=0o700)
            try:
                shutil.move(tarball, staging / "rootfs.tar")
                shutil.copyfile(listing, staging / "packages")
                manifest = {
                    "manifest_version": _ROOTFS_MANIFEST_VERSION,
                    "key": key,
                    "size": (staging / "rootfs.tar").stat().st_size,
                    "created": int(time.time()),
                    "inputs": dict(inputs),
                }
                (staging / ROOTFS_MANIFEST).write_text(
                    json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
                )
                final = self.directory / key
                if final.exists():
                    shutil.rmtree(final)
                staging.rename(final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self._evict(keep=key)
        entry = self._entry(key)
        if entry is None:  # pragma: no cover - just written under the lock
            raise ImageIOError(f"The root filesystem cache {self.directory} could not keep the build.")
        return entry

    def entries(self) -> list[tuple[float, RootfsEntry]]:
        """(last use, entry) of every complete entry, most recently used first."""
        found: list[tuple[float, RootfsEntry]] = []
        if not self.directory.is_dir():
            return found
        for child in self.directory.iterdir():
            if child.name.startswith(".") or not child.is_dir():
                continue
            entry = self._entry(child.name)
            if entry is None:
                continue
            with contextlib.suppress(OSError):
                found.append(((child / ROOTFS_MANIFEST).stat().st_mtime, entry))
        return sorted(found, key=lambda item: item[0], reverse=True)

    def _evict(self, keep: str) -> None:
        """Delete the least recently used entries beyond the bounds (never ``keep``), and
        incomplete ones (no valid manifest: a build that was cut off)."""
        kept, total = 0, 0
        for _used, entry in self.entries():
            if entry.key == keep or (kept + 1 <= self.max_entries and total + entry.size <= self.max_bytes):
                kept += 1
                total += entry.size
                continue
            shutil.rmtree(entry.directory, ignore_errors=True)
        for child in self.directory.iterdir():
            if child.is_dir() and not child.name.startswith(".") and self._entry(child.name) is None:
                shutil.rmtree(child, ignore_errors=True)
