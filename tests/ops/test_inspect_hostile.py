"""Every hostile image in the catalogue is refused, with its own reason, cheaply, alone.

Each case runs in a fresh process (tests/inspect_probe.py) so that peak memory and the
files opened can be measured for that image only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.hostile import HostileCase, every_case

CASES = every_case()

PROBE = Path(__file__).resolve().parent.parent / "inspect_probe.py"


def probe(path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(PROBE), str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({case.name for case in CASES}) == len(CASES), "case names must be unique"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_image_is_refused_cheaply_without_opening_other_files(
    case: HostileCase, tmp_path: Path
) -> None:
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    image = case.build(build_dir)
    result = probe(image)
    assert not result["safe"], f"{case.name} was judged safe"
    assert any(case.reason.lower() in reason.lower() for reason in result["reasons"]), result["reasons"]
    # The bounds: under 1 s and 100 MiB per hostile image. CPU time, not wall time,
    # so that a busy CI machine does not make the check flaky.
    assert result["cpu_seconds"] < 1.0, result
    assert result["peak_growth_mib"] < 100, result
    assert [p for p in result["opened"] if Path(p).resolve() != image.resolve()] == []
