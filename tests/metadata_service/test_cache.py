"""The cache: no database round trip per request, and every process learns of a change.

In-process: the real ``MetadataApp`` over a real SQLite catalog, driven as an ASGI app, with
every SQL statement the engine runs counted. Across processes: two ``imagewright serve`` on one
PostgreSQL database, each with its own data dir; instances made and deleted through one's
compute API are served and forgotten by the other's metadata service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from tests.fixtures.metadata_service import start_stack
from tests.fixtures.postgres import PostgresCluster, postgres_cluster
from tests.fixtures.registry import RegistryServer

from imagewright.catalog import accounts, images, instances
from imagewright.catalog.database import Catalog
from imagewright.metadata.channel import MetadataChannel
from imagewright.service.imds.access_log import AccessLog
from imagewright.service.imds.app import MetadataApp, MetadataService
from imagewright.service.imds.cache import InstanceCache
from imagewright.service.imds.signing import load_signer
from imagewright.service.imds.tokens import SessionTokens


def _catalog_with_instance(data_dir: Path) -> tuple[Catalog, str]:
    data_dir.mkdir()
    catalog = Catalog.for_data_dir(data_dir)
    catalog.upgrade()
    with catalog.writing() as session:
        created = accounts.bootstrap(session, "pw")
        image = images.create_image(session, {"name": "img", "owner": created.project.id}, {}, [])
        image.status = "active"
        spec = instances.InstanceSpec.build(name="cached", image_id=image.id, addresses=["127.0.0.71"])
        instance = instances.create_instance(session, spec, created.project.id)
        return catalog, instance.id


async def _call(app: MetadataApp, path: str, client: str) -> tuple[int, bytes]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [(b"host", b"169.254.169.254")],
        "client": (client, 40000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


def test_no_database_round_trip_for_a_cached_instance(tmp_path: Path) -> None:
    catalog, instance_id = _catalog_with_instance(tmp_path / "data")
    statements: list[str] = []
    event.listen(catalog.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    channel = MetadataChannel.for_data_dir(tmp_path / "data")
    cache = InstanceCache(catalog, load_signer(channel), "RegionOne")
    service = MetadataService(
        cache, SessionTokens(channel.token_key()), channel.proxy_secret(), AccessLog(None)
    )
    app = MetadataApp(service, forwarder_channel=False)

    async def scenario() -> None:
        await cache.check()
        assert await _call(app, "/latest/meta-data/instance-id", "127.0.0.71") == (200, instance_id.encode())
        assert await _call(app, "/latest/meta-data/instance-id", "127.0.0.72") == (404, b"Not Found")
        loaded = len(statements)
        for index in range(200):
            path = (
                "/latest/meta-data/instance-id",
                "/latest/meta-data/",
                "/openstack/latest/meta_data.json",
            )[index % 3]
            assert (await _call(app, path, "127.0.0.71"))[0] == 200
            assert (await _call(app, path, "127.0.0.72"))[0] == 404  # a remembered stranger
        assert len(statements) == loaded, statements[loaded:]
        # nothing changed: a check is one read of the counter (after SQLite's BEGIN)
        await cache.check()
        selects = [sql for sql in statements[loaded:] if sql.startswith("SELECT")]
        assert len(selects) == 1 and "FROM catalog_versions" in selects[0]
        # another writer (another process, say) deletes the instance
        other = Catalog.for_data_dir(tmp_path / "data")
        with other.writing() as session:
            instances.delete_instance(session, instances.get_instance(session, instance_id))
        other.dispose()
        assert await _call(app, "/latest/meta-data/instance-id", "127.0.0.71") == (200, instance_id.encode())
        assert await cache.check() is True
        assert await _call(app, "/latest/meta-data/instance-id", "127.0.0.71") == (404, b"Not Found")

    asyncio.run(scenario())
    catalog.dispose()


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


def _until(what: Any, deadline_seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_two_processes_on_one_postgresql(pg: PostgresCluster, tmp_path: Path) -> None:
    database = pg.fresh_database()
    metadata = start_stack(tmp_path / "one", database=database)
    api_server = RegistryServer(tmp_path / "two", database=database)
    api_server.start()
    try:
        with api_server.api(api_server.token()) as admin:
            created = admin.post(
                "/compute/v1/instances",
                json={"instance": {"name": "pg-1", "image": metadata.image_id, "addresses": ["127.0.0.81"]}},
            )
            assert created.status_code == 201, created.text
            instance_id = created.json()["instance"]["id"]
            # a new instance is looked up at its first request
            answer = metadata.get("/latest/meta-data/instance-id", "127.0.0.81")
            assert (answer.status, answer.text) == (200, instance_id)
            assert admin.delete(f"/compute/v1/instances/{instance_id}").status_code == 204
        # the other process forgets it at its next check of the counter (0.2 s here)
        assert _until(lambda: metadata.get("/latest/meta-data/instance-id", "127.0.0.81").status == 404)
        # and a new instance on the freed address is that instance, not the old one
        with api_server.api(api_server.token()) as admin:
            again = admin.post(
                "/compute/v1/instances",
                json={"instance": {"name": "pg-2", "image": metadata.image_id, "addresses": ["127.0.0.81"]}},
            )
            new_id = again.json()["instance"]["id"]
        # (the address was remembered as nobody's: that memory goes at the next counter check too)
        assert _until(lambda: metadata.get("/latest/meta-data/instance-id", "127.0.0.81").text == new_id)
    finally:
        api_server.stop()
        metadata.server.stop()
