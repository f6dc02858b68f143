"""The one place imagewright starts external programs, and the sandbox they run in.

Every program module in ``programs/`` builds an argument list and calls ``run_program``
(or ``start_program`` for long-running ones). That gives one behaviour everywhere:
a missing program becomes ``ProgramNotFoundError`` naming the Debian package to install,
a failure becomes ``ProgramError`` carrying the program's most telling stderr line, and
tests can watch the exact argument lists through ``record_invocations``.

The sandbox. A program that reads an untrusted image follows what the image says: a qcow2
backing file, a VMDK extent, a ``json:`` file name, an ext4 external journal found by UUID.
``inspect`` refuses every such image it recognises, and this is the second wall behind it:
each call passes a ``Sandbox`` naming the files the program may see, and the program runs in
bubblewrap (Debian ``bubblewrap``) with exactly those bound at their own paths (inputs
read-only), ``/usr`` read-only, a minimal ``/dev``, a fresh ``/proc``, ``/tmp`` and
``/var/tmp``, no network, no capabilities, a clean environment, its own session (no terminal
to push keys into) and ``--die-with-parent``. The program's own argument list is unchanged, so
its messages name the same paths. A host file the call did not name does not exist for it.

NOTE: the rule is default-deny, enforced here rather than at call sites: a program that is not
in ``TRUSTED_INPUTS`` (each entry says why it never sees untrusted data) cannot be started
without a ``Sandbox``; forgetting one is a ``ValueError``, not a silent unsandboxed run.

Where bubblewrap cannot start (user namespaces disabled, bwrap missing), imagewright refuses
with ``SandboxUnavailableError``, one sentence naming the way out: ``--no-sandbox`` or
``IMAGEWRIGHT_NO_SANDBOX=1`` run programs directly, with a warning logged once per process.
Whether bwrap works is probed once per process (one ``bwrap ... true``, about 10 ms).
``IMAGEWRIGHT_BWRAP`` names another bwrap binary (tests point it at one that fails).

Sources: bwrap(1) of bubblewrap 0.8; bind mounts follow a symlink given as the source, and
``--ro-bind-try``/``--bind-try`` skip a missing source, so a missing input fails with the
program's own "No such file or directory".
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from imagewright.errors import ProgramError, ProgramNotFoundError, SandboxUnavailableError

#: Where each program comes from on Debian, for the "install X" hint.
DEBIAN_PACKAGES: dict[str, str] = {
    "qemu-img": "qemu-utils",
    "qemu-io": "qemu-utils",
    "qemu-nbd": "qemu-utils",
    "qemu-storage-daemon": "qemu-system-common",
    "qemu-system-x86_64": "qemu-system-x86",
    "sfdisk": "fdisk",
    "sgdisk": "gdisk",
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "tune2fs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "mkswap": "util-linux",
    "blkid": "util-linux",
    "grub-mkimage": "grub-common",
    "mkfs.vfat": "dosfstools",
    "mkfs.fat": "dosfstools",
    "fsck.fat": "dosfstools",
    "mformat": "mtools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mdir": "mtools",
    "mtype": "mtools",
    "xorriso": "xorriso",
    "isoinfo": "genisoimage",
    "busybox": "busybox-static",
    "cpio": "cpio",
    "depmod": "kmod",
    "virt-sysprep": "libguestfs-tools",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "ldd": "libc-bin",
    "partx": "util-linux",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
    "guestfish": "libguestfs-tools",
    "bwrap": "bubblewrap",
    "mmdebstrap": "mmdebstrap",
    "unshare": "util-linux",
    "debootstrap": "debootstrap",
}

#: Programs that may run without a sandbox, each with the reason it never reads untrusted data.
#: Every other program must be started with a ``Sandbox`` (see the module NOTE).
TRUSTED_INPUTS: dict[str, str] = {
    "apt-get": "downloads packages from the Debian archive, which APT verifies",
    "apt-cache": "reads the host's APT package lists",
    "dpkg-deb": "unpacks packages APT downloaded and verified",
    "ldd": "lists the libraries of the host's own programs",
    "depmod": "indexes the modules of a kernel package from the Debian archive",
    "busybox": "the host's busybox, asked for its list of applets",
    "grub-mkimage": "links GRUB's installed modules with imagewright's own early configuration",
    "mkswap": "writes a swap signature into a new scratch file",
    "mmdebstrap": (
        "installs packages from a Debian or Ubuntu archive that apt verifies against the "
        "distribution's keyring and runs imagewright's own hooks; it reads no untrusted image "
        "(and needs the network and its own namespaces, which a sandbox would take away)"
    ),
    "unshare": "asked only whether this process may create namespaces (runs true)",
    "ssh-keygen": "makes a new key pair for a verify run (reads no image)",
    "ssh": (
        "logs in to a verify run's instance through its forwarded port: an SSH client is made "
        "for servers it does not trust, reads no image, and needs the network a sandbox takes away"
    ),
}

# Extra places to look: e2fsprogs and friends live in /sbin, which is not on a user's PATH.
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")

NO_SANDBOX_ENV = "IMAGEWRIGHT_NO_SANDBOX"
BWRAP_ENV = "IMAGEWRIGHT_BWRAP"

_log = logging.getLogger("imagewright.sandbox")


def find_program(name: str) -> str:
    """Absolute path of ``name`` or ProgramNotFoundError saying which package provides it."""
    found = shutil.which(name)
    if found is None:
        found = shutil.which(name, path=os.pathsep.join(_EXTRA_PATH))
    if found is None:
        package = DEBIAN_PACKAGES.get(name)
        hint = f"; install the Debian package '{package}'" if package else ""
        raise ProgramNotFoundError(f"The program '{name}' is not installed{hint}.")
    return found


# --------------------------------------------------------------------------------------------
# What a sandboxed program may see


def _paths(values: Iterable[str | os.PathLike[str]]) -> tuple[str, ...]:
    result: list[str] = []
    for value in values:
        text = os.fspath(value)
        if not text or "\0" in text:
            raise ValueError(f"{text!r} cannot be a path shown to a sandboxed program")
        result.append(os.path.abspath(text))
    return tuple(dict.fromkeys(result))


@dataclass(frozen=True)
class Sandbox:
    """What one run of a program may see of the host, besides ``/usr`` and a fresh ``/tmp``.

    ``reads``: files or directories, read-only. ``writes``: files, read-write; one that does not
    exist yet is created empty first (a bind mount needs something to cover), so a program
    that fails early leaves it empty: outputs go to scratch space the caller cleans up anyway.
    ``directories``: directories, read-write (a private socket directory, a scratch directory).
    ``devices``: device nodes (``/dev/kvm``). ``network``: the host's network (QEMU's
    ``hostfwd``); otherwise none at all. ``host_pids``: the host's process IDs (guestfish's
    remote control finds its server with ``kill(pid, 0)``); otherwise a PID namespace.
    ``capabilities``: more than the two a root run keeps (``CAP_CHOWN`` for supermin's tar);
    a run as another user has none.
    Every path is made absolute; the program must be given the same (absolute) paths.
    """

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    directories: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    network: bool = False
    host_pids: bool = False
    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("reads", "writes", "directories", "devices"):
            object.__setattr__(self, name, _paths(getattr(self, name)))
        for capability in self.capabilities:
            if not capability.startswith("CAP_") or not capability[4:].replace("_", "").isalpha():
                raise ValueError(f"{capability!r} is not a capability name")

    @classmethod
    def of(
        cls,
        *,
        reads: Iterable[str | os.PathLike[str]] = (),
        writes: Iterable[str | os.PathLike[str]] = (),
        directories: Iterable[str | os.PathLike[str]] = (),
        devices: Iterable[str | os.PathLike[str]] = (),
        network: bool = False,
        host_pids: bool = False,
        capabilities: Iterable[str] = (),
    ) -> Sandbox:
        """A Sandbox from any iterables of paths (``Path`` or text)."""
        return cls(
            tuple(os.fspath(p) for p in reads),
            tuple(os.fspath(p) for p in writes),
            tuple(os.fspath(p) for p in directories),
            tuple(os.fspath(p) for p in devices),
            network,
            host_pids,
            tuple(capabilities),
        )

    def binds(self) -> list[tuple[str, str]]:
        """``(bwrap option, path)`` for every declared path, parents before children.

        A path both read and written is bound once, writable.
        """
        mode: dict[str, str] = {}
        for path in self.reads:
            mode[path] = "--ro-bind-try"
        for path in (*self.writes, *self.directories):
            mode[path] = "--bind-try"
        for path in self.devices:
            mode[path] = "--dev-bind-try"
        ordered = sorted(mode, key=lambda p: (p.rstrip("/").count("/"), p))
        return [(mode[p], p) for p in ordered]


#: The environment of a sandboxed program (plus what its call passes): nothing of ours leaks in
#: (tokens, cloud credentials), and the C.UTF-8 locale keeps messages in the English we parse.
SANDBOX_ENVIRONMENT: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
}

#: Top-level directories that merged-/usr systems make symlinks into /usr (replicated as such).
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: Host files every program may read: the dynamic loader's cache and Debian's alternatives.
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")


@functools.cache
def _system_arguments() -> tuple[str, ...]:
    """The part of every bwrap command line that shows the host's programs and libraries."""
    args = ["--ro-bind", "/usr", "/usr"]
    for path in _ROOT_LINKS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _SYSTEM_FILES:
        args += ["--ro-bind-try", path, path]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
    return tuple(args)


def _visible_by_default(path: str) -> bool:
    return path.startswith("/usr/") or any(path.startswith(root + "/") for root in _ROOT_LINKS)


def sandbox_arguments(sandbox: Sandbox, program: str, *, own_session: bool = True) -> list[str]:
    """Everything between ``bwrap`` and the program's own argument list (ending with ``--``)."""
    args = ["--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not sandbox.host_pids:
        args.append("--unshare-pid")
    if not sandbox.network:
        args.append("--unshare-net")
    args.append("--die-with-parent")
    if os.geteuid() == 0:
        # Root needs no user namespace, and one would map uid 0 alone: files of other owners
        # (a rootfs tree's 0700 polkitd directory) would become unreadable. So root keeps
        # exactly the two capabilities that let it open the files it was given, whoever owns
        # them, and nothing else; /proc/sys stays read-only (bwrap's --proc).
        args += ["--cap-drop", "ALL"]
        for capability in ("CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", *sandbox.capabilities):
            args += ["--cap-add", capability]
    else:
        args += ["--unshare-user", "--cap-drop", "ALL"]
    if own_session:
        # setsid(): no controlling terminal, so no TIOCSTI keystrokes pushed into ours.
        args.append("--new-session")
    args += _system_arguments()
    if not _visible_by_default(program):
        args += ["--ro-bind", program, program]
    for option, path in sandbox.binds():
        args += [option, path, path]
    args.append("--")
    return args


def _create_outputs(sandbox: Sandbox) -> None:
    for path in sandbox.writes:
        with contextlib.suppress(FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError):
            # Missing parent or no permission: left to the program to report in its own words.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))


# --------------------------------------------------------------------------------------------
# Whether the sandbox is used, and whether it works here


@dataclass
class _Policy:
    #: Set by ``sandbox_disabled`` (the CLI's ``--no-sandbox``).
    disabled: bool = False
    #: The no-sandbox warning was logged (once per process).
    warned: bool = False


_policy = _Policy()


def sandbox_requested() -> bool:
    """False under ``--no-sandbox`` (``sandbox_disabled``) or ``IMAGEWRIGHT_NO_SANDBOX=1``."""
    if _policy.disabled:
        return False
    return os.environ.get(NO_SANDBOX_ENV, "").strip().lower() in ("", "0", "no", "false")


@contextlib.contextmanager
def sandbox_disabled() -> Iterator[None]:
    """Run programs without the sandbox inside the block (the CLI's ``--no-sandbox``)."""
    previous = _policy.disabled
    _policy.disabled = True
    try:
        yield
    finally:
        _policy.disabled = previous


NO_SANDBOX_WARNING = (
    "imagewright: warning: external programs run without a sandbox (--no-sandbox); "
    "a hostile image can make them read or overwrite host files."
)


def warn_without_sandbox(emit: Callable[[str], None] | None = None) -> None:
    """Say once per process that programs run unsandboxed (``emit``: the CLI's stderr;
    by default the ``imagewright.sandbox`` logger, for a service's log)."""
    if _policy.warned:
        return
    _policy.warned = True
    if emit is None:
        _log.warning(NO_SANDBOX_WARNING)
    else:
        emit(NO_SANDBOX_WARNING)


def _bwrap_program() -> str:
    configured = os.environ.get(BWRAP_ENV, "").strip()
    return configured or shutil.which("bwrap") or "bwrap"


@functools.cache
def _probe(bwrap: str) -> str | None:
    """None when ``bwrap`` runs a program in a sandbox here; else why not (one clause).

    Cached per bwrap path: user namespaces do not come and go while a process runs.
    """
    if os.sep not in bwrap:
        return "bwrap is not installed (Debian package 'bubblewrap')"
    true = shutil.which("true", path="/usr/bin:/bin") or "/usr/bin/true"
    try:
        completed = subprocess.run(
            [bwrap, *sandbox_arguments(Sandbox(), true), true],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
            check=False,
            env=dict(SANDBOX_ENVIRONMENT),
        )
    except subprocess.TimeoutExpired:
        return "bwrap did not start a program within 30 s"
    except OSError as err:
        return f"{bwrap} could not be started: {err.strerror}"
    if completed.returncode == 0:
        return None
    return telling_line(completed.stderr.decode("utf-8", "replace")).rstrip(".")


def sandbox_problem() -> str | None:
    """Why the sandbox cannot be used here (None when it works); probed once per bwrap."""
    return _probe(_bwrap_program())


def _wrapper(program: str, sandbox: Sandbox | None, *, own_session: bool) -> list[str]:
    """The bwrap prefix for one run ([] to run the program directly)."""
    name = os.path.basename(program)
    if sandbox is None:
        if name not in TRUSTED_INPUTS:
            raise ValueError(
                f"{name} may read untrusted data: run it with a Sandbox naming what it may see "
                "(or, if it never does, list it in TRUSTED_INPUTS with the reason)"
            )
        return []
    if not sandbox_requested():
        warn_without_sandbox()
        return []
    problem = sandbox_problem()
    if problem is not None:
        raise SandboxUnavailableError(
            f"The sandbox for programs that read untrusted images cannot start here ({problem}); "
            f"enable unprivileged user namespaces, or run with --no-sandbox (or {NO_SANDBOX_ENV}=1) "
            "to accept that a hostile image may make them read host files."
        )
    _create_outputs(sandbox)
    return [_bwrap_program(), *sandbox_arguments(sandbox, program, own_session=own_session)]


# --------------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class ProgramResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


@dataclass(frozen=True)
class Invocation:
    """One started program: its own argument list, what it was allowed to see, and the
    bubblewrap prefix it ran under (empty when it ran directly)."""

    argv: tuple[str, ...]
    sandbox: Sandbox | None
    wrapper: tuple[str, ...]

    @property
    def sandboxed(self) -> bool:
        return bool(self.wrapper)


@dataclass
class InvocationLog:
    """Argument lists of every program started while recording (for tests).

    ``argvs`` are the programs' own argument lists (no sandbox prefix); ``invocations`` adds
    each one's ``Sandbox`` and bwrap prefix.
    """

    argvs: list[tuple[str, ...]] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)

    def programs(self) -> list[str]:
        return [os.path.basename(argv[0]) for argv in self.argvs]


_recorders: list[InvocationLog] = []


@contextlib.contextmanager
def record_invocations() -> Iterator[InvocationLog]:
    """Record every argument list passed to ``run_program``/``start_program`` in the block."""
    log = InvocationLog()
    _recorders.append(log)
    try:
        yield log
    finally:
        _recorders.remove(log)


def _command(
    argv: Sequence[str],
    sandbox: Sandbox | None,
    env: Mapping[str, str] | None,
    *,
    own_session: bool,
) -> tuple[list[str], list[str], dict[str, str] | None]:
    """(the program's argv, the command line to start, its environment) for one run."""
    if not argv:
        raise ValueError("empty argument list")
    args = [str(a) for a in argv]
    if os.sep not in args[0]:
        args[0] = find_program(args[0])
    wrapper = _wrapper(args[0], sandbox, own_session=own_session)
    for log in _recorders:
        log.argvs.append(tuple(args))
        log.invocations.append(Invocation(tuple(args), sandbox, tuple(wrapper)))
    full_env: dict[str, str] | None = None
    if wrapper:
        full_env = dict(SANDBOX_ENVIRONMENT)
        full_env.update(env or {})
    elif env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    return args, wrapper + args, full_env


def telling_line(stderr: str) -> str:
    """The line of a program's stderr most likely to explain a failure (last non-empty one)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        lowered = line.lower()
        if "error" in lowered or "fail" in lowered or "cannot" in lowered or "invalid" in lowered:
            return line
    return lines[-1] if lines else "no message"


def _exit_status(returncode: int) -> int:
    """A sandboxed program's exit status as if it had run directly.

    bwrap exits with 128 + N when the program inside was killed by signal N (bubblewrap's
    ``propagate_exit_status``); ``subprocess`` says -N for a program it ran itself, and the
    messages built on it ("killed by signal 9") should not depend on the sandbox.
    """
    if 128 < returncode < 128 + signal.NSIG:
        return -(returncode - 128)
    return returncode


def run_program(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    what: str | None = None,
    sandbox: Sandbox | None = None,
) -> ProgramResult:
    """Run a program to completion and capture its output.

    ``what`` describes the step for the error message ("creating the ext4 filesystem").
    ``sandbox`` says what the program may see (required unless it is in ``TRUSTED_INPUTS``).
    """
    args, command, full_env = _command(argv, sandbox, env, own_session=True)
    name = os.path.basename(args[0])
    try:
        completed = subprocess.run(
            command,
            input=input,
            capture_output=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ProgramError(f"{name} did not finish within {timeout:g} s.") from None
    except OSError as err:
        raise ProgramError(f"{name} could not be started: {err.strerror}.") from None
    returncode = completed.returncode
    if len(command) > len(args):
        returncode = _exit_status(returncode)
    result = ProgramResult(tuple(args), returncode, completed.stdout, completed.stderr)
    if check and returncode != 0:
        step = f" while {what}" if what else ""
        raise ProgramError(f"{name} failed{step} (exit {returncode}): {telling_line(result.stderr_text)}")
    return result


class _SandboxedPopen(subprocess.Popen[bytes]):
    """A started sandboxed program: ``returncode`` as if it had run directly (see
    ``_exit_status``), and ``depth``, how many processes (bwrap, its PID-namespace init) stand
    between this one and the program itself, so ``stop_program`` can ask the program."""

    depth = 2
    _status: int | None = None

    @property
    def returncode(self) -> int | None:
        return None if self._status is None else _exit_status(self._status)

    @returncode.setter
    def returncode(self, value: int | None) -> None:
        self._status = value


def start_program(
    argv: Sequence[str],
    *,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    new_session: bool = True,
    sandbox: Sandbox | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running program (qemu-system, qemu-img with progress); caller owns it.

    ``new_session`` puts it in its own process group so a terminal Ctrl-C reaches us first
    and we decide how to stop it (and clean up after it). ``sandbox`` as for ``run_program``.
    """
    args, command, full_env = _command(argv, sandbox, env, own_session=not new_session)
    wrapped = len(command) > len(args)
    popen = _SandboxedPopen if wrapped else subprocess.Popen
    try:
        proc = popen(
            command,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=full_env,
            cwd=cwd,
            start_new_session=new_session,
        )
    except OSError as err:
        raise ProgramError(f"{os.path.basename(args[0])} could not be started: {err.strerror}.") from None
    if isinstance(proc, _SandboxedPopen) and sandbox is not None and sandbox.host_pids:
        proc.depth = 1
    return proc


def _program_pid(proc: subprocess.Popen[bytes]) -> int:
    """The process to ask to stop: the program itself, also when bwrap stands in between.

    Signalling bwrap would kill the program at once (``--die-with-parent``): QEMU would lose
    its chance to flush a writable disk. So follow ``/proc/PID/task/PID/children`` down to it.
    """
    pid = proc.pid
    for _ in range(proc.depth if isinstance(proc, _SandboxedPopen) else 0):
        try:
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as children:
                first = children.read().split()
        except OSError:
            return proc.pid
        if not first:
            return proc.pid
        pid = int(first[0])
    return pid


def program_pid(proc: subprocess.Popen[bytes]) -> int:
    """The host pid of the program itself (not bwrap's) of a started program."""
    return _program_pid(proc)


def start_imagewright_process(
    module: str, args: Sequence[str], *, log: str | os.PathLike[str]
) -> subprocess.Popen[bytes]:
    """Start ``python -m MODULE ARGS``, imagewright's own code, to outlive the caller.

    Not sandboxed (it reads no image; what it starts goes through ``start_program``); its own
    session (a terminal's Ctrl-C or the caller's death do not reach it), stdin from /dev/null,
    stdout and stderr appended to ``log``.
    """
    import sys

    with open(log, "ab") as output:
        try:
            return subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as err:
            raise ProgramError(f"{module} could not be started: {err.strerror}.") from None


def stop_program(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """Terminate a started program and reap it; kill it if it ignores SIGTERM."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(_program_pid(proc), signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
