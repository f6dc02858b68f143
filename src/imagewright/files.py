"""The files floor: temporary names, atomic outputs, sparse copies and the sweep of leftovers.

Every room that writes a file the user (or another process) will read goes through here:
convert/build outputs, the images resize and guest edits replace, context media, blobs and
the small text files services write (``clouds.yaml``, ``openrc``, secrets at 0600).

The promise, whatever happens — an error, Ctrl-C, a killed child, a full disk, SIGKILL of
this process, a power cut after ``commit`` returned:

- a target name holds either its old content or the complete new one, never a part;
- nothing else is left behind, except after SIGKILL (or a power cut), and the next run
  removes that (``sweep_leftovers``) because the dead process's id is in the name.

How (the shape of cloud-init's ``atomic_helper.write_file`` and KIWI's
``utils/temporary.Temporary``, with what they leave out: fsync, no-clobber, the sweep,
errors as one sentence):

1. **One naming scheme.** ``.<target name>.iw-<pid>-<8 hex>.<what>`` in the target's own
   directory: hidden, on the same filesystem (so ``rename`` is atomic, a reflink is possible
   and free space is counted where it matters), telling a person what left it (``iw-``, which
   target, what for) and telling a sweep whether its writer still lives (the pid).
2. **Atomic output** (``AtomicOutput``): the temporary file is created at once (``O_EXCL``;
   so an unwritable directory fails before any work, and the name cannot be pre-planted),
   private (0600) when a final ``mode`` is given; ``commit`` fsyncs it, gives it its mode,
   renames it into place and fsyncs the directory. Without ``force`` the final step is a hard
   link, which fails if someone created the target meanwhile (race-free no-clobber); ``force``
   and in-place edits use ``rename``. Leaving the ``with`` block without ``commit`` removes
   the temporary file and every scratch file and directory handed out.
3. **In-place edits** (``AtomicOutput(..., in_place=True)``): resize and guest edits build
   the new image beside the old one; ``commit`` refuses if the old one changed meanwhile
   (device, inode, size, mtime), and the new file takes the old one's mode and owner.
4. **Sparse copies** (``copy_sparse``, ``copy_range``): a reflink (``FICLONE``) when the
   filesystem can, else only the data ranges (``SEEK_DATA``/``SEEK_HOLE``) through
   ``copy_file_range``: a 100 GiB image holding 2 GiB costs 2 GiB of space and I/O.
5. **Errors**: every ``OSError`` becomes an ``ImageIOError`` (``OutputExistsError`` for an
   existing target) whose message is one sentence; a full disk and the file size limit
   (``EFBIG``, ``ulimit -f``) get sentences of their own (``io_error``).

Typical uses::

    with AtomicOutput(output, force=force) as out:      # convert, build, context media
        write_image(out.path, scratch=out.scratch)
        out.commit()
    with AtomicOutput(image, in_place=True, doing="resizing") as out:
        copy_sparse(image, out.path); change(out.path); out.commit()
    blob.parent.mkdir(parents=True, exist_ok=True)      # a blob store: one file per digest
    with AtomicOutput(blob, force=True, mode=0o640) as out:
        with out.path.open("wb") as f:
            ...                                          # (closed before commit: flushed)
        out.commit()
    write_file_atomically(config / "clouds.yaml", text, mode=0o600, force=True)
    sweep_leftovers(data_directory)                      # a service's start-up (one level)

NOTE: a leftover is removed only when the pid in its name is not a live process on *this*
machine. On a filesystem shared between machines, or with another PID namespace writing into
the same directory, a live writer elsewhere could look dead: don't point two machines' sweeps
at one directory (the registry's file store is a one-machine store; many machines use S3).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from imagewright.errors import ImageIOError, OutputExistsError

#: ``progress(done_bytes, total_bytes)``.
ByteProgress = Callable[[int, int], None]

#: What every temporary name carries between the target's name and the writer's pid.
TEMP_MARK = ".iw-"
_TEMP_NAME = re.compile(r"^\.(?P<anchor>.+)\.iw-(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{8}(?:\.[A-Za-z0-9_-]+)?$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_ANCHOR_LENGTH = 80  # keeps every temporary name far below NAME_MAX (255)

_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_COPY_CHUNK = 8 << 20
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


# --- errors ------------------------------------------------------------------------------------


def io_error(
    err: OSError, path: Path, doing: str = "writing", directory: Path | None = None
) -> ImageIOError | OutputExistsError:
    """One sentence for ``err``, met while ``doing`` (a verb in -ing) the file ``path``.

    ``directory`` is where the bytes were going (by default ``path``'s own directory): the
    place a full disk is reported for.
    """
    name = path.name or str(path)
    where = path.parent if directory is None else directory
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ImageIOError(
            f"No space left on the filesystem holding {where} while {doing} {name} ({err.strerror})."
        )
    if err.errno == errno.EFBIG:
        return ImageIOError(
            "A file grew past the largest size this process or its filesystem may write "
            f"(File too large; see ulimit -f) while {doing} {name}."
        )
    if err.errno == errno.EEXIST:
        return OutputExistsError(f"{path} already exists; use --force to replace it.")
    return ImageIOError(f"{doing[:1].upper()}{doing[1:]} {path} failed: {err.strerror or err}.")


# --- names and the sweep -----------------------------------------------------------------------


def temp_name(anchor: Path, what: str, directory: Path | None = None) -> Path:
    """A fresh name ``.<anchor name>.iw-<pid>-<random>.<what>`` (in ``anchor``'s directory)."""
    folder = anchor.parent if directory is None else directory
    return folder / f".{_stem(anchor.name)}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}.{what}"


def _stem(name: str) -> str:
    """A target's name as its temporaries carry it: plain characters only, not too long."""
    return _UNSAFE_CHARS.sub("_", name)[:_ANCHOR_LENGTH] or "_"


def sweep_leftovers(directory: Path, anchor: str | None = None) -> list[Path]:
    """Remove the temporary files and directories in ``directory`` whose writer no longer runs.

    Only names of this module's scheme are touched, and only when their pid is not a live
    process; ``anchor`` limits the sweep to the leftovers of one target name. Best effort:
    what cannot be removed (or another sweep removed first) is skipped. Returns what went.
    """
    stem = None if anchor is None else _stem(anchor)
    removed: list[Path] = []
    try:
        with os.scandir(directory) as scan:
            entries = list(scan)
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or (stem is not None and match["anchor"] != stem):
            continue
        if _process_alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid > 0x7FFFFFFF:  # larger than any pid: not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


# --- durability --------------------------------------------------------------------------------


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data and metadata to disk (ImageIOError in one sentence if that fails)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise io_error(err, path) from None


def fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (a rename or a new name in it) to disk.

    Filesystems that cannot sync a directory (EINVAL) have nothing to flush; a read-only one
    has nothing pending.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.EROFS, errno.EOPNOTSUPP):
            return
        raise io_error(err, directory, "flushing") from None


# --- scratch files and atomic outputs ----------------------------------------------------------


class ScratchFiles:
    """Temporary files and directories named after ``anchor``, all removed by ``cleanup``.

    They live in ``directory`` (by default ``anchor``'s own); leftovers of dead writers with
    the same anchor are swept from it first. Use as a context manager.
    """

    def __init__(self, anchor: Path, directory: Path | None = None) -> None:
        self.anchor = anchor
        self.directory = anchor.parent if directory is None else directory
        self._paths: list[Path] = []
        sweep_leftovers(self.directory, anchor.name)

    def __enter__(self) -> ScratchFiles:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def scratch(self, what: str) -> Path:
        """A fresh name for a scratch file (not created), removed by ``cleanup``."""
        path = temp_name(self.anchor, what, self.directory)
        self._paths.append(path)
        return path

    def scratch_directory(self, what: str) -> Path:
        """A new private (0700) scratch directory, removed with its content by ``cleanup``."""
        path = temp_name(self.anchor, what, self.directory)
        try:
            path.mkdir(mode=0o700)
        except OSError as err:
            raise self._creation_error(err) from None
        self._paths.append(path)
        return path

    def cleanup(self) -> None:
        """Remove every scratch file and directory handed out (those still there)."""
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        self._paths.clear()

    def _creation_error(self, err: OSError) -> ImageIOError | OutputExistsError:
        if err.errno == errno.ENOENT:
            return ImageIOError(f"The directory {self.directory} does not exist.")
        if err.errno in _NOT_WRITABLE:
            return ImageIOError(
                f"{self.directory} is not writable ({err.strerror}); imagewright writes "
                f"{self.anchor.name} there under a temporary name first."
            )
        return io_error(err, self.anchor, "creating a temporary file for")


class AtomicOutput(ScratchFiles):
    """A file that appears under ``target`` only when ``commit()`` is called.

    Write the new content to ``.path`` (already created, empty), then ``commit()``. Leaving
    the ``with`` block without ``commit()`` removes it and every ``scratch()`` and
    ``scratch_directory()`` handed out, and leaves the target as it was.

    - ``force`` replaces an existing target (else OutputExistsError, now and at ``commit``);
    - ``mode`` sets the final permission bits exactly (the file is 0600 until ``commit``),
      else the process umask applies as for any new file;
    - ``in_place``: ``target`` exists and this is its new version (resize, guest edits):
      ``commit`` refuses when ``target`` changed since, and the new file takes its mode and
      (when permitted) owner;
    - ``doing`` names the work in messages (``"resizing"``).
    """

    def __init__(
        self,
        target: Path,
        *,
        force: bool = False,
        mode: int | None = None,
        in_place: bool = False,
        doing: str = "writing",
    ) -> None:
        self.target = target
        self.force = force or in_place
        self.mode = mode
        self.doing = doing
        self._committed = False
        self._original: os.stat_result | None = None
        if in_place:
            try:
                self._original = target.stat()
            except OSError as err:
                raise io_error(err, target, "reading") from None
        elif target.is_dir():
            raise ImageIOError(f"{target} is a directory; name a file to write.")
        elif not force and (target.exists() or target.is_symlink()):
            raise OutputExistsError(f"{target} already exists; use --force to replace it.")
        super().__init__(target)
        self.path = self.scratch("part")
        private = mode is not None or in_place
        try:
            fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600 if private else 0o666
            )
        except OSError as err:
            self._paths.clear()
            raise self._creation_error(err) from None
        os.close(fd)

    def __enter__(self) -> AtomicOutput:
        return self

    def commit(self, *, sync_directory: bool = True) -> None:
        """Put ``.path`` in place of the target: fsync, mode, rename (or link), fsync the directory.

        ``sync_directory`` False: the caller fsyncs the directory itself once it has put
        several outputs of one directory in place (``fsync_directory``): one flush of its
        entries instead of one per file.
        """
        if self._committed:
            return
        original = self._original
        if original is not None and _identity(self.target) != _identity_of(original):
            raise ImageIOError(
                f"{self.target} changed while imagewright was {self.doing} it; the new version was not saved."
            )
        fsync_file(self.path)
        try:
            if original is not None:
                os.chmod(self.path, original.st_mode & 0o7777)
                with contextlib.suppress(PermissionError):
                    os.chown(self.path, original.st_uid, original.st_gid)
            elif self.mode is not None:
                os.chmod(self.path, self.mode)
            if self.force:
                os.replace(self.path, self.target)
            else:
                _link_without_clobbering(self.path, self.target)
        except OSError as err:
            raise io_error(err, self.target, self.doing) from None
        self._committed = True
        if sync_directory:
            fsync_directory(self.directory)


def _link_without_clobbering(source: Path, target: Path) -> None:
    """Give ``source``'s file the name ``target`` unless that name exists, then drop ``source``."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        # A filesystem without hard links (vfat, some FUSE): a checked rename is the best there is.
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.replace(source, target)
        return
    source.unlink()


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        return _identity_of(path.stat())
    except OSError:
        return None


def _identity_of(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def write_file_atomically(path: Path, data: bytes | str, *, mode: int = 0o644, force: bool = False) -> None:
    """Write a small file (text as UTF-8) all at once: the whole of it under ``path``, or nothing.

    ``mode`` is exact (0600 for secrets: the content is never readable by others, not even
    while it is being written); ``force`` replaces an existing file.
    """
    content = data.encode("utf-8") if isinstance(data, str) else data
    with AtomicOutput(path, force=force, mode=mode) as out:
        try:
            with out.path.open("wb") as f:
                f.write(content)
        except OSError as err:
            raise io_error(err, path) from None
        out.commit()


# --- sparse copies -----------------------------------------------------------------------------


def data_ranges(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The ``[start, end)`` runs of the open file ``fd`` between ``start`` and ``end`` that hold data.

    From ``SEEK_DATA``/``SEEK_HOLE``; a filesystem that cannot tell yields the whole range.
    Raises OSError (the callers translate it with what they were doing).
    """
    position = start
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole remains
                return
            if err.errno in (errno.EINVAL, errno.EOPNOTSUPP) and position == start:
                yield start, end
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole
        position = hole


def file_extents(fd: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """``(offset, length, is_data)`` runs covering ``[0, size)`` of ``fd``; holes read as zeros."""
    position = 0
    for data, hole in data_ranges(fd, 0, size):
        if data > position:
            yield position, data - position, False
        yield data, hole - data, True
        position = hole
    if position < size:
        yield position, size - position, False


def copy_sparse(
    source: Path, target: Path, progress: ByteProgress | None = None, *, durable: bool = True
) -> None:
    """Make ``target`` (created or emptied) a byte-identical copy of ``source``, holes kept.

    A reflink when the filesystem can, else the data ranges only; flushed to disk at the end
    unless ``durable`` is False (a scratch copy read back at once and then thrown away).
    """
    try:
        with source.open("rb") as fin, target.open("wb") as fout:
            size = os.fstat(fin.fileno()).st_size
            if not _clone(fin.fileno(), fout.fileno()):
                for start, end in data_ranges(fin.fileno(), 0, size):
                    _copy_run(fin.fileno(), fout.fileno(), start, end, 0)
                    if progress is not None:
                        progress(end, size)
                fout.truncate(size)
            if durable:
                os.fsync(fout.fileno())
            if progress is not None:
                progress(size, size)
    except OSError as err:
        raise io_error(err, source, "copying", target.parent) from None


def reflink(source: Path, target: Path) -> bool:
    """Make ``target`` (created or emptied) share ``source``'s blocks, if the filesystem can.

    False (and ``target`` left empty) where it cannot: ext4, tmpfs, across filesystems.
    """
    try:
        with source.open("rb") as fin, target.open("wb") as fout:
            return _clone(fin.fileno(), fout.fileno())
    except OSError as err:
        raise io_error(err, source, "copying", target.parent) from None


def _clone(fin: int, fout: int) -> bool:
    try:
        fcntl.ioctl(fout, _FICLONE, fin)
    except OSError:
        return False
    return True


def copy_range(source: Path, start: int, length: int, target: Path, target_start: int) -> None:
    """Copy bytes ``[start, start + length)`` of ``source`` into the existing ``target`` at ``target_start``.

    Only data ranges are copied: holes of ``source`` leave ``target`` as it is there, which
    callers ensure reads as the same zeros. Flushed to disk at the end.
    """
    try:
        with source.open("rb") as fin, target.open("r+b") as fout:
            for data_start, data_end in data_ranges(fin.fileno(), start, start + length):
                _copy_run(fin.fileno(), fout.fileno(), data_start, data_end, target_start - start)
            os.fsync(fout.fileno())
    except OSError as err:
        raise io_error(err, source, "copying part of", target.parent) from None


def _copy_run(fin: int, fout: int, start: int, end: int, shift: int) -> None:
    """Copy ``[start, end)`` of ``fin`` to ``fout`` at ``start + shift`` (in-kernel when possible)."""
    position = start
    while position < end:
        length = min(_COPY_CHUNK, end - position)
        try:
            copied = os.copy_file_range(fin, fout, length, position, position + shift)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            copied = 0
        if copied <= 0:
            chunk = os.pread(fin, length, position)
            if not chunk:
                raise OSError(errno.EIO, "the source file ended early")
            copied = os.pwrite(fout, chunk, position + shift)
        position += copied


# --- scratch space in memory -------------------------------------------------------------------

#: The tmpfs every systemd (and Debian) system mounts; scratch trees go under a per-user directory.
MEMORY_SCRATCH_ROOT = Path("/dev/shm")
#: ``IMAGEWRIGHT_MEMORY_SCRATCH=0`` keeps every scratch tree on disk; ``=/some/tmpfs`` uses that
#: tmpfs instead of ``MEMORY_SCRATCH_ROOT``.
MEMORY_SCRATCH_SWITCH = "IMAGEWRIGHT_MEMORY_SCRATCH"
_TMPFS = "tmpfs"
_MAX_PROC_TEXT = 1 << 20


def memory_scratch_directory(needed: int, root: Path | None = None) -> Path | None:
    """A directory on tmpfs for a scratch tree of about ``needed`` bytes, or None (use the disk).

    Why: a root filesystem tree is ~17,000 small files, and creating and deleting them costs
    metadata writes the disk must journal; a tree that is read once and deleted needs no
    durability, and on tmpfs it costs a fraction of that (numbers: bench/build_bench.py).

    The directory is ``ROOT/imagewright-UID`` (``ROOT``: ``root``, else the absolute path
    ``IMAGEWRIGHT_MEMORY_SCRATCH`` names, else ``MEMORY_SCRATCH_ROOT``),
    mode 0711: an unshared mmdebstrap's subordinate root must reach its TMPDIR below it, and
    nothing in it can be listed by others. Dead writers' leftovers are swept from it
    (``sweep_leftovers``: the pid in each name) before it is handed out. None — the caller
    keeps the tree on disk — when ``IMAGEWRIGHT_MEMORY_SCRATCH=0``, when ``ROOT`` is not on a
    tmpfs, when its free space or half of the memory the kernel calls available
    (``MemAvailable``) is less than ``needed``, or when the name exists and is not this
    user's own directory. Callers make their trees with ``ScratchFiles(anchor, directory)``,
    so every error path removes them as it would on disk.
    """
    switch = os.environ.get(MEMORY_SCRATCH_SWITCH, "").strip()
    if switch == "0" or needed < 0:
        return None
    if root is None:
        root = Path(switch) if switch.startswith("/") else MEMORY_SCRATCH_ROOT
    if not _on_tmpfs(root):
        return None
    try:
        room = os.statvfs(root)
    except OSError:
        return None
    if needed > room.f_bavail * room.f_frsize or needed > _memory_available() // 2:
        return None
    directory = root / f"imagewright-{os.getuid()}"
    try:
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o711)
        st = os.lstat(directory)
    except OSError:
        return None
    if not os.path.isdir(directory) or os.path.islink(directory) or st.st_uid != os.getuid():
        return None  # someone else's name: never write into it
    try:
        os.chmod(directory, 0o711)  # noqa: S103 - searchable, not listable: see the docstring
    except OSError:
        return None
    sweep_leftovers(directory)
    return directory


def _on_tmpfs(path: Path) -> bool:
    """True when the filesystem holding ``path`` is a tmpfs (``/proc/self/mounts``: the longest
    mount point above it, the last one mounted there)."""
    try:
        with open("/proc/self/mounts", "rb") as f:
            text = f.read(_MAX_PROC_TEXT).decode("utf-8", "replace")
    except OSError:
        return False
    wanted = os.path.realpath(path)
    best, best_type = "", ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        above = point in ("/", wanted) or wanted.startswith(point.rstrip("/") + "/")
        if above and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type == _TMPFS


def _memory_available() -> int:
    """The kernel's estimate of memory available without swapping (bytes; 0 when unknown)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            text = f.read(_MAX_PROC_TEXT).decode("ascii", "replace")
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            words = line.split()
            if len(words) >= 2 and words[1].isdigit():
                return int(words[1]) * 1024
    return 0


# --- the cache directory ---------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``${IMAGEWRIGHT_CACHE:-~/.cache/imagewright}``: downloads kept between runs (kernels, boot loaders)."""
    configured = os.environ.get("IMAGEWRIGHT_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "imagewright"


@contextlib.contextmanager
def cache_lock(cache_root: Path) -> Iterator[None]:
    """Hold the exclusive lock of one cache directory (``.lock``; blocks until other writers finish)."""
    cache_root.mkdir(parents=True, exist_ok=True)
    with (cache_root / ".lock").open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_manifest(path: Path, version: int) -> dict[str, Any] | None:
    """The JSON object a cache entry's manifest holds, when it has ``manifest_version == version``.

    None for a missing or damaged file or another version: the entry is then rebuilt (cache
    entries write their manifest last, so one without a valid manifest is incomplete).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("manifest_version") != version:
        return None
    return data
