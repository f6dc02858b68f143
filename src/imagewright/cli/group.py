"""The ``imagewright`` command group (click) and the one place failures become exit codes.

Exit codes: 0 ok, 1 failed or refused, 2 usage (click's own), 130 interrupted.
An ``ImagewrightError`` is printed as one sentence; anything else is a bug and is reported
as one too, with the traceback only under ``--debug`` (or ``IMAGEWRIGHT_DEBUG=1``).

The group imports a verb's module only when that verb runs (``cli.commands`` is the table),
``--help`` lists the verbs from the table alone, and nothing here imports more than click.
``cli.main`` (the entry point) runs a plain ``imagewright inspect IMAGE...`` without this
module at all, and hands everything else to it.
"""

from __future__ import annotations

import os
from typing import Any

import click

from imagewright import __version__
from imagewright.cli import NO_SANDBOX_ENV
from imagewright.cli.commands import BY_NAME, VERBS
from imagewright.errors import ImagewrightError


def _debug_enabled(ctx: click.Context) -> bool:
    return debug_requested() or bool(ctx.find_root().params.get("debug"))


def debug_requested() -> bool:
    """``IMAGEWRIGHT_DEBUG`` set (to anything but 0): show tracebacks, as ``--debug`` does."""
    return os.environ.get("IMAGEWRIGHT_DEBUG", "") not in ("", "0")


def _print_traceback() -> None:
    import traceback  # only with --debug: it is not cheap to import

    traceback.print_exc()


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def failure_exit_code(err: BaseException, debug: bool) -> int:
    """Report a command's failure on stderr (called inside the ``except`` that caught it)
    and return the exit code: 1, or 130 for an interruption."""
    if isinstance(err, KeyboardInterrupt):
        click.echo("imagewright: interrupted.", err=True)
        return 130
    if debug:
        _print_traceback()
    if isinstance(err, ImagewrightError):
        click.echo(f"imagewright: error: {_sentence(str(err))}", err=True)
    else:
        click.echo(
            f"imagewright: internal error: {type(err).__name__}: {err} "
            "(this is a bug; run with --debug for the traceback).",
            err=True,
        )
    return 1


class ImagewrightGroup(click.Group):
    """A click group that turns every failure into one line on stderr and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        # The table's order is the pipeline's order (inspect, convert, build ...).
        return [verb.name for verb in VERBS] + [name for name in self.commands if name not in BY_NAME]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in BY_NAME:
            verb = BY_NAME[cmd_name]
            if verb.streams:
                from imagewright.allocator import keep_freed_buffers

                keep_freed_buffers()
            self.commands[cmd_name] = verb.load()
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The verbs and their first sentences, as click lays them out, without importing them."""
        added = [(name, cmd) for name, cmd in self.commands.items() if name not in BY_NAME and not cmd.hidden]
        limit = formatter.width - 6 - max(len(name) for name in [*BY_NAME, *(name for name, _ in added)])
        # click's own shortening (to the first sentence, and to the width), applied to the table's text.
        rows = [
            (verb.name, click.Command(verb.name, help=verb.summary).get_short_help_str(limit))
            for verb in VERBS
        ]
        rows += [(name, cmd.get_short_help_str(limit)) for name, cmd in added]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - the last line of defence: no traceback for users
            ctx.exit(failure_exit_code(err, _debug_enabled(ctx)))


@click.group(cls=ImagewrightGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="imagewright")
@click.option("--debug", is_flag=True, help="Show a traceback when something fails.")
@click.option(
    "--no-sandbox",
    is_flag=True,
    help="Run qemu-img, e2fsprogs, QEMU and the rest without their bubblewrap sandbox "
    "(for machines without user namespaces; also IMAGEWRIGHT_NO_SANDBOX=1). "
    "A hostile image can then make them read or overwrite host files.",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, no_sandbox: bool) -> None:
    """Inspect, convert, build, prepare and boot-test virtual machine images.

    Images are untrusted: imagewright refuses hostile ones before any other tool sees them,
    never mounts a guest filesystem, needs no root, and runs every program that reads an
    image in a sandbox that shows it nothing else.
    """
    if not (no_sandbox or os.environ.get(NO_SANDBOX_ENV)):
        return  # the sandbox is on: nothing to set up or say (and no subprocess machinery to import)
    from imagewright.programs.runner import sandbox_disabled, sandbox_requested, warn_without_sandbox

    if no_sandbox:
        ctx.with_resource(sandbox_disabled())
    if not sandbox_requested():
        warn_without_sandbox(lambda text: click.echo(text, err=True))
