"""Tar archives made by GNU tar and Python's tarfile (ustar, GNU, pax, v7; long names,
links, devices, sparse members), plain and compressed: our member list equals ``tar -tvf``,
the archive kind is right, and the faults of every kind are found."""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures import tools
from tests.fixtures.hostile_containers import Entry, raw_disk, write_tar

from imagewright.binary import FileSource, PrefixSource
from imagewright.formats.base import HEAD_SIZE, Limits
from imagewright.formats.containers import OpenedContainer, open_container, probe_container
from imagewright.formats.containers.sparse import SparseMemberSource

MiB = 1024 * 1024

_TYPE_LETTERS = {
    "-": "file",
    "d": "dir",
    "l": "symlink",
    "h": "hardlink",
    "c": "chardev",
    "b": "blockdev",
    "p": "fifo",
}


def gnu_tar_listing(path: Path) -> list[tuple[str, str, int]]:
    """(name, type, size) of every member as GNU tar lists them (``tar -tvf``)."""
    out = tools.run(
        "tar", "--numeric-owner", "--absolute-names", "--quoting-style=literal", "-tvf", path
    ).stdout.decode()
    rows = []
    for line in out.splitlines():
        perms, _owner, size, _date, _time, rest = line.split(None, 5)
        kind = _TYPE_LETTERS[perms[0]]
        name = rest
        if kind == "symlink":
            name = rest.split(" -> ", 1)[0]
        elif kind == "hardlink":
            name = rest.split(" link to ", 1)[0]
        rows.append((name, kind, 0 if "," in size else int(size)))
    return rows


def our_listing(opened: OpenedContainer) -> list[tuple[str, str, int]]:
    return [(m.name, m.type, m.size) for m in opened.members]


_OPEN: list[FileSource] = []


@pytest.fixture(autouse=True)
def _close_sources() -> Iterator[None]:
    """Member sources read from the archive file: keep it open until the test ends."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def open_path(path: Path, limits: Limits | None = None) -> OpenedContainer:
    src = FileSource(path)
    _OPEN.append(src)
    return open_container(src, limits or Limits(), name_hint=path.name)


def make_tree(root: Path, *, long_names: bool, rootfs: bool = True) -> Path:
    """A small directory tree with files, an absolute symlink, a hard link and (optionally)
    names longer than ustar's 100/255-byte limits."""
    if rootfs:
        (root / "etc").mkdir(parents=True)
        (root / "etc/hostname").write_text("vm\n")
        os.symlink("/usr/share/zoneinfo/UTC", root / "etc/localtime")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(bytes(range(256)) * 40)
    os.chmod(root / "usr/bin/tool", 0o4755)
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-again")
    os.symlink("usr/bin", root / "bin")
    (root / "var/log").mkdir(parents=True)
    (root / "usr/share").mkdir()
    (root / "usr/share/ünïcödé.txt").write_text("é\n")
    if long_names:
        deep = root / "usr/share" / ("d" * 90) / ("e" * 90)
        deep.mkdir(parents=True)
        (deep / ("f" * 120)).write_bytes(b"long\n")
        os.symlink("t" * 150, root / "usr/share/long-target")
    return root


@pytest.mark.parametrize(
    ("fmt", "long_names"),
    [("gnu", True), ("oldgnu", True), ("posix", True), ("ustar", False), ("v7", False)],
)
def test_gnu_tar_formats_list_like_tar_tvf(fmt: str, long_names: bool, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", long_names=long_names)
    archive = tmp_path / f"{fmt}.tar"
    tools.run("tar", f"--format={fmt}", "-C", tree, "-cf", archive, ".")
    with FileSource(archive) as src:
        assert probe_container(src, src.pread(0, HEAD_SIZE)) == "tar"
    opened = open_path(archive)
    assert our_listing(opened) == gnu_tar_listing(archive)
    assert opened.kind == "rootfs-archive"
    assert opened.problems == [], opened.problems
    assert not opened.partial
    archive_details = opened.details.archive
    assert archive_details is not None
    expected_format = {"posix": "pax", "oldgnu": "gnu"}.get(fmt, fmt)
    assert archive_details.format == expected_format
    assert archive_details.end_marker
    # GNU tar pads the archive to whole 10 KiB records after the end-of-archive marker.
    assert 0 <= archive.stat().st_size - archive_details.archive_size < 10240
    assert opened.uncompressed_size is None
    # GNU tar stores whichever of the two names it meets first; the other is the hard link.
    pair = [m for m in opened.members if m.name.startswith("./usr/bin/tool")]
    stored = next(m for m in pair if m.type == "file")
    link = next(m for m in pair if m.type == "hardlink")
    assert stored.mode == 0o4755 and stored.source is not None
    assert stored.source.pread(0, stored.size) == (tree / "usr/bin/tool").read_bytes()
    assert link.linkname == stored.name
    localtime = opened.member("./etc/localtime")
    assert localtime is not None and localtime.linkname == "/usr/share/zoneinfo/UTC"
    if long_names:
        assert any(len(m.name) > 255 for m in opened.members)
        assert opened.member("./usr/share/long-target").linkname == "t" * 150  # type: ignore[union-attr]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_python_tarfile_formats_with_devices_list_like_tar_tvf(fmt: int, tmp_path: Path) -> None:
    long_name = "data/" + "x" * 80 + "/" + "y" * 60 + ".bin"
    entries = [
        Entry("etc", type=tarfile.DIRTYPE, mode=0o755),
        Entry("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        Entry(long_name if fmt != tarfile.USTAR_FORMAT else "data/short.bin", b"\x01" * 1000),
        Entry("dev/null", type=tarfile.CHRTYPE),
        Entry("dev/sda", type=tarfile.BLKTYPE),
        Entry("run/initctl", type=tarfile.FIFOTYPE),
        Entry("bin/sh", type=tarfile.SYMTYPE, linkname="busybox"),
        Entry("bin/busybox", b"\x7fELF" + bytes(100), mode=0o755),
        Entry("sbin/init", type=tarfile.LNKTYPE, linkname="bin/busybox"),
        Entry("usr", type=tarfile.DIRTYPE, mode=0o755),
    ]
    archive = write_tar(tmp_path / "py.tar", entries, fmt)
    opened = open_path(archive)
    assert our_listing(opened) == gnu_tar_listing(archive)
    assert opened.kind == "rootfs-archive" and opened.problems == []
    null = opened.member("dev/null")
    assert null is not None and (null.devmajor, null.devminor) == (1, 3)
    assert any("device nodes or FIFOs: 3" in note for note in opened.notes)


def test_same_links_and_devices_outside_a_root_filesystem_are_problems(tmp_path: Path) -> None:
    entries = [
        Entry("disk.img", b"\0" * 2048),
        Entry("README", b"read me"),
        Entry("disk-link.img", type=tarfile.SYMTYPE, linkname="/dev/sda"),
        Entry("copy.img", type=tarfile.LNKTYPE, linkname="disk.img"),
        Entry("zero", type=tarfile.CHRTYPE),
        Entry("pipe", type=tarfile.FIFOTYPE),
    ]
    opened = open_path(write_tar(tmp_path / "pkg.tar", entries))
    assert opened.kind == "archive"
    text = " | ".join(opened.problems)
    for phrase in ("symbolic link", "hard link", "character device", "a FIFO"):
        assert phrase in text


def test_rootfs_tarball_made_by_gnu_tar_is_listed_not_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", long_names=False)
    archive = tmp_path / "rootfs.tar"
    tools.run("tar", "-C", tree, "-cf", archive, ".")
    with tarfile.open(archive, "a") as tar:  # device nodes, as a root filesystem has them
        for name, kind in (("./dev/console", tarfile.CHRTYPE), ("./dev/vda", tarfile.BLKTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.devmajor, info.devminor = 5, 1
            tar.addfile(info)
    tools.run("gzip", "-k", archive)
    for path in (archive, tmp_path / "rootfs.tar.gz"):
        opened = open_path(path)
        assert opened.kind == "rootfs-archive", path
        assert opened.problems == []
        assert our_listing(opened) == gnu_tar_listing(path)
        assert any("setuid/setgid files: 1" in note for note in opened.notes)
    # A hard link to something that is not in the archive is refused even in a rootfs:
    with tarfile.open(archive, "a") as tar:
        info = tarfile.TarInfo("./etc/shadow-copy")
        info.type = tarfile.LNKTYPE
        info.linkname = "./etc/shadow"
        tar.addfile(info)
    opened = open_path(archive)
    assert any("not an earlier member" in problem for problem in opened.problems)


def test_the_same_tree_without_etc_is_an_archive_whose_links_are_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", long_names=False, rootfs=False)
    archive = tmp_path / "noroot.tar"
    tools.run("tar", "-C", tree, "-cf", archive, ".")
    opened = open_path(archive)
    assert opened.kind == "archive"
    assert any("symbolic link" in problem for problem in opened.problems)


@pytest.mark.parametrize("compression", ["gz", "xz", "zst", "bz2"])
def test_compressed_tarballs_are_judged_member_by_member(compression: str, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", long_names=True)
    archive = tmp_path / f"rootfs.tar.{compression}"
    tools.run("tar", "-C", tree, "-caf", archive, ".")
    opened = open_path(archive)
    fmt = {"gz": "gzip", "xz": "xz", "zst": "zstd", "bz2": "bzip2"}[compression]
    assert (opened.format, opened.kind, opened.layers) == (fmt, "rootfs-archive", [fmt, "tar"])
    assert our_listing(opened) == gnu_tar_listing(archive)
    assert opened.inner is None and not opened.partial and opened.problems == []
    plain = tmp_path / "plain.tar"
    plain.write_bytes(tools.run("tar", "-C", tree, "-cf", "-", ".").stdout)
    assert opened.uncompressed_size == plain.stat().st_size


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "bzip2"])
def test_a_dotdot_member_far_beyond_the_prefix_is_found(compression: str, tmp_path: Path) -> None:
    filler = [Entry(f"disk{i}.img", os.urandom(64) * (48 * 1024)) for i in range(4)]  # 12 MiB
    archive = write_tar(tmp_path / "deep.tar", [*filler, Entry("../evil", b"x")])
    tools.run(compression, "-k", archive)
    suffix = {"gzip": "gz", "xz": "xz", "zstd": "zst", "bzip2": "bz2"}[compression]
    opened = open_path(tmp_path / f"deep.tar.{suffix}")
    assert opened.members[-1].data_offset > 8 * MiB  # past the 8 MiB prefix inspection once stopped at
    assert any("'..' component" in problem for problem in opened.problems)


def test_gce_style_sparse_disk_tarball(tmp_path: Path) -> None:
    """GCE imports ``tar --format=oldgnu -Sczf disk.tar.gz disk.raw``: a sparse member."""
    disk = raw_disk(tmp_path / "disk.raw", 64 * MiB)
    for offset in (1 * MiB, 33 * MiB + 4096, 60 * MiB):
        tools.qemu_io_write(disk, "raw", offset, 128 * 1024, 0x6B)
    plain = tmp_path / "disk.tar"
    tools.run("tar", "--format=oldgnu", "-S", "-C", tmp_path, "-cf", plain, "disk.raw")
    compressed = tmp_path / "disk.tar.gz"
    tools.run("tar", "--format=oldgnu", "-S", "-C", tmp_path, "-czf", compressed, "disk.raw")
    real = disk.read_bytes()
    assert plain.read_bytes()[482] == 1  # more regions than the header holds: an extension block

    opened = open_path(plain)
    assert opened.kind == "disk-archive" and opened.problems == []
    assert our_listing(opened) == gnu_tar_listing(plain) == [("disk.raw", "file", 64 * MiB)]
    member = opened.members[0]
    assert member.sparse and member.stored_size < 2 * MiB
    assert isinstance(member.source, SparseMemberSource)
    assert member.source.pread(0, member.size) == real

    opened = open_path(compressed)
    assert (opened.format, opened.kind) == ("gzip", "disk-archive")
    member = opened.members[0]
    assert isinstance(member.source, PrefixSource) and member.source.size == 64 * MiB
    head = member.source.pread(0, member.source.prefix_length)
    assert head == real[: member.source.prefix_length] and len(head) >= 2 * MiB
    assert head[510:512] == b"\x55\xaa"


@pytest.mark.parametrize("version", ["0.0", "0.1", "1.0"])
def test_pax_sparse_versions(version: str, tmp_path: Path) -> None:
    disk = tools.sparse_file(tmp_path / "disk.raw", 16 * MiB)
    tools.write_at(disk, 4096, b"start")
    tools.write_at(disk, 9 * MiB, b"middle" * 1000)
    archive = tmp_path / "sparse.tar"
    tools.run(
        "tar",
        "--format=posix",
        f"--sparse-version={version}",
        "-S",
        "-C",
        tmp_path,
        "-cf",
        archive,
        "disk.raw",
    )
    opened = open_path(archive)
    assert our_listing(opened) == gnu_tar_listing(archive)
    member = opened.members[0]
    assert member.sparse and member.source is not None
    assert member.source.pread(0, member.size) == disk.read_bytes()


def test_listing_an_uncompressed_archive_reads_only_headers(tmp_path: Path) -> None:
    for i in range(3):
        tools.sparse_file(tmp_path / f"disk{i}.raw", 32 * MiB)
    archive = tmp_path / "disks.tar"
    tools.run("tar", "-C", tmp_path, "-cf", archive, "disk0.raw", "disk1.raw", "disk2.raw")
    with FileSource(archive) as src:
        opened = open_container(src, Limits())
        read = src.bytes_read
    assert opened.kind == "disk-archive" and [m.size for m in opened.members] == [32 * MiB] * 3
    # The first 64 KiB head, three headers and the end marker / padding: not 96 MiB of data.
    assert read < 128 * 1024, read


def test_member_data_sources_read_the_member_bytes(tmp_path: Path) -> None:
    payloads = {f"f{i}.img": os.urandom(1000 + 700 * i) for i in range(4)}
    archive = write_tar(tmp_path / "data.tar", [Entry(name, data) for name, data in payloads.items()])
    opened = open_path(archive)
    for name, data in payloads.items():
        member = opened.member(name)
        assert member is not None and member.source is not None
        assert member.source.size == len(data)
        assert member.source.pread(0, len(data)) == data


def test_duplicates_are_problems_in_a_disk_archive_and_notes_elsewhere(tmp_path: Path) -> None:
    disk = write_tar(tmp_path / "dup.tar", [Entry("disk.raw", b"a" * 512), Entry("./disk.raw", b"b" * 512)])
    opened = open_path(disk)
    assert opened.kind == "disk-archive"
    assert any("appears twice" in problem for problem in opened.problems)
    other = write_tar(tmp_path / "dup2.tar", [Entry("notes.txt", b"a"), Entry("notes.txt", b"b")])
    opened = open_path(other)
    assert opened.problems == [] and any("appears twice" in note for note in opened.notes)


def test_absolute_and_dotdot_hard_link_targets_are_problems_in_every_kind(tmp_path: Path) -> None:
    rootfs = [Entry(d, type=tarfile.DIRTYPE) for d in ("etc", "usr", "bin", "var")]
    archive = write_tar(
        tmp_path / "links.tar",
        [
            *rootfs,
            Entry("etc/a", type=tarfile.LNKTYPE, linkname="/etc/shadow"),
            Entry("etc/b", type=tarfile.LNKTYPE, linkname="../../etc/shadow"),
        ],
    )
    opened = open_path(archive)
    assert opened.kind == "rootfs-archive"
    assert sum("is a hard link to" in problem for problem in opened.problems) == 2


def test_a_nul_inside_a_long_name_is_a_problem(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("disk.raw")
        info.pax_headers = {"path": "disk.raw\0../../etc/passwd"}
        tar.addfile(info)
    path = tmp_path / "nul.tar"
    path.write_bytes(buf.getvalue())
    opened = open_path(path)
    assert opened.members[0].name == "disk.raw"
    assert any("NUL byte" in problem for problem in opened.problems)


def test_bad_checksum_stops_the_scan_but_keeps_what_came_before(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "c.tar", [Entry(f"f{i}.txt", b"x" * 600) for i in range(4)])
    data = bytearray(archive.read_bytes())
    data[3072 + 10] ^= 0x01  # inside the name of the third member's header (0, 1536, 3072)
    archive.write_bytes(bytes(data))
    opened = open_path(archive)
    assert [m.name for m in opened.members] == ["f0.txt", "f1.txt"]
    assert any("checksum" in problem for problem in opened.problems) and opened.partial


def test_truncated_archives_plain_and_compressed(tmp_path: Path) -> None:
    archive = write_tar(
        tmp_path / "t.tar", [Entry("a.img", os.urandom(5000)), Entry("b.img", os.urandom(5000))]
    )
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[:8000])
    opened = open_path(cut)
    assert any("archive ends" in problem for problem in opened.problems)
    gz = tmp_path / "cut.tar.gz"
    gz.write_bytes(tools.run("gzip", "-c", cut).stdout)
    opened = open_path(gz)
    assert any("truncated" in problem for problem in opened.problems) and opened.partial


def test_member_and_scan_limits(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "many.tar", [Entry(f"f{i}", b"x") for i in range(30)])
    opened = open_path(archive, dataclasses.replace(Limits(), max_archive_members=10))
    assert len(opened.members) == 10 and opened.partial
    assert any("more than 10 members" in problem for problem in opened.problems)
    gz = tmp_path / "many.tar.gz"
    gz.write_bytes(tools.run("gzip", "-c", archive).stdout)
    opened = open_path(gz, dataclasses.replace(Limits(), max_scan_bytes=8192))
    assert opened.partial and any("decompression bomb" in problem for problem in opened.problems)


def test_probe_tells_an_ova_from_a_tar_and_ignores_other_data(tmp_path: Path) -> None:
    ova = write_tar(tmp_path / "x.ova", [Entry("x.ovf", b"<Envelope/>"), Entry("disk.vmdk", b"KDMV")])
    tar = write_tar(tmp_path / "x.tar", [Entry("disk.raw", b"\0" * 100)])
    disk = raw_disk(tmp_path / "d.raw")
    for path, expected in ((ova, "ova"), (tar, "tar"), (disk, None)):
        with FileSource(path) as src:
            assert probe_container(src, src.pread(0, HEAD_SIZE)) == expected


def test_data_after_the_end_marker_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "t.tar", [Entry("disk.raw", b"\0" * 512)])
    with archive.open("ab") as f:
        f.write(b"hidden" * 20000)
    opened = open_path(archive)
    assert any("follows the end-of-archive marker (" in p for p in opened.problems)


def test_zero_padding_after_the_end_marker_is_fine(tmp_path: Path) -> None:
    """tar pads to its record size (10 KiB by default) and beyond: zeros are no members."""
    archive = write_tar(tmp_path / "t.tar", [Entry("disk.raw", b"\0" * 512)])
    with archive.open("ab") as f:
        f.write(bytes(200_000))
    opened = open_path(archive)
    assert opened.problems == []
    assert not any("end-of-archive" in note for note in opened.notes)


def test_an_ovf_file_deep_inside_a_root_filesystem_does_not_make_it_an_ova(tmp_path: Path) -> None:
    dirs = [Entry(d, type=tarfile.DIRTYPE) for d in ("etc", "usr", "bin", "var")]
    rootfs = write_tar(
        tmp_path / "rootfs.tar",
        [
            *dirs,
            Entry("usr/share/appliances/demo.ovf", b"<Envelope/>"),
            Entry("bin/sh", type=tarfile.SYMTYPE, linkname="busybox"),
        ],
    )
    assert open_path(rootfs).kind == "rootfs-archive"
    nested = write_tar(
        tmp_path / "nested.tar", [Entry("export/vm.ovf", b"<Envelope/>"), Entry("export/d.vmdk", b"K")]
    )
    opened = open_path(nested)
    assert opened.kind == "ova"
    assert any("not at the top of the archive" in note for note in opened.notes)


@pytest.mark.parametrize(("length", "refused"), [(255, False), (256, True)])
def test_a_root_filesystem_name_component_longer_than_name_max_is_refused(
    tmp_path: Path, length: int, refused: bool
) -> None:
    """NAME_MAX is 255 bytes (build once stopped half way on a longer one); GNU tar agrees."""
    name = "etc/" + "é" * (length // 2) + "a" * (length % 2)  # bytes, not characters, count
    tree = tmp_path / "tree"
    for directory in ("etc", "usr", "bin", "var", "lib", "sbin"):
        (tree / directory).mkdir(parents=True)
    archive = write_tar(
        tmp_path / "rootfs.tar",
        [
            *(
                Entry(d, type=tarfile.DIRTYPE, mode=0o755)
                for d in ("etc", "usr", "bin", "var", "lib", "sbin")
            ),
            Entry(name, b"x"),
        ],
    )
    opened = open_path(archive)
    assert opened.kind == "rootfs-archive"
    assert any("more than the 255 a Linux file system holds" in p for p in opened.problems) == refused
    if not refused:  # the independent check: GNU tar extracts it
        tools.run("tar", "-xf", archive, "-C", tree)
        assert (tree / name).read_bytes() == b"x"
