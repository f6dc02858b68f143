"""What every command shares: ``--json`` and the other common options, size parameters,
progress bars (the consoles and ``emit_json`` are ``cli.render``'s, which needs no click).

Imported by every command, so it imports no more than click at start-up: rich is loaded
when a progress bar is first needed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from imagewright.cli.render import stderr_console
from imagewright.errors import ImagewrightError, InvalidArgumentError
from imagewright.units import parse_size

if TYPE_CHECKING:
    from rich.progress import Progress

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """``--json``: print a machine-readable result on stdout instead of the human report."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(func)


#: ``--data-dir`` and ``--database`` of the commands that act on the registry's catalog.
data_dir_option = click.option(
    "--data-dir",
    default=None,
    help="The registry's data dir (default $IMAGEWRIGHT_DATA_DIR or ./imagewright-data).",
)
database_option = click.option(
    "--database", default=None, metavar="URL", help="The catalog database (instead of the data dir's)."
)

#: ``--task-lease`` of ``serve`` and ``worker``: both judge a task's heartbeat, so they share it.
task_lease_option = click.option(
    "--task-lease",
    default=30.0,
    show_default=True,
    type=click.FloatRange(2.0),
    metavar="SECONDS",
    help="A task whose worker sent no heartbeat for this long is run again (or failed); give "
    "servers and workers the same value.",
)


def log_level_option(func: F) -> F:
    """``--log-level`` of the servers (``serve``, ``metadata serve``): what ``service.logs`` shows.

    Its choices are imported when a server command is defined, not with this module (every
    command imports it).
    """
    from imagewright.service.logs import LEVELS

    return click.option(
        "--log-level",
        type=click.Choice(LEVELS),
        default="info",
        show_default=True,
        help="What the service logs to stderr (info: start-up, one line per request, tasks, sweeps; "
        "the metadata service's request lines go to its --access-log).",
    )(func)


#: ``--tokens`` of the commands that make instances (``instance create``, ``run``, ``verify``).
tokens_option = click.option(
    "--tokens",
    type=click.Choice(["optional", "required"]),
    default="optional",
    show_default=True,
    help="IMDSv2 session tokens: required refuses IMDSv1 requests (401).",
)


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
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
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

    import signal

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


# --- clouds (imagewright image, publish --to registry) ----------------------------------------


def cloud_options(func: F) -> F:
    """``--cloud NAME`` and ``--clouds-file PATH``: a cloud of clouds.yaml, as the openstack CLI reads it."""
    func = click.option(
        "--clouds-file",
        default=None,
        metavar="PATH",
        help="A clouds.yaml (default: openstacksdk's search path, $OS_CLIENT_CONFIG_FILE).",
    )(func)
    func = click.option(
        "--cloud",
        "cloud_name",
        default=None,
        metavar="NAME",
        help="The cloud in clouds.yaml (default $OS_CLOUD; without one, the OS_* variables of an openrc).",
    )(func)
    return func


def connect_cloud(cloud_name: str | None, clouds_file: str | None) -> Any:
    from imagewright.registry import connect

    return connect(cloud_name, clouds_file)


def parse_properties(values: tuple[str, ...]) -> dict[str, str]:
    properties: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--property {item!r} is not KEY=VALUE.")
        properties[key] = value
    return properties
