"""Watching a guest's serial console as it streams: lines, a bounded tail, one expected text.

Memory stays bounded whatever the guest prints: only the last ``tail_lines`` lines and one
partial line (at most ``max_line_bytes``) are kept; the complete console goes to a log file,
written by QEMU itself.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from imagewright.errors import InvalidArgumentError

#: Bytes dropped from console lines before they are shown: carriage returns, and the
#: terminal control characters firmware and boot loaders emit (cursor moves, colours).
_DROP = bytes(range(0x20)).replace(b"\t", b"").replace(b"\n", b"")


def _clean(line: bytes) -> str:
    return line.translate(None, _DROP).decode("utf-8", "replace")


class ConsoleWatcher:
    """Split console bytes into lines; remember the last ones; spot ``expect`` once.

    ``feed`` returns the line containing ``expect`` the first time it appears (possibly a
    line still being printed), else None. ``on_line`` is called with every complete line.
    """

    def __init__(
        self,
        expect: str | None = None,
        *,
        tail_lines: int = 40,
        max_line_bytes: int = 4096,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        if expect is not None and ("\n" in expect or "\r" in expect or not expect):
            raise InvalidArgumentError("The text to expect must be one non-empty line.")
        self._expect = expect.encode("utf-8") if expect is not None else None
        self._tail: collections.deque[str] = collections.deque(maxlen=max(1, tail_lines))
        self._partial = bytearray()
        self._max_line = max(max_line_bytes, 2 * len(self._expect or b"") + 16)
        self._on_line = on_line
        #: The line holding ``expect``: as far as printed when first seen, then the whole line.
        self.matched_line: str | None = None
        #: ``expect`` was seen in a line that is still being printed.
        self._match_in_partial = False
        self.bytes_seen = 0

    @property
    def matched(self) -> bool:
        return self.matched_line is not None

    @property
    def match_complete(self) -> bool:
        """The matched line has ended (its newline arrived), so ``matched_line`` is all of it."""
        return self.matched_line is not None and not self._match_in_partial

    def feed(self, data: bytes) -> str | None:
        """Take the next chunk of console output; return the matched line when first seen."""
        self.bytes_seen += len(data)
        newly_matched: str | None = None
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            if end < 0:
                self._partial += data[start:]
                break
            self._partial += data[start:end]
            newly_matched = self._complete_line() or newly_matched
            start = end + 1
        if len(self._partial) > self._max_line:
            # An endless line: cut it, keeping enough of its end to still spot ``expect``.
            keep = len(self._expect or b"")
            head = bytes(self._partial[: len(self._partial) - keep]) if keep else bytes(self._partial)
            newly_matched = self._check(bytes(self._partial)) or newly_matched
            self._tail.append(_clean(head))
            del self._partial[: len(head)]
            self._match_in_partial = False  # the cut piece is as complete as that line gets
        if newly_matched is None and self._partial:
            newly_matched = self._check(bytes(self._partial))
            if newly_matched is not None:
                self._match_in_partial = True
        return newly_matched

    def _complete_line(self) -> str | None:
        line = bytes(self._partial)
        self._partial.clear()
        text = _clean(line)
        if self._match_in_partial:
            self.matched_line = text
            self._match_in_partial = False
        found = self._check(line)
        self._tail.append(text)
        if self._on_line is not None:
            self._on_line(text)
        return found

    def _check(self, line: bytes) -> str | None:
        if self._expect is None or self.matched_line is not None:
            return None
        if self._expect in line.replace(b"\r", b""):
            self.matched_line = _clean(line)
            return self.matched_line
        return None

    def finish(self) -> None:
        """The stream ended: an unterminated last line counts as a line."""
        if self._partial:
            self._complete_line()
        self._match_in_partial = False

    def last_lines(self, count: int | None = None) -> list[str]:
        lines = list(self._tail)
        if self._partial:
            lines.append(_clean(bytes(self._partial)))
        return lines if count is None else lines[-count:]
