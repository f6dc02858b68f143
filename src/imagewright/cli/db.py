"""``imagewright db``: the registry catalog's schema (Alembic migrations shipped with imagewright)."""

from __future__ import annotations

import click

from imagewright.cli.common import json_option
from imagewright.cli.render import emit_json, stdout_console


@click.group("db")
def command() -> None:
    """The registry's catalog database."""


@command.command("upgrade")
@click.option("--data-dir", default=None, help="The registry's data dir (its catalog).")
@click.option(
    "--database", default=None, metavar="URL", help="The catalog database, e.g. postgresql://USER@HOST/DB."
)
@json_option
def upgrade(data_dir: str | None, database: str | None, as_json: bool) -> None:
    """Bring the catalog's schema to this version of imagewright (idempotent)."""
    from imagewright.catalog.database import redact
    from imagewright.service.datadir import ensure_data_dir, open_catalog, resolve_data_dir

    if database is None:
        ensure_data_dir(resolve_data_dir(data_dir))
    catalog = open_catalog(data_dir, database)
    try:
        before, after = catalog.upgrade()
    finally:
        catalog.dispose()
    if as_json:
        emit_json({"database": redact(catalog.url), "from": before, "to": after})
    elif before == after:
        stdout_console().print(f"catalog {redact(catalog.url)} is at revision {after} already")
    else:
        stdout_console().print(f"catalog {redact(catalog.url)} upgraded from {before or 'empty'} to {after}")


@command.command("current")
@click.option("--data-dir", default=None, help="The registry's data dir (its catalog).")
@click.option("--database", default=None, metavar="URL", help="The catalog database.")
@json_option
def current(data_dir: str | None, database: str | None, as_json: bool) -> None:
    """Show the catalog's schema revision and the one this imagewright needs."""
    from imagewright.catalog.database import redact
    from imagewright.service.datadir import open_catalog

    catalog = open_catalog(data_dir, database)
    try:
        now, head = catalog.current_revision(), catalog.head_revision()
    finally:
        catalog.dispose()
    if as_json:
        emit_json({"database": redact(catalog.url), "current": now, "head": head})
    else:
        stdout_console().print(
            f"catalog {redact(catalog.url)}: revision {now or 'empty'} (this imagewright needs {head})"
        )
