"""``imagewright context build`` as a user runs it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import blkid
from tests.metadata.conftest import KeyPair, isoinfo_extract

Cli = Callable[..., Result]


def test_json_report_matches_the_file(run_cli: Cli, tmp_path: Path, ed25519_key: KeyPair) -> None:
    out = tmp_path / "seed.iso"
    result = run_cli(
        [
            "context", "build", "--kind", "nocloud", "--instance-id", "i-1", "--hostname", "web1",
            "--ssh-key", ed25519_key.public, "--network", "static:192.0.2.10/24,192.0.2.1,192.0.2.53",
            "-o", out, "--json",
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "nocloud" and report["label"] == "cidata" and report["filesystem"] == "iso9660"
    assert report["files"] == ["meta-data", "user-data", "network-config"]
    assert report["size"] == out.stat().st_size
    assert report["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert report["path"] == str(out)
    assert blkid(out)["LABEL"] == "cidata"


def test_human_report_names_what_was_written(run_cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "metadata.img"
    result = run_cli(
        [
            "context", "build", "--kind", "wakame", "--instance-id", "i-1", "--hostname", "h",
            "--extra-host", "db=192.0.2.9", "--mac", "52-54-00-00-00-09", "--ami-id", "wmi-x", "-o", out,
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for text in (
        "wrote:",
        "wakame (Wakame-vdc metadata drive)",
        "METADATA (vfat)",
        "sha256:",
        "network:  dhcp",
    ):
        assert text in result.stdout
    assert "meta-data/extra-hosts/db" in result.stdout
    assert "meta-data/network/interfaces/macs/52-54-00-00-00-09/mac" in result.stdout
    assert blkid(out)["LABEL"] == "METADATA"


def test_opennebula_with_user_data_and_init_script(run_cli: Cli, tmp_path: Path) -> None:
    user_data, init = tmp_path / "ud.sh", tmp_path / "init.sh"
    user_data.write_bytes(b"#!/bin/sh\necho hello\n")
    init.write_bytes(b"#!/bin/sh\necho init\n")
    out = tmp_path / "context.iso"
    result = run_cli(
        [
            "context", "build", "--kind", "opennebula", "--instance-id", "7", "--hostname", "one",
            "--user-data", user_data, "--init-script", init, "-o", out, "--json",
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"] == ["context.sh", "init.sh"]
    assert isoinfo_extract(out, "/init.sh") == init.read_bytes()
    assert b"START_SCRIPT_BASE64='IyEvYmluL3NoCmVjaG8gaGVsbG8K'" in isoinfo_extract(out, "/context.sh")


def _bad_inputs(tmp_path: Path, ed25519_key: KeyPair) -> list[tuple[list[str], str]]:
    big = tmp_path / "big-user-data"
    big.write_bytes(b"#!/bin/sh\n" + b"x" * 70_000)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("this is not a key\n")
    base = ["--instance-id", "i-1", "--hostname", "web1"]
    return [
        (["--kind", "nocloud", *base, "--network", "static:10.0.0.5"], "needs a mask"),
        (["--kind", "nocloud", *base, "--network", "bogus"], "is not understood"),
        (
            ["--kind", "nocloud", *base, "--network", "static:10.0.0.5/24,10.1.0.1"],
            "outside the instance's subnet",
        ),
        (
            ["--kind", "nocloud", *base, "--network", "static:10.0.0.5/255.0.255.0"],
            "not a contiguous netmask",
        ),
        (["--kind", "configdrive", *base, "--ssh-key", str(tmp_path / "nope.pub")], "cannot be read"),
        (["--kind", "configdrive", *base, "--ssh-key", str(garbage)], "not an OpenSSH public key"),
        (["--kind", "configdrive", *base, "--ssh-key", str(ed25519_key.private)], "private key"),
        (["--kind", "opennebula", *base, "--user-data", str(big)], "64 KiB"),
        (["--kind", "nocloud", "--instance-id", "i 1", "--hostname", "web1"], "instance id"),
        (["--kind", "nocloud", "--instance-id", "i-1", "--hostname", "web_1"], "not a valid host name"),
        (
            ["--kind", "nocloud", "--instance-id", "i-1", "--hostname", "x'; rm -rf /"],
            "not a valid host name",
        ),
        (["--kind", "nocloud", *base, "--mac", "01:00:5e:00:00:01"], "multicast"),
        (["--kind", "nocloud", *base, "--extra-host", "db=192.0.2.9"], "only carried by the wakame medium"),
        (["--kind", "wakame", *base, "--extra-host", "db"], "NAME=IP"),
        (["--kind", "wakame", *base, "--user-data", str(tmp_path)], "is a directory"),
    ]


@pytest.mark.parametrize("case", range(15))
def test_bad_input_is_one_sentence_exit_1_and_no_file(
    run_cli: Cli, tmp_path: Path, ed25519_key: KeyPair, case: int
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    args, reason = _bad_inputs(inputs, ed25519_key)[case]
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = run_cli(["context", "build", *args, "-o", outdir / "medium"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagewright: error: "), result.stderr
    assert reason in lines[0]
    assert list(outdir.iterdir()) == []


def test_existing_output_needs_force(run_cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "seed.iso"
    out.write_text("keep me")
    args = ["context", "build", "--kind", "nocloud", "--instance-id", "i-1", "--hostname", "h", "-o", out]
    result = run_cli(args)
    assert result.exit_code == 1 and "already exists; use --force" in result.stderr
    assert out.read_text() == "keep me"
    assert run_cli([*args, "--force"]).exit_code == 0
    assert blkid(out)["LABEL"] == "cidata"


def test_missing_output_directory_is_a_clear_error(run_cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "no-such-dir" / "seed.iso"
    result = run_cli(
        ["context", "build", "--kind", "nocloud", "--instance-id", "i-1", "--hostname", "h", "-o", out]
    )
    assert result.exit_code == 1
    assert "does not exist" in result.stderr


def test_unknown_kind_is_a_usage_error(run_cli: Cli, tmp_path: Path) -> None:
    result = run_cli(
        ["context", "build", "--kind", "vmware", "--instance-id", "i", "--hostname", "h", "-o", "x"]
    )
    assert result.exit_code == 2


def test_runs_as_a_process(tmp_path: Path) -> None:
    out = tmp_path / "config.iso"
    proc = subprocess.run(
        [sys.executable, "-m", "imagewright.cli.main", "context", "build", "--kind", "configdrive",
         "--instance-id", "i-1", "--hostname", "h", "-o", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert blkid(out)["LABEL"] == "config-2"
