"""Bounded reads of guest files for inspection and audits: never more than a file of its kind can be.

NOTE: every file read here is untrusted. A read names the most bytes a file of its kind may
hold (an os-release of 2 GiB is refused by its size, before anything is read); a link loop,
a link that dangles or leaves the guest (it cannot: links resolve inside the guest,
``guest.model.resolve_link``), a directory or device where a file should be, all become a note
and an absent value, never an exception. Big databases (dpkg status) are copied to a host
scratch file and streamed, so memory stays flat whatever they hold.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from imagewright.errors import GuestFilesystemError, InvalidArgumentError, as_clause
from imagewright.guest.base import GuestFS
from imagewright.guest.model import GuestFileNotFoundError
from imagewright.units import format_size

#: Longest line any parser here looks at; longer lines are skipped whole.
MAX_LINE = 64 * 1024


class GuestReader:
    """Reads of one guest's files that turn every refusal into a note."""

    def __init__(self, guest: GuestFS) -> None:
        self.guest = guest
        self.notes: list[str] = []

    def prefetch(self, paths: Iterable[str], directories: Iterable[str] = ()) -> None:
        """Look up ``paths`` (and every directory above them) and list ``directories`` in as
        few backend rounds as possible, so that the reads that follow hit the cache (each
        round of the e2fs backend is one debugfs process). Failures are left to those reads."""
        wanted: set[str] = set()
        listed = list(directories)
        for path in [*paths, *listed]:
            prefix = path
            while prefix not in ("/", "") and prefix not in wanted:
                wanted.add(prefix)
                prefix = prefix.rpartition("/")[0]
        try:
            self.guest.stat_many(sorted(wanted))
            found = self.guest.stat_many(listed)
            real = [path for path in listed if (info := found[path]) is not None and info.is_dir]
            if real:
                self.guest.listdir_many(real)
        except (GuestFilesystemError, InvalidArgumentError):
            pass

    def note(self, text: str) -> None:
        # The notes are reported with the filesystem they are about: the contract's errors
        # naming it again would only repeat it.
        text = text.removesuffix(f" in {self.guest.description}")
        if text not in self.notes:
            self.notes.append(text)

    def regular_file(self, path: str, limit: int, what: str) -> tuple[str, int] | None:
        """``(real path, size)`` of the regular file at ``path`` (links followed inside the
        guest) if it holds at most ``limit`` bytes; None (and a note, unless it is just
        missing) otherwise."""
        try:
            real = self.realpath(path)
            found = self.guest.stat(real)
        except GuestFileNotFoundError:
            return None
        except (GuestFilesystemError, InvalidArgumentError) as err:
            self.note(f"{path}: {as_clause(err)}")
            return None
        if not found.is_file:
            self.note(f"{path} is a {found.type.value}, not a file; {what} not read")
            return None
        if found.size > limit:
            self.note(
                f"{path} is {format_size(found.size)}, more than the {format_size(limit)} "
                f"{what} can be; not read"
            )
            return None
        return real, found.size

    def read(self, path: str, limit: int, what: str) -> bytes | None:
        """The content of a regular file of at most ``limit`` bytes, or None (see ``regular_file``)."""
        found = self.regular_file(path, limit, what)
        if found is None:
            return None
        try:
            return self.guest.read_file(found[0], limit=limit)
        except (GuestFilesystemError, InvalidArgumentError) as err:
            self.note(f"{path}: {as_clause(err)}")
            return None

    def text(self, path: str, limit: int, what: str) -> str | None:
        """``read`` as text: UTF-8, undecodable bytes replaced; a note when it holds NUL bytes."""
        data = self.read(path, limit, what)
        if data is None:
            return None
        if b"\0" in data:
            self.note(f"{path} holds binary data (NUL bytes); only its text lines were read")
            data = data.replace(b"\0", b"\n")
        return data.decode("utf-8", "replace")

    @contextmanager
    def host_copy(self, path: str, limit: int, what: str) -> Iterator[Path | None]:
        """A host scratch copy of a regular file of at most ``limit`` bytes (removed afterwards)."""
        found = self.regular_file(path, limit, what)
        if found is None:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="imagewright-inspect-") as scratch:
            target = Path(scratch) / "copy"
            try:
                self.guest.copy_out(found[0], target)
            except (GuestFilesystemError, InvalidArgumentError) as err:
                self.note(f"{path}: {as_clause(err)}")
                yield None
                return
            yield target

    def exists(self, *paths: str) -> str | None:
        """The first of ``paths`` that is there (a dangling link counts), or None."""
        try:
            found = self.guest.stat_many(list(paths))
        except (GuestFilesystemError, InvalidArgumentError) as err:
            self.note(as_clause(err))
            return None
        for path in paths:
            if found[path] is not None:
                return path
        return None

    def resolve(self, path: str) -> str | None:
        """The real path of ``path``: every link in it followed inside the guest; None when
        something on the way is missing, and a note for a loop."""
        try:
            return self.realpath(path)
        except GuestFileNotFoundError:
            return None
        except (GuestFilesystemError, InvalidArgumentError) as err:
            self.note(f"{path}: {as_clause(err)}")
            return None

    def realpath(self, path: str) -> str:
        """``realpath(3)`` inside the guest (the guest contract's ``resolve``)."""
        return self.guest.resolve(path)

    def is_dir(self, path: str) -> bool:
        """True if ``path`` is a directory (links followed); a loop is a note and False."""
        real = self.resolve(path)
        try:
            return real is not None and self.guest.stat(real).is_dir
        except (GuestFilesystemError, InvalidArgumentError):
            return False

    def glob(self, pattern: str) -> list[str]:
        try:
            return self.guest.glob(pattern)
        except (GuestFilesystemError, InvalidArgumentError) as err:
            self.note(f"{pattern}: {as_clause(err)}")
            return []


def lines(text: str, most: int) -> Iterator[str]:
    """The lines of ``text`` (without line ends), at most ``most``, overlong ones skipped."""
    for count, line in enumerate(text.splitlines()):
        if count >= most:
            return
        if len(line) <= MAX_LINE:
            yield line


def file_lines(path: Path) -> Iterator[str]:
    """The lines of a host file, streamed; a line longer than ``MAX_LINE`` is skipped whole."""
    with path.open("rb") as stream:
        skipping = False
        while True:
            raw = stream.readline(MAX_LINE + 1)
            if not raw:
                return
            complete = raw.endswith(b"\n")
            if skipping or (not complete and len(raw) > MAX_LINE):
                skipping = not complete
                continue
            yield raw.rstrip(b"\r\n").decode("utf-8", "replace")
