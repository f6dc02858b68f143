"""Fixtures of the registry tests: a started ``imagewright serve`` on SQLite, on PostgreSQL, or on
PostgreSQL with two named stores, a file store and an S3 one (the real Swift S3 fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.postgres import PostgresCluster, postgres_cluster
from tests.fixtures.registry import Api, RegistryServer, S3Place
from tests.fixtures.s3_server import S3Server


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


BACKENDS = ["sqlite", "postgresql"]
#: PostgreSQL + ``--store fast=file:///… --store bulk=s3://…?default=true``: uploads go to S3
#: unless a client names ``fast`` with ``X-Image-Meta-Store``.
S3 = "s3"
S3_PREFIX = "images/v1"
#: The embedded default run by granian (``serve --server granian``) instead of uvicorn.
GRANIAN = "granian"


def backend_database(request: pytest.FixtureRequest) -> str | None:
    """None for the embedded SQLite catalog, else a fresh PostgreSQL database's URL."""
    if request.param in ("postgresql", S3):
        return str(request.getfixturevalue("pg").fresh_database())
    return None


def make_server(request: pytest.FixtureRequest, base: Path, backend: str) -> RegistryServer:
    """A (not yet started) registry of ``backend`` under ``base``."""
    if backend == "sqlite":
        return RegistryServer(base / "data")
    if backend == GRANIAN:
        return RegistryServer(base / "data", extra_args=["--server", "granian"])
    database = str(request.getfixturevalue("pg").fresh_database())
    if backend == "postgresql":
        return RegistryServer(base / "data", database=database)
    assert backend == S3, backend
    s3: S3Server = request.getfixturevalue("s3_server")
    bucket = s3.new_bucket("registry")
    fast = base / "fast-store"
    return RegistryServer(
        base / "data",
        database=database,
        extra_args=[
            "--store",
            f"fast={fast.as_uri()}",
            "--store",
            f"bulk=s3://{bucket}/{S3_PREFIX}?endpoint={s3.endpoint}&default=true",
        ],
        env=s3.env(),
        file_store_dirs=[fast],
        s3_places=[S3Place(s3.client(), bucket, S3_PREFIX)],
    )


def _server(request: pytest.FixtureRequest, base: Path, backend: str) -> Iterator[RegistryServer]:
    with make_server(request, base, backend) as server:
        yield server


@pytest.fixture
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry on the embedded default (SQLite + files)."""
    yield from _server(request, tmp_path, "sqlite")


@pytest.fixture(params=[*BACKENDS, S3, GRANIAN])
def any_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryServer]:
    """The same test on SQLite, on PostgreSQL (a fresh database each time), on PostgreSQL + S3,
    and on SQLite served by granian instead of uvicorn."""
    yield from _server(request, tmp_path, request.param)


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    """One registry per test module (and backend): for tests that tolerate each other's images."""
    base = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield from _server(request, base, request.param)


@pytest.fixture(scope="module")
def s3_registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    """One PostgreSQL + file + S3 registry per test module."""
    yield from _server(request, tmp_path_factory.mktemp("s3-registry"), S3)


@pytest.fixture(scope="module")
def admin(server: RegistryServer) -> Iterator[Api]:
    """The module registry's admin, with a token."""
    with server.api(server.token()) as api:
        yield api
