"""A store client in its own process, for what a test cannot do in its own: measure peak memory
(ru_maxrss of a fresh process) and be killed with SIGKILL in the middle of a write.

    python -m tests.stores.child_writer SPEC KEY SIZE stream   # write, read back, print JSON
    python -m tests.stores.child_writer SPEC KEY SIZE hang     # write SIZE bytes, say so, wait

The bytes are ``stream_chunks(SIZE)``: the parent can make the same bytes for an independent check.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Iterator

MiB = 1 << 20
SEED = 20261207


def stream_chunks(size: int, seed: int = SEED) -> Iterator[bytes]:
    """``size`` deterministic bytes in 1 MiB chunks, each different, none with a zero 4 KiB block."""
    base = random.Random(seed).randbytes(MiB)
    for index, offset in enumerate(range(0, size, MiB)):
        chunk = index.to_bytes(8, "little") + base[8:]
        yield chunk[: min(MiB, size - offset)]


def status_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in KiB.

    VmHWM, not ``getrusage().ru_maxrss``: the latter keeps the peak of the forked parent image
    from before ``exec`` (the pytest process), VmHWM belongs to this program's memory alone.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def main(argv: list[str]) -> int:
    from imagewright.stores import open_store, parse_store_spec

    spec, key, size_text, mode = argv
    size = int(size_text)
    store = open_store(parse_store_spec(spec))
    store.check()  # the S3 client is made here: part of the baseline
    baseline = status_kib("VmRSS")
    started = time.monotonic()
    digest_in = hashlib.sha256()
    with store.writer(key, size_hint=size if mode == "stream" else None) as writer:
        for chunk in stream_chunks(size):
            digest_in.update(chunk)
            writer.write(chunk)
        if mode == "hang":
            print("WRITTEN", flush=True)
            time.sleep(3600)  # the parent kills us here, mid-write
            return 1
        location = writer.finish()
    wrote = time.monotonic() - started
    started = time.monotonic()
    digest_out = hashlib.sha256()
    for chunk in store.read_chunks(location):
        digest_out.update(chunk)
    read = time.monotonic() - started
    report = {
        "location": location,
        "sha256_in": digest_in.hexdigest(),
        "sha256_out": digest_out.hexdigest(),
        "baseline_rss_kib": baseline,
        "peak_rss_kib": status_kib("VmHWM"),
        "write_seconds": round(wrote, 2),
        "read_seconds": round(read, 2),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
