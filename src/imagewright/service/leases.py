"""Who holds an upload: an id naming this process on this host, and whether such a holder lives.

A holder is ``HOST/PID/START`` where START is the process's start time in clock ticks since boot
(``/proc/PID/stat`` field 22), so a reused pid is not mistaken for the writer that died. A holder
on *this* host that no longer runs has certainly stopped writing: the sweep need not wait for its
lease to run out (what makes a restart after ``kill -9`` clean at once). Holders on other hosts
are judged by their lease only.
"""

from __future__ import annotations

import functools
import os
import socket


def _start_ticks(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


@functools.cache
def _host() -> str:
    return socket.gethostname()


def this_holder() -> str:
    pid = os.getpid()
    return f"{_host()}/{pid}/{_start_ticks(pid) or '0'}"


def holder_is_dead_here(holder: str | None) -> bool:
    """True only when ``holder`` names a process of this host that no longer runs."""
    if not holder:
        return True
    parts = holder.rsplit("/", 2)
    if len(parts) != 3 or parts[0] != _host() or not parts[1].isdigit():
        return False
    return _start_ticks(int(parts[1])) != parts[2]
