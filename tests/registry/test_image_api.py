"""The Image API v2 over raw HTTP: discovery, schemas, errors, JSON patch, listing, tags, data."""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fixtures.registry import Api, RegistryServer
from tests.registry.test_openstack_clients import qemu_virtual_size

V21 = "application/openstack-images-v2.1-json-patch"
V20 = "application/openstack-images-v2.0-json-patch"


def glance_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message", "code", "title"}
    assert body["code"].startswith(str(status))
    message = str(body["message"])
    assert message.endswith(".") and "Traceback" not in message and "\n" not in message
    return message


def test_versions_document(server: RegistryServer) -> None:
    listing = httpx.get(f"{server.url}/image")
    assert listing.status_code == 300
    versions = listing.json()["versions"]
    assert versions[0] == {
        "id": "v2.15",
        "status": "CURRENT",
        "links": [{"rel": "self", "href": f"{server.url}/image/v2/"}],
    }
    assert {v["status"] for v in versions[1:]} == {"SUPPORTED"}
    assert versions[-1]["id"] == "v2.0"
    assert httpx.get(f"{server.url}/image/versions").status_code == 200


def test_schemas(admin: Api) -> None:
    image = admin.get("/image/v2/schemas/image").json()
    assert image["name"] == "image" and image["additionalProperties"] == {"type": "string"}
    assert image["properties"]["status"]["readOnly"] is True
    assert "qcow2" in image["properties"]["disk_format"]["enum"]
    assert admin.get("/image/v2/schemas/images").json()["properties"]["images"]["items"]["name"] == "image"
    assert admin.get("/image/v2/schemas/member").json()["properties"]["status"]["enum"] == [
        "pending",
        "accepted",
        "rejected",
    ]
    assert admin.get("/image/v2/schemas/members").status_code == 200
    glance_error(admin.get("/image/v2/schemas/nope"), 404)


def test_info_stores(admin: Api) -> None:
    assert admin.get("/image/v2/info/stores").json() == {
        "stores": [
            {
                "id": "default",
                "description": admin.get("/image/v2/info/stores").json()["stores"][0]["description"],
                "default": "true",  # a string, as Glance writes it
            }
        ]
    }


ENDPOINTS = [
    ("GET", "/image/v2/images"),
    ("POST", "/image/v2/images"),
    ("GET", "/image/v2/images/{id}"),
    ("PATCH", "/image/v2/images/{id}"),
    ("DELETE", "/image/v2/images/{id}"),
    ("PUT", "/image/v2/images/{id}/file"),
    ("GET", "/image/v2/images/{id}/file"),
    ("PUT", "/image/v2/images/{id}/tags/t"),
    ("DELETE", "/image/v2/images/{id}/tags/t"),
    ("POST", "/image/v2/images/{id}/actions/deactivate"),
    ("POST", "/image/v2/images/{id}/actions/reactivate"),
    ("GET", "/image/v2/images/{id}/members"),
    ("POST", "/image/v2/images/{id}/members"),
    ("GET", "/image/v2/images/{id}/members/m"),
    ("PUT", "/image/v2/images/{id}/members/m"),
    ("DELETE", "/image/v2/images/{id}/members/m"),
    ("GET", "/image/v2/info/stores"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
@pytest.mark.parametrize("token", ["none", "bogus"])
def test_every_endpoint_needs_a_valid_token(
    server: RegistryServer, admin: Api, method: str, path: str, token: str
) -> None:
    image = admin.create_image(name="guarded", disk_format="raw", container_format="bare")
    with server.api(None if token == "none" else "bogus-token") as anonymous:
        response = anonymous.request(
            method, path.format(id=image["id"]), json={} if method in ("POST", "PUT") else None
        )
    glance_error(response, 401)
    assert response.headers["WWW-Authenticate"] == f'Keystone uri="{server.url}/identity"'


def test_unknown_image_is_404(admin: Api) -> None:
    missing = str(uuid.uuid4())
    for method, path in ENDPOINTS:
        if "{id}" not in path:
            continue
        response = admin.request(
            method,
            path.format(id=missing),
            json={"member": "x", "status": "accepted"}
            if method in ("POST", "PUT") and "members" in path
            else None,
        )
        if method == "PATCH":
            response = admin.patch(path.format(id=missing), [])
        if method == "PUT" and path.endswith("/file"):
            response = admin.upload(missing, b"x")
        glance_error(response, 404)
    glance_error(admin.get("/image/v2/images/" + "x" * 300), 404)


def test_patch_media_type(admin: Api) -> None:
    image = admin.create_image(name="patchme", disk_format="raw", container_format="bare")
    for media_type in ("application/json", "application/json-patch+json", "text/plain"):
        response = admin.patch(
            f"/image/v2/images/{image['id']}", [{"op": "replace", "path": "/name", "value": "n"}], media_type
        )
        glance_error(response, 415)
        assert V21 in response.headers["Accept-Patch"]
    assert admin.get(f"/image/v2/images/{image['id']}").json()["name"] == "patchme"


def test_patch_semantics(admin: Api) -> None:
    image = admin.create_image(name="p", disk_format="raw", container_format="bare", color="red")
    url = f"/image/v2/images/{image['id']}"
    ok = admin.patch(url, [
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "add", "path": "/color", "value": "blue"},  # v2.1: add replaces
        {"op": "add", "path": "/shape", "value": "round"},
        {"op": "replace", "path": "/tags", "value": ["a", "b", "a"]},
        {"op": "replace", "path": "/min_ram", "value": 256},
        {"op": "replace", "path": "/os_hidden", "value": True},
        {"op": "add", "path": "/kernel~1id", "value": "k"},
    ])  # fmt: skip
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert (body["name"], body["color"], body["shape"], body["tags"], body["min_ram"], body["os_hidden"]) == (
        "renamed", "blue", "round", ["a", "b"], 256, True,
    )  # fmt: skip
    assert body["kernel/id"] == "k"
    removed = admin.patch(url, [{"op": "remove", "path": "/shape"}])
    assert "shape" not in removed.json()

    for path in (
        "/status",
        "/checksum",
        "/size",
        "/virtual_size",
        "/id",
        "/created_at",
        "/os_hash_value",
        "/self",
        "/file",
        "/schema",
    ):
        assert "read-only" in glance_error(
            admin.patch(url, [{"op": "replace", "path": path, "value": "x"}]), 403
        )
    for path in ("/location", "/deleted", "/os_glance_import_task"):
        assert "reserved" in glance_error(admin.patch(url, [{"op": "add", "path": path, "value": "x"}]), 403)
    # Glance (show_multiple_locations off) does not know /locations at all: 400, not 403.
    assert "Invalid JSON pointer" in glance_error(
        admin.patch(url, [{"op": "add", "path": "/locations", "value": []}]), 400
    )
    assert "may not be removed" in glance_error(admin.patch(url, [{"op": "remove", "path": "/name"}]), 403)
    assert "does not exist" in glance_error(
        admin.patch(url, [{"op": "replace", "path": "/nothing", "value": "x"}]), 409
    )
    assert "does not exist" in glance_error(admin.patch(url, [{"op": "remove", "path": "/nothing"}]), 409)
    assert "already present" in glance_error(
        admin.request("PATCH", url, json=[{"add": "/color", "value": "x"}], headers={"Content-Type": V20}),
        409,
    )
    v20 = admin.request(
        "PATCH", url, json=[{"replace": "/color", "value": "green"}], headers={"Content-Type": V20}
    )
    assert v20.status_code == 200 and v20.json()["color"] == "green"
    for bad in (
        [{"op": "move", "path": "/name", "from": "/x"}],
        [{"op": "replace", "path": "name", "value": "x"}],
        [{"op": "replace", "path": "/name"}],
        [{"op": "replace", "path": "/visibility", "value": "everyone"}],
        [{"op": "replace", "path": "/min_disk", "value": -1}],
        [{"op": "replace", "path": "/protected", "value": "yes"}],
        [{"op": "add", "path": "/numeric", "value": 5}],
        [{"op": "replace", "path": "/disk_format", "value": "floppy"}],
        {"op": "replace"},
    ):
        glance_error(admin.patch(url, bad), 400)  # type: ignore[arg-type]
    # Nothing of the refused patches stuck.
    assert admin.get(url).json()["name"] == "renamed"


def test_create_rules(admin: Api) -> None:
    for body, status in (
        ({"status": "active"}, 403),
        ({"checksum": "0" * 32}, 403),
        ({"os_glance_x": "1"}, 403),
        ({"location": "file:///etc/passwd"}, 403),
        ({"visibility": "nope"}, 400),
        ({"min_ram": "1"}, 400),
        ({"foo": 1}, 400),
        ({"id": "not-a-uuid"}, 400),
        ({"tags": "abc"}, 400),
    ):
        glance_error(admin.post("/image/v2/images", json=body), status)
    fixed = str(uuid.uuid4())
    assert admin.create_image(id=fixed, name="fixed")["id"] == fixed
    glance_error(admin.post("/image/v2/images", json={"id": fixed}), 409)
    created = admin.post("/image/v2/images", json={"name": "hdr"})
    assert created.headers["Location"].endswith(f"/image/v2/images/{created.json()['id']}")
    assert created.headers["OpenStack-image-store-ids"] == "default"


def test_listing_pagination_sorting_filters(server: RegistryServer) -> None:
    project = f"list-{uuid.uuid4().hex[:6]}"
    server.add_project(project)
    server.add_user(project, project, "member", "list-Pw-1")
    with server.api(server.token(project, "list-Pw-1", project)) as api:
        made = []
        for index, name in enumerate(["e", "b", "g", "a", "f", "c", "d"]):
            image = api.create_image(
                name=name,
                disk_format="raw",
                container_format="bare",
                rank=str(index % 2),
                tags=["t"] + (["odd"] if index % 2 else []),
            )
            made.append(image)
            time.sleep(0.01)
        # Walk `next` links: every image once, in order.
        seen: list[str] = []
        url: str | None = "/image/v2/images?limit=3&sort_key=name&sort_dir=asc"
        pages = 0
        while url:
            body = api.get("/image" + url if url.startswith("/v2") else url).json()
            seen += [image["name"] for image in body["images"]]
            url = body.get("next")
            pages += 1
        assert seen == ["a", "b", "c", "d", "e", "f", "g"] and pages == 3
        assert [
            i["name"] for i in api.get("/image/v2/images", params={"sort": "name:desc"}).json()["images"]
        ] == list("gfedcba")
        default = [i["name"] for i in api.get("/image/v2/images").json()["images"]]
        assert default == [i["name"] for i in reversed(made)]  # created_at desc
        for params in (
            {"sort_key": "colour"},
            {"sort_dir": "up"},
            {"sort": "name:asc", "sort_key": "name"},
            {"marker": str(uuid.uuid4())},
            {"limit": "-1"},
            {"member_status": "maybe"},
            {"visibility": "everyone"},
            {"size_min": "big"},
            {"created_at": "gt:yesterday"},
        ):
            glance_error(api.get("/image/v2/images", params=params), 400)

        def names(**params: Any) -> list[str]:
            return sorted(i["name"] for i in api.get("/image/v2/images", params=params).json()["images"])

        assert names(name='in:"a","c"') == ["a", "c"]
        assert names(name="eq:b") == ["b"]
        assert names(rank="1") == ["a", "b", "c"]
        assert names(tag=["t", "odd"]) == ["a", "b", "c"]
        assert names(status="queued") == list("abcdefg")
        assert names(status="active") == []
        assert names(created_at="gt:2999-01-01T00:00:00Z") == []
        assert names(created_at="lt:2999-01-01T00:00:00Z") == list("abcdefg")
        assert names(created_at=f"gte:{made[0]['created_at']}") == list("abcdefg")
        assert names(updated_at="lt:2000-01-01T00:00:00Z") == []
        assert names(owner=made[0]["owner"]) == list("abcdefg")
        assert names(visibility="private") == []
        # os_hidden images are left out unless asked for.
        api.patch(
            f"/image/v2/images/{made[0]['id']}", [{"op": "replace", "path": "/os_hidden", "value": True}]
        )
        assert "e" not in names() and names(os_hidden="true") == ["e"]
        # Data-dependent filters.
        upload = api.upload(made[1]["id"], b"\0" * 4096)
        assert upload.status_code == 204, upload.text
        assert names(size_min="4096", size_max="4096") == ["b"]
        assert names(size_min="4097") == []
        assert names(checksum=hashlib.md5(b"\0" * 4096).hexdigest()) == ["b"]


def test_tags_endpoint(admin: Api) -> None:
    image = admin.create_image(name="tagged")
    url = f"/image/v2/images/{image['id']}"
    assert admin.put(f"{url}/tags/blue").status_code == 204
    assert admin.put(f"{url}/tags/blue").status_code == 204  # idempotent
    assert admin.put(f"{url}/tags/red").status_code == 204
    assert admin.get(url).json()["tags"] == ["blue", "red"]
    assert admin.delete(f"{url}/tags/blue").status_code == 204
    glance_error(admin.delete(f"{url}/tags/blue"), 404)
    assert admin.get(url).json()["tags"] == ["red"]


def test_protected_deactivate_reactivate(admin: Api) -> None:
    image = admin.create_image(name="life", disk_format="raw", container_format="bare", protected=True)
    url = f"/image/v2/images/{image['id']}"
    assert "protected" in glance_error(admin.delete(url), 403)
    assert "status 'queued'" in glance_error(admin.post(f"{url}/actions/deactivate"), 403)
    assert admin.upload(image["id"], b"data" * 1024).status_code == 204
    assert admin.post(f"{url}/actions/deactivate").status_code == 204
    assert admin.get(url).json()["status"] == "deactivated"
    assert admin.post(f"{url}/actions/deactivate").status_code == 204  # already: no-op
    assert admin.get(f"{url}/file").status_code == 200  # admin may still download
    assert admin.post(f"{url}/actions/reactivate").status_code == 204
    assert admin.get(url).json()["status"] == "active"
    assert admin.patch(url, [{"op": "replace", "path": "/protected", "value": False}]).status_code == 200
    assert admin.delete(url).status_code == 204
    glance_error(admin.get(url), 404)


def test_upload_rules_and_download(server: RegistryServer, admin: Api, tmp_path: Path) -> None:
    image = admin.create_image(name="data")
    url = f"/image/v2/images/{image['id']}"
    assert admin.get(f"{url}/file").status_code == 204  # no data yet
    assert "disk_format" in glance_error(admin.upload(image["id"], b"x"), 400)
    admin.patch(
        url,
        [
            {"op": "add", "path": "/disk_format", "value": "raw"},
            {"op": "add", "path": "/container_format", "value": "bare"},
        ],
    )
    glance_error(admin.put(f"{url}/file", content=b"x", headers={"Content-Type": "application/json"}), 415)
    data = bytes(range(256)) * 4096 + b"tail"
    assert admin.upload(image["id"], data).status_code == 204
    glance_error(admin.upload(image["id"], data), 409)
    shown = admin.get(url).json()
    copy = tmp_path / "copy.raw"
    copy.write_bytes(data)
    assert shown["status"] == "active" and shown["size"] == len(data)
    assert shown["virtual_size"] == qemu_virtual_size(copy)  # qemu counts whole sectors: 1049088
    assert shown["stores"] == "default"
    # disk_format cannot change once there is data.
    glance_error(admin.patch(url, [{"op": "replace", "path": "/disk_format", "value": "qcow2"}]), 403)

    full = admin.get(f"{url}/file")
    assert full.status_code == 200 and full.content == data
    assert full.headers["Content-MD5"] == hashlib.md5(data).hexdigest()
    assert full.headers["Content-Length"] == str(len(data))
    for header, start, end in (
        ("bytes=0-9", 0, 10),
        ("bytes=1000-", 1000, len(data)),
        ("bytes=-4", len(data) - 4, len(data)),
        (f"bytes=5-{len(data) + 100}", 5, len(data)),
    ):
        part = admin.get(f"{url}/file", headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == data[start:end]
        assert part.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(data)}"
    for header in (f"bytes={len(data)}-", "bytes=9-3", "bytes=abc", "pages=1-2", "bytes=-0"):
        refused = admin.get(f"{url}/file", headers={"Range": header})
        glance_error(refused, 416)
        assert refused.headers["Content-Range"] == f"bytes */{len(data)}"


def test_wrong_method_and_unknown_path(admin: Api) -> None:
    assert admin.request("PUT", "/image/v2/images").status_code == 405
    glance_error(admin.get("/image/v2/nothing-here"), 404)


@pytest.mark.parametrize("asgi_server", ["uvicorn", "granian"])
def test_download_paths_on_each_server(asgi_server: str, tmp_path: Path) -> None:
    """A whole download (granian: the blob leaves as http.response.pathsend, also for ``bytes=0-``)
    and ranges (streamed in DOWNLOAD_CHUNK_SIZE chunks, across chunk edges and a hole the file
    store left sparse) give the bytes uploaded; 416, 401 and 404 as everywhere else."""
    rng = random.Random(8)
    mib = 1 << 20
    data = rng.randbytes(9 * mib) + bytes(5 * mib) + rng.randbytes(mib) + b"0123456789abcdefg"
    with RegistryServer(tmp_path / "data", extra_args=["--server", asgi_server]) as server:
        server.add_project("other")
        server.add_user("olga", "other", "member", "olga-Pw-123")
        with server.api(server.token()) as admin:
            image = admin.create_image(name="paths", disk_format="raw", container_format="bare")
            assert admin.upload(image["id"], data).status_code == 204
            url = f"/image/v2/images/{image['id']}/file"
            full = admin.get(url)
            assert full.status_code == 200 and full.content == data
            assert full.headers["Content-MD5"] == hashlib.md5(data).hexdigest()
            assert full.headers["Content-Length"] == str(len(data))
            for header, start, end in (
                ("bytes=0-", 0, len(data)),
                (f"bytes={4 * mib - 3}-{12 * mib + 2}", 4 * mib - 3, 12 * mib + 3),
                ("bytes=-20", len(data) - 20, len(data)),
            ):
                part = admin.get(url, headers={"Range": header})
                assert part.status_code == 206, header
                assert part.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(data)}", header
                assert part.headers["Content-Length"] == str(end - start), header
                assert part.content == data[start:end], header
            refused = admin.get(url, headers={"Range": f"bytes={len(data)}-"})
            glance_error(refused, 416)
        assert httpx.get(f"{server.url}{url}").status_code == 401
        with server.api(server.token("olga", "olga-Pw-123", "other")) as olga:
            glance_error(olga.get(url), 404)
