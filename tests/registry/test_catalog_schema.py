"""The migrations make exactly the tables the models describe, on SQLite and on PostgreSQL.

Alembic's autogenerate comparison of the migrated database with ``models.Base.metadata`` must
find nothing to change: a model edited without its migration (or the reverse) fails here. The
migrations are one chain (one head).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from tests.registry.conftest import BACKENDS

# Imported for its tables (tasks, exports, secrets): they join Base.metadata.
from imagewright.catalog import task_models  # noqa: F401
from imagewright.catalog.database import Catalog
from imagewright.catalog.models import Base


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrations_match_the_models(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> None:
    if backend == "postgresql":
        url = request.getfixturevalue("pg").fresh_database()
    else:
        url = f"sqlite:///{tmp_path}/catalog.sqlite"
    catalog = Catalog(url)
    try:
        script = ScriptDirectory.from_config(catalog._alembic_config())
        assert len(script.get_heads()) == 1, script.get_heads()
        before, after = catalog.upgrade()
        assert before is None and after == catalog.head_revision()
        with catalog.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == []
    finally:
        catalog.dispose()
