"""Alembic's entry point: migrate over the connection ``Catalog.upgrade`` hands in.

``render_as_batch`` lets later migrations alter tables on SQLite (copy-and-move) with the same
code that alters them in place on PostgreSQL.
"""

from __future__ import annotations

from alembic import context

# task_models' tables (tasks, exports, secrets) join Base.metadata when it is imported.
from imagewright.catalog import task_models  # noqa: F401
from imagewright.catalog.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only Catalog.upgrade runs migrations
    raise RuntimeError("imagewright's migrations run through Catalog.upgrade(), not the alembic command.")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
