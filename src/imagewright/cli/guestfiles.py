"""``imagewright cat|ls|copy-in IMAGE:/path``: files inside a guest image, without mounting it.

``IMAGE:/path`` is split at a ``:/`` so that image names may contain ':' themselves; when
several splits are possible the one whose image part exists wins (rightmost first).
"""

from __future__ import annotations

import os
import shutil
import stat as stat_module
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import click

from imagewright.cli.common import byte_progress, json_option
from imagewright.cli.render import emit_json
from imagewright.errors import GuestFilesystemError, InvalidArgumentError
from imagewright.guest import DirEntry, FileType, GuestFS, GuestStat, guest_path, open_guest
from imagewright.guest.base import check_mode
from imagewright.guest.model import join


def split_image_path(spec: str) -> tuple[Path, str]:
    """``"disk.img:/etc/hosts"`` -> (Path("disk.img"), "/etc/hosts")."""
    splits = [i for i in range(len(spec) - 1) if spec[i : i + 2] == ":/" and i > 0]
    if not splits:
        raise InvalidArgumentError(f"'{spec}' is not IMAGE:/PATH (for example disk.qcow2:/etc/hostname).")
    for index in reversed(splits):
        if Path(spec[:index]).is_file():
            return Path(spec[:index]), guest_path(spec[index + 1 :])
    index = splits[-1]
    return Path(spec[:index]), guest_path(spec[index + 1 :])


partition_option = click.option(
    "--partition",
    type=click.IntRange(min=1),
    default=None,
    help="Partition number (default: the one holding /etc).",
)


@contextmanager
def _guest(image: Path, partition: int | None, *, writable: bool, quiet: bool) -> Iterator[GuestFS]:
    with (
        byte_progress("working copy", enabled=not quiet) as progress,
        open_guest(image, partition=partition, writable=writable, progress=progress) as guest,
    ):
        yield guest


@click.command("cat")
@click.argument("spec", metavar="IMAGE:/PATH")
@partition_option
def cat_command(spec: str, partition: int | None) -> None:
    """Print a file from inside a guest image (symbolic links are followed)."""
    image, path = split_image_path(spec)
    with _guest(image, partition, writable=False, quiet=True) as guest:
        scratch = Path(tempfile.mkdtemp(prefix="imagewright-cat-"))
        try:
            copy = scratch / "file"
            guest.copy_out(path, copy)
            out: BinaryIO = sys.stdout.buffer
            with copy.open("rb") as f:
                shutil.copyfileobj(f, out, 1024 * 1024)
            out.flush()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _long_line(entry: DirEntry, target: str | None) -> str:
    mode = stat_module.filemode(entry.type.ifmt | entry.mode)
    name = entry.name + (f" -> {target}" if target is not None else "")
    return f"{mode} {entry.uid:>6} {entry.gid:>6} {entry.size:>10} {name}"


def _as_entry(found: GuestStat) -> DirEntry:
    return DirEntry(
        name=found.path.rsplit("/", 1)[-1] or "/",
        type=found.type,
        mode=found.mode,
        uid=found.uid,
        gid=found.gid,
        size=found.size,
        inode=found.inode,
    )


@click.command("ls")
@click.argument("spec", metavar="IMAGE:/PATH")
@click.option("-l", "long_format", is_flag=True, help="Show type, mode, owner, size and link targets.")
@partition_option
@json_option
def ls_command(spec: str, long_format: bool, partition: int | None, as_json: bool) -> None:
    """List a directory inside a guest image."""
    image, path = split_image_path(spec)
    with _guest(image, partition, writable=False, quiet=as_json) as guest:
        found = guest.stat(path)
        if found.is_dir or (found.is_symlink and guest.is_dir(path)):
            directory = guest.resolve(path)
            entries = sorted(guest.listdir(directory), key=lambda e: e.name)
        else:
            directory = path.rsplit("/", 1)[0] or "/"
            entries = [_as_entry(found)]
        links = [join(directory, e.name) for e in entries if e.type is FileType.SYMLINK]
        targets = (
            {p: s.link_target for p, s in guest.stat_many(links).items() if s is not None} if links else {}
        )
    if as_json:
        emit_json(
            {
                "image": str(image),
                "path": path,
                "entries": [
                    {**e.to_dict(), "link_target": targets.get(join(directory, e.name))} for e in entries
                ],
            }
        )
        return
    for entry in entries:
        line = _long_line(entry, targets.get(join(directory, entry.name))) if long_format else entry.name
        click.echo(line)


def _parse_mode(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 8)
    except ValueError:
        raise InvalidArgumentError(f"'{text}' is not an octal file mode such as 0644.") from None
    return check_mode(value)


def _parse_owner(text: str | None, guest: GuestFS) -> tuple[int | None, int | None]:
    """``UID:GID``, ``UID`` or ``NAME:GROUP`` (names looked up in the guest's own files)."""
    if text is None:
        return None, None
    user, _, group = text.partition(":")
    return _lookup_id(user, guest, "/etc/passwd"), (_lookup_id(group, guest, "/etc/group") if group else None)


def _lookup_id(name: str, guest: GuestFS, table: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        text = guest.read_text(table, limit=16 * 1024 * 1024)
    except GuestFilesystemError:
        text = ""
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    raise InvalidArgumentError(f"'{name}' is not a number and not listed in the guest's {table}.")


@click.command("copy-in")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("spec", metavar="IMAGE:/PATH")
@click.option(
    "--mode", "mode_text", metavar="OCTAL", help="Mode of the new file, e.g. 0644 (default: kept or 0644)."
)
@click.option(
    "--owner", metavar="UID:GID", help="Owner, numeric or names from the guest (default: kept or 0:0)."
)
@partition_option
@json_option
def copy_in_command(
    *, source: Path, spec: str, mode_text: str | None, owner: str | None, partition: int | None, as_json: bool
) -> None:
    """Copy a host file into a guest image (into a directory keeps the file's name)."""
    image, path = split_image_path(spec)
    mode = _parse_mode(mode_text)
    started = time.monotonic()
    with _guest(image, partition, writable=True, quiet=as_json) as guest:
        uid, gid = _parse_owner(owner, guest)
        if spec.endswith("/") or guest.is_dir(path):
            path = join(guest.resolve(path), source.name)
        guest.copy_in(source, path, mode=mode, uid=uid, gid=gid)
        guest.flush()
        written = guest.stat(path)
    result = {"image": str(image), "path": path, **written.to_dict()}
    if as_json:
        emit_json(result)
        return
    size = os.path.getsize(source)
    click.echo(
        f"copied {source} ({size} bytes) to {image}:{path} "
        f"[{written.permissions()} {written.uid}:{written.gid}] in {time.monotonic() - started:.1f} s"
    )
