"""Fixtures of the registry tests: a started ``imagewright serve`` on SQLite or on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.postgres import PostgresCluster, postgres_cluster
from tests.fixtures.registry import Api, RegistryServer


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


BACKENDS = ["sqlite", "postgresql"]


def backend_database(request: pytest.FixtureRequest) -> str | None:
    """None for the embedded SQLite catalog, else a fresh PostgreSQL database's URL."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg").fresh_database())
    return None


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


@pytest.fixture(params=BACKENDS)
def any_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryServer]:
    """The same test on SQLite and on PostgreSQL (a fresh database each time)."""
    yield from _server(tmp_path, backend_database(request))


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    """One registry per test module (and backend): for tests that tolerate each other's images."""
    yield from _server(
        tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]), backend_database(request)
    )


@pytest.fixture(scope="module")
def admin(server: RegistryServer) -> Iterator[Api]:
    """The module registry's admin, with a token."""
    with server.api(server.token()) as api:
        yield api
