"""A command's human report as lines and tables, written without rich when rich would add nothing.

Importing rich costs more than ``imagewright inspect`` takes to read an image's headers. But
to a pipe or a file (not a terminal) rich writes no colours, and a ``Text`` line or a small
table of plain words comes out as plain text whose layout is easy to compute. So a report is
collected as ``Report`` blocks and written:

- as plain text when standard output is not a terminal (and no ``FORCE_COLOR`` or
  ``TTY_COMPATIBLE=1`` makes rich treat it as one), every line is printable text, and every
  table cell is printable ASCII without outer spaces that rich would not read as markup or
  an emoji code (no ``[``, no ``:``) and the table fits the log width;
- through rich otherwise (colours in a terminal, its wrapping, its markup rules), with
  exactly the calls the commands made before.

``tests/test_cli_render.py`` checks the plain writer against rich byte for byte on generated
reports.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import cache
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

#: Width of reports written to anything but a terminal (logs, pipes): wide enough that
#: partition tables never wrap.
LOG_WIDTH = 160


def new_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A console as every command prints with (rich's own markup and highlighting off for
    ``Text``; a terminal's width, or ``LOG_WIDTH`` on stdout when it is not a terminal)."""
    from rich.console import Console

    if stderr:
        return Console(file=file, stderr=True, highlight=False, soft_wrap=True)
    stream = file or sys.stdout
    return Console(file=file, highlight=False, soft_wrap=True, width=None if stream.isatty() else LOG_WIDTH)


@cache
def stdout_console() -> Console:
    """The console of reports (standard output), made on first use."""
    return new_console()


@cache
def stderr_console() -> Console:
    """The console of progress and diagnostics (standard error), made on first use."""
    return new_console(stderr=True)


def emit_json(value: Any) -> None:
    """``value`` as indented JSON on standard output.

    Written directly, not through ``click.echo``: ``json.dumps`` escapes every non-ASCII and
    control character, so the text holds no ANSI sequence for click to strip and nothing an
    ASCII-configured stream could not encode, and click would write exactly these bytes.
    """
    import json

    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


#: A piece of a line: its text and a rich style ("" for none).
Segment = tuple[str, str]


class _Line:
    # Plain classes, not dataclasses: this module is on the start-up path of inspect.
    __slots__ = ("segments",)

    def __init__(self, segments: tuple[Segment, ...]) -> None:
        self.segments = segments


class _Table:
    __slots__ = ("headings", "right", "rows")

    def __init__(
        self, headings: tuple[str, ...], right: frozenset[str], rows: tuple[tuple[str, ...], ...]
    ) -> None:
        self.headings = headings
        #: Headings of the columns justified to the right.
        self.right = right
        self.rows = rows


#: The space rich's tables here leave after every column but the last (``padding=(0, 2, 0, 0)``).
_GAP = 2


class Report:
    """Lines and tables to write to standard output, in order."""

    def __init__(self) -> None:
        self._blocks: list[_Line | _Table] = []

    def line(self, *segments: Segment | str) -> None:
        """One line: plain strings, or ``(text, style)`` pieces; no argument for an empty line."""
        self._blocks.append(_Line(tuple((s, "") if isinstance(s, str) else s for s in segments)))

    def table(
        self, headings: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[str] = ()
    ) -> None:
        """A table without borders, columns two spaces apart, ``right`` columns right-justified."""
        self._blocks.append(_Table(tuple(headings), frozenset(right), tuple(tuple(r) for r in rows)))

    def write(self) -> None:
        """Write everything to standard output (see the module docstring for how)."""
        stream = sys.stdout
        if _plain_terminal_free(stream) and self.plain_is_exact():
            stream.write(self.plain_text())
            stream.flush()
        else:
            self.write_rich(stdout_console())

    def plain_is_exact(self) -> bool:
        """True when rich, writing to something that is not a terminal, would write ``plain_text()``."""
        return all(_plain_block(block) for block in self._blocks)

    def plain_text(self) -> str:
        out: list[str] = []
        for block in self._blocks:
            if isinstance(block, _Line):
                out.append("".join(text for text, _ in block.segments) + "\n")
                continue
            widths = _widths(block)
            last = len(widths) - 1
            for cells in (block.headings, *block.rows):
                parts = []
                for index, (heading, cell) in enumerate(zip(block.headings, cells, strict=True)):
                    text = cell.rjust(widths[index]) if heading in block.right else cell.ljust(widths[index])
                    parts.append(text if index == last else text + " " * _GAP)
                out.append("".join(parts) + "\n")
        return "".join(out)

    def write_rich(self, console: Console) -> None:
        """Write through rich, as the commands did before this module existed."""
        from rich.table import Table
        from rich.text import Text

        for block in self._blocks:
            if isinstance(block, _Line):
                if not block.segments:
                    console.print()
                    continue
                text = Text()
                for piece, style in block.segments:
                    text.append(Text(piece, style=style))
                console.print(text)
                continue
            table = Table(box=None, pad_edge=False, padding=(0, _GAP, 0, 0))
            for heading in block.headings:
                table.add_column(heading, justify="right" if heading in block.right else "left")
            for row in block.rows:
                table.add_row(*row)
            console.print(table)


def _plain_block(block: _Line | _Table) -> bool:
    if isinstance(block, _Line):
        return all(text.isprintable() for text, _ in block.segments)
    cells = [*block.headings, *(cell for row in block.rows for cell in row)]
    if not all(_plain_cell(cell) for cell in cells):
        return False
    return sum(_widths(block)) + _GAP * (len(block.headings) - 1) <= LOG_WIDTH


def _plain_cell(cell: str) -> bool:
    # rich justifies a cell's text without its outer spaces, and reads "[" as markup and
    # ":name:" as an emoji code; a wide character takes two columns.
    return cell.isascii() and cell.isprintable() and cell == cell.strip() and not any(c in cell for c in "[:")


def _widths(table: _Table) -> list[int]:
    return [max(len(cell) for cell in column) for column in zip(table.headings, *table.rows, strict=True)]


def _plain_terminal_free(stream: IO[str]) -> bool:
    """True when rich would not treat ``stream`` as a terminal (so writes no styles)."""
    if os.environ.get("TTY_COMPATIBLE", "") == "1" or os.environ.get("FORCE_COLOR", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())
