"""Run ``inspect`` on one image in a fresh process and report what it cost.

Prints one JSON object: the verdict, CPU seconds, peak memory growth, and every file the
process opened while inspecting (an audit hook sees ``open``/``os.open``). Used by the
hostile-image tests; also handy by hand: ``python tests/inspect_probe.py IMAGE``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time


def _peak_rss_kib() -> int:
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the pre-exec parent)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(path: str) -> None:
    import imagewright.inspection as inspect_module
    from imagewright.formats import containers, registry

    # Import every reader now so that module files are not counted as opened by inspect
    # (the container package loads its readers on first use).
    for reader in registry.DISK_FORMATS:
        _ = reader.module
    for module in pkgutil.iter_modules(containers.__path__):
        importlib.import_module(f"{containers.__name__}.{module.name}")
    # Codecs are imported lazily by the interpreter on first use; load the ones readers use.
    for codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-16", "latin-1", "ascii", "cp437"):
        "".encode(codec)
    opened: list[str] = []
    recording = [False]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if recording[0] and event == "open" and args and isinstance(args[0], str | bytes):
            opened.append(args[0] if isinstance(args[0], str) else args[0].decode(errors="replace"))

    baseline_rss = _peak_rss_kib()
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    sys.addaudithook(hook)
    recording[0] = True
    report = inspect_module.inspect_image(path)
    recording[0] = False
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    peak_growth_kib = _peak_rss_kib() - baseline_rss
    print(
        json.dumps(
            {
                "safe": report.verdict.safe,
                "reasons": list(report.verdict.reasons),
                "format": report.format,
                "cpu_seconds": cpu,
                "wall_seconds": wall,
                "peak_growth_mib": peak_growth_kib / 1024,
                "bytes_read": report.bytes_read,
                "opened": opened,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
