"""The sweep, in process: stale uploads of other hosts (by lease), dead local holders, orphan blobs."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

from tests.fixtures.registry import RegistryServer

from imagewright.catalog import accounts, images
from imagewright.catalog.database import Catalog
from imagewright.service.config import ServiceConfig
from imagewright.service.http import Registry
from imagewright.service.leases import holder_is_dead_here, this_holder
from imagewright.service.sweep import sweep
from imagewright.stores import open_stores


def _registry(tmp_path: Path) -> Registry:
    data = tmp_path / "data"
    data.mkdir()
    config = ServiceConfig(data_dir=data, database_url=f"sqlite:///{data}/catalog.sqlite")
    catalog = Catalog(config.database_url)
    catalog.upgrade()
    stores = open_stores([], data)
    stores.check()
    return Registry(config=config, catalog=catalog, stores=stores)


def _saving_image(registry: Registry, holder: str, lease: timedelta, payload: bytes) -> tuple[str, str]:
    store = registry.stores.default
    with registry.catalog.writing() as session:
        image = images.create_image(session, {"disk_format": "raw", "container_format": "bare"}, {}, [])
        location = store.location_for(f"{image.id}.test")
        assert images.claim_upload(session, image, holder, store.info.id, location, lease)
        image_id = image.id
    with store.writer(store.key_of(location)) as writer:
        writer.write(payload)
        writer.finish()
    return image_id, location


def test_holders() -> None:
    me = this_holder()
    assert not holder_is_dead_here(me)
    assert holder_is_dead_here(None)
    host, _pid, start = me.split("/")
    assert holder_is_dead_here(f"{host}/{2**22 + 12345}/{start}")  # no such pid
    assert not holder_is_dead_here(f"elsewhere.example/{1}/{start}")  # another host: only the lease counts


def test_sweep_resets_expired_and_dead_uploads_and_removes_orphans(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    store = registry.stores.default
    # Another host's upload whose lease ran out: reset, its blob deleted.
    expired, expired_location = _saving_image(
        registry, "elsewhere.example/1/1", timedelta(seconds=-1), b"a" * 100
    )
    # Another host's upload still within its lease: left alone.
    alive, alive_location = _saving_image(registry, "elsewhere.example/2/2", timedelta(minutes=5), b"b" * 100)
    # A dead process of this host: reset at once, lease or not.
    host = this_holder().split("/")[0]
    dead, dead_location = _saving_image(registry, f"{host}/{2**22 + 7}/99", timedelta(minutes=5), b"c" * 100)
    # A blob no image names (a delete that died between row and bytes).
    with store.writer("orphan-blob") as writer:
        writer.write(b"orphan")
        orphan = writer.finish()

    report = sweep(registry)
    assert sorted(report.reset_uploads) == sorted([expired, dead])
    assert report.removed_orphans == [orphan]
    assert not store.exists(expired_location) and not store.exists(dead_location) and not store.exists(orphan)
    assert store.exists(alive_location)
    with registry.catalog.reading() as session:
        assert images.get_image(session, expired).status == "queued"
        assert images.get_image(session, expired).location is None
        assert images.get_image(session, dead).status == "queued"
        assert images.get_image(session, alive).status == "saving"
    # Idempotent.
    again = sweep(registry)
    assert again.reset_uploads == [] and again.removed_orphans == []
    registry.catalog.dispose()


def test_expired_tokens_are_purged(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    with registry.catalog.writing() as session:
        created = accounts.bootstrap(session, "pw-for-test")
        from imagewright.catalog import tokens

        tokens.issue(session, created.user, created.project, ("password",))
        old_token, _ = tokens.issue(session, created.user, created.project, ("password",))
        row = session.get(tokens.Token, tokens.token_hash(old_token))
        assert row is not None
        row.expires_at = row.issued_at - timedelta(seconds=1)
    assert sweep(registry).purged_tokens == 1
    registry.catalog.dispose()


def test_full_store_is_a_clear_error_and_keeps_nothing(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    server = RegistryServer(tmp_path / "data", extra_args=("--store", f"file://{mount}/blobs"))
    try:
        server.start()
        with server.api(server.token()) as api:
            image = api.create_image(name="too-big", disk_format="raw", container_format="bare")
            response = api.upload(image["id"], b"\x01" * (8 << 20))
            assert response.status_code == 413, response.text
            message = response.json()["message"]
            assert "full" in message and "Traceback" not in message
            shown = api.get(f"/image/v2/images/{image['id']}").json()
            assert shown["status"] == "queued" and shown["size"] is None
            assert [p for p in (mount / "blobs").rglob("*") if p.is_file()] == []
            # A small image still fits afterwards.
            assert api.upload(image["id"], b"\x02" * (256 << 10)).status_code == 204
    finally:
        server.stop()
        subprocess.run(["umount", str(mount)], check=True)
