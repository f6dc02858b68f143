"""What every command shares: the consoles, ``--json``, size parameters, progress bars."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from imagewright.errors import ImagewrightError
from imagewright.units import parse_size

F = TypeVar("F", bound=Callable[..., Any])

# Reports are read in terminals and in logs: wide enough that partition tables never wrap.
stdout_console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
stderr_console = Console(stderr=True, highlight=False, soft_wrap=True)


def json_option(func: F) -> F:
    """``--json``: print a machine-readable result on stdout instead of the human report."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(func)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


class SizeParam(click.ParamType):  # type: ignore[type-arg]
    """A size such as 4G, 512M, 1.5T or 2048s (binary units)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ImagewrightError as err:
            self.fail(str(err), param, ctx)


SIZE = SizeParam()


class ByteProgress:
    """A progress bar with bytes and rate on a terminal; silent otherwise (or with --json).

    Library functions take a ``progress`` callable ``(done_bytes, total_bytes)``; this object
    is one.
    """

    def __init__(self, description: str, enabled: bool) -> None:
        self._description = description
        self._enabled = enabled and sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self._enabled:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=stderr_console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=total)
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class StagedProgress:
    """A ``progress(stage, done, total)`` callable: one byte bar per stage, in turn."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._stage: str | None = None
        self._bar: ByteProgress | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = ByteProgress(stage, self._enabled)
        assert self._bar is not None
        self._bar(done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def staged_progress(enabled: bool = True) -> Iterator[StagedProgress]:
    bar = StagedProgress(enabled)
    try:
        yield bar
    finally:
        bar.close()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C for the duration, so that cleanup code runs."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def byte_progress(description: str, enabled: bool = True) -> Iterator[ByteProgress]:
    bar = ByteProgress(description, enabled)
    try:
        yield bar
    finally:
        bar.close()
