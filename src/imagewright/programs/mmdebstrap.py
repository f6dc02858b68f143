"""mmdebstrap (Debian ``mmdebstrap``): a Debian or Ubuntu root filesystem from packages, as a tarball.

``build --from debian:bookworm`` asks mmdebstrap for the root filesystem and gets a tar archive
back: apt resolves the package set, dpkg installs it inside mmdebstrap's own private chroot,
the hooks (``--essential-hook``, ``--customize-hook``; shell commands given ``$1`` = the chroot)
customise it there, and mmdebstrap packs it into ``TARGET`` (pax format, owners, device nodes
and extended attributes kept; with ``SOURCE_DATE_EPOCH`` set, mtimes are clamped and the
archive is reproducible). No host directory the build can see holds guest-owned files, and
nothing is mounted in the host's mount namespace.

Modes (mmdebstrap(1), MODES): ``unshare`` runs mmdebstrap in new mount, PID, UTS and IPC
namespaces; run by an ordinary user it also needs a user namespace with the subordinate ids of
``/etc/subuid``/``/etc/subgid``; run by root it keeps real ids and only the mounts it makes for
the chroot (``/proc``, ``/sys``, ``/dev``) are private. ``root`` is debootstrap's way (chroot
with mounts in the caller's namespace); imagewright uses it only when root cannot unshare.

NOTE on the sandbox of ``programs/runner.py``: mmdebstrap reads no untrusted image. Its inputs
are the Debian (or Ubuntu) archive, whose Release files apt verifies with the distribution's
keyring before any package is used, the packages the user named, and imagewright's own hook
commands; what it writes is the tarball imagewright asked for, which ``build`` then inspects
like any other tarball. It cannot run inside bubblewrap anyway: it needs the network, creates
its own namespaces and runs the packages' maintainer scripts as root in its chroot. So it runs
directly (``TRUSTED_INPUTS``), for the reason in :data:`TRUSTED_REASON`.

Output: mmdebstrap prints ``I:`` status lines and, with ``--verbose``, apt's and dpkg's own
lines (``Get:N URL ...`` per download, ``Unpacking ...``, ``Setting up ...``) on stderr; they
are read line by line as they come (:class:`StatusReader`) for per-phase progress, the download
count, and the telling line of a failure. Only a bounded tail is kept.

Sources: mmdebstrap(1) of mmdebstrap 1.3.5 (OPTIONS, MODES, HOOKS, OPERATION,
SOURCE_DATE_EPOCH); apt-get(8) for the ``Get:``/``Hit:`` lines.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import re
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imagewright.errors import ProgramError
from imagewright.programs.runner import TRUSTED_INPUTS, run_program, start_program, stop_program, telling_line

#: Why mmdebstrap may run without the sandbox (see the module NOTE).
TRUSTED_REASON = TRUSTED_INPUTS["mmdebstrap"]

MODES = ("unshare", "root")
#: mmdebstrap's variants imagewright offers (mmdebstrap(1), VARIANTS).
VARIANTS = ("minbase", "important", "standard")
HOOK_KINDS = ("setup", "extract", "essential", "customize")

#: Lines kept from mmdebstrap's stderr for the error message.
_TAIL_LINES = 200
#: The longest line handled whole (dpkg's lines are short; anything longer is cut).
_MAX_LINE = 8192

#: ``I:`` status lines and the phase each one starts (mmdebstrap 1.3.5's wording).
_STATUS_PHASES: tuple[tuple[str, str], ...] = (
    ("I: running apt-get update", "fetch"),
    ("I: downloading packages", "fetch"),
    ("I: extracting archives", "unpack"),
    ("I: installing essential packages", "configure"),
    ("I: running --essential-hook", "configure"),
    ("I: installing remaining packages", "configure"),
    ("I: running --customize-hook", "customize"),
    ("I: cleaning package lists", "customize"),
    ("I: creating tarball", "pack"),
)
#: apt's and dpkg's own lines in --verbose mode, and the phase they belong to.
#: ``Get:N URI SUITE/COMPONENT ARCH NAME ARCH VERSION [SIZE]`` is a package; index files
#: (``Get:N URI SUITE InRelease [SIZE]``, ``... SUITE/main amd64 Packages [SIZE]``) have fewer words.
_GET = re.compile(r"^Get:\d+ (\S+) ([^\[]*)")
_PACKAGE_WORDS = 5
_UNPACKING = re.compile(r"^Unpacking ")
_SETTING_UP = re.compile(r"^Setting up ")


@dataclass(frozen=True)
class Hook:
    """One ``--KIND-hook=COMMAND``: a shell command (``$1`` is the chroot) or a special hook
    (``copy-in``, ``copy-out``, ``sync-in``, ``sync-out``, ``upload``, ``download``, ...)."""

    kind: str
    command: str

    def argument(self) -> str:
        if self.kind not in HOOK_KINDS:
            raise ValueError(f"{self.kind!r} is not an mmdebstrap hook")
        if "\0" in self.command:
            raise ValueError("a hook command cannot contain NUL")
        return f"--{self.kind}-hook={self.command}"


@dataclass(frozen=True)
class MmdebstrapRequest:
    """Everything one mmdebstrap run is given."""

    suite: str
    #: The tarball to write (``.tar``: uncompressed; mmdebstrap picks compression by suffix).
    target: Path
    mode: str
    variant: str
    #: apt sources: URIs (``http://.../debian``) or one-line entries (``deb [opts] URI suite comp``).
    mirrors: tuple[str, ...] = ()
    components: tuple[str, ...] = ("main",)
    include: tuple[str, ...] = ()
    hooks: tuple[Hook, ...] = ()
    aptopts: tuple[str, ...] = ()
    dpkgopts: tuple[str, ...] = ()
    #: ``--skip`` stages (``essential/unlink`` keeps the package cache; see build's cache).
    skip: tuple[str, ...] = ()
    #: ``--keyring``: a keyring file or directory apt uses for the initial setup only.
    keyring: Path | None = None
    architecture: str | None = None
    #: ``SOURCE_DATE_EPOCH`` for a reproducible tarball (None: not set).
    source_date_epoch: int | None = None
    #: ``TMPDIR``: where mmdebstrap makes its temporary chroot (the caller's scratch space).
    temporary_directory: Path | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"{self.mode!r} is not an mmdebstrap mode imagewright uses")
        if self.variant not in VARIANTS:
            raise ValueError(f"{self.variant!r} is not an mmdebstrap variant imagewright uses")
        if not re.fullmatch(r"[a-z][a-z0-9.+-]*", self.suite):
            raise ValueError(f"{self.suite!r} is not a suite name")


def arguments(request: MmdebstrapRequest) -> list[str]:
    """The argument list for ``request`` (program name first)."""
    argv = [
        "mmdebstrap",
        f"--mode={request.mode}",
        f"--variant={request.variant}",
        "--format=tar",
        "--verbose",
    ]
    if request.architecture:
        argv.append(f"--architectures={request.architecture}")
    if request.components:
        argv.append(f"--components={','.join(request.components)}")
    if request.keyring is not None:
        argv.append(f"--keyring={request.keyring}")
    for option in request.aptopts:
        argv.append(f"--aptopt={option}")
    for option in request.dpkgopts:
        argv.append(f"--dpkgopt={option}")
    if request.include:
        argv.append(f"--include={','.join(request.include)}")
    if request.skip:
        argv.append(f"--skip={','.join(request.skip)}")
    argv += [hook.argument() for hook in request.hooks]
    # "--" ends the options: the suite, target and mirrors are positional from here on.
    argv += ["--", request.suite, os.fspath(request.target), *request.mirrors]
    return argv


def environment(request: MmdebstrapRequest) -> dict[str, str]:
    """The variables mmdebstrap (and the hooks it runs) get on top of ours."""
    env = {"LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    if request.source_date_epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(request.source_date_epoch)
    if request.temporary_directory is not None:
        env["TMPDIR"] = os.fspath(request.temporary_directory)
    return env


#: ``progress(phase, done, total)``: phase is fetch, unpack, configure, customize or pack.
PhaseProgress = Callable[[str, int, int | None], None]


@dataclass
class StatusReader:
    """Follows mmdebstrap's stderr: the current phase, what was downloaded, the last lines."""

    progress: PhaseProgress | None = None
    phase: str = "fetch"
    #: What apt fetched (``Get:`` lines): ``URI words-before-the-size``.
    fetched: list[str] = field(default_factory=list)
    #: Packages among them.
    packages_fetched: int = 0
    unpacked: int = 0
    configured: int = 0
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=_TAIL_LINES))

    def _enter(self, phase: str, done: int = 0) -> None:
        self.phase = phase
        if self.progress is not None:
            self.progress(phase, done, None)

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")[:_MAX_LINE]
        if not line:
            return
        self.tail.append(line)
        for prefix, phase in _STATUS_PHASES:
            if line.startswith(prefix):
                self._enter(phase)
                return
        got = _GET.match(line)
        if got is not None:
            self.fetched.append(got.group(1))
            if len(got.group(2).split()) >= _PACKAGE_WORDS:
                self.packages_fetched += 1
            self._enter("fetch", len(self.fetched))
        elif _UNPACKING.match(line):
            self.unpacked += 1
            self._enter("unpack", self.unpacked)
        elif _SETTING_UP.match(line):
            self.configured += 1
            self._enter("configure", self.configured)

    def failure_line(self) -> str:
        """The line that best says why mmdebstrap failed (apt's ``E:`` lines before mmdebstrap's own)."""
        generic = (
            "mmdebstrap failed",
            "apt-get update failed",
            "setup failed",
            "apt-get --yes install failed",
        )
        errors = [line[2:].strip() for line in self.tail if line.startswith("E:")]
        specific = [
            line for line in errors if not line.startswith(generic) and "Some index files failed" not in line
        ]
        if specific:
            return specific[0]
        fetch = [line for line in self.tail if line.startswith(("Err:", "W: Failed to fetch"))]
        if fetch:
            return fetch[-1].split(" ", 1)[-1].strip()
        if errors:
            return errors[0]
        return telling_line("\n".join(self.tail))

    def lines(self) -> list[str]:
        return list(self.tail)


def run_mmdebstrap(
    request: MmdebstrapRequest,
    *,
    progress: PhaseProgress | None = None,
    log: Callable[[str], None] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> StatusReader:
    """Run mmdebstrap for ``request``; ProgramError with its telling line when it fails.

    ``log`` receives every line mmdebstrap prints (a build log); ``progress`` the phases.
    Ctrl-C or an exception stops mmdebstrap (SIGTERM to its process group, which reaches the
    maintainer scripts it runs) and waits for it before the exception goes on.
    """
    env = environment(request)
    env.update(extra_env or {})
    reader = StatusReader(progress)
    proc = start_program(
        arguments(request), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, new_session=True
    )
    assert proc.stderr is not None
    try:
        for raw in proc.stderr:
            text = raw.decode("utf-8", "replace")
            reader.feed(text)
            if log is not None:
                log(text.rstrip("\n"))
        returncode = proc.wait()
    except BaseException:
        _stop_group(proc)
        raise
    finally:
        stop_program(proc)
    if returncode != 0:
        raise ProgramError(f"mmdebstrap failed (exit {returncode}): {reader.failure_line()}")
    return reader


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to mmdebstrap's whole process group (it runs apt, dpkg and hooks as children)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)


@functools.cache
def version() -> str:
    """``mmdebstrap --version``'s line ("mmdebstrap 1.3.5"): its output is part of a cache key."""
    result = run_program(["mmdebstrap", "--version"], timeout=60.0)
    return result.stdout.decode("utf-8", "replace").strip()[:200]


@functools.cache
def root_can_unshare() -> bool:
    """True when this (root) process may create the namespaces mmdebstrap's unshare mode uses.

    A container may forbid ``unshare(2)`` even to root; then mmdebstrap's ``root`` mode is left.
    """
    try:
        result = run_program(
            ["unshare", "--mount", "--pid", "--fork", "--uts", "--ipc", "true"], check=False, timeout=30.0
        )
    except ProgramError:
        return False
    return result.returncode == 0


def packages_from_arguments(values: Sequence[str]) -> list[str]:
    """Comma- or blank-separated package names from several option values, duplicates dropped."""
    names: list[str] = []
    for value in values:
        for name in re.split(r"[,\s]+", value):
            if name and name not in names:
                names.append(name)
    return names
