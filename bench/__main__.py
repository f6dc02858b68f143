"""`python -m bench [name ...]`: run benchmarks (all when none is named)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("inspect", "convert", "prepare", "stores", "sandbox", "cli", "metadata", "inspect_os")


def main(names: list[str]) -> None:
    for name in names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        importlib.import_module(f"bench.{name}_bench").main()


if __name__ == "__main__":
    main(sys.argv[1:])
