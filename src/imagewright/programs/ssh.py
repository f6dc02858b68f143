"""ssh (Debian ``openssh-client``): a session on an instance through its forwarded port.

``imagewright ssh`` replaces itself with ``ssh`` (``os.execv``): the terminal, the exit status
and the signals are ssh's own, as if the user had typed the command. The instance's host key
is learned on first use into the instance's own ``known_hosts`` (``StrictHostKeyChecking
accept-new``): a fresh instance has new host keys (``verify`` checks that), so the user's
``~/.ssh/known_hosts`` would only collect stale entries for ``[127.0.0.1]:PORT``; a changed key
on a later connection to the same instance is still refused.

``run_remote`` runs one command the same way and returns its result (``verify``'s login check).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from imagewright.errors import InstanceError
from imagewright.programs.runner import ProgramResult, find_program, run_program


def ssh_argv(
    port: int,
    user: str,
    known_hosts: Path,
    *,
    identity: Path | None = None,
    command: Sequence[str] = (),
    batch: bool = False,
) -> list[str]:
    """The ssh command line for ``user``@127.0.0.1:``port`` (``batch``: never prompt)."""
    argv = [
        "ssh", "-p", str(port),
        "-o", f"UserKnownHostsFile={os.fspath(known_hosts)}",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "HashKnownHosts=no",  # the file is the instance's alone: nothing to hide, easier to read
    ]  # fmt: skip
    if batch:
        argv += ["-o", "BatchMode=yes"]
    if identity is not None:
        argv += ["-i", os.fspath(identity), "-o", "IdentitiesOnly=yes"]
    argv += ["-l", user, "127.0.0.1"]
    if command:
        argv += ["--", *command]
    return argv


def exec_ssh(argv: Sequence[str]) -> NoReturn:
    """Become ``ssh`` with ``argv`` (see the module docstring)."""
    program = find_program(argv[0])
    try:
        os.execv(program, [program, *argv[1:]])  # noqa: S606 - the user asked for this ssh session
    except OSError as err:
        raise InstanceError(f"ssh could not be started: {err.strerror}.") from None


def run_remote(argv: Sequence[str], timeout: float) -> ProgramResult:
    """Run ``argv`` (an ``ssh_argv`` with ``batch`` and a command) to its end; its exit status
    is the remote command's, or ssh's own 255 (refused, no connection)."""
    return run_program(
        [*argv[:1], "-o", f"ConnectTimeout={max(1, int(timeout))}", *argv[1:]],
        timeout=timeout,
        check=False,
        what="logging in with ssh",
    )
