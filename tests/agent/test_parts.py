"""The agent's source parts: joined into one script, and its awk programs on their own.

Joining: every part under ``parts/`` is included exactly once, nothing of the ``#include`` lines
is left, and the joiner refuses what would break the script (a quote in an awk part, includes
that never end, a missing part). The awk programs run on their own
(``awk -f common.awk -f yaml.awk FILE``) under every awk a guest may have: busybox awk, mawk
(Debian's default) and gawk, each called by its own path; the references are PyYAML and
Python's json on generated documents (hypothesis), as in test_parsers.py, which runs the same
programs through the joined script.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.agent.sandbox import lib_call
from tests.agent.test_parsers import YAML_CASES, flatten, json_documents, yaml_documents
from tests.fixtures.tools import which

import imagewright.agent
from imagewright.agent import agent_script
from imagewright.errors import ImagewrightError

SOURCE = Path(imagewright.agent.__file__).parent
PARTS = SOURCE / "parts"
INCLUDE = re.compile(r"^#include (\S+)$", re.MULTILINE)
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_every_part_is_joined_once_and_no_include_is_left() -> None:
    included: list[Path] = []
    pending = [SOURCE / "imagewright-agent.sh"]
    while pending:
        source = pending.pop()
        found = [(source.parent / name).resolve() for name in INCLUDE.findall(source.read_text())]
        included += found
        pending += found
    assert sorted(included) == sorted(PARTS.iterdir())
    script = agent_script().decode()
    assert "#include" not in script
    for part in PARTS.iterdir():  # a part without includes of its own is in the script as written
        text = part.read_text()
        assert INCLUDE.search(text) or script.count(text) == 1, part.name


def test_the_joiner_refuses_what_would_break_the_script(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImagewrightError, match=r"^The agent.s source part parts/gone\.sh is missing"):
        imagewright.agent._resource("parts/gone.sh")
    tree = {
        "main.sh": b"#!/bin/sh\nPROGRAM='\n#include parts/quote.awk\n'\n",
        "parts/quote.awk": b'{ print "it\'s" }\n',
        "loop.sh": b"#include loop.sh\n",
    }
    monkeypatch.setattr(imagewright.agent, "_resource", tree.__getitem__)
    with pytest.raises(ImagewrightError, match=r"parts/quote\.awk holds a single quote"):
        imagewright.agent._joined("main.sh")
    with pytest.raises(ImagewrightError, match="include each other too deeply"):
        imagewright.agent._joined("loop.sh")


def awks() -> dict[str, list[str]]:
    return {"busybox": [which("busybox"), "awk"], "mawk": [which("mawk")], "gawk": [which("gawk")]}


def run_awk(
    awk: Sequence[str], programs: Sequence[str], document: Path, variables: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    files = [arg for name in ("common.awk", *programs) for arg in ("-f", str(PARTS / name))]
    assigns = [arg for v in variables for arg in ("-v", v)]
    return subprocess.run(
        [*awk, *assigns, *files, str(document)],
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@SETTINGS
@given(document=json_documents, indent=st.sampled_from([None, 2]))
def test_json_awk_matches_python(document: dict[str, Any], indent: int | None, tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(document, indent=indent, ensure_ascii=False))
    for name, awk in awks().items():
        result = run_awk(awk, ["json.awk"], path)
        assert (result.returncode, result.stderr) == (0, ""), name
        assert result.stdout.splitlines() == flatten(document), name


@SETTINGS
@given(document=json_documents.filter(bool), data=st.data())
def test_json_awk_refuses_every_truncation(
    document: dict[str, Any], data: st.DataObject, tmp_path: Path
) -> None:
    text = json.dumps(document, ensure_ascii=False)
    path = tmp_path / "cut.json"
    path.write_text(text[: data.draw(st.integers(0, len(text) - 1))])
    for name, awk in awks().items():
        assert run_awk(awk, ["json.awk"], path).returncode == 1, name


@SETTINGS
@given(document=yaml_documents, flow=st.sampled_from([False, None]), indent=st.sampled_from([2, 4]))
def test_yaml_awk_matches_pyyaml(
    document: dict[str, Any], flow: bool | None, indent: int, tmp_path: Path
) -> None:
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True, width=10_000, indent=indent)
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    expected = flatten(yaml.safe_load(text))
    for name, awk in awks().items():
        result = run_awk(awk, ["yaml.awk"], path)
        assert (result.returncode, result.stderr) == (0, ""), name
        assert result.stdout.splitlines() == expected, (name, text)


@pytest.mark.parametrize("text", list(YAML_CASES))
def test_yaml_awk_cases(text: str, tmp_path: Path) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    for name, awk in awks().items():
        assert run_awk(awk, ["yaml.awk"], path).stdout.splitlines() == YAML_CASES[text], name


def test_flat_awk_lookups(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.write_text(
        "a/b\tone\\ttwo\\nthree\\\\four\na/c/0\tx\na/c/1\ty\na/d/k\tz\na/d/j\tw\nab\tnot-under-a\n"
    )
    lookups = {
        ("get", "a/b"): "one\ttwo\nthree\\four\n",
        ("get", "a/nothing"): "",
        ("list", "a/c"): "x\ny\n",
        ("list", "a/d"): "",  # a mapping is not a list
        ("under", "a/d"): "z\nw\n",
        ("keys", "a"): "b\nc\nd\n",
        ("keys", ""): "a\nab\n",
    }
    for name, awk in awks().items():
        for (mode, path), expected in lookups.items():
            result = run_awk(awk, ["flat.awk"], flat, [f"mode={mode}", f"p={path}"])
            assert (result.stdout, result.returncode) == (expected, 0), (name, mode, path)


def test_the_joined_agent_holds_each_program_as_written(agent_file: Path, busybox_tools: Path) -> None:
    for variable, part in (
        ("AWK_COMMON", "common.awk"),
        ("AWK_YAML", "yaml.awk"),
        ("AWK_JSON", "json.awk"),
        ("AWK_FLAT", "flat.awk"),
    ):
        result = lib_call("dash", agent_file, f'printf "%s" "${variable}"', tools_dir=busybox_tools)
        assert result.stdout == "\n" + (PARTS / part).read_text(), variable
