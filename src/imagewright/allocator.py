"""glibc's allocator told to keep freed stream buffers, for commands that stream images.

A streaming command reads its source in 4 MiB ``bytes`` objects (``os.pread``) and, in a
pass that feeds several outputs (``publish``), holds a few dozen of them at once while the
deflate workers and the targets' threads let go of them in their own order. glibc serves
allocations of 128 KiB and more with ``mmap`` (a threshold that only grows as such blocks
are freed, up to 32 MiB) and gives the top of a heap back to the kernel once more than
twice that is free there. With many buffers in flight the heap top keeps being given back
and taken again, and every page taken again is a fresh page the kernel must zero and fault
in: 0.3-0.7 CPU-s per publish of a 1 GiB disk (``clear_page`` and the page faults in a
``perf`` profile; the reading thread's time fell from 0.4-0.7 s to 0.2-0.3 s).

``keep_freed_buffers`` sets both thresholds for the rest of the process: blocks below
``MMAP_THRESHOLD`` come from the heap, and freed memory stays there for reuse until
``TRIM_THRESHOLD`` of it sits at the top. It is process-wide and cannot be undone, so
only one-shot commands ask for it (``cli.main``: every verb but the servers, whose memory
should go back to the system between requests). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import platform

#: mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's ceiling for the threshold it adapts on its own (DEFAULT_MMAP_THRESHOLD_MAX, 64-bit).
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


@functools.cache
def keep_freed_buffers() -> bool:
    """Tune glibc's malloc as the module docstring says (once); False where it cannot be."""
    return _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def _mallopt(parameter: int, value: int) -> bool:
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(parameter, value))
