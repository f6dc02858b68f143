"""What starting ``imagewright`` costs, counted in modules (bench/cli_bench.py counts milliseconds).

Each case runs the real entry point in a fresh interpreter and lists what it imported: the
verb table must keep ``--help`` from importing any command, and ``inspect`` must not pay for
rich, the decompressors, the container readers or the other commands' libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import run

from imagewright.cli.commands import VERBS
from imagewright.cli.inspect import path_spelling
from imagewright.cli.main import cli

#: Never on the start-up path of ``inspect``: what the issue that made commands lazy named
#: (rich, zstandard, pycdlib, isal, hashlib), the other decompressors and XML, pathlib (with
#: urllib.parse and ipaddress behind it), and the libraries of other commands and of the
#: container readers.
HEAVY = (
    "rich",
    "zstandard",
    "pycdlib",
    "isal",
    "hashlib",
    "bz2",
    "lzma",
    "xml",
    "json",
    "pathlib",
    "tarfile",
    "sqlalchemy",
    "imagewright.ops",
    "imagewright.guest",
    "imagewright.metadata",
    "imagewright.compute",
    "imagewright.programs",
    "imagewright.package",
    "imagewright.formats.containers.model",
    "imagewright.formats.containers.tar",
    "imagewright.formats.containers.ovf",
    "imagewright.formats.containers.decompress",
)

_PROBE = """
import sys
from imagewright.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
modules = sorted(sys.modules)
import json
print(json.dumps({"modules": modules, "code": code}), file=sys.stderr)
"""


def imports_of(*args: str | Path) -> tuple[set[str], int]:
    """The modules ``imagewright ARGS`` imported (output to a pipe), and its exit code."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, args)], capture_output=True, text=True, check=False
    )
    found = json.loads(proc.stderr.strip().splitlines()[-1])
    return set(found["modules"]), found["code"]


def heavy_among(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_help_imports_no_command() -> None:
    modules, code = imports_of("--help")
    assert code == 0
    ours = {m for m in modules if m.split(".")[0] == "imagewright"}
    # click's help formatter asks shutil for the terminal size (and shutil loads bz2/lzma): not ours.
    assert ours == {
        "imagewright",
        "imagewright.cli",
        "imagewright.cli.main",
        "imagewright.cli.commands",
        "imagewright.errors",
    }
    assert "rich" not in modules


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_inspect_of_a_partitioned_disk_stays_light(tmp_path: Path, fmt: str) -> None:
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(64 << 20)
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", raw, input=b"label: gpt\n,1M,L\n,,L\n")
    run("mke2fs", "-q", "-F", "-t", "ext4", "-E", f"offset={2 << 20}", raw, "32M")
    image = raw
    if fmt != "raw":
        image = tmp_path / f"disk.{fmt}"
        run("qemu-img", "convert", "-f", "raw", "-O", fmt, raw, image)
    modules, code = imports_of("inspect", image)
    assert code == 0
    assert "imagewright.disk.survey" in modules  # it did look inside
    assert heavy_among(modules) == []


def test_inspect_of_a_container_loads_the_readers_it_needs(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(bytes(1 << 20))
    run("xz", "-k", "-0", image)
    modules, code = imports_of("inspect", f"{image}.xz")
    assert code == 0
    assert {"lzma", "imagewright.formats.containers.compressed"} <= modules
    assert "rich" not in modules


def test_the_table_is_what_help_shows() -> None:
    """Each verb's summary is its command's own first sentence, shortened the way click
    shortens it, at every terminal width; and the table's order is the listing's."""
    context = click.Context(cli)
    assert cli.list_commands(context) == [verb.name for verb in VERBS]
    for verb in VERBS:
        command = verb.load()
        assert command.name == verb.name
        assert not command.hidden
        for limit in range(10, 240, 7):
            table = click.Command(verb.name, help=verb.summary).get_short_help_str(limit)
            assert table == command.get_short_help_str(limit), (verb.name, limit)


def test_every_verb_shows_its_own_help(run_cli: Callable[..., Result]) -> None:
    for verb in VERBS:
        result = run_cli([verb.name, "--help"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("Usage: ")
        assert " ".join(verb.summary.split()[:4]) in " ".join(result.output.split())


@settings(max_examples=500, deadline=None)
@given(text=st.text(st.sampled_from("/.a b\u00e9"), max_size=12))
def test_inspect_names_images_as_pathlib_did(text: str) -> None:
    assert path_spelling(text) == str(Path(text))


def test_the_sandbox_switch_is_named_as_the_runner_names_it() -> None:
    from imagewright.cli import main
    from imagewright.programs import runner

    assert main.NO_SANDBOX_ENV == runner.NO_SANDBOX_ENV
