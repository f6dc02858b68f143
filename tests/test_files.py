"""The files floor (``imagewright.files``): atomic outputs, the sweep, sparse copies, one-sentence errors.

Crashes and interruptions are real: a child process is SIGKILLed between its write and its
rename, or gets SIGINT while writing; a full disk is a small tmpfs (we are root) or
RLIMIT_FSIZE in a child; a read-only directory is a tmpfs remounted read-only.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.tools import mounted_tmpfs, run, sparse_file

from imagewright.errors import ImageIOError, OutputExistsError
from imagewright.files import (
    AtomicOutput,
    ScratchFiles,
    copy_range,
    copy_sparse,
    file_extents,
    io_error,
    memory_scratch_directory,
    reflink,
    sweep_leftovers,
    temp_name,
    write_file_atomically,
)

MiB = 1 << 20
DEAD_PID = 2**22 + 1  # above the kernel's pid_max: never a live process


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test; unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "small", "1m") as mountpoint:
        yield mountpoint


def child(code: str, *args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- the ordinary case -------------------------------------------------------------------------


def test_commit_puts_the_whole_file_in_place_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    with AtomicOutput(target) as out:
        assert out.path.parent == tmp_path and out.path.exists() and out.path.stat().st_size == 0
        assert out.path.name.startswith(f".out.img.iw-{os.getpid()}-")
        out.path.write_bytes(b"complete")
        scratch = out.scratch("raw")
        scratch.write_bytes(b"scratch")
        work = out.scratch_directory("work")
        (work / "inner").write_bytes(b"x")
        assert not target.exists()
        out.commit()
        assert target.read_bytes() == b"complete"
    assert names(tmp_path) == ["out.img"]


def test_several_outputs_committed_with_one_directory_sync_are_each_in_place(tmp_path: Path) -> None:
    outputs = [AtomicOutput(tmp_path / f"part.{index:02}") for index in range(3)]
    for index, out in enumerate(outputs):
        out.path.write_bytes(bytes([index]) * 10)
    for out in outputs[:-1]:
        out.commit(sync_directory=False)
    outputs[-1].commit()
    for out in outputs:
        out.cleanup()
    assert names(tmp_path) == ["part.00", "part.01", "part.02"]
    assert [(tmp_path / f"part.{i:02}").read_bytes() for i in range(3)] == [bytes([i]) * 10 for i in range(3)]


def test_leaving_the_block_without_commit_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    with pytest.raises(RuntimeError), AtomicOutput(target) as out:
        out.path.write_bytes(b"half")
        out.scratch_directory("work")
        raise RuntimeError("stop")
    assert names(tmp_path) == []


def test_mode_is_exact_and_private_until_commit(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        with AtomicOutput(tmp_path / "public", mode=0o644) as out:
            assert out.path.stat().st_mode & 0o777 == 0o600
            out.commit()
        write_file_atomically(tmp_path / "secret", "password\n", mode=0o600)
        with AtomicOutput(tmp_path / "plain") as out:
            out.commit()
    finally:
        os.umask(old_umask)
    assert (tmp_path / "public").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secret").read_text() == "password\n"
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o666  # umask 0: what open() gives


def test_fsyncs_the_file_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_link, real_replace = os.fsync, os.link, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def link(src: str | Path, dst: str | Path) -> None:
        events.append(("link", str(dst)))
        real_link(src, dst)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "out.img"
    with AtomicOutput(target) as out:
        out.path.write_bytes(b"data")
        temp = str(out.path)
        out.commit()
    assert events == [("fsync", temp), ("link", str(target)), ("fsync", str(tmp_path))]
    events.clear()
    write_file_atomically(target, b"new", force=True)
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[1:] == [("replace", str(target)), ("fsync", str(tmp_path))]


# --- refusals ----------------------------------------------------------------------------------


def test_an_existing_target_needs_force(tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"out.img already exists; use --force to replace it\.$"):
        AtomicOutput(target)
    with pytest.raises(OutputExistsError):
        write_file_atomically(target, b"other")
    assert target.read_bytes() == b"precious"
    assert names(tmp_path) == ["out.img"]
    write_file_atomically(target, b"other", force=True)
    assert target.read_bytes() == b"other"
    assert names(tmp_path) == ["out.img"]


def test_a_target_created_meanwhile_is_not_clobbered(tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    with AtomicOutput(target) as out:
        out.path.write_bytes(b"mine")
        target.write_bytes(b"someone else's")
        with pytest.raises(OutputExistsError, match="already exists"):
            out.commit()
    assert target.read_bytes() == b"someone else's"
    assert names(tmp_path) == ["out.img"]


def test_a_directory_is_not_a_target(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    for force in (False, True):
        with pytest.raises(ImageIOError, match=r"dir is a directory; name a file to write\.$"):
            AtomicOutput(tmp_path / "dir", force=force)
    assert names(tmp_path) == ["dir"]
    assert names(tmp_path / "dir") == []


def test_a_missing_directory_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ImageIOError, match=r"^The directory .*/nodir does not exist\.$"):
        AtomicOutput(tmp_path / "nodir" / "out.img")


@pytest.mark.integration
def test_a_read_only_directory_is_one_sentence(tmp_path: Path) -> None:
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mountpoint)
    try:
        (mountpoint / "disk.img").write_bytes(b"old")
        run("mount", "-o", "remount,ro", mountpoint)
        for make in (
            lambda: AtomicOutput(mountpoint / "new.img"),
            lambda: AtomicOutput(mountpoint / "disk.img", in_place=True),
            lambda: ScratchFiles(mountpoint / "disk.img").scratch_directory("work"),
        ):
            with pytest.raises(ImageIOError) as caught:
                make()
            message = str(caught.value)
            assert "ro is not writable (Read-only file system)" in message, message
            assert message.count(".") <= 2 and "\n" not in message, message
        assert names(mountpoint) == ["disk.img"]
    finally:
        run("umount", "-l", mountpoint)


# --- full disks and the file size limit --------------------------------------------------------


@pytest.mark.integration
def test_a_full_disk_leaves_nothing_and_says_so(small_tmpfs: Path) -> None:
    target = small_tmpfs / "big.img"
    with pytest.raises(ImageIOError) as caught:
        write_file_atomically(target, os.urandom(2 * MiB))
    assert str(caught.value) == (
        f"No space left on the filesystem holding {small_tmpfs} while writing big.img "
        "(No space left on device)."
    )
    source = _random_file(small_tmpfs.parent / "source.img", 2 * MiB)
    with pytest.raises(ImageIOError) as caught:
        copy_sparse(source, small_tmpfs / "copy")
    assert str(caught.value) == (
        f"No space left on the filesystem holding {small_tmpfs} while copying source.img "
        "(No space left on device)."
    )
    assert names(small_tmpfs) == ["copy"]  # copy_sparse's target is the caller's (a scratch name)
    with pytest.raises(ImageIOError, match=r"^Copying .*/nothing.img failed: No such file or directory\.$"):
        copy_sparse(small_tmpfs.parent / "nothing.img", small_tmpfs / "copy")


def _random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


WRITE_BIG = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
from pathlib import Path
from imagewright.errors import ImagewrightError
from imagewright.files import write_file_atomically
try:
    write_file_atomically(Path(sys.argv[1]), bytes(2 << 20))
except ImagewrightError as err:
    print(err)
    sys.exit(1)
"""


def test_the_file_size_limit_leaves_nothing_and_says_so(tmp_path: Path) -> None:
    proc = child(WRITE_BIG, tmp_path / "big.img")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    assert stdout.strip() == (
        "A file grew past the largest size this process or its filesystem may write "
        "(File too large; see ulimit -f) while writing big.img."
    )
    assert names(tmp_path) == []


def test_io_error_sentences() -> None:
    path = Path("/data/out.img")
    cases = {
        errno.ENOSPC: "No space left on the filesystem holding /data while writing out.img",
        errno.EDQUOT: "No space left on the filesystem holding /data while writing out.img",
        errno.EFBIG: "A file grew past the largest size this process or its filesystem may write",
        errno.EACCES: "Writing /data/out.img failed: Permission denied.",
        errno.EIO: "Writing /data/out.img failed: Input/output error.",
    }
    for code, start in cases.items():
        error = io_error(OSError(code, os.strerror(code)), path)
        assert type(error) is ImageIOError and str(error).startswith(start), (code, str(error))
    exists = io_error(FileExistsError(errno.EEXIST, "File exists"), path)
    assert isinstance(exists, OutputExistsError) and "use --force" in str(exists)


# --- crashes, Ctrl-C and the sweep -------------------------------------------------------------

WRITE_THEN_WAIT = """
import sys, time
from pathlib import Path
from imagewright.files import AtomicOutput
with AtomicOutput(Path(sys.argv[1])) as out:
    out.path.write_bytes(b"x" * 65536)
    print(out.path, flush=True)
    time.sleep(120)
    out.commit()
"""


def _killed_writer(target: Path) -> Path:
    """Run a writer, SIGKILL it between its write and its rename; return the temporary it left."""
    proc = child(WRITE_THEN_WAIT, target)
    assert proc.stdout is not None
    temp = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return temp


def test_a_writer_killed_before_its_rename_leaves_no_target_and_the_next_run_sweeps(tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    temp = _killed_writer(target)
    assert not target.exists()
    assert names(tmp_path) == [temp.name] and temp.stat().st_size == 65536
    # The next run writing the same target removes what the dead one left.
    with AtomicOutput(target) as out:
        assert sorted(set(names(tmp_path)) - {out.path.name}) == []
        out.path.write_bytes(b"done")
        out.commit()
    assert names(tmp_path) == ["out.img"]


def test_a_start_up_sweep_removes_the_leftovers_of_dead_writers_only(tmp_path: Path) -> None:
    temp = _killed_writer(tmp_path / "a.img")
    dead_dir = tmp_path / f".b.img.iw-{DEAD_PID}-0123abcd.work"
    dead_dir.mkdir()
    (dead_dir / "inner").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"x")
    dead_link = tmp_path / f".c.img.iw-{DEAD_PID}-0123abcd.part"
    dead_link.symlink_to(outside)
    live_names = [
        f".d.img.iw-{os.getpid()}-0123abcd.part",  # this process
        ".e.img.iw-1-0123abcd.part",  # init: alive
    ]
    other_names = [
        "plain.img",
        f".f.img.iw-{DEAD_PID}-xyz.part",  # not our scheme: the token is not 8 hex digits
        f"g.img.iw-{DEAD_PID}-0123abcd.part",  # not hidden
        ".h.img.iw-0-0123abcd.part",  # pid 0 is no writer
    ]
    for name in live_names + other_names:
        (tmp_path / name).write_bytes(b"x")
    removed = sweep_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == sorted([temp.name, dead_dir.name, dead_link.name])
    assert names(tmp_path) == sorted([*live_names, *other_names, "outside"])
    assert names(outside) == ["keep"]  # the link was removed, not followed
    assert sweep_leftovers(tmp_path) == []


def test_a_sweep_for_one_target_leaves_other_targets_leftovers(tmp_path: Path) -> None:
    mine = tmp_path / f".disk.img.iw-{DEAD_PID}-deadbeef.raw"
    other = tmp_path / f".other.img.iw-{DEAD_PID}-deadbeef.raw"
    for path in (mine, other):
        path.write_bytes(b"x")
    assert sweep_leftovers(tmp_path, "disk.img") == [mine]
    assert names(tmp_path) == [other.name]


def test_names_of_odd_targets_stay_short_and_plain(tmp_path: Path) -> None:
    odd = tmp_path / ("a b?c:d*" + "x" * 240)
    name = temp_name(odd, "part").name
    assert len(name) < 120 and name.startswith(".a_b_c_d_xxx")
    stale = tmp_path / name.replace(f"-{os.getpid()}-", f"-{DEAD_PID}-")
    stale.write_bytes(b"x")
    with AtomicOutput(odd) as out:
        out.path.write_bytes(b"ok")
        out.commit()
    assert names(tmp_path) == [odd.name]


WRITE_FOREVER = """
import sys
from pathlib import Path
from imagewright.files import AtomicOutput
with AtomicOutput(Path(sys.argv[1])) as out, out.path.open("wb") as f:
    out.scratch_directory("work")
    block = bytes(1 << 20)
    f.write(block)
    f.flush()
    print("writing", flush=True)
    while True:
        f.seek(0)
        f.write(block)
"""


def test_ctrl_c_during_a_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    proc = child(WRITE_FOREVER, target)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        assert len(names(tmp_path)) == 2  # the temporary and the scratch directory
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()  # it writes forever: a failed test must not leave it spinning
            proc.wait()
    assert "KeyboardInterrupt" in stderr
    assert names(tmp_path) == []


# --- in-place edits ----------------------------------------------------------------------------


def test_in_place_keeps_mode_and_owner(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"old")
    os.chmod(image, 0o640)
    os.chown(image, 1234, 5678)
    with AtomicOutput(image, in_place=True, doing="resizing") as out:
        copy_sparse(image, out.path)
        with out.path.open("ab") as f:
            f.write(b" and new")
        out.commit()
    st = image.stat()
    assert image.read_bytes() == b"old and new"
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert names(tmp_path) == ["disk.img"]


def test_in_place_refuses_a_file_changed_meanwhile(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"a" * 4096)
    with AtomicOutput(image, in_place=True, doing="resizing") as out:
        copy_sparse(image, out.path)
        time.sleep(0.01)  # a different mtime even on coarse clocks
        image.write_bytes(b"b" * 4096)
        with pytest.raises(
            ImageIOError,
            match=r"disk.img changed while imagewright was resizing it; the new version was not saved\.$",
        ):
            out.commit()
    assert image.read_bytes() == b"b" * 4096
    assert names(tmp_path) == ["disk.img"]


# --- sparse copies -----------------------------------------------------------------------------


def _sparse_with_data(path: Path, size: int, offsets: tuple[int, ...]) -> Path:
    sparse_file(path, size)
    with path.open("r+b") as f:
        for offset in offsets:
            f.seek(offset)
            f.write(os.urandom(64 * 1024))
    return path


@pytest.mark.integration
def test_copy_sparse_keeps_holes_and_bytes(tmp_path: Path) -> None:
    size = 256 * MiB
    source = _sparse_with_data(tmp_path / "source.img", size, (0, 100 * MiB + 123, size - 64 * 1024))
    target = tmp_path / "copy.img"
    progress: list[tuple[int, int]] = []
    copy_sparse(source, target, lambda done, total: progress.append((done, total)))
    run("cmp", source, target)
    assert target.stat().st_size == size
    assert target.stat().st_blocks <= source.stat().st_blocks + 2 * MiB // 512
    assert target.stat().st_blocks * 512 < 2 * MiB
    assert progress and progress[-1] == (size, size)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(progress))


@pytest.mark.integration
def test_copy_range_copies_a_region_in_place(tmp_path: Path) -> None:
    source = _sparse_with_data(tmp_path / "source.img", 64 * MiB, (10 * MiB, 12 * MiB + 5))
    region = sparse_file(tmp_path / "region.img", 8 * MiB)
    copy_range(source, 8 * MiB, 8 * MiB, region, 0)
    with source.open("rb") as f:
        f.seek(8 * MiB)
        expected = f.read(8 * MiB)
    assert region.read_bytes() == expected
    assert region.stat().st_blocks * 512 < MiB  # only the two data runs were written


def test_file_extents_cover_the_file_in_order(tmp_path: Path) -> None:
    size = 16 * MiB
    path = _sparse_with_data(tmp_path / "f.img", size, (4 * MiB,))
    with path.open("rb") as f:
        extents = list(file_extents(f.fileno(), size))
    assert extents[0][0] == 0 and sum(length for _, length, _ in extents) == size
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(extents))
    data = [(offset, length) for offset, length, is_data in extents if is_data]
    assert len(data) == 1 and data[0][0] <= 4 * MiB < 4 * MiB + 64 * 1024 <= data[0][0] + data[0][1]
    assert data[0][1] <= MiB


@pytest.mark.integration
def test_reflink_says_when_the_filesystem_cannot(tmp_path: Path, small_tmpfs: Path) -> None:
    """ext4 and tmpfs have no FICLONE (and no clone crosses filesystems): False, an empty target."""
    source = _random_file(tmp_path / "source.img", 4096)
    for target in (tmp_path / "clone", small_tmpfs / "clone"):
        target.write_bytes(b"old")
        assert reflink(source, target) is False
        assert target.stat().st_size == 0
        copy_sparse(source, target)
        run("cmp", source, target)
    with pytest.raises(ImageIOError, match=r"^Copying .*/nothing.img failed: No such file or directory\.$"):
        reflink(tmp_path / "nothing.img", tmp_path / "clone")


# --- scratch space in memory ---------------------------------------------------------------------


def test_memory_scratch_is_a_private_directory_on_tmpfs_swept_of_dead_leftovers(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "shm", "8m") as shm:
        mine = shm / f"imagewright-{os.getuid()}"
        mine.mkdir(mode=0o700)
        leftover = mine / f".disk.qcow2.iw-{DEAD_PID}-0123abcd.tree"
        leftover.mkdir()
        (leftover / "file").write_bytes(b"x")
        directory = memory_scratch_directory(1 * MiB, shm)
        assert directory == mine
        st = os.lstat(directory)
        assert (st.st_mode & 0o7777, st.st_uid) == (0o711, os.getuid())
        assert not leftover.exists()
        with ScratchFiles(tmp_path / "disk.qcow2", directory) as scratch:
            tree = scratch.scratch_directory("tree")
            (tree / "etc").mkdir()
            assert tree.parent == directory
        assert list(directory.iterdir()) == []


def test_memory_scratch_is_refused_when_the_tree_would_not_fit(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "shm", "8m") as shm:
        assert memory_scratch_directory(16 * MiB, shm) is None
        assert not (shm / f"imagewright-{os.getuid()}").exists()


def test_memory_scratch_is_never_on_a_disk_filesystem(tmp_path: Path) -> None:
    assert memory_scratch_directory(1, tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_memory_scratch_can_be_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEWRIGHT_MEMORY_SCRATCH", "0")
    with mounted_tmpfs(tmp_path / "shm", "8m") as shm:
        assert memory_scratch_directory(1, shm) is None


@pytest.mark.parametrize("planted", ["other-owner", "symlink", "file"])
def test_memory_scratch_never_uses_a_name_someone_else_planted(tmp_path: Path, planted: str) -> None:
    with mounted_tmpfs(tmp_path / "shm", "8m") as shm:
        name = shm / f"imagewright-{os.getuid()}"
        elsewhere = shm / "elsewhere"
        elsewhere.mkdir()
        if planted == "other-owner":
            name.mkdir()
            os.chown(name, os.getuid() + 1, os.getgid())  # the tests run as root
        elif planted == "symlink":
            name.symlink_to(elsewhere)
        else:
            name.write_bytes(b"")
        assert memory_scratch_directory(1, shm) is None
        assert list(elsewhere.iterdir()) == []
