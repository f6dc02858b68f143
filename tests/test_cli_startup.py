"""What starting ``imagewright`` costs, counted in modules (bench/cli_bench.py counts milliseconds).

Each case runs the real entry point in a fresh interpreter and lists what it imported: the
verb table must keep ``--help`` from importing any command, and ``inspect`` must not pay for
click, rich, the decompressors, the container readers, the other disk formats' readers or the
other commands' libraries. A plain ``inspect`` runs without click (``cli.main``); that it reads
its arguments and answers exactly as the click command does is checked here too.
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import run

from imagewright.cli import NO_SANDBOX_ENV
from imagewright.cli.commands import VERBS
from imagewright.cli.group import cli
from imagewright.cli.inspect_run import InspectArguments, path_spelling, plain_arguments
from imagewright.cli.main import main
from imagewright.formats import registry

#: Never on the start-up path of ``inspect``: what the issue that made commands lazy named
#: (rich, zstandard, pycdlib, isal, hashlib), the other decompressors and XML, pathlib (with
#: urllib.parse and ipaddress behind it), the libraries of other commands and of the
#: container readers; click and the group (a plain ``inspect`` needs no parser), and the
#: readers of the disk formats the image is not in (their probes are ``formats.probes``).
HEAVY = (
    "click",
    "imagewright.cli.group",
    "imagewright.cli.common",
    "imagewright.cli.inspect",
    "imagewright.formats.vmdk_descriptor",
    "imagewright.formats.vmdk_qemu",
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


#: Every disk format reader module (``formats.registry``): only the image's own may load.
READERS = frozenset(f"imagewright.formats.{reader.module_name}" for reader in registry.DISK_FORMATS)

#: How many modules (``sys.modules``: the interpreter's own, the standard library's, ours)
#: ``imagewright inspect`` of a partitioned qcow2 may have loaded when it exits. It was 171
#: with click and every disk reader, 130 without them (and without uuid, the compression
#: header modules and the ESP scanner); the headroom is for a small module or two, not for a
#: framework (click alone brings ~25 with what it imports).
MODULE_BOUND = 136


def heavy_among(modules: set[str], own_reader: str = "") -> list[str]:
    heavy = (*HEAVY, *(READERS - {own_reader}))
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy))


def test_help_imports_no_command() -> None:
    modules, code = imports_of("--help")
    assert code == 0
    ours = {m for m in modules if m.split(".")[0] == "imagewright"}
    # click's help formatter asks shutil for the terminal size (and shutil loads bz2/lzma): not ours.
    assert ours == {
        "imagewright",
        "imagewright.cli",
        "imagewright.cli.main",
        "imagewright.cli.group",
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
    own_reader = f"imagewright.formats.{fmt}"
    assert {"imagewright.disk.survey", own_reader} <= modules  # it did look inside, with its reader
    assert heavy_among(modules, own_reader) == []
    assert len(modules) <= MODULE_BOUND, sorted(modules)


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
    from imagewright.programs import runner

    assert runner.NO_SANDBOX_ENV == NO_SANDBOX_ENV


@pytest.fixture(scope="module")
def argument_words(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Words an ``inspect`` command line is made of: a safe image, a refused one (a backing
    file), a missing path, a directory, and every option form, right or wrong."""
    workdir = tmp_path_factory.mktemp("plain-inspect")
    safe = workdir / "safe.raw"
    safe.write_bytes(bytes(1 << 20))
    refused = workdir / "refused.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", safe, "-F", "raw", refused)
    (workdir / "dir").mkdir()
    images = [str(safe), str(refused), str(workdir / "missing.qcow2"), str(workdir / "dir"), ""]
    options = ["--json", "--audit", "--strict", "--max-virtual-size", "1K", "--max-virtual-size=1M"]
    odd = ["--max-virtual-size=huge", "--json=yes", "--", "-", "--help", "-h", "--bogus", "--debug"]
    return images + options + odd


def both_ways(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[tuple[object, str, str], ...]:
    """(exit code, stdout, stderr) of ``imagewright ARGV`` through the entry point, and through
    the click group alone."""
    answers = []
    for entry in (lambda: main(argv), lambda: cli.main(args=argv, prog_name="imagewright")):
        with pytest.raises(SystemExit) as exit:
            entry()
        out, err = capsys.readouterr()
        answers.append((exit.value.code or 0, out, err))
    return tuple(answers)


# capsys is read (and so emptied) after each run: nothing carries over between examples.
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choices=st.lists(st.integers(min_value=0), min_size=0, max_size=5))
def test_plain_inspect_answers_as_click_does(
    choices: list[int], argument_words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["inspect", *(argument_words[i % len(argument_words)] for i in choices)]
    through_main, through_click = both_ways(argv, capsys)
    assert through_main == through_click, argv


def test_plain_arguments_are_what_click_passes(argument_words: list[str]) -> None:
    """Where the entry point runs ``inspect`` itself, its arguments are the click command's."""
    safe, refused = argument_words[:2]
    cases = {
        (safe,): InspectArguments((safe,)),
        ("--json", safe, refused): InspectArguments((safe, refused), as_json=True),
        (safe, "--audit", "--strict", "--json", "--json"): InspectArguments(
            (safe,), as_json=True, audit=True, strict=True
        ),
        ("--max-virtual-size", "1K", refused): InspectArguments((refused,), max_virtual_size=1024),
        (refused, "--max-virtual-size=1M"): InspectArguments((refused,), max_virtual_size=1 << 20),
        ("--os", safe): InspectArguments((safe,), with_os=True),
    }
    command = cli.get_command(click.Context(cli), "inspect")
    assert command is not None
    for args, expected in cases.items():
        assert plain_arguments(args) == expected
        assert InspectArguments(**command.make_context("inspect", list(args)).params) == expected
    # Left to click: help, usage errors, anything click has to judge.
    for args in [(), ("--help",), (safe, "--strict"), ("--", safe), (str(Path(safe).parent),), (safe, "-x")]:
        assert plain_arguments(args) is None, args


def test_the_group_answers_when_the_sandbox_is_off(
    argument_words: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With IMAGEWRIGHT_NO_SANDBOX set the group warns first, so a plain inspect goes to it."""
    from imagewright.programs import runner

    monkeypatch.setenv(NO_SANDBOX_ENV, "1")
    # The warning is said once per process: another test in this worker may have said it.
    monkeypatch.setattr(runner._policy, "warned", False)
    (code, out, err), _ = both_ways(["inspect", argument_words[0]], capsys)
    assert code == 0
    assert "verdict:" in out
    assert "sandbox" in err
