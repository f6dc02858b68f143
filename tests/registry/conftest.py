"""Fixtures of the registry tests: a started ``imagewright serve`` on SQLite or on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.postgres import PostgresCluster, postgres_cluster
from tests.fixtures.registry import RegistryServer


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


def _server(tmp_path: Path, database: str | None, **kwargs: object) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "data", database=database, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry on the embedded default (SQLite + files)."""
    yield from _server(tmp_path, None)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryServer]:
    """The same test on SQLite and on PostgreSQL (a fresh database each time)."""
    database = None
    if request.param == "postgresql":
        database = request.getfixturevalue("pg").fresh_database()
    yield from _server(tmp_path, database)
