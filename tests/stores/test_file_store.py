"""What only the file store has: a full disk, sparse blobs, its directory and its temp files.

A full disk is a small tmpfs mounted for the test (we are root); a read-only store is that
tmpfs remounted read-only. Blobs are cross-checked with ``cmp`` against the bytes written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.tools import bind_mounted, mounted_tmpfs, run
from tests.stores.conftest import file_path_of

from imagewright.errors import StoreError
from imagewright.stores import open_stores
from imagewright.stores.file import HOLE_GRAIN, FileStore

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "small", "8m") as mountpoint:
        yield mountpoint


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def test_a_full_disk_is_one_sentence_and_leaves_nothing(small_disk: Path) -> None:
    store = FileStore("default", small_disk / "images")
    store.check()
    data = os.urandom(MiB)
    writer = store.writer("too-big")
    with pytest.raises(StoreError) as info:
        for _ in range(16):
            writer.write(data)
    message = str(info.value)
    assert message == (
        f"The store 'default' is full: no space left on {small_disk / 'images'} while writing too-big "
        "(No space left on device)."
    )
    assert info.value.__cause__ is None
    assert writer.finished is False
    with pytest.raises(StoreError, match="already aborted"):
        writer.finish()
    assert files_under(small_disk) == []
    usage = store.usage()
    assert usage is not None and usage.capacity_bytes == 8 * MiB
    assert usage.free_bytes > 7 * MiB  # the temp's space came back
    # and the store still works
    with store.writer("small") as small:
        small.write(data)
        location = small.finish()
    assert file_path_of(location).read_bytes() == data


def test_zeros_become_holes_and_read_back_as_zeros(small_disk: Path, tmp_path: Path) -> None:
    # 64 MiB of mostly zeros fits an 8 MiB disk only as a sparse file.
    store = FileStore("default", small_disk / "images")
    marks = {0: b"head", 5 * MiB + 3: b"middle-not-aligned", 64 * MiB - 4: b"tail"}
    size = 64 * MiB
    reference = tmp_path / "reference"
    with reference.open("wb") as f:
        f.truncate(size)
        for offset, mark in marks.items():
            f.seek(offset)
            f.write(mark)
    with store.writer("sparse") as writer, reference.open("rb") as source:
        while chunk := source.read(300_000):  # chunks not aligned to the hole grain
            writer.write(chunk)
        location = writer.finish()
    blob = file_path_of(location)
    assert blob.stat().st_size == size
    assert blob.stat().st_blocks * 512 <= 4 * HOLE_GRAIN  # only the grains with marks hold data
    run("cmp", reference, blob)
    streamed = b"".join(store.read_chunks(location))
    assert len(streamed) == size
    for offset, mark in marks.items():
        assert streamed[offset : offset + len(mark)] == mark
    assert streamed.count(0) == size - sum(len(m) for m in marks.values())
    middle = b"".join(store.read_chunks(location, 5 * MiB, 5 * MiB + 100))
    assert middle == bytes(3) + b"middle-not-aligned" + bytes(79)


def test_a_blob_ending_in_zeros_keeps_its_size(tmp_path: Path) -> None:
    store = FileStore("default", tmp_path / "images")
    with store.writer("trailing") as writer:
        writer.write(b"data")
        writer.write(bytes(4 * HOLE_GRAIN))
        location = writer.finish()
    assert file_path_of(location).read_bytes() == b"data" + bytes(4 * HOLE_GRAIN)
    with store.writer("only-zeros") as writer:
        writer.write(bytes(2 * HOLE_GRAIN))
        location = writer.finish()
    assert file_path_of(location).read_bytes() == bytes(2 * HOLE_GRAIN)
    assert file_path_of(location).stat().st_blocks == 0


def test_read_only_store_is_one_sentence(small_disk: Path) -> None:
    store = FileStore("ro", small_disk / "images")
    store.check()
    run("mount", "-o", "remount,ro", small_disk)
    with pytest.raises(StoreError, match=r"^The directory .*/images of the store 'ro' is not writable\.$"):
        store.check()
    with pytest.raises(StoreError) as info:
        store.writer("abc")
    assert str(info.value).endswith(".") and "\n" not in str(info.value)
    assert "Read-only file system" in str(info.value)


def test_check_creates_the_directory(tmp_path: Path) -> None:
    stores = open_stores([], tmp_path / "data")
    store = stores.default
    assert isinstance(store, FileStore)
    assert store.root == tmp_path / "data" / "images"
    assert store.info.is_default and store.info.id == "default"
    stores.check()
    assert store.root.is_dir()


def test_layout_and_temp_names(tmp_path: Path) -> None:
    store = FileStore("default", tmp_path / "images")
    with store.writer("3f2a-image") as writer:
        writer.write(b"x")
        temp = writer.temp_path
        assert temp.parent == tmp_path / "images" / "3f"
        assert temp.name.startswith(f".3f2a-image.iw-{os.getpid()}-")
        assert temp.exists()
        location = writer.finish()
    assert not temp.exists()
    assert location == (tmp_path / "images" / "3f" / "3f2a-image").as_uri()
    assert files_under(tmp_path / "images") == ["3f/3f2a-image"]
    assert oct((tmp_path / "images" / "3f" / "3f2a-image").stat().st_mode & 0o777) == oct(0o640)


def test_what_is_not_a_blob_is_neither_listed_nor_opened(tmp_path: Path) -> None:
    store = FileStore("default", tmp_path / "images")
    with store.writer("real") as writer:
        writer.write(b"real")
        real = writer.finish()
    fanout = tmp_path / "images" / "ab"
    fanout.mkdir()
    (fanout / "abc-link").symlink_to("/etc/passwd")  # planted by someone with write access
    (fanout / "xyz").write_bytes(b"in the wrong fan-out directory")
    (fanout / "abdir").mkdir()
    (tmp_path / "images" / "toplevel").write_bytes(b"not in a fan-out directory")
    assert list(store.iter_locations()) == [real]
    with pytest.raises(StoreError, match="is a symbolic link, not a blob"):
        store.open(store.location_for("abc-link"))
    assert not store.exists(store.location_for("abc-link"))
    with pytest.raises(StoreError, match="is not a regular file"):
        store.read_chunks(store.location_for("abdir"))
    assert store.sweep_incomplete(0) == []
    assert (fanout / "xyz").exists() and (tmp_path / "images" / "toplevel").exists()


def test_sweep_removes_idle_temps_of_live_pids_only_past_the_threshold(tmp_path: Path) -> None:
    # A live pid on a temp: either a slow live writer or a dead writer whose pid was reused.
    store = FileStore("default", tmp_path / "images")
    stale = store.writer("stale")
    stale.write(b"old")
    fresh = store.writer("fresh")
    fresh.write(b"new")
    hour_ago = time.time() - 3600
    os.utime(stale.temp_path, (hour_ago, hour_ago))
    assert store.sweep_incomplete(7200) == []
    assert store.sweep_incomplete(600) == [str(stale.temp_path)]
    assert fresh.temp_path.exists()
    fresh.write(b"er")
    assert fresh.finish() == store.location_for("fresh")
    with pytest.raises(StoreError):
        stale.finish()  # its temp is gone: the write fails in one sentence, nothing appears
    assert not store.exists(store.location_for("stale"))
    assert files_under(tmp_path / "images") == ["fr/fresh"]


def test_adopt_renames_the_file_in_keeping_its_holes(tmp_path: Path) -> None:
    store = FileStore("default", tmp_path / "images")
    scratch = tmp_path / "scratch" / "converted.raw"
    scratch.parent.mkdir()
    with scratch.open("wb") as f:  # 64 MiB with 8 bytes of data: what qemu-img convert leaves
        f.truncate(64 * MiB)
        f.write(b"bootsect")
    before = scratch.stat()
    location = store.adopt("adopted", scratch)
    blob = file_path_of(location)
    after = blob.stat()
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)  # the same file, moved
    assert after.st_size == 64 * MiB and after.st_blocks == before.st_blocks
    assert after.st_mode & 0o7777 == 0o640
    assert not scratch.exists()
    assert files_under(tmp_path / "images") == ["ad/adopted"]
    assert b"".join(store.read_chunks(location, 0, 16)) == b"bootsect" + bytes(8)


@pytest.mark.parametrize("across", ["tmpfs", "bind mount"])
def test_adopt_across_filesystems_or_mounts_streams_the_file(tmp_path: Path, across: str) -> None:
    """A tmpfs is another filesystem; a bind mount of the same one makes rename fail with EXDEV."""
    store = FileStore("default", tmp_path / "images")
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    if across == "tmpfs":
        context = mounted_tmpfs(tmp_path / "elsewhere", "80m")
    else:
        context = bind_mounted(source_dir, tmp_path / "elsewhere")
    with context as elsewhere:
        scratch = elsewhere / "converted.raw"
        with scratch.open("wb") as f:
            f.truncate(40 * MiB)
            f.write(b"head")
            f.seek(20 * MiB)
            f.write(b"middle")
        reference = tmp_path / "reference"
        run("cp", "--sparse=always", scratch, reference)
        reported: list[int] = []
        location = store.adopt("streamed", scratch, reported.append)
        assert not scratch.exists()
    blob = file_path_of(location)
    run("cmp", reference, blob)
    assert blob.stat().st_blocks * 512 <= 4 * HOLE_GRAIN  # written sparsely, as a writer does
    assert blob.stat().st_mode & 0o7777 == 0o640
    assert reported[-1] == 40 * MiB
    assert files_under(tmp_path / "images") == ["st/streamed"]


def test_adopt_stops_when_its_progress_raises_and_keeps_the_file(tmp_path: Path) -> None:
    store = FileStore("default", tmp_path / "images")

    class StopError(Exception):
        pass

    def stop(done: int) -> None:
        if done >= 2 * MiB:
            raise StopError

    with mounted_tmpfs(tmp_path / "elsewhere", "16m") as elsewhere:
        scratch = elsewhere / "converted.raw"
        data = os.urandom(8 * MiB)
        scratch.write_bytes(data)
        with pytest.raises(StopError):
            store.adopt("stopped", scratch, stop)
        assert scratch.read_bytes() == data  # still the caller's
    assert files_under(tmp_path / "images") == []


def test_adopt_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    store = FileStore("default", tmp_path / "images")
    (tmp_path / "target").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "directory").mkdir()
    for name in ("link", "directory"):
        with pytest.raises(StoreError) as info:
            store.adopt("refused", tmp_path / name)
        assert str(info.value).endswith(".") and info.value.__cause__ is None
    assert (tmp_path / "link").is_symlink() and (tmp_path / "directory").is_dir()
    assert files_under(tmp_path / "images") == []
