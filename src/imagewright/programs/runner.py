"""The one place imagewright starts external programs.

Every program module in ``programs/`` builds an argument list and calls ``run_program``
(or ``start_program`` for long-running ones). That gives one behaviour everywhere:
a missing program becomes ``ProgramNotFoundError`` naming the Debian package to install,
a failure becomes ``ProgramError`` carrying the program's most telling stderr line, and
tests can watch the exact argument lists through ``record_invocations``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from imagewright.errors import ProgramError, ProgramNotFoundError

#: Where each program comes from on Debian, for the "install X" hint.
DEBIAN_PACKAGES: dict[str, str] = {
    "qemu-img": "qemu-utils",
    "qemu-io": "qemu-utils",
    "qemu-nbd": "qemu-utils",
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
    "guestfish": "libguestfs-tools",
}

# Extra places to look: e2fsprogs and friends live in /sbin, which is not on a user's PATH.
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")


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


@dataclass
class InvocationLog:
    """Argument lists of every program started while recording (for tests)."""

    argvs: list[tuple[str, ...]] = field(default_factory=list)

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


def _resolve(argv: Sequence[str]) -> list[str]:
    if not argv:
        raise ValueError("empty argument list")
    args = [str(a) for a in argv]
    if os.sep not in args[0]:
        args[0] = find_program(args[0])
    for log in _recorders:
        log.argvs.append(tuple(args))
    return args


def telling_line(stderr: str) -> str:
    """The line of a program's stderr most likely to explain a failure (last non-empty one)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        lowered = line.lower()
        if "error" in lowered or "fail" in lowered or "cannot" in lowered or "invalid" in lowered:
            return line
    return lines[-1] if lines else "no message"


def run_program(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    what: str | None = None,
) -> ProgramResult:
    """Run a program to completion and capture its output.

    ``what`` describes the step for the error message ("creating the ext4 filesystem").
    """
    args = _resolve(argv)
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    name = os.path.basename(args[0])
    try:
        completed = subprocess.run(
            args,
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
    result = ProgramResult(tuple(args), completed.returncode, completed.stdout, completed.stderr)
    if check and completed.returncode != 0:
        step = f" while {what}" if what else ""
        raise ProgramError(
            f"{name} failed{step} (exit {completed.returncode}): {telling_line(result.stderr_text)}"
        )
    return result


def start_program(
    argv: Sequence[str],
    *,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a long-running program (qemu-system, qemu-img with progress); caller owns it.

    ``new_session`` puts it in its own process group so a terminal Ctrl-C reaches us first
    and we decide how to stop it (and clean up after it).
    """
    args = _resolve(argv)
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        return subprocess.Popen(
            args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=full_env,
            cwd=cwd,
            start_new_session=new_session,
        )
    except OSError as err:
        raise ProgramError(f"{os.path.basename(args[0])} could not be started: {err.strerror}.") from None


def stop_program(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """Terminate a started program and reap it; kill it if it ignores SIGTERM."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
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
