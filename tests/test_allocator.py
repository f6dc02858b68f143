"""``allocator.keep_freed_buffers``: freed stream buffers are reused, not faulted in afresh.

Measured as a streaming pass would meet it, in a fresh interpreter each way: rounds of
sixteen 4 MiB buffers held at once and freed, as the reading thread's chunks are. The page
faults of the rounds after the first (``ru_minflt``) are the pages the kernel had to hand
out and zero again.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from imagewright.allocator import keep_freed_buffers

ROUNDS = """
import resource, sys
from imagewright.allocator import keep_freed_buffers
if sys.argv[1] == "tuned":
    assert keep_freed_buffers()
def round_():
    held = [b"\\x01" * (4 << 20) for _ in range(16)]
    del held
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(3) is glibc's")


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


@glibc_only
def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    default, tuned = _faults("default"), _faults("tuned")
    pages = 20 * 16 * (4 << 20) // 4096
    # glibc's defaults give the 64 MiB back at every round and fault it in again.
    assert default > pages // 2
    assert tuned < pages // 20


@glibc_only
def test_it_is_applied_once_and_says_so() -> None:
    assert keep_freed_buffers() is True
    assert keep_freed_buffers() is True


def test_the_streaming_verbs_ask_for_it_and_the_servers_do_not() -> None:
    from imagewright.cli.commands import BY_NAME

    assert {name for name, verb in BY_NAME.items() if verb.streams} == {
        "convert", "resize", "build", "package", "publish", "image",
    }  # fmt: skip
