"""The ISO 9660 writer, checked by isoinfo (genisoimage), xorriso and blkid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import blkid, run
from tests.metadata.conftest import isoinfo_extract, isoinfo_names, xorriso_extract, xorriso_paths

from imagewright.errors import ContextError
from imagewright.metadata.iso import _iso_paths, write_iso9660
from imagewright.metadata.layout import MediumFile, MediumLayout

# Names that plain ISO 9660 would mangle: lower case, hyphens, several dots, long, clashing.
TRICKY = MediumLayout(
    kind="test",
    label="cidata",
    filesystem="iso9660",
    files=(
        MediumFile("meta-data", b"instance-id: x\n"),
        MediumFile("meta_data", b"clash once uppercased\n"),
        MediumFile("META-DATA", b"clash again\n"),
        MediumFile("network-config", b""),
        MediumFile("a/very-long-directory-name-beyond-thirty-one-chars/f.tar.gz", b"\x00\x01\x02" * 1000),
        MediumFile("openstack/latest/meta_data.json", b'{"uuid": "x"}\n'),
        MediumFile("openstack/2018-08-27/meta_data.json", b'{"uuid": "y"}\n'),
    ),
    directories=("empty-dir",),
)


@pytest.fixture
def tricky_iso(tmp_path: Path) -> Path:
    out = tmp_path / "t.iso"
    write_iso9660(TRICKY, out)
    return out


def _expected_paths() -> set[str]:
    return {"/" + f.path for f in TRICKY.files} | {"/" + d for d in TRICKY.all_directories()}


def test_rock_ridge_and_joliet_listings_show_the_real_names(tricky_iso: Path) -> None:
    assert isoinfo_names(tricky_iso, "-R") == _expected_paths()
    assert isoinfo_names(tricky_iso, "-J") == _expected_paths()


def test_plain_iso9660_names_are_valid_level3_and_unique(tricky_iso: Path) -> None:
    names = isoinfo_names(tricky_iso, "-l")  # no extension: the ISO 9660 names themselves
    assert len(names) == len(_expected_paths())
    for path in names:
        leaf = path.rsplit("/", 1)[1]
        assert re.fullmatch(r"[A-Z0-9_]{1,31}|[A-Z0-9_]{1,29}\.[A-Z0-9_]{0,8};1", leaf), leaf


def test_every_file_reads_back_byte_for_byte_through_three_readers(tricky_iso: Path, tmp_path: Path) -> None:
    for item in TRICKY.files:
        assert isoinfo_extract(tricky_iso, "/" + item.path, "-R") == item.data
        assert isoinfo_extract(tricky_iso, "/" + item.path, "-J") == item.data
        assert xorriso_extract(tricky_iso, "/" + item.path, tmp_path / "out.bin") == item.data
        (tmp_path / "out.bin").unlink()
    assert xorriso_paths(tricky_iso) == _expected_paths()


@pytest.mark.parametrize("label", ["cidata", "config-2", "CONTEXT", "CIDATA"])
def test_blkid_reports_the_exact_label(tmp_path: Path, label: str) -> None:
    out = tmp_path / "l.iso"
    write_iso9660(MediumLayout("t", label, "iso9660", (MediumFile("x", b"x"),)), out)
    probe = blkid(out)
    assert probe["TYPE"] == "iso9660"
    assert probe["LABEL"] == label


def test_xorriso_finds_no_problem_in_the_image(tricky_iso: Path) -> None:
    proc = run("xorriso", "-indev", tricky_iso, "-check_media", "--")
    assert b"FAILURE" not in proc.stderr


def test_refuses_unusable_labels_and_names(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="volume label"):
        write_iso9660(MediumLayout("t", "x" * 17, "iso9660", (MediumFile("a", b""),)), tmp_path / "a.iso")
    with pytest.raises(ContextError, match="Joliet"):
        write_iso9660(MediumLayout("t", "L", "iso9660", (MediumFile("n" * 65, b""),)), tmp_path / "b.iso")
    with pytest.raises(ContextError, match="not an ISO 9660"):
        write_iso9660(MediumLayout("t", "L", "vfat", (MediumFile("a", b""),)), tmp_path / "c.iso")


@pytest.mark.parametrize("path", ["/abs", "a/../b", "a//b", "./a", "", "a\x00b", "a\\b"])
def test_layout_refuses_paths_that_leave_the_medium(path: str) -> None:
    with pytest.raises(ContextError, match="not a valid path"):
        MediumLayout("t", "L", "iso9660", (MediumFile(path, b""),))


def test_layout_refuses_duplicates_and_file_directory_clashes() -> None:
    with pytest.raises(ContextError, match="twice"):
        MediumLayout("t", "L", "iso9660", (MediumFile("a", b""), MediumFile("a", b"")))
    with pytest.raises(ContextError, match="both a file and a directory"):
        MediumLayout("t", "L", "iso9660", (MediumFile("a", b""), MediumFile("a/b", b"")))


_NAME = st.text(alphabet=st.sampled_from("abcXYZ019-_.~ é"), min_size=1, max_size=40).filter(
    lambda n: n not in (".", "..")
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_NAME, min_size=1, max_size=30, unique=True))
def test_iso_names_are_unique_per_directory_whatever_the_real_names(names: list[str]) -> None:
    layout = MediumLayout("t", "L", "iso9660", tuple(MediumFile(f"d/{n}", b"") for n in names))
    mapping = _iso_paths(layout)
    iso_names = [mapping[f"d/{n}"] for n in names]
    assert len(set(iso_names)) == len(iso_names)
    for iso_name in iso_names:
        leaf = iso_name.rsplit("/", 1)[1]
        assert re.fullmatch(r"[A-Z0-9_]{1,29}\.[A-Z0-9_]{0,8};1", leaf), leaf
        assert len(leaf) - 2 <= 30
