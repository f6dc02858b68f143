"""The Keystone v3 subset over raw HTTP: request shapes clients send, tokens, application credentials."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.fixtures.registry import ADMIN_PASSWORD, RegistryServer


def password_auth(user: dict[str, Any], password: str, scope: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "auth": {"identity": {"methods": ["password"], "password": {"user": {**user, "password": password}}}}
    }
    if scope is not None:
        body["auth"]["scope"] = scope
    return body


def post_token(server: RegistryServer, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/identity/v3/auth/tokens", json=body, timeout=30, **kwargs)


def test_version_documents(registry: RegistryServer) -> None:
    listing = httpx.get(f"{registry.url}/identity")
    assert listing.status_code == 300
    assert listing.json()["versions"]["values"][0]["id"].startswith("v3.")
    v3 = httpx.get(f"{registry.url}/identity/v3").json()["version"]
    assert v3["status"] == "stable"
    assert v3["links"][0]["href"] == f"{registry.url}/identity/v3/"
    assert v3["media-types"][0]["type"] == "application/vnd.openstack.identity-v3+json"


def test_password_auth_shapes_and_token_body(registry: RegistryServer) -> None:
    project_id = registry.add_project("demo")
    registry.add_user("bob", "demo", "reader", "bob-Pw-1")
    by_name = post_token(
        registry,
        password_auth(
            {"name": "bob", "domain": {"name": "Default"}},
            "bob-Pw-1",
            {"project": {"name": "demo", "domain": {"name": "Default"}}},
        ),
    )
    assert by_name.status_code == 201, by_name.text
    token = by_name.json()["token"]
    user_id = token["user"]["id"]
    assert token["user"]["name"] == "bob" and token["user"]["domain"] == {"id": "default", "name": "Default"}
    assert token["project"]["id"] == project_id and token["project"]["name"] == "demo"
    assert [role["name"] for role in token["roles"]] == ["reader"]
    assert token["methods"] == ["password"]
    assert token["expires_at"].endswith("Z") and token["issued_at"] < token["expires_at"]
    image_service = next(entry for entry in token["catalog"] if entry["type"] == "image")
    public = next(ep for ep in image_service["endpoints"] if ep["interface"] == "public")
    assert public["url"] == f"{registry.url}/image" and public["region_id"] == "RegionOne"
    assert any(entry["type"] == "identity" for entry in token["catalog"])

    # By user id and project id; and the default project (no scope).
    by_id = post_token(registry, password_auth({"id": user_id}, "bob-Pw-1", {"project": {"id": project_id}}))
    assert by_id.status_code == 201 and by_id.json()["token"]["project"]["id"] == project_id
    default = post_token(registry, password_auth({"id": user_id}, "bob-Pw-1"))
    assert default.status_code == 201 and default.json()["token"]["project"]["id"] == project_id
    unscoped = post_token(registry, password_auth({"id": user_id}, "bob-Pw-1", "unscoped"))
    assert unscoped.status_code == 201 and "project" not in unscoped.json()["token"]
    nocatalog = post_token(
        registry,
        password_auth({"id": user_id}, "bob-Pw-1", {"project": {"id": project_id}}),
        params={"nocatalog": "1"},
    )
    assert "catalog" not in nocatalog.json()["token"]


@pytest.mark.parametrize(
    "body",
    [
        password_auth({"name": "admin", "domain": {"id": "default"}}, "wrong"),
        password_auth({"name": "nobody", "domain": {"id": "default"}}, ADMIN_PASSWORD),
        password_auth({"name": "admin", "domain": {"name": "Nowhere"}}, ADMIN_PASSWORD),
        password_auth({"id": "0" * 32}, ADMIN_PASSWORD),
        password_auth(
            {"name": "admin", "domain": {"id": "default"}}, ADMIN_PASSWORD, {"project": {"id": "f" * 32}}
        ),
        password_auth(
            {"name": "admin", "domain": {"id": "default"}}, ADMIN_PASSWORD, {"domain": {"id": "default"}}
        ),
        {"auth": {"identity": {"methods": ["totp"], "totp": {}}}},
        {"auth": {"identity": {"methods": ["token"], "token": {"id": "not-a-token"}}}},
    ],
    ids=[
        "wrong-password",
        "unknown-user",
        "unknown-domain",
        "unknown-user-id",
        "foreign-project",
        "domain-scope",
        "totp",
        "bad-token",
    ],
)
def test_failed_authentication_is_401_with_keystone_error(registry: RegistryServer, body: Any) -> None:
    response = post_token(registry, body)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == 401 and error["title"] == "Unauthorized"
    assert error["message"].endswith(".") and "Traceback" not in response.text
    assert "X-Subject-Token" not in response.headers


@pytest.mark.parametrize(
    "body", [b"not json", b"{}", b'{"auth": {"identity": {"methods": "password"}}}', b"[]"]
)
def test_malformed_auth_request_is_400(registry: RegistryServer, body: bytes) -> None:
    response = httpx.post(
        f"{registry.url}/identity/v3/auth/tokens", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


def test_no_member_of_project_no_token(registry: RegistryServer) -> None:
    registry.add_project("p1")
    registry.add_project("p2")
    registry.add_user("carol", "p1", "member", "carol-Pw-1")
    ok = post_token(
        registry,
        password_auth(
            {"name": "carol", "domain": {"id": "default"}},
            "carol-Pw-1",
            {"project": {"name": "p1", "domain": {"id": "default"}}},
        ),
    )
    assert ok.status_code == 201
    assert [r["name"] for r in ok.json()["token"]["roles"]] == ["member", "reader"]
    refused = post_token(
        registry,
        password_auth(
            {"name": "carol", "domain": {"id": "default"}},
            "carol-Pw-1",
            {"project": {"name": "p2", "domain": {"id": "default"}}},
        ),
    )
    assert refused.status_code == 401


def test_validate_check_revoke(registry: RegistryServer) -> None:
    admin = registry.token()
    registry.add_project("demo")
    registry.add_user("dave", "demo", "member", "dave-Pw-1")
    dave = registry.token("dave", "dave-Pw-1", "demo")
    other = registry.token("dave", "dave-Pw-1", "demo")
    url = f"{registry.url}/identity/v3/auth/tokens"

    shown = httpx.get(url, headers={"X-Auth-Token": dave, "X-Subject-Token": other})
    assert shown.status_code == 200 and shown.json()["token"]["user"]["name"] == "dave"
    assert shown.headers["X-Subject-Token"] == other
    assert httpx.head(url, headers={"X-Auth-Token": admin, "X-Subject-Token": dave}).status_code == 200
    # Another user's token: not without admin.
    registry.add_user("erin", "demo", "member", "erin-Pw-1")
    erin = registry.token("erin", "erin-Pw-1", "demo")
    assert httpx.get(url, headers={"X-Auth-Token": erin, "X-Subject-Token": dave}).status_code == 403
    assert httpx.get(url, headers={"X-Auth-Token": admin, "X-Subject-Token": "bogus"}).status_code == 404
    assert httpx.head(url, headers={"X-Auth-Token": admin, "X-Subject-Token": "bogus"}).status_code == 404
    assert httpx.get(url, headers={"X-Subject-Token": dave}).status_code == 401

    # Revoke: the token stops working everywhere at once.
    with registry.api(other) as api:
        assert api.get("/image/v2/images").status_code == 200
    assert httpx.delete(url, headers={"X-Auth-Token": dave, "X-Subject-Token": other}).status_code == 204
    with registry.api(other) as api:
        assert api.get("/image/v2/images").status_code == 401
    assert httpx.head(url, headers={"X-Auth-Token": admin, "X-Subject-Token": other}).status_code == 404

    # Re-scoping keeps the expiry and chains the audit ids.
    first = httpx.get(url, headers={"X-Auth-Token": dave, "X-Subject-Token": dave}).json()["token"]
    rescoped = post_token(
        registry,
        {
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": dave}},
                "scope": {"project": {"name": "demo", "domain": {"id": "default"}}},
            }
        },
    )
    assert rescoped.status_code == 201
    token = rescoped.json()["token"]
    assert token["expires_at"] == first["expires_at"]
    assert first["audit_ids"][0] in token["audit_ids"]


def test_removed_user_or_role_stops_tokens(registry: RegistryServer) -> None:
    registry.add_project("demo")
    registry.add_user("frank", "demo", "member", "frank-Pw-1")
    token = registry.token("frank", "frank-Pw-1", "demo")
    with registry.api(token) as api:
        assert api.get("/image/v2/images").status_code == 200
        registry.imagewright("accounts", "user", "remove", "frank")
        assert api.get("/image/v2/images").status_code == 401


def test_application_credentials(registry: RegistryServer) -> None:
    registry.add_project("demo")
    registry.add_user("gina", "demo", "member", "gina-Pw-1")
    token = registry.token("gina", "gina-Pw-1", "demo")
    user_id = httpx.get(
        f"{registry.url}/identity/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
    ).json()["token"]["user"]["id"]
    base = f"{registry.url}/identity/v3/users/{user_id}/application_credentials"
    headers = {"X-Auth-Token": token}

    created = httpx.post(
        base, headers=headers, json={"application_credential": {"name": "ci", "roles": [{"name": "reader"}]}}
    )
    assert created.status_code == 201, created.text
    credential = created.json()["application_credential"]
    assert credential["secret"] and [r["name"] for r in credential["roles"]] == ["reader"]
    assert credential["unrestricted"] is False

    # The secret works by id and by name + user; it carries only the reader role.
    by_id = post_token(
        registry,
        {
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": credential["id"], "secret": credential["secret"]},
                }
            }
        },
    )
    assert by_id.status_code == 201, by_id.text
    body = by_id.json()["token"]
    assert (
        body["application_credential"]["id"] == credential["id"]
        and body["application_credential"]["restricted"] is True
    )
    assert [r["name"] for r in body["roles"]] == ["reader"]
    app_token = by_id.headers["X-Subject-Token"]
    with registry.api(app_token) as api:
        assert api.get("/image/v2/images").status_code == 200
        # A reader cannot create images.
        assert api.post("/image/v2/images", json={"name": "x"}).status_code == 403
    by_name = post_token(
        registry,
        {
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {
                        "name": "ci",
                        "user": {"name": "gina", "domain": {"id": "default"}},
                        "secret": credential["secret"],
                    },
                }
            }
        },
    )
    assert by_name.status_code == 201
    wrong = post_token(
        registry,
        {
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": credential["id"], "secret": "nope"},
                }
            }
        },
    )
    assert wrong.status_code == 401
    # A restricted credential's token cannot make another credential.
    refused = httpx.post(
        base, headers={"X-Auth-Token": app_token}, json={"application_credential": {"name": "ci2"}}
    )
    assert refused.status_code == 403
    # Roles not held are refused; a duplicate name conflicts.
    assert (
        httpx.post(
            base,
            headers=headers,
            json={"application_credential": {"name": "adm", "roles": [{"name": "admin"}]}},
        ).status_code
        == 403
    )
    assert (
        httpx.post(base, headers=headers, json={"application_credential": {"name": "ci"}}).status_code == 409
    )

    listing = httpx.get(base, headers=headers).json()["application_credentials"]
    assert [c["name"] for c in listing] == ["ci"] and "secret" not in listing[0]
    assert (
        httpx.get(f"{base}/{credential['id']}", headers=headers).json()["application_credential"]["name"]
        == "ci"
    )
    assert httpx.delete(f"{base}/{credential['id']}", headers=headers).status_code == 204
    assert httpx.get(f"{base}/{credential['id']}", headers=headers).status_code == 404
    # Deleting the credential kills its tokens.
    with registry.api(app_token) as api:
        assert api.get("/image/v2/images").status_code == 401


def test_identity_lookups_for_clients(registry: RegistryServer) -> None:
    admin = registry.token()
    project_id = registry.add_project("demo")
    registry.add_user("hank", "demo", "member", "hank-Pw-1")
    hank = registry.token("hank", "hank-Pw-1", "demo")
    v3 = f"{registry.url}/identity/v3"
    assert httpx.get(f"{v3}/projects", headers={"X-Auth-Token": admin}).status_code == 200
    assert httpx.get(f"{v3}/projects", headers={"X-Auth-Token": hank}).status_code == 403
    found = httpx.get(f"{v3}/projects", params={"name": "demo"}, headers={"X-Auth-Token": hank}).json()[
        "projects"
    ]
    assert [p["id"] for p in found] == [project_id]
    assert httpx.get(f"{v3}/projects/{project_id}", headers={"X-Auth-Token": hank}).status_code == 200
    admin_project = httpx.get(
        f"{v3}/projects", params={"name": "admin"}, headers={"X-Auth-Token": admin}
    ).json()["projects"][0]["id"]
    assert httpx.get(f"{v3}/projects/{admin_project}", headers={"X-Auth-Token": hank}).status_code == 403
    assert httpx.get(f"{v3}/projects/nope", headers={"X-Auth-Token": admin}).status_code == 404
    mine = httpx.get(f"{v3}/auth/projects", headers={"X-Auth-Token": hank}).json()["projects"]
    assert [p["name"] for p in mine] == ["demo"]
    catalog = httpx.get(f"{v3}/auth/catalog", headers={"X-Auth-Token": hank}).json()["catalog"]
    assert {entry["type"] for entry in catalog} == {"identity", "image"}
    assert (
        httpx.get(f"{v3}/domains/default", headers={"X-Auth-Token": hank}).json()["domain"]["name"]
        == "Default"
    )
    for path in ("/projects", "/auth/projects", "/auth/catalog", "/domains/default"):
        response = httpx.get(f"{v3}{path}")
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == 401
