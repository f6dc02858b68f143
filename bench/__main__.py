"""`python -m bench [name ...]`: run benchmarks (all when none is named).

A benchmark is a module ``bench/<name>_bench.py`` with a ``main()``; adding one needs no entry here.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCHMARKS = tuple(
    sorted(path.name.removesuffix("_bench.py") for path in Path(__file__).parent.glob("*_bench.py"))
)


def main(names: list[str]) -> None:
    for name in names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        importlib.import_module(f"bench.{name}_bench").main()


if __name__ == "__main__":
    main(sys.argv[1:])
