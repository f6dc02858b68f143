"""Extracting a rootfs tarball without root, into a private staging tree, never outside it.

inspect has judged the archive before this runs (every member path relative, no '..', no
member under a symbolic-link member, hard links only to earlier members). The extraction does
not rely on that alone:

NOTE on never writing outside the staging directory:
- Every member name is split into components here again; an absolute name, a '..' or '.'
  component inside, a NUL or an empty name is refused.
- Directories are walked one component at a time with ``openat(O_NOFOLLOW | O_DIRECTORY)``
  from the staging root, and files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` relative
  to their directory's descriptor: no path string is ever resolved by the kernel from the top.
- Symbolic links are created *last*, after every file and directory, so while anything is
  written the staging tree holds no link that could redirect it. Hard links to symbolic links
  come after those (``linkat`` without ``AT_SYMLINK_FOLLOW``).
- The members are read by Python's tarfile; its list of names and types must match the one
  inspect judged, member for member — two tar readers that disagree about an archive are the
  classic way to smuggle a member past a check.

NOTE on what a rootless tree cannot hold: owners (every file is the current user's), device
nodes, and ``security.*``/``trusted.*`` attributes. Files are created owner-readable (mke2fs
must read them) and directories owner-writable; what the archive says (mode, owner, device
numbers, attributes from pax ``SCHILY.xattr.*`` or ``LIBARCHIVE.xattr.*`` records) is recorded
in a ``MetadataPlan`` wherever the staging tree differs, and applied to the filesystem
afterwards (``metadata.py``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import io
import os
import stat
import tarfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from imagewright.binary import FileSource
from imagewright.errors import BuildError
from imagewright.formats.containers.classify import normalize
from imagewright.formats.containers.decompress import DecompressedStream
from imagewright.ops.build.metadata import DeviceNode, InodeState, MetadataPlan
from imagewright.ops.build.source import TarballSource

_CHUNK = 1 << 20
_ZERO_CHUNK = bytes(_CHUNK)
#: Directories are kept owner-writable and -searchable while the tree is built and read.
_DIR_OWNER_BITS = 0o700
#: Files are kept owner-readable and -writable (mke2fs must read them; we must write them).
_FILE_OWNER_BITS = 0o600
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")

#: ``progress(done_bytes, total_bytes)`` over the archive file as stored.
Progress = Callable[[int, int], None]

_TYPES = {
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "chardev",
    tarfile.BLKTYPE: "blockdev",
    tarfile.FIFOTYPE: "fifo",
}


def member_type(info: tarfile.TarInfo) -> str:
    """The container reader's word for a member's type ("file", "dir", "symlink", ...)."""
    if info.isreg():
        return "file"
    return _TYPES.get(info.type, "other")


def split_member_name(name: str) -> tuple[str, ...]:
    """The components of a member name relative to the extraction root; BuildError if unsafe."""
    if "\0" in name:
        raise BuildError(f"The tarball member '{name[:200]!r}' has a NUL in its name; nothing was written.")
    if name.startswith("/"):
        raise BuildError(f"The tarball member '{name[:200]}' has an absolute path; nothing was written.")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise BuildError(f"The tarball member '{name[:200]}' has a '..' component; nothing was written.")
    return parts


def guest_path(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


@dataclass
class _Created:
    """What the staging tree holds at a path (to detect replacements and link targets)."""

    kind: str


@dataclass
class ExtractedTree:
    """A staging tree and the metadata it could not hold."""

    root: Path
    plan: MetadataPlan
    #: Members extracted.
    members: int


class _Reader:
    """A ``read(n)`` file object over a decompressed stream (what tarfile's stream mode needs)."""

    def __init__(self, stream: DecompressedStream) -> None:
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        return self._stream.read(n if n >= 0 else _CHUNK)


@contextlib.contextmanager
def _open_archive(source: TarballSource) -> Iterator[tuple[tarfile.TarFile, FileSource]]:
    with FileSource(source.path) as file:
        if source.compression is not None:
            stream = DecompressedStream(file, source.compression)  # type: ignore[arg-type]
            fileobj: object = _Reader(stream)
        else:
            fileobj = open(source.path, "rb")  # noqa: SIM115 - closed below
        try:
            with tarfile.open(fileobj=fileobj, mode="r|", errorlevel=2) as archive:  # type: ignore[call-overload]
                yield archive, file
        finally:
            if source.compression is None:
                fileobj.close()  # type: ignore[attr-defined]


class _Staging:
    """The staging tree, reached only through directory descriptors (see the module NOTE)."""

    def __init__(self, root: Path, plan: MetadataPlan) -> None:
        self.root = root
        self.plan = plan
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.uid = os.getuid()
        self.created: dict[tuple[str, ...], _Created] = {(): _Created("dir")}
        #: Directories with the mode and mtime they must get once everything is in them.
        self.directories: dict[tuple[str, ...], tuple[InodeState, float | None]] = {}
        #: Symbolic links (target, member) and hard links to them, made once everything else is.
        self.symlinks: dict[tuple[str, ...], tuple[str, tarfile.TarInfo]] = {}
        self.symlink_links: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._cached: tuple[tuple[str, ...], int] | None = None

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root_fd)

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def directory_fd(self, parts: tuple[str, ...]) -> int:
        """A descriptor of the directory ``parts``, made (owner-only, recorded) where missing.

        The descriptor belongs to the staging object (cached for the next member); do not close it.
        """
        if self._cached is not None and self._cached[0] == parts:
            return self._cached[1]
        self._drop_cache()
        fd = os.dup(self.root_fd)
        try:
            for depth, name in enumerate(parts, start=1):
                here = parts[:depth]
                known = self.created.get(here)
                if known is None:
                    os.mkdir(name, _DIR_OWNER_BITS, dir_fd=fd)
                    self.created[here] = _Created("dir")
                    # A directory the archive never lists: what mkdir -p in the guest would make.
                    self.directories[here] = (InodeState(stat.S_IFDIR, 0o755, 0, 0), None)
                elif known.kind != "dir":
                    raise BuildError(
                        f"The tarball puts {guest_path(parts)} under {guest_path(here)}, which is a "
                        f"{known.kind}, not a directory."
                    )
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as err:
                    raise _staging_error(guest_path(here), err) from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        self._cached = (parts, fd)
        return fd

    def clear(self, parts: tuple[str, ...]) -> None:
        """Make room for a new member at ``parts`` (a later member replaces an earlier one)."""
        known = self.created.get(parts)
        if known is None:
            return
        if known.kind == "dir":
            raise BuildError(
                f"The tarball has a directory and then a non-directory at {guest_path(parts)}; "
                "nothing was written."
            )
        self.plan.forget(guest_path(parts))
        self.symlinks.pop(parts, None)
        self.symlink_links.pop(parts, None)
        if known.kind in ("file", "symlink"):
            parent = self.directory_fd(parts[:-1])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(parts[-1], dir_fd=parent)
        del self.created[parts]

    def record_state(self, parts: tuple[str, ...], wanted: InodeState, fd: int | None = None) -> None:
        """Add a fix to the plan when the staging inode differs from what the archive says."""
        if fd is not None:
            st = os.fstat(fd)
        else:
            st = os.stat(parts[-1], dir_fd=self.directory_fd(parts[:-1]), follow_symlinks=False)
        staged = InodeState(stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if staged != wanted:
            self.plan.fixes[guest_path(parts)] = wanted


def _staging_error(path: str, err: OSError) -> BuildError:
    if err.errno == errno.ELOOP:
        return BuildError(f"{path} is a symbolic link in the staging tree where a directory was expected.")
    if err.errno == errno.ENOSPC:
        return BuildError(f"The staging directory ran out of space while writing {path}.")
    return BuildError(f"Writing {path} into the staging directory failed: {err.strerror}.")


def _xattrs(info: tarfile.TarInfo) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for key, value in info.pax_headers.items():
        raw = value.encode("utf-8", "surrogateescape")
        if key.startswith("SCHILY.xattr."):
            found[key[len("SCHILY.xattr.") :]] = raw
        elif key.startswith("LIBARCHIVE.xattr."):
            # bsdtar: the name URL-encoded, the value base64.
            name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr.") :])
            try:
                found[name] = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise BuildError(
                    f"The tarball member '{info.name[:200]}' has an attribute {name} that is not base64."
                ) from None
    for name in found:
        if not name or "\0" in name or "\n" in name or len(name.encode("utf-8", "surrogateescape")) > 255:
            raise BuildError(f"The tarball member '{info.name[:200]}' has an unusable attribute name.")
    return found


def _wanted(info: tarfile.TarInfo, file_type: int) -> InodeState:
    return InodeState(file_type, info.mode & 0o7777, info.uid, info.gid)


def _times(info: tarfile.TarInfo) -> tuple[int, int]:
    ns = int(float(info.mtime) * 1_000_000_000)
    return ns, ns


def extract_tarball(
    source: TarballSource, staging: Path, *, progress: Progress | None = None
) -> ExtractedTree:
    """Extract ``source`` into the empty directory ``staging``; see the module NOTEs."""
    plan = MetadataPlan()
    judged = _judged_members(source)
    tree = _Staging(staging, plan)
    count = 0
    try:
        with _open_archive(source) as (archive, file):
            for info in _members(archive):
                if count >= len(judged) or judged[count] != _key(info):
                    raise BuildError(
                        f"Python's tar reader and imagewright's inspection disagree about member "
                        f"{count + 1} of {source.path} ('{info.name[:200]}'); nothing was written."
                    )
                count += 1
                _extract_member(tree, archive, info)
                if progress is not None and count % 64 == 0:
                    progress(file.bytes_read, file.size)
            if count != len(judged):
                raise BuildError(
                    f"Python's tar reader found {count} members in {source.path} where the inspection "
                    f"found {len(judged)}; nothing was written."
                )
            if progress is not None:
                progress(file.size, file.size)
        for parts, (target, info) in tree.symlinks.items():
            _make_symlink(tree, parts, target, info)
        for parts, target_parts in tree.symlink_links.items():
            _make_hard_link(tree, parts, target_parts)
        _finish_directories(tree)
    except (tarfile.TarError, EOFError, ValueError, UnicodeError) as err:
        raise BuildError(f"The tarball {source.path} could not be extracted: {err}.") from None
    except OSError as err:
        raise BuildError(f"Extracting {source.path} failed: {err.strerror or err}.") from None
    finally:
        tree.close()
    return ExtractedTree(staging, plan, count)


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        info = archive.next()
        if info is None:
            return
        # tarfile keeps every TarInfo it read; a big tree needs none of them afterwards.
        archive.members.clear()  # type: ignore[attr-defined]
        yield info


def _key(info: tarfile.TarInfo) -> tuple[str, str]:
    # The container reader decodes names with backslash escapes, tarfile with surrogates.
    name = info.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return normalize(name), member_type(info)


def _judged_members(source: TarballSource) -> list[tuple[str, str]]:
    container = source.report.container
    if container is None:
        raise BuildError(f"{source.path} was not inspected as an archive.")
    return [(normalize(m.name), m.type) for m in container.members]


def _extract_member(tree: _Staging, archive: tarfile.TarFile, info: tarfile.TarInfo) -> None:
    kind = member_type(info)
    parts = split_member_name(info.name)
    path = guest_path(parts)
    attributes = _xattrs(info)
    if not parts:
        # The archive's "./": the root directory of the filesystem.
        if kind != "dir":
            raise BuildError("The tarball's top member is not a directory; nothing was written.")
        tree.directories[()] = (_wanted(info, stat.S_IFDIR), float(info.mtime))
        if attributes:
            tree.plan.xattrs["/"] = attributes
        return
    if kind == "other":
        if info.type == b"V":  # a GNU volume label: names the archive, extracts to nothing
            return
        raise BuildError(
            f"The tarball member '{info.name[:200]}' has the tar type '{info.type.decode('latin-1')}', "
            "which build does not extract; nothing was written."
        )
    parent = tree.directory_fd(parts[:-1])
    name = parts[-1]
    if kind == "dir":
        known = tree.created.get(parts)
        if known is None:
            try:
                os.mkdir(name, _DIR_OWNER_BITS, dir_fd=parent)
            except OSError as err:
                raise _staging_error(path, err) from None
            tree.created[parts] = _Created("dir")
        elif known.kind != "dir":
            tree.clear(parts)
            os.mkdir(name, _DIR_OWNER_BITS, dir_fd=parent)
            tree.created[parts] = _Created("dir")
        tree.directories[parts] = (_wanted(info, stat.S_IFDIR), float(info.mtime))
        _set_xattrs(tree, path, attributes)
        return
    tree.clear(parts)
    if kind == "file":
        _write_file(tree, archive, info, parts, parent)
        tree.created[parts] = _Created("file")
    elif kind == "symlink":
        tree.symlinks[parts] = (info.linkname, info)
        tree.created[parts] = _Created("symlink")
    elif kind == "hardlink":
        target = split_member_name(info.linkname)
        target_kind = tree.created.get(target)
        if target_kind is None or target_kind.kind == "dir" or not target:
            raise BuildError(
                f"The tarball member '{info.name[:200]}' is a hard link to '{info.linkname[:200]}', "
                "which is not an earlier file of the archive; nothing was written."
            )
        if target_kind.kind == "device":
            tree.plan.device_links[path] = guest_path(target)
        elif target_kind.kind == "file":
            _make_hard_link(tree, parts, target)
        else:  # another name of a symbolic link: made once the links exist
            tree.symlink_links[parts] = target
        # The new name is another name of the target's inode, and of the target's kind.
        tree.created[parts] = _Created(target_kind.kind)
        return  # attributes and owner belong to the inode, i.e. to the target member
    else:
        file_type = {"chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK, "fifo": stat.S_IFIFO}[kind]
        tree.plan.devices[path] = DeviceNode(_wanted(info, file_type), info.devmajor, info.devminor)
        tree.created[parts] = _Created("device")
    _set_xattrs(tree, path, attributes)


def _set_xattrs(tree: _Staging, path: str, attributes: dict[str, bytes]) -> None:
    if attributes:
        tree.plan.xattrs[path] = attributes
    else:
        tree.plan.xattrs.pop(path, None)


def _write_file(
    tree: _Staging, archive: tarfile.TarFile, info: tarfile.TarInfo, parts: tuple[str, ...], parent: int
) -> None:
    path = guest_path(parts)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(parts[-1], flags, _FILE_OWNER_BITS, dir_fd=parent)
    except OSError as err:
        raise _staging_error(path, err) from None
    try:
        data = archive.extractfile(info)
        if data is not None:
            # A GNU sparse member is read region by region: its holes are never read as zeros
            # (a member claiming 10 TiB of holes costs its stored data, not 10 TiB of reads).
            # (typeshed declares TarInfo.sparse an int; tarfile sets a list of (offset, size).)
            sparse = cast("list[tuple[int, int]] | None", info.sparse)
            regions = sparse or [(0, info.size)]
            # The unbuffered member (tarfile's _FileInFile) moves its position without touching
            # the archive stream, which in stream mode cannot seek.
            member = cast("IO[bytes]", cast("io.BufferedReader", data).raw)
            for offset, length in regions:
                member.seek(offset)
                if _copy_region(member, fd, offset, length) != length:
                    raise BuildError(f"The tarball ends inside {path}; nothing was written.")
        os.ftruncate(fd, info.size)
        os.fchmod(fd, (info.mode & 0o7777) | _FILE_OWNER_BITS)
        os.utime(fd, ns=_times(info))
        tree.record_state(parts, _wanted(info, stat.S_IFREG), fd)
    except OSError as err:
        raise _staging_error(path, err) from None
    finally:
        os.close(fd)


def _copy_region(data: IO[bytes], fd: int, offset: int, length: int) -> int:
    """Copy ``length`` bytes from ``data`` to ``offset`` of ``fd``; blocks of zeros stay holes
    (mke2fs keeps them). Returns the bytes read (fewer when the member ends early)."""
    done = 0
    while done < length:
        chunk = data.read(min(_CHUNK, length - done))
        if not chunk:
            break
        if chunk != _ZERO_CHUNK[: len(chunk)]:
            view = memoryview(chunk)
            position = offset + done
            while view:
                written = os.pwrite(fd, view, position)
                view = view[written:]
                position += written
        done += len(chunk)
    return done


def _make_symlink(tree: _Staging, parts: tuple[str, ...], target: str, info: tarfile.TarInfo) -> None:
    if not target or "\0" in target:
        raise BuildError(f"The symbolic link {guest_path(parts)} in the tarball has an empty or NUL target.")
    parent = tree.directory_fd(parts[:-1])
    try:
        os.symlink(target, parts[-1], dir_fd=parent)
        os.utime(parts[-1], ns=_times(info), dir_fd=parent, follow_symlinks=False)
    except OSError as err:
        raise _staging_error(guest_path(parts), err) from None
    tree.record_state(parts, _symlink_state(info))


def _symlink_state(info: tarfile.TarInfo) -> InodeState:
    # A symbolic link's permission bits are always 0777 on Linux; only the owner can differ.
    return InodeState(stat.S_IFLNK, 0o777, info.uid, info.gid)


def _make_hard_link(tree: _Staging, parts: tuple[str, ...], target: tuple[str, ...]) -> None:
    target_fd = os.dup(tree.directory_fd(target[:-1]))
    try:
        parent = tree.directory_fd(parts[:-1])
        os.link(target[-1], parts[-1], src_dir_fd=target_fd, dst_dir_fd=parent, follow_symlinks=False)
    except OSError as err:
        raise _staging_error(guest_path(parts), err) from None
    finally:
        os.close(target_fd)


def _finish_directories(tree: _Staging) -> None:
    """Give every directory its final staging mode and mtime, deepest first (children change mtimes)."""
    for parts in sorted(tree.directories, key=len, reverse=True):
        wanted, mtime = tree.directories[parts]
        fd = os.dup(tree.root_fd) if not parts else _open_directory(tree, parts)
        try:
            os.fchmod(fd, (wanted.mode & 0o7777) | _DIR_OWNER_BITS)
            if mtime is not None:
                ns = int(mtime * 1_000_000_000)
                os.utime(fd, ns=(ns, ns))
            if parts:
                tree.record_state(parts, wanted, fd)
            else:
                _record_root(tree, wanted)
        finally:
            os.close(fd)
    if () not in tree.directories:
        _record_root(tree, InodeState(stat.S_IFDIR, 0o755, 0, 0))


def _record_root(tree: _Staging, wanted: InodeState) -> None:
    # mke2fs gives the root directory its own owner and mode whatever the tree's root is:
    # always say what it must be.
    tree.plan.fixes["/"] = wanted


def _open_directory(tree: _Staging, parts: tuple[str, ...]) -> int:
    parent = tree.directory_fd(parts[:-1])
    return os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
