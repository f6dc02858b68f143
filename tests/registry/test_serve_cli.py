"""``imagewright serve`` start-up, ``accounts`` and ``db`` as a user runs them; scale-out on PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.registry import ADMIN_PASSWORD, BIN, RegistryServer, _clean_env, free_port

from imagewright.catalog.database import Catalog
from imagewright.catalog.metadefs import default_documents
from imagewright.catalog.models import MetadefNamespace


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "imagewright"), *args],
        env=env or _clean_env(),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


def test_first_start_generates_password_and_client_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = _clean_env()
    env.pop("IMAGEWRIGHT_ADMIN_PASSWORD", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "imagewright"), "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/identity/v3").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        text = log.read_text()
        password = re.search(r"admin password: (\S+)", text)
        assert password is not None, text
        assert f"OS_CLIENT_CONFIG_FILE={data}/clouds.yaml OS_CLOUD=imagewright openstack image list" in text
        assert f"http://127.0.0.1:{port}/identity/v3" in text and f"http://127.0.0.1:{port}/image" in text
        for name in ("clouds.yaml", "openrc", "registry.json"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
        assert password.group(1) in (data / "clouds.yaml").read_text()
        assert f"export OS_PASSWORD={password.group(1)}" in (data / "openrc").read_text()
        # The printed password works.
        response = httpx.post(
            f"http://127.0.0.1:{port}/identity/v3/auth/tokens",
            json={
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": "admin",
                                "domain": {"id": "default"},
                                "password": password.group(1),
                            }
                        },
                    }
                }
            },
        )
        assert response.status_code == 201
        # A second server on the same data dir is refused in one sentence.
        second = run("serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{free_port()}")
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"imagewright: error: Another 'imagewright serve' is running on {data} (it holds serve.lock)."
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    # A restart neither prints nor changes the password.
    with RegistryServer(data) as server:
        assert "admin password" not in server.log()
        assert password.group(1) in (data / "clouds.yaml").read_text()


def test_accounts_cli(registry: RegistryServer) -> None:
    data = str(registry.data_dir)
    added = run("accounts", "project", "add", "science", "--description", "lab", "--data-dir", data, "--json")
    assert added.returncode == 0, added.stderr
    project_id = json.loads(added.stdout)["id"]
    assert re.fullmatch(r"[0-9a-f]{32}", project_id)
    again = run("accounts", "project", "add", "science", "--data-dir", data)
    assert (
        again.returncode == 1
        and again.stderr.strip() == "imagewright: error: A project named 'science' exists already."
    )
    listed = json.loads(run("accounts", "project", "list", "--data-dir", data, "--json").stdout)
    assert sorted(p["name"] for p in listed) == ["admin", "science"]

    no_password = run("accounts", "user", "add", "ivy", "--project", "science", "--data-dir", data)
    assert no_password.returncode == 1 and "--password-stdin" in no_password.stderr
    created = run(
        "accounts",
        "user",
        "add",
        "ivy",
        "--project",
        "science",
        "--role",
        "reader",
        "--password-stdin",
        "--data-dir",
        data,
        stdin="ivy-Pw-1\n",
    )
    assert created.returncode == 0, created.stderr
    assert "user ivy created: role reader on project science" in created.stdout
    bad_project = run("accounts", "user", "add", "ivy", "--project", "nowhere", "--data-dir", data)
    assert (
        bad_project.returncode == 1
        and bad_project.stderr.strip() == "imagewright: error: There is no project 'nowhere'."
    )
    bad_role = run(
        "accounts", "user", "add", "ivy", "--project", "science", "--role", "owner", "--data-dir", data
    )
    assert bad_role.returncode == 2
    # An existing user gets another role.
    assert (
        run(
            "accounts", "user", "add", "ivy", "--project", "admin", "--role", "member", "--data-dir", data
        ).returncode
        == 0
    )
    users = {
        u["name"]: u for u in json.loads(run("accounts", "user", "list", "--data-dir", data, "--json").stdout)
    }
    assert sorted((r["project"], r["role"]) for r in users["ivy"]["roles"]) == [
        ("admin", "member"),
        ("science", "reader"),
    ]
    assert [r["role"] for r in users["admin"]["roles"]] == ["admin"]

    # The new user logs in through the API at once (the catalog is the only state).
    token = registry.token("ivy", "ivy-Pw-1", "science")
    with registry.api(token) as api:
        assert api.post("/image/v2/images", json={"name": "x"}).status_code == 403  # reader
    member = registry.token("ivy", "ivy-Pw-1", "admin")
    with registry.api(member) as api:
        api.create_image(name="owned")

    # A project that owns images is not removed; an empty one is.
    admin_project = next(p["id"] for p in listed if p["name"] == "admin")
    refused = run("accounts", "project", "remove", admin_project, "--data-dir", data)
    assert refused.returncode == 1 and "still owns 1 image" in refused.stderr
    assert run("accounts", "project", "remove", "science", "--data-dir", data).returncode == 0
    assert run("accounts", "user", "remove", "ivy", "--data-dir", data).returncode == 0
    gone = run("accounts", "user", "remove", "ivy", "--data-dir", data)
    assert gone.returncode == 1 and gone.stderr.strip() == "imagewright: error: There is no user 'ivy'."
    with registry.api(member) as api:
        assert api.get("/image/v2/images").status_code == 401


def test_accounts_without_a_data_dir(tmp_path: Path) -> None:
    result = run("accounts", "project", "list", "--data-dir", str(tmp_path / "none"))
    assert result.returncode == 1
    assert result.stderr.startswith("imagewright: error: There is no data dir ")
    assert "Traceback" not in result.stderr


def test_db_upgrade_on_postgresql_and_two_servers_as_one(pg: PostgresCluster, tmp_path: Path) -> None:
    database = pg.fresh_database()
    first = run("db", "upgrade", "--database", database)
    assert first.returncode == 0, first.stderr
    head = Catalog(database).head_revision()  # the newest migration shipped (0003: metadefs)
    assert head >= "0003" and f"upgraded from empty to {head}" in first.stdout
    again = run("db", "upgrade", "--database", database, "--json")
    assert json.loads(again.stdout)["from"] == json.loads(again.stdout)["to"] == head
    current = json.loads(run("db", "current", "--database", database, "--json").stdout)
    assert current["current"] == current["head"] == head
    # The upgrade that created the metadata definitions' tables loaded the default set.
    catalog = Catalog(database)
    with catalog.reading() as session:
        loaded = {row.namespace for row in session.scalars(select(MetadefNamespace))}
    catalog.dispose()
    assert loaded == {doc["namespace"] for doc in default_documents()}
    assert "postgres@127.0.0.1" in current["database"]
    unreachable = run("db", "current", "--database", f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    assert (
        unreachable.returncode == 1
        and "cannot be reached" in unreachable.stderr
        and "Traceback" not in unreachable.stderr
    )

    # Two servers (two workers each) on one PostgreSQL and one store behave as one service.
    shared_store = tmp_path / "blobs"
    servers = [
        RegistryServer(
            tmp_path / f"data{n}",
            database=database,
            workers=2,
            extra_args=("--store", f"file://{shared_store}"),
        )
        for n in (1, 2)
    ]
    for server in servers:
        server.start()
    try:
        token = servers[0].token()  # issued by one, valid on the other
        one, two = servers[0].api(token), servers[1].api(token)
        image = one.create_image(name="everywhere", disk_format="raw", container_format="bare")
        data = os.urandom(3 << 20)
        assert one.upload(image["id"], data).status_code == 204
        for _ in range(6):  # requests land on either worker of either server
            assert two.get(f"/image/v2/images/{image['id']}/file").content == data
            assert one.get(f"/image/v2/images/{image['id']}").json()["status"] == "active"
        assert (
            two.patch(
                f"/image/v2/images/{image['id']}", [{"op": "add", "path": "/site", "value": "b"}]
            ).status_code
            == 200
        )
        assert one.get(f"/image/v2/images/{image['id']}").json()["site"] == "b"
        # Revoked on one, refused by the other.
        revoke = httpx.delete(
            f"{servers[1].url}/identity/v3/auth/tokens",
            headers={"X-Auth-Token": token, "X-Subject-Token": token},
        )
        assert revoke.status_code == 204
        assert one.get("/image/v2/images").status_code == 401
        fresh = servers[1].token()
        with servers[0].api(fresh) as api:
            assert api.delete(f"/image/v2/images/{image['id']}").status_code == 204
        assert [p for p in shared_store.rglob("*") if p.is_file()] == []
        one.client.close()
        two.client.close()
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize(
    ("level", "asgi_server"), [("info", "uvicorn"), ("info", "granian"), ("warning", "uvicorn")]
)
def test_serve_logs_to_stderr_at_its_log_level(tmp_path: Path, level: str, asgi_server: str) -> None:
    """INFO: each worker says it is ready, each request ends in one line (method, path without
    its query string, status, bytes, seconds; never a header); the banner stays on stdout."""
    data, port = tmp_path / "data", free_port()
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    env = _clean_env() | {"IMAGEWRIGHT_ADMIN_PASSWORD": ADMIN_PASSWORD}
    argv = [str(BIN / "imagewright"), "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
            "--server", asgi_server, "--log-level", level]  # fmt: skip
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env, start_new_session=True)
    server = RegistryServer(data, port=port)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, err.read_text()
            try:
                if httpx.get(f"{server.url}/identity/v3", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        token = server.token()
        with server.api(token) as api:
            assert api.get("/image/v2/images?limit=1&marker-secret=x").status_code == 200
            assert api.get("/image/v2/images/no-such-image/file").status_code == 404
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    said, printed = err.read_text(), out.read_text()
    assert f"listening on 127.0.0.1:{port}" in printed and "listening on" not in said
    assert token not in said and "marker-secret" not in said
    if level == "warning":
        assert " INFO " not in said, said
        return
    assert f"worker ready: identity {server.url}/identity/v3, image {server.url}/image" in said, said
    request_line = r"INFO imagewright\.service\.requests \[\d+\]: {} {} {} \d+ B \d+\.\d{{3}} s$"
    for method, path, status in (
        ("POST", "/identity/v3/auth/tokens", 201),
        ("GET", "/image/v2/images", 200),
        ("GET", "/image/v2/images/no-such-image/file", 404),
    ):
        assert re.search(request_line.format(method, re.escape(path), status), said, re.MULTILINE), said
