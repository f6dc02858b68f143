"""The list of verbs. Add a module name here when you add ``cli/<name>.py`` with a ``command``."""

from __future__ import annotations

import importlib

import click

# Order is the order of `imagewright --help`: the pipeline, left to right.
COMMAND_MODULES: tuple[str, ...] = (
    "inspect",
    "convert",
    "resize",
    "build",
    "context",
    "cat",
    "ls",
    "copy_in",
    "boot",
    "prepare",
    "serve",
    "accounts",
    "db",
)


def all_commands() -> list[click.Command]:
    commands: list[click.Command] = []
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"imagewright.cli.{name}")
        commands.append(module.command)
    return commands
