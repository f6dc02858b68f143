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
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

from imagewright.errors import GuestFilesystemError, ProgramError
from imagewright.programs.runner import find_program, run_program, start_program, stop_program, telling_line

#: Starting the appliance (kernel + supermin appliance under TCG) takes tens of seconds.
LAUNCH_TIMEOUT = 600.0
COMMAND_TIMEOUT = 600.0
_PID = re.compile(rb"GUESTFISH_PID=(\d+)")


def available() -> bool:
    try:
        find_program("guestfish")
    except ProgramError:
        return False
    return True


def environment() -> dict[str, str]:
    env = {"LIBGUESTFS_BACKEND": os.environ.get("LIBGUESTFS_BACKEND", "direct")}
    if "LIBGUESTFS_BACKEND_SETTINGS" not in os.environ and Path("/sys/module/kvm_pvm").exists():
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env


class GuestfishCommandError(GuestFilesystemError):
    """A guestfish command failed; ``missing`` when the path did not exist."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class GuestfishSession:
    """A running guestfish server with the raw disk ``image`` attached (read-only unless writable)."""

    def __init__(self, image: Path, *, writable: bool) -> None:
        argv = ["guestfish", "--listen", "--format=raw"]
        if not writable:
            argv.append("--ro")
        argv += ["-a", os.fspath(image)]
        self._env = environment()
        # The server's standard error: a file, read after every command (see the module docstring).
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._errors_seen = 0
        self._open = False
        output = self._start_server(argv)
        match = _PID.search(output)
        if match is None:
            self._errors.close()
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
        proc = start_program(argv, stdout=subprocess.PIPE, stderr=self._errors.fileno(), env=self._env)
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
        """Run one command; its standard output. GuestfishCommandError when it fails."""
        if not self._open:
            raise GuestFilesystemError("The libguestfs appliance has already been shut down.")
        argv = ["guestfish", f"--remote={self.pid}", "--", f"-{command}", *args]
        result = run_program(argv, env=self._env, timeout=timeout, check=False)
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
        if failure is not None:
            raise failure
