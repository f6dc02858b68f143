"""guestfish (Debian ``libguestfs-tools``): one libguestfs appliance, driven command by command.

``guestfish --listen`` starts a server that owns the appliance (a small VM with a Linux kernel
that mounts the guest's filesystems, so every filesystem Linux knows works) and prints its
PID; ``guestfish --remote=PID -- CMD ARGS...`` runs one command in it, the arguments passed as
separate words (no quoting language in between). A failing remote command makes the server
exit, unless the command is prefixed with '-'; so every command here carries the prefix. The
error itself is printed by the server, on the server's standard error (the client exits 0):
that goes to a file of ours, and the lines it gained during a command are that command's
errors (``libguestfs: error: lstatns: /x: No such file or directory``).

The appliance starts in 13-20 s under TCG. On hosts whose KVM hangs a standard kernel (the PVM
hypervisor, ``/sys/module/kvm_pvm``), libguestfs is told to use TCG unless the user already
chose its backend settings.

The sandbox (``programs/runner.py``). libguestfs reads guest data inside its appliance VM, and
the QEMU it starts opens the disk as ``--format=raw`` (no backing files to follow); the server
still runs in bubblewrap, seeing the disk, what libguestfs needs to build and boot its
appliance (``/usr``, ``/etc``, ``/boot``, dpkg's database for supermin, its cache directory
``$LIBGUESTFS_CACHEDIR/.guestfs-UID``), the remote-control socket directory
``/tmp/.guestfish-UID`` (fixed by guestfish: fish/rc.c) and one private exchange directory;
no network, no other file. Two things follow from guestfish's design: the server and the
clients keep the host's process IDs (a client checks its server with ``kill(pid, 0)``, and
``--listen`` forks a server that must outlive the command), and ``upload``/``download`` run in
the server, so their host files go through the exchange directory (``call`` does that).
Run as root, supermin (re)building the appliance needs to set file owners: the server keeps
CAP_CHOWN and CAP_FOWNER.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from imagewright.errors import GuestFilesystemError, ProgramError
from imagewright.programs.runner import (
    Sandbox,
    find_program,
    run_program,
    start_program,
    stop_program,
    telling_line,
)

#: Starting the appliance (kernel + supermin appliance under TCG) takes tens of seconds.
LAUNCH_TIMEOUT = 600.0
COMMAND_TIMEOUT = 600.0
_PID = re.compile(rb"GUESTFISH_PID=(\d+)")
#: Commands whose words name a host file, and which word (the server opens it).
_HOST_FILE_WORD = {"upload": 0, "download": 1}
#: What supermin reads to (re)build the appliance from the host's own packages.
_APPLIANCE_SOURCES = ("/etc", "/boot", "/var/lib/dpkg")


def available() -> bool:
    try:
        find_program("guestfish")
    except ProgramError:
        return False
    return True


def environment() -> dict[str, str]:
    """The LIBGUESTFS_* variables guestfish runs with: the user's own (the sandbox passes no
    other variable through), the direct backend by default, and TCG on a PVM host."""
    env = {key: value for key, value in os.environ.items() if key.startswith("LIBGUESTFS_")}
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    if "LIBGUESTFS_BACKEND_SETTINGS" not in env and Path("/sys/module/kvm_pvm").exists():
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env


def _socket_directory() -> str:
    """``/tmp/.guestfish-EUID``, where guestfish puts its remote-control sockets (fish/rc.c)."""
    path = f"/tmp/.guestfish-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    return path


def _cache_directory() -> tuple[str, str]:
    """(LIBGUESTFS_CACHEDIR, its ``.guestfs-EUID`` where the appliance is kept), as libguestfs
    picks them (src/tmpdirs.c): the variable, else TMPDIR, else /var/tmp."""
    base = os.environ.get("LIBGUESTFS_CACHEDIR") or os.environ.get("TMPDIR") or "/var/tmp"
    base = os.path.abspath(base)
    cache = os.path.join(base, f".guestfs-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(cache, 0o755)
    return base, cache


class GuestfishCommandError(GuestFilesystemError):
    """A guestfish command failed; ``missing`` when the path did not exist."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class GuestfishSession:
    """A running guestfish server with the raw disk ``image`` attached (read-only unless writable)."""

    def __init__(self, image: Path, *, writable: bool) -> None:
        disk = os.path.abspath(image)
        argv = ["guestfish", "--listen", "--format=raw"]
        if not writable:
            argv.append("--ro")
        argv += ["-a", disk]
        cache_base, cache = _cache_directory()
        # Its temporary files (the appliance's overlay, the daemon's socket) go to the sandbox's /tmp.
        self._env = environment() | {"LIBGUESTFS_CACHEDIR": cache_base, "LIBGUESTFS_TMPDIR": "/tmp"}
        sockets = _socket_directory()
        #: Where host files of upload/download pass through (the server sees only this one).
        self._exchange = Path(tempfile.mkdtemp(prefix="imagewright-guestfish-"))
        self._transfers = 0
        kvm = "/dev/kvm"
        self._server_sandbox = Sandbox.of(
            reads=[*(p for p in _APPLIANCE_SOURCES if os.path.exists(p)), *([] if writable else [disk])],
            writes=[disk] if writable else [],
            directories=[cache, sockets, self._exchange],
            devices=[kvm] if os.access(kvm, os.R_OK | os.W_OK) else [],
            host_pids=True,
            capabilities=("CAP_CHOWN", "CAP_FOWNER"),
        )
        self._client_sandbox = Sandbox.of(directories=[sockets], host_pids=True)
        # The server's standard error: a file, read after every command (see the module docstring).
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._errors_seen = 0
        self._open = False
        try:
            output = self._start_server(argv)
        except BaseException:
            shutil.rmtree(self._exchange, ignore_errors=True)
            raise
        match = _PID.search(output)
        if match is None:
            self._errors.close()
            shutil.rmtree(self._exchange, ignore_errors=True)
            raise ProgramError("guestfish --listen did not say which process it is.")
        self.pid = int(match.group(1))
        self._open = True
        try:
            self.call("run", timeout=LAUNCH_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def _start_server(self, argv: list[str]) -> bytes:
        """Start ``guestfish --listen``; its standard output (which names the server's PID).

        The server is a child that outlives the command and keeps its standard error: that must
        be a file, not a pipe, or reading the command's output would wait for the server to end.
        """
        proc = start_program(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._errors.fileno(),
            env=self._env,
            sandbox=self._server_sandbox,
        )
        try:
            output, _ = proc.communicate(timeout=LAUNCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop_program(proc)
            self._errors.close()
            raise ProgramError(f"guestfish --listen did not start within {LAUNCH_TIMEOUT:g} s.") from None
        if proc.returncode != 0:
            text = self._new_errors().decode("utf-8", "replace")
            self._errors.close()
            raise ProgramError(f"guestfish could not start (exit {proc.returncode}): {telling_line(text)}")
        self._new_errors()
        return output

    def _new_errors(self) -> bytes:
        """What the server printed on its standard error since the last look."""
        self._errors.seek(self._errors_seen)
        new = self._errors.read(1 << 20)
        self._errors_seen += len(new)
        return new

    def call(self, command: str, *args: str, timeout: float = COMMAND_TIMEOUT) -> bytes:
        """Run one command; its standard output. GuestfishCommandError when it fails.

        ``upload HOST GUEST`` and ``download GUEST HOST`` take any host path: the file passes
        through the exchange directory, the only one the server can see.
        """
        if not self._open:
            raise GuestFilesystemError("The libguestfs appliance has already been shut down.")
        word = _HOST_FILE_WORD.get(command)
        if word is None or len(args) != 2:
            return self._call(command, *args, timeout=timeout)
        host = Path(args[word])
        if host.parent.resolve() == self._exchange.resolve():
            return self._call(command, *args, timeout=timeout)
        self._transfers += 1
        staged = self._exchange / f"t{self._transfers}"
        words = list(args)
        words[word] = str(staged)
        try:
            if command == "upload":
                shutil.copyfile(host, staged)
                return self._call(command, *words, timeout=timeout)
            output = self._call(command, *words, timeout=timeout)
            shutil.move(staged, host)
            return output
        finally:
            staged.unlink(missing_ok=True)

    def _call(self, command: str, *args: str, timeout: float) -> bytes:
        argv = ["guestfish", f"--remote={self.pid}", "--", f"-{command}", *args]
        result = run_program(argv, env=self._env, timeout=timeout, check=False, sandbox=self._client_sandbox)
        server_errors = self._new_errors().decode("utf-8", "replace")
        errors = [line for line in (result.stderr_text + server_errors).splitlines() if line.strip()]
        if result.returncode != 0 or errors:
            message = errors[-1] if errors else f"exit {result.returncode}"
            message = message.removeprefix("libguestfs: error: ")
            missing = "No such file or directory" in message or "Not a directory" in message
            if "server is not running" in message:
                self._open = False
            raise GuestfishCommandError(f"libguestfs could not {command}: {message}", missing=missing)
        return result.stdout

    def close(self) -> None:
        """Unmount everything, stop the appliance (which syncs its disk) and the server.

        Raises GuestfishCommandError when unmounting or the shutdown failed (the disk may then
        lack the last writes); the server is asked to exit either way.
        """
        if not self._open:
            return
        failure: GuestfishCommandError | None = None
        try:
            for command in ("umount-all", "shutdown"):
                try:
                    self.call(command)
                except GuestfishCommandError as err:
                    failure = failure or err
        finally:
            with contextlib.suppress(GuestfishCommandError):
                self.call("exit")
            self._open = False
            self._errors.close()
            shutil.rmtree(self._exchange, ignore_errors=True)
        if failure is not None:
            raise failure
