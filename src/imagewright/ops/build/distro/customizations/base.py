"""What a build-time customisation is, and the shell script it contributes to the target.

A customisation is prepare's operation shape (``ops/prepare/operations/base.py``) for a guest
that is still being installed: a name, a one-line summary, why it is done, whether it applies
to this build, the packages it adds to mmdebstrap's ``--include``, and the commands it runs
*inside* the target through mmdebstrap's hooks — ``essential`` (after the Essential:yes
packages, before the rest: debconf answers) and ``customize`` (after every package).

NOTE on running inside the target: every command of a :class:`TargetScript` runs under the
guest's own ``/bin/sh`` through ``chroot "$1"`` (mmdebstrap's hook convention), never as a
host shell reading ``"$1"/etc/...``: a path inside the guest that is a symbolic link resolves
inside the guest, not on the host. File contents travel in the script itself as quoted
here-documents, so nothing from the host is read while the guest's files are written.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagewright.ops.build.distro.plan import DistroPlan


def _marker(body: str) -> str:
    """A here-document delimiter that is not a line of ``body``, derived from it: the same
    content gives the same script text (build's root filesystem cache keys on the scripts)."""
    digest = hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()
    for start in range(0, len(digest) - 16):
        marker = "IMAGEWRIGHT_EOF_" + digest[start : start + 16]
        if marker not in body:
            return marker
    raise ValueError("no here-document delimiter fits this content")  # pragma: no cover


@dataclass
class TargetScript:
    """A POSIX shell script run inside the target, and the report lines of what it does."""

    lines: list[str] = field(default_factory=list)
    #: What the script changes, one line each, for the build report.
    changes: list[str] = field(default_factory=list)

    def run(self, command: str, change: str | None = None) -> None:
        """A shell command line (already quoted by the caller)."""
        self.lines.append(command)
        if change:
            self.changes.append(change)

    def write_file(self, path: str, content: str, *, mode: int = 0o644, change: str | None = None) -> None:
        """Write ``content`` to ``path`` (parents created, owned by root, ``mode``)."""
        if not path.startswith("/") or "\0" in path or "\n" in path:
            raise ValueError(f"{path!r} is not an absolute guest path")
        body = content if content.endswith("\n") or not content else content + "\n"
        marker = _marker(body)
        quoted = shlex.quote(path)
        directory = shlex.quote(path.rsplit("/", 1)[0] or "/")
        self.lines.append(f"mkdir -p {directory}")
        self.lines.append(f"rm -f {quoted}")
        if body:
            self.lines.append(f"cat > {quoted} <<'{marker}'\n{body}{marker}")
        else:
            self.lines.append(f": > {quoted}")
        self.lines.append(f"chown 0:0 {quoted} && chmod {mode:04o} {quoted}")
        self.changes.append(change or f"wrote {path}")

    def write_bytes(self, path: str, data: bytes, *, mode: int = 0o644, change: str | None = None) -> None:
        """Write any bytes to ``path`` (carried base64-encoded, decoded by the guest's coreutils)."""
        if not path.startswith("/") or "\0" in path or "\n" in path:
            raise ValueError(f"{path!r} is not an absolute guest path")
        encoded = base64.encodebytes(data).decode("ascii")
        marker = _marker(encoded)
        quoted = shlex.quote(path)
        self.lines.append(f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0] or '/')}")
        self.lines.append(f"rm -f {quoted}")
        self.lines.append(f"base64 -d > {quoted} <<'{marker}'\n{encoded}{marker}")
        self.lines.append(f"chown 0:0 {quoted} && chmod {mode:04o} {quoted}")
        self.changes.append(change or f"wrote {path}")

    def symlink(self, target: str, path: str, change: str | None = None) -> None:
        quoted = shlex.quote(path)
        self.lines.append(f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0] or '/')}")
        self.lines.append(f"ln -sfn {shlex.quote(target)} {quoted}")
        self.changes.append(change or f"linked {path} -> {target}")

    def text(self) -> str:
        return "set -eu\n" + "\n".join(self.lines) + "\n"


@dataclass(frozen=True)
class Customization:
    """One thing a cloud image needs, done while the target is installed."""

    name: str
    #: One line for ``--list-customizations`` and the report.
    summary: str
    #: Why a cloud image needs it.
    why: str
    #: Whether it runs for this build (most always do).
    applies: Callable[[DistroPlan], bool] = lambda plan: True
    #: Packages it adds to the install.
    packages: Callable[[DistroPlan], Sequence[str]] = lambda plan: ()
    #: Commands inside the target after the Essential:yes packages (debconf answers).
    essential: Callable[[DistroPlan, TargetScript], None] | None = None
    #: Commands inside the target once every package is installed.
    customize: Callable[[DistroPlan, TargetScript], None] | None = None
    #: What it does when it adds no command of its own (done by mmdebstrap or build).
    done_elsewhere: str = ""
