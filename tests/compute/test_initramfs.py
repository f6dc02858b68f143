"""The newc initramfs writer, read back by GNU cpio and unpacked by a real kernel (boot tests)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from tests.fixtures.tools import run

from imagewright.compute.initramfs import InitramfsWriter
from imagewright.errors import InvalidArgumentError


def _write_sample(path: Path, tmp_path: Path) -> bytes:
    payload = bytes(range(256)) * 4099  # not a multiple of 4: padding matters
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    with InitramfsWriter(path) as archive:
        archive.add_directory("dev")
        archive.add_char_device("dev/console", 5, 1)
        archive.add_directory("usr")
        archive.add_directory("usr/bin")
        archive.add_file("usr/bin/tool", source, 0o755)
        archive.add_symlink("bin", "usr/bin")
        archive.add_bytes("init", b"#!/bin/sh\necho hi\n", 0o755)
    return payload


def test_gnu_cpio_lists_every_entry_owned_by_root(tmp_path: Path) -> None:
    archive = tmp_path / "initrd.img"
    _write_sample(archive, tmp_path)
    listing = run("cpio", "-itv", "--quiet", input=gzip.decompress(archive.read_bytes())).stdout.decode()
    lines = [line.split() for line in listing.splitlines()]
    by_name = {fields[-1] if "->" not in fields else fields[-3]: fields for fields in lines}
    assert set(by_name) == {"dev", "dev/console", "usr", "usr/bin", "usr/bin/tool", "bin", "init"}
    assert by_name["dev/console"][0] == "crw-------"
    assert by_name["dev/console"][4:6] == ["5,", "1"]
    assert by_name["bin"][0] == "lrwxrwxrwx" and by_name["bin"][-1] == "usr/bin"
    assert by_name["init"][0] == "-rwxr-xr-x"
    assert all(fields[2] == "root" and fields[3] == "root" for fields in lines)


def test_gnu_cpio_extracts_identical_content(tmp_path: Path) -> None:
    archive = tmp_path / "initrd.img"
    payload = _write_sample(archive, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    data = gzip.decompress(archive.read_bytes())
    run("sh", "-c", f"cd {out} && cpio -id --quiet --no-absolute-filenames 'usr/bin/tool' init", input=data)
    assert (out / "usr/bin/tool").read_bytes() == payload
    assert (out / "init").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    _write_sample(tmp_path / "a.img", tmp_path)
    _write_sample(tmp_path / "b.img", tmp_path)
    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes()


@pytest.mark.parametrize("name", ["/abs", "../up", "a/../../b", ""])
def test_names_outside_the_archive_are_refused(tmp_path: Path, name: str) -> None:
    with InitramfsWriter(tmp_path / "x.img") as archive, pytest.raises(InvalidArgumentError):
        archive.add_bytes(name, b"")


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    with InitramfsWriter(tmp_path / "x.img") as archive:
        archive.add_bytes("a", b"1")
        with pytest.raises(InvalidArgumentError, match="already"):
            archive.add_bytes("a", b"2")
