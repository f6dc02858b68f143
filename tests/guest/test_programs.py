"""The e2fsprogs and qemu-img wrappers against the real programs, and fuzzing of what they parse."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import qemu_img_info, run
from tests.guest.images import MIB, GuestImage, flat_ext4

from imagewright.errors import (
    GuestFilesystemError,
    ImagewrightError,
    InvalidArgumentError,
    ProgramError,
)
from imagewright.guest import open_guest
from imagewright.guest.e2fs import E2fsGuest
from imagewright.programs import e2fs, qemu_img

pytestmark = pytest.mark.integration

# ---- debugfs command language -----------------------------------------------------------


def test_quote_doubles_quotes_and_refuses_line_breaks() -> None:
    assert e2fs.quote('a "b" c') == '"a ""b"" c"'
    assert e2fs.quote("") == '""'
    for bad in ("a\nb", "a\rb", "a\0b"):
        with pytest.raises(InvalidArgumentError):
            e2fs.quote(bad)
    with pytest.raises(InvalidArgumentError, match="longer"):
        e2fs.command("stat", "/" + "x" * 9000).line()


def test_device_name() -> None:
    assert e2fs.device_name("/a/disk.raw") == "/a/disk.raw"
    assert e2fs.device_name("/a/disk.raw", 1048576) == "/a/disk.raw?offset=1048576"
    with pytest.raises(InvalidArgumentError, match=r"contains '\?'"):
        e2fs.device_name("/a/what?.raw")


@pytest.fixture(scope="module")
def empty_fs(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    directory = tmp_path_factory.mktemp("names")
    tree = directory / "tree"
    tree.mkdir()
    return flat_ext4(tree, directory / "names.raw", size_mib=16)


_NAME_CHARS = st.characters(blacklist_characters="/\0\n\r", blacklist_categories=("Cs",))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(_NAME_CHARS, min_size=1, max_size=60).filter(lambda n: n not in (".", "..")))
def test_any_name_round_trips_through_debugfs(empty_fs: GuestImage, name: str) -> None:
    outputs = e2fs.run_debugfs(
        empty_fs.device,
        [e2fs.command("mkdir", f"/{name}"), e2fs.command("ls", "-p", "/"), e2fs.command("rmdir", f"/{name}")],
        writable=True,
    )
    assert outputs[0] == b""
    assert f"/{name}/".encode() in outputs[1]
    assert outputs[2].strip() == b""  # debugfs 1.47's rmdir prints an empty line on success
    guest = E2fsGuest(empty_fs.path, writable=True)
    try:
        guest.write_file(f"/{name}", name.encode())
        assert name in {entry.name for entry in guest.listdir("/")}
        assert guest.read_file(f"/{name}") == name.encode()
        guest.delete(f"/{name}")
        assert name not in {entry.name for entry in guest.listdir("/")}
    finally:
        guest.close()


def test_outputs_stay_with_their_commands(empty_fs: GuestImage) -> None:
    outputs = e2fs.run_debugfs(
        empty_fs.device,
        [
            e2fs.command("stat", "/nothing here"),
            e2fs.command("params"),
            e2fs.command("stat", "/"),
            e2fs.command("rm", "/nothing"),
        ],
    )
    assert b"File not found by ext2_lookup" in outputs[0]
    assert outputs[1].startswith(b"Open mode: read-only")
    assert outputs[2].startswith(b"Inode: 2 ")
    assert b"read/only" in outputs[3]


def test_open_failure_is_one_sentence(tmp_path: Path) -> None:
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"\0" * MIB)
    with pytest.raises(GuestFilesystemError) as caught:
        e2fs.run_debugfs(str(junk), [e2fs.command("stat", "/")])
    assert str(caught.value) == "debugfs cannot open the ext2/3/4 filesystem: Bad magic number in super-block"


def test_unknown_command_is_a_program_error(empty_fs: GuestImage) -> None:
    with pytest.raises(ProgramError, match="exit 1"):
        e2fs.run_debugfs(empty_fs.device, [e2fs.command("no_such_command")])


# ---- e2fsck, dumpe2fs, mke2fs, tune2fs, resize2fs --------------------------------------


def test_mke2fs_at_an_offset_then_tune_resize_and_check(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(64 * MIB)
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("made\n")
    e2fs.mke2fs(disk, fs_type="ext4", size_bytes=32 * MIB, offset=4 * MIB, root_dir=tree, label="first")
    device = e2fs.device_name(disk, 4 * MIB)
    superblock = e2fs.read_superblock(device)
    assert (superblock.size, superblock.label) == (32 * MIB, "first")
    assert "extent" in superblock.features and not superblock.needs_recovery
    e2fs.tune2fs(device, label="second", uuid="0b5b7b8e-1f0c-4a57-9c1e-3b2f6f2d9a11")
    e2fs.resize2fs(device, 48 * MIB)
    superblock = e2fs.read_superblock(device)
    assert (superblock.size, superblock.label) == (48 * MIB, "second")
    assert superblock.uuid == "0b5b7b8e-1f0c-4a57-9c1e-3b2f6f2d9a11"
    blkid = run("blkid", "-p", "-o", "export", "-O", str(4 * MIB), disk).stdout.decode()
    assert "LABEL=second" in blkid and "TYPE=ext4" in blkid
    assert e2fs.e2fsck_check(device).clean
    run("debugfs", "-w", "-R", "sif /etc/hostname links_count 5", device)
    result = e2fs.e2fsck_check(device)
    assert not result.clean and result.exit_code == 4
    assert "hostname" in result.first_problem() or "count" in result.first_problem()


def test_mke2fs_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="explicit size"):
        e2fs.mke2fs(tmp_path / "x", offset=4096)
    with pytest.raises(InvalidArgumentError, match="not an ext2/3/4"):
        e2fs.mke2fs(tmp_path / "x", fs_type="xfs")
    with pytest.raises(InvalidArgumentError, match="16 bytes"):
        e2fs.mke2fs(tmp_path / "x", label="a" * 17)


def test_read_superblock_of_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 65536)
    with pytest.raises(GuestFilesystemError, match="superblock"):
        e2fs.read_superblock(str(junk))


# ---- parsers of debugfs output under random input ---------------------------------------

_REAL_STAT = (
    b"Inode: 14   Type: symlink    Mode:  0777   Flags: 0x0\n"
    b"Generation: 0    Version: 0x00000000:00000000\n"
    b"User:     0   Group:     0   Project:     0   Size: 9\n"
    b"File ACL: 0\nLinks: 1   Blockcount: 0\n"
    b" mtime: 0x6b029fd3:00000000 -- Sun Nov 22 07:54:59 2026\n"
    b'Fast link dest: "/dev/null"\n'
)
_REAL_LS = b"/12/040755/0/0/.//\n/2/040755/0/0/..//\n/13/100644/0/0/hostname/6/\n\n"


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    def mutate(edits: list[tuple[int, int]]) -> bytes:
        data = bytearray(seed)
        for position, value in edits:
            data[position % len(data)] = value
        return bytes(data)

    return st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8).map(mutate)


@settings(max_examples=300, deadline=None)
@given(output=st.one_of(st.binary(max_size=300), _mutations(_REAL_STAT), _mutations(_REAL_LS)))
def test_debugfs_output_parsers_raise_only_imagewright_errors(output: bytes) -> None:
    guest = E2fsGuest.__new__(E2fsGuest)
    guest.description = "a fuzzed guest"
    for parse in (guest._parse_stat, guest._parse_listing):
        with contextlib.suppress(ImagewrightError):
            parse("/x", output)


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    directory = tmp_path_factory.mktemp("small")
    tree = directory / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("small\n")
    (tree / "etc" / "link").symlink_to("/etc/hostname")
    return flat_ext4(tree, directory / "small.raw", size_mib=2)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(edits=st.lists(st.tuples(st.integers(1024, 64 * 1024), st.integers(0, 255)), min_size=1, max_size=12))
def test_damaged_filesystems_raise_only_imagewright_errors(
    small_image: GuestImage, tmp_path: Path, edits: list[tuple[int, int]]
) -> None:
    """Bytes of the superblock, group descriptors, bitmaps and inode table changed at random."""
    damaged = tmp_path / f"damaged-{abs(hash(tuple(edits)))}.raw"
    shutil.copyfile(small_image.path, damaged)
    with damaged.open("r+b") as f:
        for position, value in edits:
            f.seek(position)
            f.write(bytes([value]))
    try:
        with open_guest(damaged, writable=True) as guest:
            guest.listdir("/etc")
            guest.read_file("/etc/link")
            guest.write_file("/etc/new", b"x")
    except ImagewrightError:
        pass
    finally:
        damaged.unlink()


# ---- qemu-img -----------------------------------------------------------------------------


def test_qemu_img_create_info_resize_check(tmp_path: Path) -> None:
    image = tmp_path / "x.qcow2"
    qemu_img.create(image, "qcow2", 8 * MIB, {"cluster_size": 4096, "lazy_refcounts": True})
    info = qemu_img.info(image, "qcow2")
    assert (info["virtual-size"], info["cluster-size"]) == (8 * MIB, 4096)
    assert info["format-specific"]["data"]["lazy-refcounts"] is True
    qemu_img.resize(image, "qcow2", 16 * MIB)
    assert qemu_img.virtual_size(image, "qcow2") == 16 * MIB
    result = qemu_img.check(image, "qcow2")
    assert result.supported and result.clean
    raw = tmp_path / "x.raw"
    qemu_img.create(raw, "raw", MIB)
    assert not qemu_img.check(raw, "raw").supported


def test_qemu_img_convert_reports_progress(tmp_path: Path) -> None:
    source = tmp_path / "src.raw"
    with source.open("wb") as f:
        f.truncate(16 * MIB)
        f.seek(5 * MIB)
        f.write(b"data" * 1000)
    calls: list[tuple[int, int | None]] = []
    qemu_img.convert(
        source,
        "raw",
        tmp_path / "out.vmdk",
        "vmdk",
        options={"subformat": "streamOptimized"},
        progress=lambda done, total: calls.append((done, total)),
        total_bytes=16 * MIB,
    )
    assert calls and calls[-1] == (16 * MIB, 16 * MIB)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    info = qemu_img_info(tmp_path / "out.vmdk", "vmdk")
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"


def test_qemu_img_errors_are_sentences(tmp_path: Path) -> None:
    with pytest.raises(ProgramError, match="qemu-img failed while converting"):
        qemu_img.convert(
            tmp_path / "missing.raw", "raw", tmp_path / "out.raw", "raw", progress=lambda d, t: None
        )
    with pytest.raises(InvalidArgumentError, match="not an image format"):
        qemu_img.info(tmp_path / "x", "json")
    with pytest.raises(InvalidArgumentError, match="option name"):
        qemu_img.format_options({"bad name": "x"})


def test_option_values_escape_commas_and_paths_are_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert qemu_img.format_options({"a": "x,y", "b": True, "c": 3}) == "a=x,,y,b=on,c=3"
    monkeypatch.chdir(tmp_path)
    # "json:..." relative to the current directory would be parsed as a protocol by qemu.
    qemu_img.create(Path("json:{}"), "raw", 4096)
    assert (tmp_path / "json:{}").stat().st_size == 4096
    assert (
        json.loads(run("qemu-img", "info", "--output=json", "-f", "raw", tmp_path / "json:{}").stdout)[
            "virtual-size"
        ]
        == 4096
    )
