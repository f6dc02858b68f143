"""``imagewright`` entry point: a plain ``inspect`` runs at once, everything else goes to click.

Start-up is part of the interface: ``imagewright inspect one.qcow2`` must start like a tool,
not like an application (``bench/cli_bench.py`` measures it against ``qemu-img info``). Click
and what it imports cost more than reading the image, so when the arguments are
``inspect`` and words click would take without a question (``inspect_run.plain_arguments``),
the command runs without importing click; its failures are reported by the group's own code
(``group.failure_exit_code``), with the same words and exit codes. Everything else —
``--help``, ``--version``, global options, usage errors, shell completion, the other verbs,
``IMAGEWRIGHT_NO_SANDBOX`` (whose warning the group prints) — is the click group's
(``cli.group``). ``tests/test_cli_startup.py`` checks that both paths answer alike and what the
plain one imports.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from imagewright.cli import NO_SANDBOX_ENV

if TYPE_CHECKING:
    import click

    from imagewright.cli.inspect_run import InspectArguments

#: The variable that asks click for shell completion (``_<PROG_NAME>_COMPLETE``).
COMPLETION_ENV = "_IMAGEWRIGHT_COMPLETE"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["inspect"] and not os.environ.get(NO_SANDBOX_ENV) and COMPLETION_ENV not in os.environ:
        from imagewright.cli.inspect_run import plain_arguments

        arguments = plain_arguments(args[1:])
        if arguments is not None:
            sys.exit(_run_plain_inspect(arguments))
    from imagewright.cli.group import cli

    cli.main(args=args, prog_name="imagewright")


def _run_plain_inspect(arguments: InspectArguments) -> int:
    """``inspect`` without click; failures as the group reports them (``--debug`` cannot have
    been given, so only ``IMAGEWRIGHT_DEBUG`` asks for a traceback)."""
    from imagewright.cli.inspect_run import run_inspect

    try:
        return run_inspect(arguments)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - as the group's last line of defence
        from imagewright.cli.group import debug_requested, failure_exit_code

        return failure_exit_code(err, debug_requested())


def __getattr__(name: str) -> click.Group:
    """``cli.main.cli``: the click group, imported on first use (it lives in ``cli.group``)."""
    if name == "cli":
        from imagewright.cli.group import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
