"""The metadata definitions catalog (``/image/v2/metadefs``) over raw HTTP and through real clients.

What is checked: the shipped default set is there on a catalog's first start (and deleting one
of its namespaces survives a restart: defaults are loaded once); every endpoint answers 401
without a token; readers see public namespaces and their own project's, and an invisible
namespace is 404 for reads and writes alike; every write is an admin's (403 otherwise); a
protected namespace cannot lose anything (403); names clash with 409; the whole life of a
namespace (objects, properties, tags with replace/append, resource type associations and
their prefixes, pagination); every answer validates against the schema the server serves for
it (jsonschema, the validator glanceclient's warlock uses). Then python-openstackclient and
python-glanceclient drive the same API as subprocesses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
import pytest
from tests.fixtures.registry import Api, RegistryServer

from imagewright.catalog.metadefs import default_documents

M = "/image/v2/metadefs"
DEFAULT_NAMESPACES = sorted(doc["namespace"] for doc in default_documents())


@pytest.fixture(scope="module")
def reader(server: RegistryServer) -> Iterator[Api]:
    """A member of another project (not an admin)."""
    server.add_project("mdreaders")
    server.add_user("mdreader", "mdreaders", "member", "mdreader-Pw-1")
    with server.api(server.token("mdreader", "mdreader-Pw-1", "mdreaders")) as api:
        yield api


def schema(api: Api, name: str) -> dict[str, Any]:
    response = api.get(f"/image/v2/schemas/metadefs/{name}")
    assert response.status_code == 200
    return dict(response.json())


def valid(api: Api, name: str, document: Any) -> Any:
    jsonschema.validate(document, schema(api, name))
    return document


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message", "code", "title"} and "Traceback" not in body["message"]
    return str(body["message"])


def all_namespaces(api: Api, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    url = f"{M}/namespaces"
    query: dict[str, Any] = {"limit": 4, **params}
    while True:
        page = valid(api, "namespaces", api.get(url, params=query).json())
        found.extend(page["namespaces"])
        if "next" not in page:
            return found
        assert page["next"].startswith("/v2/metadefs/namespaces?")
        query = dict(parse_qsl(page["next"].split("?", 1)[1]))


def test_defaults_are_loaded_on_first_start(admin: Api, reader: Api) -> None:
    assert len(DEFAULT_NAMESPACES) >= 9
    for api in (admin, reader):
        names = [ns["namespace"] for ns in all_namespaces(api) if ns["namespace"] in DEFAULT_NAMESPACES]
        assert sorted(names) == DEFAULT_NAMESPACES
    shown = valid(reader, "namespace", reader.get(f"{M}/namespaces/OS::Compute::LibvirtImage").json())
    assert shown["protected"] is True and shown["visibility"] == "public" and "owner" not in shown
    assert shown["properties"]["hw_firmware_type"]["enum"] == ["bios", "uefi"]
    assert [a["name"] for a in shown["resource_type_associations"]] == ["OS::Glance::Image"]
    common = reader.get(f"{M}/namespaces/OS::Glance::CommonImageProperties").json()
    assert {"architecture", "kernel_id", "ramdisk_id"} <= set(common["properties"])
    os_ns = reader.get(f"{M}/namespaces/OS::OperatingSystem").json()
    assert {"os_distro", "os_version"} <= set(os_ns["properties"])
    assert "hypervisor_type" in reader.get(f"{M}/namespaces/OS::Compute::Hypervisor").json()["properties"]
    # The property names as a resource type takes them (hw_ on images, hw: on flavors).
    for resource_type, prefix in (("OS::Glance::Image", "hw_"), ("OS::Nova::Flavor", "hw:")):
        topology = reader.get(
            f"{M}/namespaces/OS::Compute::VirtCPUTopology", params={"resource_type": resource_type}
        ).json()
        assert f"{prefix}cpu_sockets" in topology["properties"]
        prop = reader.get(
            f"{M}/namespaces/OS::Compute::VirtCPUTopology/properties/{prefix}cpu_cores",
            params={"resource_type": resource_type},
        )
        assert prop.status_code == 200 and prop.json()["name"] == "cpu_cores"
    # Filtering by resource type.
    flavor = {ns["namespace"] for ns in all_namespaces(reader, resource_types="OS::Nova::Flavor")}
    assert "OS::Compute::CPUPinning" in flavor and "OS::OperatingSystem" not in flavor
    types = valid(reader, "resource_types", reader.get(f"{M}/resource_types").json())
    assert {"OS::Glance::Image", "OS::Nova::Flavor", "OS::Cinder::Volume"} <= {
        t["name"] for t in types["resource_types"]
    }


ENDPOINTS = [
    ("GET", "/namespaces"),
    ("POST", "/namespaces"),
    ("GET", "/namespaces/OS::OperatingSystem"),
    ("PUT", "/namespaces/OS::OperatingSystem"),
    ("DELETE", "/namespaces/OS::OperatingSystem"),
    ("GET", "/namespaces/OS::OperatingSystem/objects"),
    ("POST", "/namespaces/OS::OperatingSystem/objects"),
    ("DELETE", "/namespaces/OS::OperatingSystem/objects"),
    ("GET", "/namespaces/OS::OperatingSystem/objects/x"),
    ("PUT", "/namespaces/OS::OperatingSystem/objects/x"),
    ("DELETE", "/namespaces/OS::OperatingSystem/objects/x"),
    ("GET", "/namespaces/OS::OperatingSystem/properties"),
    ("POST", "/namespaces/OS::OperatingSystem/properties"),
    ("DELETE", "/namespaces/OS::OperatingSystem/properties"),
    ("GET", "/namespaces/OS::OperatingSystem/properties/os_distro"),
    ("PUT", "/namespaces/OS::OperatingSystem/properties/os_distro"),
    ("DELETE", "/namespaces/OS::OperatingSystem/properties/os_distro"),
    ("GET", "/namespaces/OS::OperatingSystem/tags"),
    ("POST", "/namespaces/OS::OperatingSystem/tags"),
    ("DELETE", "/namespaces/OS::OperatingSystem/tags"),
    ("GET", "/namespaces/OS::OperatingSystem/tags/t"),
    ("POST", "/namespaces/OS::OperatingSystem/tags/t"),
    ("PUT", "/namespaces/OS::OperatingSystem/tags/t"),
    ("DELETE", "/namespaces/OS::OperatingSystem/tags/t"),
    ("GET", "/resource_types"),
    ("GET", "/namespaces/OS::OperatingSystem/resource_types"),
    ("POST", "/namespaces/OS::OperatingSystem/resource_types"),
    ("DELETE", "/namespaces/OS::OperatingSystem/resource_types/OS::Glance::Image"),
]


def test_every_endpoint_needs_a_token(server: RegistryServer) -> None:
    with server.api(None) as anonymous:
        for method, path in ENDPOINTS:
            response = anonymous.request(method, M + path, json={"name": "x"})
            _error(response, 401)
            assert response.headers["WWW-Authenticate"].startswith("Keystone uri=")


def test_writes_are_admins(admin: Api, reader: Api) -> None:
    ns = f"{M}/namespaces/OS::OperatingSystem"
    writes = [
        ("POST", f"{M}/namespaces", {"namespace": "mine"}),
        ("PUT", ns, {"namespace": "OS::OperatingSystem"}),
        ("DELETE", ns, None),
        ("POST", f"{ns}/objects", {"name": "o"}),
        ("DELETE", f"{ns}/objects", None),
        ("POST", f"{ns}/properties", {"name": "p", "title": "P", "type": "string"}),
        ("PUT", f"{ns}/properties/os_distro", {"name": "os_distro", "title": "D", "type": "string"}),
        ("DELETE", f"{ns}/properties/os_distro", None),
        ("POST", f"{ns}/tags", {"tags": [{"name": "t"}]}),
        ("POST", f"{ns}/tags/t", None),
        ("DELETE", f"{ns}/tags", None),
        ("POST", f"{ns}/resource_types", {"name": "OS::Nova::Flavor"}),
        ("DELETE", f"{ns}/resource_types/OS::Glance::Image", None),
    ]
    for method, url, body in writes:
        message = _error(reader.request(method, url, json=body), 403)
        assert "not authorized" in message
    # Nothing changed.
    shown = reader.get(ns).json()
    assert shown["properties"]["os_distro"]["title"] == "OS Distro"
    assert "tags" not in shown and len(shown["resource_type_associations"]) == 2
    assert reader.get(f"{M}/namespaces/mine").status_code == 404


def test_private_namespaces_are_hidden(admin: Api, reader: Api) -> None:
    created = admin.post(
        f"{M}/namespaces",
        json={
            "namespace": "IW::Private",
            "properties": {"secret": {"title": "Secret", "type": "string"}},
            "tags": [{"name": "hush"}],
        },
    )
    assert created.status_code == 201, created.text
    view = valid(admin, "namespace", created.json())
    assert view["visibility"] == "private" and view["protected"] is False
    projects = admin.get("/identity/v3/auth/projects").json()["projects"]
    assert view["owner"] == next(p["id"] for p in projects if p["name"] == "admin")
    url = f"{M}/namespaces/IW::Private"
    for method, path in [
        ("GET", ""),
        ("PUT", ""),
        ("DELETE", ""),
        ("GET", "/properties"),
        ("GET", "/properties/secret"),
        ("GET", "/tags"),
        ("GET", "/objects"),
        ("GET", "/resource_types"),
        ("DELETE", "/tags/hush"),
    ]:
        message = _error(reader.request(method, url + path, json={"namespace": "IW::Private"}), 404)
        assert "IW::Private" in message
    assert "IW::Private" not in {ns["namespace"] for ns in all_namespaces(reader)}
    assert "IW::Private" in {ns["namespace"] for ns in all_namespaces(admin, visibility="private")}
    assert "IW::Private" not in {ns["namespace"] for ns in all_namespaces(admin, visibility="public")}
    assert admin.delete(url).status_code == 204
    assert admin.get(url).status_code == 404


def test_namespace_life(admin: Api) -> None:
    body = {
        "namespace": "IW::Life",
        "display_name": "Life",
        "description": "a namespace with one of everything",
        "visibility": "public",
        "protected": True,
        "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "life_"}],
        "properties": {
            "size": {"title": "Size", "type": "integer", "minimum": 1, "maximum": 64},
            "colour": {"title": "Colour", "type": "string", "enum": ["red", "blue"]},
        },
        "objects": [
            {
                "name": "Box",
                "description": "a box",
                "required": ["width"],
                "properties": {"width": {"title": "Width", "type": "number"}},
            }
        ],
        "tags": [{"name": "alpha"}, {"name": "beta"}],
    }
    response = admin.post(f"{M}/namespaces", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/v2/metadefs/namespaces/IW::Life"
    created = valid(admin, "namespace", response.json())
    assert created["properties"]["colour"]["enum"] == ["red", "blue"]
    assert [o["name"] for o in created["objects"]] == ["Box"]
    assert [t["name"] for t in created["tags"]] == ["alpha", "beta"]
    ns = f"{M}/namespaces/IW::Life"
    _error(admin.post(f"{M}/namespaces", json={"namespace": "IW::Life"}), 409)

    # With a resource type, names take its prefix (properties and objects' properties and required).
    prefixed = admin.get(ns, params={"resource_type": "OS::Glance::Image"}).json()
    assert set(prefixed["properties"]) == {"life_size", "life_colour"}
    assert prefixed["objects"][0]["required"] == ["life_width"]
    assert set(prefixed["objects"][0]["properties"]) == {"life_width"}
    _error(admin.get(f"{ns}/properties/size", params={"resource_type": "OS::Glance::Image"}), 404)

    # Objects.
    objects = valid(admin, "objects", admin.get(f"{ns}/objects").json())
    assert [o["name"] for o in objects["objects"]] == ["Box"]
    made = admin.post(
        f"{ns}/objects", json={"name": "Ball", "properties": {"r": {"title": "R", "type": "number"}}}
    )
    assert made.status_code == 201 and valid(admin, "object", made.json())["self"].endswith("/objects/Ball")
    _error(admin.post(f"{ns}/objects", json={"name": "Ball"}), 409)
    renamed = admin.put(f"{ns}/objects/Ball", json={"name": "Sphere", "description": "round"})
    assert (
        renamed.status_code == 200
        and renamed.json()["name"] == "Sphere"
        and renamed.json()["properties"] == {}
    )
    _error(admin.get(f"{ns}/objects/Ball"), 404)
    assert admin.get(f"{ns}/objects/Sphere").json()["description"] == "round"
    _error(admin.put(f"{ns}/objects/Sphere", json={"name": "Box"}), 409)
    _error(admin.post(f"{ns}/objects", json={"name": "Bad", "properties": {"x": {"type": "string"}}}), 400)

    # Properties.
    props = valid(admin, "properties", admin.get(f"{ns}/properties").json())
    assert set(props["properties"]) == {"size", "colour"}
    made = admin.post(f"{ns}/properties", json={"name": "shape", "title": "Shape", "type": "string"})
    assert made.status_code == 201 and valid(admin, "property", made.json())["name"] == "shape"
    _error(admin.post(f"{ns}/properties", json={"name": "shape", "title": "S", "type": "string"}), 409)
    for bad in (
        {"name": "p", "type": "string"},  # no title
        {"name": "p", "title": "P", "type": "colour"},  # no such type
        {"name": "p", "title": "P", "type": "string", "colour": "red"},  # unknown attribute
        {"name": "p", "title": "P", "type": "integer", "minimum": "one"},  # wrong type
        {"name": "x" * 81, "title": "P", "type": "string"},  # name too long
    ):
        _error(admin.post(f"{ns}/properties", json=bad), 400)
    updated = admin.put(f"{ns}/properties/shape", json={"name": "form", "title": "Form", "type": "string"})
    assert updated.status_code == 200 and updated.json() == {
        "name": "form",
        "title": "Form",
        "type": "string",
    }
    shown = admin.get(f"{ns}/properties/size").json()
    assert shown == {"name": "size", "title": "Size", "type": "integer", "minimum": 1, "maximum": 64}

    # Tags: replace, append, one, rename, case-insensitive clashes.
    tags = valid(admin, "tags", admin.get(f"{ns}/tags").json())
    assert sorted(t["name"] for t in tags["tags"]) == ["alpha", "beta"]
    replaced = admin.post(f"{ns}/tags", json={"tags": [{"name": "gamma"}]})
    assert replaced.status_code == 201 and replaced.json() == {"tags": [{"name": "gamma"}]}
    appended = admin.post(
        f"{ns}/tags", json={"tags": [{"name": "delta"}]}, headers={"X-Openstack-Append": "True"}
    )
    assert appended.status_code == 201
    assert sorted(t["name"] for t in admin.get(f"{ns}/tags").json()["tags"]) == ["delta", "gamma"]
    _error(admin.post(f"{ns}/tags", json={"tags": [{"name": "x"}, {"name": "X"}]}), 409)
    one = admin.post(f"{ns}/tags/epsilon")
    assert one.status_code == 201 and valid(admin, "tag", one.json())["name"] == "epsilon"
    _error(admin.post(f"{ns}/tags/GAMMA"), 409)
    assert admin.put(f"{ns}/tags/epsilon", json={"name": "zeta"}).json()["name"] == "zeta"
    _error(admin.get(f"{ns}/tags/epsilon"), 404)

    # Resource type associations (an unknown type is created on first use).
    made = admin.post(f"{ns}/resource_types", json={"name": "IW::Thing", "prefix": "thing:"})
    assert made.status_code == 201 and valid(admin, "resource_type", made.json())["prefix"] == "thing:"
    _error(admin.post(f"{ns}/resource_types", json={"name": "IW::Thing"}), 409)
    associations = valid(admin, "resource_types", admin.get(f"{ns}/resource_types").json())
    assert [a["name"] for a in associations["resource_type_associations"]] == [
        "OS::Glance::Image",
        "IW::Thing",
    ]
    assert "IW::Thing" in {t["name"] for t in admin.get(f"{M}/resource_types").json()["resource_types"]}

    # Protected: nothing in it can be deleted.
    for url in (
        ns,
        f"{ns}/objects",
        f"{ns}/objects/Box",
        f"{ns}/properties",
        f"{ns}/properties/size",
        f"{ns}/tags",
        f"{ns}/tags/zeta",
        f"{ns}/resource_types/IW::Thing",
    ):
        assert "protected" in _error(admin.delete(url), 403)
    # Update (rename too); the nested parts stay; then unprotect and delete piece by piece.
    update = {"namespace": "IW::Life2", "display_name": "Life 2", "visibility": "public", "protected": False}
    updated = admin.put(ns, json=update)
    assert updated.status_code == 200, updated.text
    assert valid(admin, "namespace", updated.json())["self"] == "/v2/metadefs/namespaces/IW::Life2"
    ns = f"{M}/namespaces/IW::Life2"
    _error(admin.put(ns, json={**update, "self": "x"}), 403)
    _error(admin.put(ns, json={**update, "namespace": "OS::OperatingSystem"}), 409)
    whole = admin.get(ns).json()
    assert whole["display_name"] == "Life 2" and "description" not in whole
    assert set(whole["properties"]) == {"size", "colour", "form"}
    assert admin.delete(f"{ns}/tags/zeta").status_code == 204
    assert admin.delete(f"{ns}/resource_types/IW::Thing").status_code == 204
    _error(admin.delete(f"{ns}/resource_types/IW::Thing"), 404)
    assert admin.delete(f"{ns}/objects/Box").status_code == 204
    assert admin.delete(f"{ns}/properties/size").status_code == 204
    for kind in ("objects", "properties", "tags"):
        assert admin.delete(f"{ns}/{kind}").status_code == 204
    emptied = admin.get(ns).json()
    assert not {"objects", "properties", "tags"} & set(emptied)
    assert admin.delete(ns).status_code == 204
    _error(admin.get(ns), 404)


def test_listing_pages_sorts_and_refuses_bad_parameters(admin: Api) -> None:
    names = [f"IW::Page{n}" for n in range(5)]
    for name in names:
        assert (
            admin.post(f"{M}/namespaces", json={"namespace": name, "visibility": "public"}).status_code == 201
        )
    try:
        ours = [ns["namespace"] for ns in all_namespaces(admin, sort_key="namespace", sort_dir="asc")]
        assert ours == sorted(ours) and [n for n in ours if n.startswith("IW::Page")] == names
        newest = [ns["namespace"] for ns in all_namespaces(admin) if ns["namespace"].startswith("IW::Page")]
        assert newest == names[::-1]
        page = admin.get(
            f"{M}/namespaces", params={"limit": 2, "sort_key": "namespace", "sort_dir": "asc"}
        ).json()
        assert len(page["namespaces"]) == 2 and "marker=" in page["next"]
        assert page["first"] == "/v2/metadefs/namespaces?limit=2&sort_key=namespace&sort_dir=asc"
        for params in (
            {"limit": "x"},
            {"limit": "-1"},
            {"sort_dir": "up"},
            {"sort_key": "colour"},
            {"visibility": "x"},
        ):
            _error(admin.get(f"{M}/namespaces", params=params), 400)
        _error(admin.get(f"{M}/namespaces", params={"marker": "IW::Nothing"}), 404)
        _error(admin.get("/image/v2/schemas/metadefs/nothing"), 404)
        _error(admin.post(f"{M}/namespaces", json={"display_name": "no name"}), 400)
        _error(admin.post(f"{M}/namespaces", json={"namespace": "x", "visibility": "shared"}), 400)
        _error(admin.post(f"{M}/namespaces", json={"namespace": "x", "created_at": "now"}), 403)
        assert admin.get(f"{M}/namespaces/x").status_code == 404
    finally:
        for name in names:
            admin.delete(f"{M}/namespaces/{name}")


def test_defaults_load_once(registry: RegistryServer) -> None:
    """An admin's deletion of a default namespace survives a restart (defaults load on first start)."""
    with registry.api(registry.token()) as admin:
        url = f"{M}/namespaces/OS::Compute::Watchdog"
        update = {"namespace": "OS::Compute::Watchdog", "visibility": "public", "protected": False}
        assert admin.put(url, json=update).status_code == 200
        assert admin.delete(url).status_code == 204
    registry.stop()
    registry.start()
    with registry.api(registry.token()) as admin:
        assert admin.get(url).status_code == 404
        assert admin.get(f"{M}/namespaces/OS::OperatingSystem").status_code == 200


def _openstack_json(server: RegistryServer, *args: str) -> Any:
    return json.loads(server.openstack("image", "metadef", *args, "-f", "json").stdout)


def test_openstack_and_glance_clients(registry: RegistryServer) -> None:
    server = registry
    listed = _openstack_json(server, "namespace", "list")
    assert sorted(row["namespace"] for row in listed) == DEFAULT_NAMESPACES
    shown = _openstack_json(server, "namespace", "show", "OS::OperatingSystem")
    assert shown["namespace"] == "OS::OperatingSystem" and shown["protected"] is True
    props = _openstack_json(server, "property", "list", "OS::Compute::Hypervisor")
    assert {row["name"] for row in props} == {"hypervisor_type", "vm_mode"}
    prop = _openstack_json(server, "property", "show", "OS::Compute::Hypervisor", "hypervisor_type")
    assert "kvm" in prop["enum"]
    types = _openstack_json(server, "resource", "type", "list")
    assert "OS::Glance::Image" in {row["Name"] for row in types}

    server.openstack(
        "image", "metadef", "namespace", "create", "IW::Cli", "--display-name", "CLI", "--public"
    )
    server.openstack(
        "image", "metadef", "property", "create", "IW::Cli", "--name", "speed", "--title", "Speed",
        "--type", "integer", "--schema", json.dumps({"minimum": 1}),
    )  # fmt: skip
    assert _openstack_json(server, "property", "show", "IW::Cli", "speed")["minimum"] == 1
    server.openstack("image", "metadef", "object", "create", "--namespace", "IW::Cli", "Engine")
    assert [row["name"] for row in _openstack_json(server, "object", "list", "IW::Cli")] == ["Engine"]
    server.openstack(
        "image", "metadef", "resource", "type", "association", "create", "IW::Cli", "OS::Glance::Image"
    )
    assocs = _openstack_json(server, "resource", "type", "association", "list", "IW::Cli")
    assert [row["Name"] for row in assocs] == ["OS::Glance::Image"]
    visible = _openstack_json(server, "namespace", "list", "--resource-types", "OS::Glance::Image")
    assert "IW::Cli" in {row["namespace"] for row in visible}

    # python-glanceclient, with the openrc variables.
    out = server.glance("md-namespace-list").stdout
    assert "OS::Compute::LibvirtImage" in out and "IW::Cli" in out
    out = server.glance("md-namespace-show", "OS::Compute::LibvirtImage").stdout
    assert "hw_firmware_type" in out
    out = server.glance("md-property-list", "IW::Cli").stdout
    assert "speed" in out
    server.glance("md-tag-create-multiple", "IW::Cli", "--names", "fast,quiet")
    out = server.glance("md-tag-list", "IW::Cli").stdout
    assert "fast" in out and "quiet" in out
    out = server.glance("md-object-list", "IW::Cli").stdout
    assert "Engine" in out
    out = server.glance("md-resource-type-list").stdout
    assert "OS::Nova::Flavor" in out

    # A reader of another project may read, not write.
    server.add_project("cli-readers")
    server.add_user("clireader", "cli-readers", "member", "clireader-Pw-1")
    env = server.openrc_env("clireader", "clireader-Pw-1", "cli-readers")
    env["OS_CLIENT_CONFIG_FILE"] = "/nonexistent"
    listed = json.loads(
        server.openstack("image", "metadef", "namespace", "list", "-f", "json", env=env).stdout
    )
    assert "IW::Cli" in {row["namespace"] for row in listed}
    refused = server.openstack("image", "metadef", "namespace", "delete", "IW::Cli", env=env, check=False)
    assert refused.returncode != 0
    server.openstack("image", "metadef", "namespace", "delete", "IW::Cli")
    assert "IW::Cli" not in {row["namespace"] for row in _openstack_json(server, "namespace", "list")}
