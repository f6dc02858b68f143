"""One guest contract, two backends: the same calls, the same answers, the same refusals.

Every case runs against the e2fs backend (debugfs, on ext4) and the libguestfs backend
(guestfish, on xfs), through ``open_guest`` on a flat image. Each backend keeps one writable
guest for the whole module (a libguestfs appliance takes 13-20 s to start); every case works
in a directory of its own. Refusals are compared word for word. What the cases leave behind
is read back at the end, after the image was saved, by readers that are not the backend:
debugfs ``ls -p``/``cat`` and e2fsck for ext4; xfs_repair and a fresh guestfish for xfs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.fixtures.tools import run
from tests.guest.images import GuestImage, cat, e2fsck_clean, flat_ext4, listing

from imagewright.errors import GuestFilesystemError, InvalidArgumentError
from imagewright.guest import FileType, GuestFileNotFoundError, GuestFS, open_guest
from imagewright.guest.base import MAX_ID
from imagewright.programs.guestfish import environment

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("guest-contract")]

MIB = 1 << 20
XFS_SIZE = 320 * MIB  # mkfs.xfs wants at least 300 MB


@dataclass
class Backend:
    """One open guest and what the cases expect to find in its image afterwards."""

    name: str
    image: Path
    guest: GuestFS
    #: guest path -> (mode with type bits, uid, gid, content; None for a directory)
    expected: dict[str, tuple[int, int, int, bytes | None]] = field(default_factory=dict)

    def expect(self, path: str) -> None:
        """Record ``path`` as it is now (read through the guest), to be read back independently."""
        found = self.guest.stat(path)
        content = None if found.is_dir else self.guest.read_file(path)
        self.expected[path] = (found.type.ifmt | found.mode, found.uid, found.gid, content)


def _new_xfs(path: Path) -> Path:
    with path.open("wb") as f:
        f.truncate(XFS_SIZE)
    run("mkfs.xfs", "-q", path)
    return path


def _check_ext4(backend: Backend) -> None:
    image = GuestImage(backend.image, 0)
    clean, output = e2fsck_clean(image)
    assert clean, output
    for path, (mode, uid, gid, content) in backend.expected.items():
        parent, _, name = path.rpartition("/")
        found_mode, found_uid, found_gid, _ = listing(image, parent or "/")[name]
        # debugfs prints ids as signed 32-bit numbers
        assert (found_mode, found_uid & 0xFFFFFFFF, found_gid & 0xFFFFFFFF) == (mode, uid, gid), path
        if content is not None:
            assert cat(image, path) == content, path


def _check_xfs(backend: Backend, scratch: Path) -> None:
    assert run("xfs_repair", "-n", backend.image, check=False).returncode == 0
    paths = sorted(backend.expected)
    commands: list[str | Path] = []
    for index, path in enumerate(paths):
        commands += ["lstatns", path, ":"]
        if backend.expected[path][3] is not None:
            commands += ["download", path, scratch / str(index), ":"]
    output = run(
        "guestfish", "--ro", "--format=raw", "-a", backend.image, "-m", "/dev/sda", *commands[:-1]
    ).stdout.decode()
    records = output.split("st_dev:")[1:]
    assert len(records) == len(paths)
    for index, (path, record) in enumerate(zip(paths, records, strict=True)):
        fields = dict(re.findall(r"^(st_\w+): (-?\d+)$", record, re.M))
        mode, uid, gid, content = backend.expected[path]
        assert (int(fields["st_mode"]), int(fields["st_uid"]), int(fields["st_gid"])) == (mode, uid, gid), (
            path
        )
        if content is not None:
            assert (scratch / str(index)).read_bytes() == content, path


@pytest.fixture(
    scope="module",
    params=["e2fs", pytest.param("libguestfs", marks=pytest.mark.slow)],
)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    directory = tmp_path_factory.mktemp(request.param)
    monkeypatch = pytest.MonkeyPatch()
    if request.param == "e2fs":
        empty = directory / "tree"
        empty.mkdir()
        image = flat_ext4(empty, directory / "contract.ext4", size_mib=16).path
    else:
        for key, value in environment().items():  # the same settings for our guestfish as for imagewright's
            monkeypatch.setenv(key, value)
        image = _new_xfs(directory / "contract.xfs")
    try:
        with open_guest(image, writable=True) as guest:
            found = Backend(request.param, image, guest)
            yield found
        if request.param == "e2fs":
            _check_ext4(found)
        else:
            scratch = directory / "downloads"
            scratch.mkdir()
            _check_xfs(found, scratch)
    finally:
        monkeypatch.undo()


@pytest.fixture
def here(backend: Backend, request: pytest.FixtureRequest) -> str:
    """A new directory of this case's own in the shared guest."""
    path = "/" + request.node.originalname
    backend.guest.mkdir(path)
    return path


def refusal(kind: type[Exception], call: object, *args: object, **kwargs: object) -> str:
    """The message of the error ``call(*args, **kwargs)`` raises, which must be a ``kind``."""
    assert callable(call)
    with pytest.raises(kind) as caught:
        call(*args, **kwargs)
    assert type(caught.value) is kind, repr(caught.value)
    return str(caught.value)


# ---- the rules --------------------------------------------------------------------------


def test_ids_are_0_to_2_to_the_32_minus_2(backend: Backend, here: str) -> None:
    guest = backend.guest
    path = f"{here}/file"
    guest.write_file(path, b"x", uid=MAX_ID, gid=MAX_ID - 1)
    assert (guest.stat(path).uid, guest.stat(path).gid) == (4294967294, 4294967293)
    for bad in (MAX_ID + 1, -1, 1 << 40):
        sentence = f"{bad} is not a user or group id (0 to 4294967294)."
        assert refusal(InvalidArgumentError, guest.write_file, path, b"y", uid=bad) == sentence
        assert refusal(InvalidArgumentError, guest.write_file, path, b"y", gid=bad) == sentence
        assert refusal(InvalidArgumentError, guest.chown, path, 0, bad) == sentence
        assert refusal(InvalidArgumentError, guest.mkdir, f"{here}/dir", uid=bad) == sentence
    guest.chown(path, 0, MAX_ID)
    assert (guest.stat(path).uid, guest.stat(path).gid) == (0, MAX_ID)
    assert guest.read_file(path) == b"x"
    assert not guest.exists(f"{here}/dir")
    backend.expect(path)


def test_modes_are_0_to_7777_and_survive_chown(backend: Backend, here: str) -> None:
    guest = backend.guest
    path = f"{here}/suid"
    guest.write_file(path, b"#!/bin/sh\n", mode=0o6755, uid=5, gid=6)
    assert guest.stat(path).mode == 0o6755
    guest.chown(path, 7, 8)  # the kernel's chown(2) would drop set-uid and set-gid here
    assert guest.stat(path).mode == 0o6755
    guest.chmod(path, 0o7777)
    assert guest.stat(path).mode == 0o7777
    for bad, shown in ((0o10000, "10000"), (-1, "-1")):
        sentence = f"'{shown}' is not a file mode (0000 to 7777)."
        assert refusal(InvalidArgumentError, guest.chmod, path, bad) == sentence
        assert refusal(InvalidArgumentError, guest.write_file, path, b"", mode=bad) == sentence
        assert refusal(InvalidArgumentError, guest.mkdir, f"{here}/dir", mode=bad) == sentence
    guest.mkdir(f"{here}/sticky", mode=0o1777, uid=3, gid=4)
    sticky = guest.stat(f"{here}/sticky")
    assert (sticky.type, sticky.mode, sticky.uid, sticky.gid) == (FileType.DIRECTORY, 0o1777, 3, 4)
    backend.expect(path)
    backend.expect(f"{here}/sticky")


def test_link_targets_follow_the_path_rule(backend: Backend, here: str) -> None:
    guest = backend.guest
    for index, target in enumerate(["relative/with spaces\tand a tab", "/absolute", "../" + "x" * 1000]):
        guest.symlink(target, f"{here}/ok{index}")
        assert guest.readlink(f"{here}/ok{index}") == target
    for bad in ("", "a\nb", "a\rb", "a\0b"):
        assert refusal(InvalidArgumentError, guest.symlink, bad, f"{here}/bad") == (
            "A symbolic link target must be non-empty, without NUL or line breaks."
        )
    assert refusal(InvalidArgumentError, guest.symlink, "x" * 4096, f"{here}/bad") == (
        "A symbolic link target is longer than Linux allows (4095 bytes)."
    )
    assert not guest.exists(f"{here}/bad")
    assert refusal(GuestFilesystemError, guest.symlink, "/x", f"{here}/ok0") == (
        f"{here}/ok0 already exists in {guest.description}."
    )


def test_chmod_of_a_link_is_refused_chown_changes_the_link(backend: Backend, here: str) -> None:
    guest = backend.guest
    guest.write_file(f"{here}/target", b"t", mode=0o640, uid=1, gid=1)
    guest.symlink("target", f"{here}/link")
    assert refusal(GuestFilesystemError, guest.chmod, f"{here}/link", 0o600) == (
        f"{here}/link in {guest.description} is a symbolic link; Linux gives links no mode of their own."
    )
    guest.chown(f"{here}/link", 9, 9)
    assert (guest.stat(f"{here}/link").uid, guest.stat(f"{here}/target").uid) == (9, 1)
    assert guest.stat(f"{here}/target").mode == 0o640
    backend.expect(f"{here}/target")


# ---- writing files ----------------------------------------------------------------------


def test_new_files_are_0644_root_and_replacing_keeps_mode_and_owner(backend: Backend, here: str) -> None:
    guest = backend.guest
    guest.write_file(f"{here}/new", b"1")
    guest.write_file(f"{here}/kept", b"1", mode=0o600, uid=12, gid=34)
    guest.write_file(f"{here}/kept", b"second")
    guest.write_file(f"{here}/changed", b"1", mode=0o600, uid=12, gid=34)
    guest.write_file(f"{here}/changed", b"2", mode=0o640, uid=0)
    facts = {name: guest.stat(f"{here}/{name}") for name in ("new", "kept", "changed")}
    assert {n: (s.mode, s.uid, s.gid, s.size) for n, s in facts.items()} == {
        "new": (0o644, 0, 0, 1),
        "kept": (0o600, 12, 34, 6),
        "changed": (0o640, 0, 34, 1),
    }
    for name in facts:
        backend.expect(f"{here}/{name}")


def test_a_link_in_the_way_is_replaced_not_written_through(backend: Backend, here: str) -> None:
    guest = backend.guest
    guest.write_file(f"{here}/target", b"untouched", mode=0o600, uid=3, gid=3)
    guest.symlink("target", f"{here}/link")
    guest.write_file(f"{here}/link", b"new file")
    assert guest.stat(f"{here}/link").type is FileType.REGULAR
    assert (guest.stat(f"{here}/link").mode, guest.stat(f"{here}/link").uid) == (0o644, 0)
    assert guest.read_file(f"{here}/target") == b"untouched"
    backend.expect(f"{here}/link")
    backend.expect(f"{here}/target")


def test_writes_through_a_linked_parent_land_in_the_real_directory(backend: Backend, here: str) -> None:
    guest = backend.guest
    guest.mkdir(f"{here}/real")
    guest.symlink("real", f"{here}/alias")
    guest.symlink(f"{here}/real", f"{here}/absolute-alias")
    guest.write_file(f"{here}/alias/file", b"via a relative link")
    guest.write_file(f"{here}/absolute-alias/other", b"via an absolute link")
    guest.mkdir(f"{here}/alias/sub/deeper", parents=True)
    guest.symlink("../file", f"{here}/alias/sub/link")
    assert sorted(e.name for e in guest.listdir(f"{here}/real")) == ["file", "other", "sub"]
    assert guest.read_file(f"{here}/real/sub/link") == b"via a relative link"
    backend.expect(f"{here}/real/file")
    backend.expect(f"{here}/real/other")
    backend.expect(f"{here}/real/sub/deeper")


def test_writes_that_cannot_be_placed_are_refused(backend: Backend, here: str) -> None:
    guest = backend.guest
    where = guest.description
    guest.write_file(f"{here}/file", b"x")
    guest.mkdir(f"{here}/dir")
    guest.symlink("nowhere", f"{here}/dangling")
    assert refusal(GuestFilesystemError, guest.write_file, f"{here}/dir", b"x") == (
        f"{here}/dir in {where} is a directory."
    )
    assert refusal(GuestFileNotFoundError, guest.write_file, f"{here}/missing/file", b"x") == (
        f"The directory {here}/missing does not exist in {where}."
    )
    assert refusal(GuestFileNotFoundError, guest.symlink, "x", f"{here}/dangling/file") == (
        f"The directory {here}/dangling does not exist in {where}."
    )
    assert refusal(GuestFilesystemError, guest.write_file, f"{here}/file/below", b"x") == (
        f"{here}/file in {where} is not a directory."
    )
    assert refusal(GuestFilesystemError, guest.mkdir, f"{here}/file/sub", parents=True) == (
        f"{here}/file in {where} exists and is not a directory."
    )
    assert (
        refusal(GuestFilesystemError, guest.mkdir, f"{here}/dir") == f"{here}/dir already exists in {where}."
    )
    assert refusal(GuestFileNotFoundError, guest.mkdir, f"{here}/no/parent") == (
        f"The directory {here}/no does not exist in {where}."
    )
    guest.mkdir(f"{here}/dir", parents=True)  # exists: nothing to do
    assert sorted(e.name for e in guest.listdir(here)) == ["dangling", "dir", "file"]


def test_copy_in_and_copy_out_with_awkward_host_names(backend: Backend, here: str, tmp_path: Path) -> None:
    guest = backend.guest
    source = tmp_path / 'a "host"\nfile with a line break'
    source.write_bytes(b"from the host\n")
    guest.copy_in(source, f"{here}/copied", mode=0o600)
    assert guest.read_file(f"{here}/copied") == b"from the host\n"
    out = tmp_path / "out file"
    guest.copy_out(f"{here}/copied", out)
    assert out.read_bytes() == b"from the host\n"
    bad_out = tmp_path / "out\nfile"
    assert refusal(GuestFilesystemError, guest.copy_out, f"{here}/copied", bad_out) == (
        f"The host path {str(bad_out)!r} contains a control character."
    )
    assert refusal(GuestFilesystemError, guest.copy_in, tmp_path, f"{here}/x") == (
        f"{tmp_path} is not a regular file on this machine."
    )
    backend.expect(f"{here}/copied")


# ---- reading ----------------------------------------------------------------------------


def test_reads_follow_links_and_refuse_what_is_not_a_file(backend: Backend, here: str) -> None:
    guest = backend.guest
    where = guest.description
    guest.write_file(f"{here}/file", b"0123456789")
    guest.symlink("file", f"{here}/link")
    guest.symlink("link", f"{here}/link2")
    guest.symlink("loop", f"{here}/loop")
    assert guest.read_file(f"{here}/link2") == b"0123456789"
    assert guest.resolve(f"{here}/link2") == f"{here}/file"
    assert guest.stat(f"{here}/link2", follow=True).size == 10
    assert refusal(GuestFilesystemError, guest.read_file, f"{here}/link", limit=9) == (
        f"{here}/link in {where} is 10 bytes, more than the 9 read at once."
    )
    assert (
        refusal(GuestFilesystemError, guest.read_file, here)
        == f"{here} in {where} is a directory, not a file."
    )
    assert refusal(GuestFileNotFoundError, guest.read_file, f"{here}/nothing") == (
        f"{here}/nothing does not exist in {where}."
    )
    assert refusal(GuestFilesystemError, guest.read_file, f"{here}/loop") == (
        f"Too many levels of symbolic links at {here}/loop in {where}."
    )
    assert refusal(GuestFilesystemError, guest.readlink, f"{here}/file") == (
        f"{here}/file in {where} is not a symbolic link."
    )
    assert refusal(GuestFilesystemError, guest.listdir_many, [f"{here}/file"]) == (
        f"{here}/file in {where} is not a directory."
    )
    assert refusal(GuestFileNotFoundError, guest.listdir, f"{here}/nothing") == (
        f"{here}/nothing does not exist in {where}."
    )
    assert sorted(e.name for e in guest.listdir(f"{here}/..{here}/./")) == ["file", "link", "link2", "loop"]


def test_glob_and_walk(backend: Backend, here: str) -> None:
    guest = backend.guest
    guest.mkdir(f"{here}/a/b/c", parents=True)
    for name in ("a/.hidden", "a/b/one", "a/b/two", "a/b/c/three"):
        guest.write_file(f"{here}/{name}", b"")
    guest.symlink(here, f"{here}/a/b/up")  # a loop for a walk that followed links
    assert guest.glob(f"{here}/a/*") == [f"{here}/a/.hidden", f"{here}/a/b"]
    assert guest.glob(f"{here}/*/b/t*") == [f"{here}/a/b/two"]
    walked = {directory: sorted(e.name for e in entries) for directory, entries in guest.walk(f"{here}/a")}
    assert walked == {
        f"{here}/a": [".hidden", "b"],
        f"{here}/a/b": ["c", "one", "two", "up"],
        f"{here}/a/b/c": ["three"],
    }


# ---- deleting and truncating ------------------------------------------------------------


def test_delete(backend: Backend, here: str) -> None:
    guest = backend.guest
    where = guest.description
    guest.mkdir(f"{here}/tree/sub", parents=True)
    guest.write_file(f"{here}/tree/sub/file", b"x")
    guest.write_file(f"{here}/kept", b"kept")
    guest.symlink("kept", f"{here}/link")
    guest.mkdir(f"{here}/empty")
    assert refusal(GuestFilesystemError, guest.delete, f"{here}/tree") == (
        f"The directory {here}/tree in {where} is not empty."
    )
    assert refusal(GuestFileNotFoundError, guest.delete, f"{here}/nothing") == (
        f"{here}/nothing does not exist in {where}."
    )
    assert refusal(GuestFilesystemError, guest.delete, "/", recursive=True) == (
        "Refusing to delete the root directory of a guest."
    )
    guest.delete(f"{here}/nothing", missing_ok=True)
    guest.delete(f"{here}/empty")
    guest.delete(f"{here}/link")
    gone = guest.delete_many([f"{here}/tree", f"{here}/absent"])
    assert {path: info.type for path, info in gone.items()} == {f"{here}/tree": FileType.DIRECTORY}
    assert [e.name for e in guest.listdir(here)] == ["kept"]
    backend.expect(f"{here}/kept")


def test_truncate_keeps_the_inode_and_follows_links(backend: Backend, here: str) -> None:
    guest = backend.guest
    guest.write_file(f"{here}/log", b"x" * 5000, mode=0o640, uid=4, gid=4)
    guest.symlink("log", f"{here}/link")
    before = guest.stat(f"{here}/log")
    guest.truncate_many([f"{here}/link"])
    after = guest.stat(f"{here}/log")
    assert (after.inode, after.mode, after.uid, after.size) == (before.inode, 0o640, 4, 0)
    assert guest.stat(f"{here}/link").is_symlink
    assert refusal(GuestFilesystemError, guest.truncate, here) == (
        f"{here} in {guest.description} is a directory, not a file."
    )
    backend.expect(f"{here}/log")


def test_refused_calls_change_nothing(backend: Backend, here: str) -> None:
    guest = backend.guest
    guest.write_file(f"{here}/file", b"x", mode=0o600)
    before = {e.name: e for e in guest.listdir(here)}
    for call in (
        lambda: guest.write_file(f"{here}/file", b"y", uid=-1),
        lambda: guest.symlink("a\nb", f"{here}/link"),
        lambda: guest.mkdir(f"{here}/d", mode=0o17777),
        lambda: guest.chmod(f"{here}/file", 0o10000),
    ):
        with pytest.raises(InvalidArgumentError):
            call()
    assert {e.name: e for e in guest.listdir(here)} == before
    assert guest.read_file(f"{here}/file") == b"x"


def test_paths_are_checked_the_same_way(backend: Backend) -> None:
    guest = backend.guest
    for bad in ("relative", "/a\nb", "/nul\0", "/cr\r", "", "/" + "x" * 4095):
        with pytest.raises(InvalidArgumentError):
            guest.stat(bad)
        with pytest.raises(InvalidArgumentError):
            guest.write_file(bad, b"")
