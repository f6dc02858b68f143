"""The supervisor of one instance: ``python -m imagewright.service.launch.supervisor PLAN``.

``imagewright run`` writes the instance's plan (``plan.json``: QEMU's argument list, its
sandbox, the catalog's URL) and starts this process in its own session, so the instance
outlives the command: a ``--detach``, a closed terminal or a ``kill -9`` of the CLI leave it
running. The supervisor starts QEMU (through ``programs.runner``, sandboxed; bubblewrap's
``--die-with-parent`` ties QEMU's life to this process, never to the CLI's), records it
``running`` with QEMU's host pid, waits for it, and records how it ended: ``stopped`` with its
exit status, or ``failed`` with QEMU's own error when it never ran (non-zero exit before the
console printed a byte). SIGTERM/SIGINT/SIGHUP end QEMU with SIGTERM, on which QEMU closes its
disks cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from imagewright.catalog import instance_runs
from imagewright.catalog.database import Catalog
from imagewright.errors import ImagewrightError
from imagewright.programs.runner import Sandbox, program_pid, start_program, stop_program

#: How long bwrap may take to start QEMU inside its namespaces before the pid is read anyway.
_PID_WAIT = 10.0


def write_plan(
    path: Path,
    *,
    instance_id: str,
    database_url: str,
    argv: list[str],
    sandbox: Sandbox,
    qemu_log: Path,
    console_log: Path,
) -> None:
    plan = {
        "instance_id": instance_id,
        "database_url": database_url,
        "argv": argv,
        "sandbox": {
            "reads": list(sandbox.reads),
            "writes": list(sandbox.writes),
            "directories": list(sandbox.directories),
            "devices": list(sandbox.devices),
            "network": sandbox.network,
        },
        "qemu_log": str(qemu_log),
        "console_log": str(console_log),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(plan, handle, indent=1)


def _sandbox(data: dict[str, Any]) -> Sandbox:
    return Sandbox.of(
        reads=data["reads"],
        writes=data["writes"],
        directories=data["directories"],
        devices=data["devices"],
        network=bool(data["network"]),
    )


def _last_error(qemu_log: Path) -> str:
    try:
        with open(qemu_log, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 4096))
            lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return "QEMU exited at once"
    lines = [line for line in lines if line and "warning:" not in line]
    return lines[-1] if lines else "QEMU exited at once"


def supervise(plan: dict[str, Any]) -> int:
    instance_id = str(plan["instance_id"])
    catalog = Catalog(str(plan["database_url"]))
    qemu_log = Path(plan["qemu_log"])
    console_log = Path(plan["console_log"])
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    for which in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(which, on_signal)
    try:
        with open(qemu_log, "ab") as log:
            proc = start_program(
                [str(a) for a in plan["argv"]],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log.fileno(),
                new_session=False,
                sandbox=_sandbox(plan["sandbox"]),
            )
    except ImagewrightError as err:
        with catalog.writing() as session:
            instance_runs.mark_ended(session, instance_id, "failed", exit_status=None, message=str(err))
        catalog.dispose()
        return 1
    deadline = time.monotonic() + _PID_WAIT
    pid = program_pid(proc)
    while pid == proc.pid and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        pid = program_pid(proc)
    with catalog.writing() as session:
        instance_runs.mark_running(session, instance_id, os.getpid(), pid)
    while True:
        if stopping:
            stop_program(proc, grace=30.0)
        try:
            status = proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            continue
    never_ran = status != 0 and not stopping and _size(console_log) == 0
    with catalog.writing() as session:
        if never_ran:
            instance_runs.mark_ended(
                session, instance_id, "failed", exit_status=status,
                message=f"QEMU could not start the instance: {_last_error(qemu_log)}",
            )  # fmt: skip
        else:
            instance_runs.mark_ended(session, instance_id, "stopped", exit_status=status, message=None)
    catalog.dispose()
    return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m imagewright.service.launch.supervisor PLAN.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as handle:
        plan = json.load(handle)
    return supervise(plan)


if __name__ == "__main__":
    sys.exit(main())
