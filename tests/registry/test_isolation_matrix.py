"""Who sees and may do what: every cell of the isolation matrix against Glance's rules.

Three projects: A owns every image, B is the member of A's shared images, C is any other
project; plus an admin (role admin on the ``admin`` project) and anonymous callers. Images of
each kind — public, community, shared with B pending / accepted / rejected, private — and
each action — list (default, ``member_status=all``, ``visibility=community``), show, download,
update, delete, and the member operations — give one cell, each on a fresh image, so no cell's
change leaks into another's answer.

The expected answers are Glance's, from its default policy (secure RBAC) and its database and
authorization layers, as tabulated in ``imagewright.catalog.image_policy`` (sources:
``glance/policies/base.py``, ``glance/policies/image.py``, ``glance/db/utils.py:is_image_visible``,
``glance/db/sqlalchemy/api.py:_select_images_query``/``_image_get_all``,
``glance/api/authorization.py`` (member repo rules), ``glance/api/v2/policy.py`` (Forbidden → 404
for images the caller cannot see), ``glance/api/v2/image_members.py`` (show: Forbidden → 404),
and the Image API v2 reference, "Image visibility" and "Sharing").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.fixtures.registry import Api, RegistryServer
from tests.registry.conftest import BACKENDS, make_server

KINDS = ("public", "community", "pending", "accepted", "rejected", "private")
ACTORS = ("owner", "member", "other", "admin", "anonymous")
ACTIONS = (
    "list",
    "list_all_status",
    "list_community",
    "show",
    "download",
    "update",
    "delete",
    "members_list",
    "member_show",
    "member_add",
    "member_status",
    "member_remove",
)
DATA = b"matrix-image-data" * 64
SHARED = ("pending", "accepted", "rejected")


def visible(actor: str, kind: str) -> bool:
    """Glance's is_image_visible: any membership status counts."""
    if actor in ("owner", "admin"):
        return True
    if kind in ("public", "community"):
        return True
    return actor == "member" and kind in SHARED


def hidden_or(actor: str, kind: str, allowed: bool, ok: int) -> int:
    """``ok`` if allowed; else 404 when the caller cannot see the image, 403 when it can."""
    if allowed:
        return ok
    return 403 if visible(actor, kind) else 404


def expected(actor: str, kind: str, action: str) -> int | bool:
    if actor == "anonymous":
        return 401
    owner_or_admin = actor in ("owner", "admin")
    if action == "list":
        if actor == "owner":
            return True
        if actor == "admin":
            return kind != "community"  # others' community images only when asked for
        if actor == "member":
            return kind in ("public", "accepted")
        return kind == "public"
    if action == "list_all_status":
        if actor == "owner":
            return True
        if actor == "admin":
            return kind != "community"
        if actor == "member":
            return kind in ("public", *SHARED)
        return kind == "public"
    if action == "list_community":
        return kind == "community"
    if action in ("show", "download"):
        return 200 if visible(actor, kind) else 404
    if action == "update":
        return hidden_or(actor, kind, owner_or_admin, 200)
    if action == "delete":
        return hidden_or(actor, kind, owner_or_admin, 204)
    if not visible(actor, kind):
        return 404
    if action == "members_list":
        if kind not in SHARED:
            # "Only shared images have members." — for the owner too (Glance 33, checked side
            # by side in test_glance_parity).
            return 403
        if owner_or_admin or actor == "member":
            return 200
        return 403  # "You cannot get image member for …"
    if action == "member_show":  # B's entry; every refusal is 404 here
        if kind in SHARED and (owner_or_admin or actor == "member"):
            return 200
        return 404
    if action == "member_add":  # add C
        if not owner_or_admin:
            return 403
        return 200 if kind in SHARED else 403  # "Only shared images have members."
    if action == "member_status":  # set B's status to accepted
        if kind == "public":
            return 403
        if kind not in SHARED:
            return 404
        if actor == "owner":
            return 403  # only the member itself (or an admin) answers an invitation
        if actor in ("admin", "member"):
            return 200
        return 404
    if action == "member_remove":  # remove B
        if kind == "public":
            return 403
        if kind not in SHARED:
            return 404
        if owner_or_admin:
            return 204
        return 403 if actor == "member" else 404
    raise AssertionError(action)


@dataclass
class World:
    server: RegistryServer
    apis: dict[str, Api]
    project_ids: dict[str, str]


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with make_server(request, tmp_path_factory.mktemp("matrix"), request.param) as server:
        ids = {}
        for project in ("pa", "pb", "pc"):
            ids[project] = server.add_project(project)
            server.add_user(f"u{project}", project, "member", f"{project}-Pw-1")
        apis = {
            "owner": server.api(server.token("upa", "pa-Pw-1", "pa")),
            "member": server.api(server.token("upb", "pb-Pw-1", "pb")),
            "other": server.api(server.token("upc", "pc-Pw-1", "pc")),
            "admin": server.api(server.token()),
            "anonymous": server.api(None),
        }
        yield World(server, apis, ids)
        for api in apis.values():
            api.client.close()


def make_image(world: World, kind: str) -> dict[str, Any]:
    admin, member = world.apis["admin"], world.apis["member"]
    visibility = "shared" if kind in SHARED else kind
    image = admin.create_image(
        name=f"{kind}-{uuid.uuid4().hex[:8]}",
        owner=world.project_ids["pa"],
        visibility=visibility,
        disk_format="raw",
        container_format="bare",
    )
    assert admin.upload(image["id"], DATA).status_code == 204
    if kind in SHARED:
        url = f"/image/v2/images/{image['id']}/members"
        assert admin.post(url, json={"member": world.project_ids["pb"]}).status_code == 200
        if kind != "pending":
            answered = member.put(f"{url}/{world.project_ids['pb']}", json={"status": kind})
            assert answered.status_code == 200, answered.text
    return image


def perform(world: World, actor: str, image: dict[str, Any], action: str) -> int | bool:
    api = world.apis[actor]
    image_id = image["id"]
    url = f"/image/v2/images/{image_id}"
    member_b = world.project_ids["pb"]
    if action.startswith("list"):
        params = {"name": image["name"]}
        if action == "list_all_status":
            params["member_status"] = "all"
        if action == "list_community":
            params["visibility"] = "community"
        response = api.get("/image/v2/images", params=params)
        if response.status_code != 200:
            return response.status_code
        return [i["id"] for i in response.json()["images"]] == [image_id]
    if action == "show":
        response = api.get(url)
        if response.status_code == 200:
            assert response.json()["id"] == image_id
    elif action == "download":
        response = api.get(f"{url}/file")
        if response.status_code == 200:
            assert response.content == DATA
    elif action == "update":
        response = api.patch(url, [{"op": "replace", "path": "/min_ram", "value": 64}])
    elif action == "delete":
        response = api.delete(url)
    elif action == "members_list":
        response = api.get(f"{url}/members")
        if response.status_code == 200:
            members = [m["member_id"] for m in response.json()["members"]]
            assert members == ([member_b] if image["visibility"] == "shared" else [])
    elif action == "member_show":
        response = api.get(f"{url}/members/{member_b}")
    elif action == "member_add":
        response = api.post(f"{url}/members", json={"member": world.project_ids["pc"]})
    elif action == "member_status":
        response = api.put(f"{url}/members/{member_b}", json={"status": "accepted"})
    elif action == "member_remove":
        response = api.delete(f"{url}/members/{member_b}")
    else:
        raise AssertionError(action)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"message", "code", "title"} and "Traceback" not in body["message"]
    return response.status_code


def after_effects(world: World, actor: str, image: dict[str, Any], action: str, outcome: int | bool) -> None:
    """What a refused cell must not have changed, and what an allowed one must have."""
    admin = world.apis["admin"]
    url = f"/image/v2/images/{image['id']}"
    state = admin.get(url)
    if action == "delete":
        assert state.status_code == (404 if outcome == 204 else 200)
        return
    assert state.status_code == 200
    if action == "update":
        assert state.json()["min_ram"] == (64 if outcome == 200 else 0)
    if action in ("member_add", "member_remove", "member_status"):
        members = {m["member_id"]: m["status"] for m in admin.get(f"{url}/members").json().get("members", [])}
        pb, pc = world.project_ids["pb"], world.project_ids["pc"]
        if action == "member_add":
            assert (pc in members) == (outcome == 200)
        if action == "member_remove" and image["visibility"] == "shared":
            assert (pb in members) == (outcome != 204)
        if action == "member_status" and outcome == 200:
            assert members[pb] == "accepted"


CELLS = [(actor, kind, action) for action in ACTIONS for kind in KINDS for actor in ACTORS]


@pytest.mark.parametrize(("actor", "kind", "action"), CELLS, ids=["-".join(cell) for cell in CELLS])
def test_isolation_cell(world: World, actor: str, kind: str, action: str) -> None:
    image = make_image(world, kind)
    outcome = perform(world, actor, image, action)
    assert outcome == expected(actor, kind, action)
    after_effects(world, actor, image, action, outcome)


def test_matrix_is_complete() -> None:
    assert len(CELLS) == len(ACTORS) * len(KINDS) * len(ACTIONS) == 360
