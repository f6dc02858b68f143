"""logfiles: empty the logs under /var/log and remove rotated ones.

Current logs are truncated, not deleted: daemons expect their log files to exist with the
owner and mode the package gave them (``/var/log/btmp`` 0660 root:utmp, ``/var/log/wtmp``),
and some refuse to start otherwise. Rotated logs (``syslog.1``, ``syslog.2.gz``,
``messages-20240101``, ``*.old``) and systemd journal files are removed. Directories stay.
"""

from __future__ import annotations

import re

from imagewright.guest.model import FileType, join
from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.operations.base import Operation

_COMPRESSED = r"(?:gz|xz|bz2|zst|lz4|lzma|Z)"
ROTATED = re.compile(
    rf"(?:\.\d+(?:\.{_COMPRESSED})?"  # syslog.1, syslog.2.gz
    rf"|\.{_COMPRESSED}"  # anything compressed
    r"|\.old"  # dmesg.old
    rf"|-\d{{8}}(?:\d{{2}})?(?:\.{_COMPRESSED})?"  # messages-20240101 (logrotate dateext)
    r"|\.journal~?)$"  # systemd journal files
)


def run(ctx: PrepareContext) -> None:
    if not ctx.guest.is_dir("/var/log"):
        ctx.note = "the guest has no /var/log"
        return
    rotated: list[str] = []
    current: list[str] = []
    for directory, entries in ctx.guest.walk("/var/log"):
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.type is not FileType.REGULAR:
                continue
            path = join(directory, entry.name)
            if ROTATED.search(entry.name):
                rotated.append(path)
            elif entry.size > 0:
                current.append(path)
    ctx.delete_many(rotated)
    ctx.truncate_many(current)


OPERATION = Operation(
    name="logfiles",
    default=True,
    summary="Empty logs under /var/log, remove rotated logs and journal files",
    why="logs of the build machine (addresses, users, errors) would ship in every copy",
    run=run,
)
