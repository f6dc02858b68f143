"""Instance records: ``imagewright instance`` and ``/compute/v1/instances`` with the registry's tokens.

Project isolation as the images have it: members of a project create and delete its instances,
its readers list and show them, other projects see nothing (404), admins see everything when they
ask (``all_projects``); no token is 401. What the API creates the metadata service serves.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.metadata_service import MetadataStack, start_stack
from tests.fixtures.registry import Api
from tests.metadata_service.conftest import make_keys

PASSWORD = "instances-Pw-1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetadataStack]:
    started = start_stack(tmp_path_factory.mktemp("instances") / "data")
    server = started.server
    for project in ("p1", "p2"):
        server.add_project(project)
    server.add_user("alice", "p1", "member", PASSWORD)
    server.add_user("reed", "p1", "reader", PASSWORD)
    server.add_user("bob", "p2", "member", PASSWORD)
    try:
        yield started
    finally:
        server.stop()


def api(stack: MetadataStack, user: str, project: str) -> Api:
    return stack.server.api(stack.server.token(user, PASSWORD, project))


def body(**fields: Any) -> dict[str, Any]:
    return {"instance": fields}


def test_cli_create_show_list_delete(stack: MetadataStack, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    (tmp_path / "ud").write_bytes(b"#!/bin/sh\necho cli\n")
    view = stack.create_instance(
        "--name", "cli-1", "--key-file", str(keys[0]), "--user-data", str(tmp_path / "ud"),
        "--address", "127.0.0.41", "--address", "127.0.0.42", "--mac", "52:54:00:aa:00:01",
        "--tag", "a=b", "--tokens", "required", "--type", "m1.tiny",
    )  # fmt: skip
    assert view["id"].startswith("i-") and len(view["id"]) == 19
    first = view["interfaces"][0]
    assert (first["mac"], first["address"]) == ("52:54:00:aa:00:01", "127.0.0.41")
    assert view["interfaces"][1]["address"] == "127.0.0.42"
    assert view["interfaces"][1]["mac"].startswith("52:54:00:")
    shown = json.loads(stack.server.imagewright("instance", "show", view["id"], "--json").stdout)
    assert base64.b64decode(shown["user_data"]) == b"#!/bin/sh\necho cli\n"
    assert shown["public_keys"] == [keys[0].read_text().strip()]
    assert shown["metadata_options"] == {"http_tokens": "required", "http_endpoint": "enabled"}
    assert shown["tags"] == {"a": "b"} and shown["instance_type"] == "m1.tiny"
    listed = json.loads(stack.server.imagewright("instance", "list", "--json").stdout)
    assert view["id"] in [row["id"] for row in listed]
    human = stack.server.imagewright("instance", "show", view["id"]).stdout
    assert "127.0.0.41" in human and "tokens required" in human
    # both addresses name the instance to the metadata service (tokens required: 401 is its answer)
    assert stack.get("/latest/meta-data/instance-id", "127.0.0.42").status == 401
    token = stack.token("127.0.0.42")
    answer = stack.get(
        "/latest/meta-data/instance-id", "127.0.0.41", headers={"X-aws-ec2-metadata-token": token}
    )
    assert answer.text == view["id"]
    stack.server.imagewright("instance", "delete", view["id"])
    assert view["id"] not in stack.server.imagewright("instance", "list").stdout


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["--image", "no-such-image"], "No image 'no-such-image' is visible to the project."),
        (["--address", "127.0.0.1"], "cannot be an instance's"),
        (["--address", "224.0.0.1"], "is not a unicast host address"),
        (["--address", "10.0.0.300"], "is not an IPv4 or IPv6 address"),
        (["--mac", "01:00:5e:00:00:01"], "is a multicast address"),
        (["--tag", "a/b=c"], "without '/'"),
        (["--network", "static:10.0.0.5/24", "--address", "10.0.0.6"], "is not the static network's address"),
        (["--name", "Not A Host"], "is not a host name; give one with --hostname"),
        (["--project", "nope"], "There is no project 'nope'."),
    ],
)
def test_cli_refusals_are_one_sentence(stack: MetadataStack, args: list[str], sentence: str) -> None:
    argv = ["instance", "create", "--image", stack.image_id, "--name", "bad", *args]
    result = stack.server.imagewright(*argv, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("imagewright: error: ") and sentence in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_conflicts_and_limits(stack: MetadataStack, tmp_path: Path) -> None:
    stack.create_instance("--name", "taken", "--address", "127.0.0.43", "--mac", "52:54:00:aa:00:43")
    for args, sentence in (
        (["--address", "127.0.0.43"], "The address 127.0.0.43 belongs to another instance."),
        (["--mac", "52:54:00:AA:00:43"], "The MAC address 52:54:00:aa:00:43 belongs to another instance."),
    ):
        result = stack.server.imagewright(
            "instance", "create", "--image", "tiny", "--name", "x", *args, check=False
        )
        assert result.returncode == 1 and sentence in result.stderr
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    result = stack.server.imagewright(
        "instance", "create", "--image", "tiny", "--name", "x", "--user-data", str(big), check=False
    )
    assert result.returncode == 1 and "larger than the 64 KiB allowed" in result.stderr
    project = stack.server.add_project("with-instances")
    stack.create_instance("--name", "owned", "--project", project)
    removal = stack.server.imagewright("accounts", "project", "remove", "with-instances", check=False)
    assert removal.returncode == 1 and "still owns 1 instance" in removal.stderr


def test_api_needs_a_token(stack: MetadataStack) -> None:
    with stack.server.api(None) as anonymous:
        assert anonymous.get("/compute/v1/instances").status_code == 401
        assert anonymous.post("/compute/v1/instances", json=body(name="x", image="tiny")).status_code == 401
        assert anonymous.get("/compute/v1/instances/i-0123456789abcdef0").status_code == 401
        assert anonymous.delete("/compute/v1/instances/i-0123456789abcdef0").status_code == 401
        assert anonymous.get("/compute").json()["versions"][0]["id"] == "v1"
    with stack.server.api("not-a-token") as wrong:
        answer = wrong.get("/compute/v1/instances")
        assert answer.status_code == 401 and answer.json()["error"]["code"] == 401


def test_api_project_isolation(stack: MetadataStack) -> None:
    user_data = b"#cloud-config\n# p1-secret\n"
    with api(stack, "alice", "p1") as alice, api(stack, "reed", "p1") as reed, api(stack, "bob", "p2") as bob:
        created = alice.post(
            "/compute/v1/instances",
            json=body(
                name="p1-web",
                image="tiny",
                keys=[{"name": "k", "public_key": (make_keys_line(stack))}],
                user_data=base64.b64encode(user_data).decode(),
                addresses=["127.0.0.51"],
                tags={"env": "test"},
                vendor_data={"x": 1},
                metadata_options={"http_tokens": "optional"},
            ),
        )
        assert created.status_code == 201, created.text
        instance = created.json()["instance"]
        path = f"/compute/v1/instances/{instance['id']}"
        assert [row["id"] for row in reed.get("/compute/v1/instances").json()["instances"]] == [
            instance["id"]
        ]
        assert base64.b64decode(reed.get(path).json()["instance"]["user_data"]) == user_data
        assert bob.get("/compute/v1/instances").json()["instances"] == []
        assert bob.get(path).status_code == 404
        assert bob.delete(path).status_code == 404
        assert reed.delete(path).status_code == 403
        assert reed.post("/compute/v1/instances", json=body(name="r", image="tiny")).status_code == 403
        assert alice.get("/compute/v1/instances?all_projects=true").status_code == 403
        # the metadata service serves what the API made
        answer = stack.get("/latest/user-data", "127.0.0.51")
        assert (answer.status, answer.body) == (200, user_data)
        assert json.loads(stack.get("/openstack/latest/vendor_data.json", "127.0.0.51").body) == {"x": 1}
        with stack.server.api(stack.server.token()) as admin:
            everyone = admin.get("/compute/v1/instances?all_projects=true").json()["instances"]
            assert instance["id"] in [row["id"] for row in everyone]
            assert admin.get(path).status_code == 200
        assert alice.delete(path).status_code == 204
        assert alice.get(path).status_code == 404


def make_keys_line(stack: MetadataStack) -> str:
    directory = stack.server.data_dir.parent / "api-keys"
    directory.mkdir(exist_ok=True)
    if not (directory / "id_ed25519.pub").exists():
        make_keys(directory)
    return (directory / "id_ed25519.pub").read_text().strip()


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"name": "x"}, 400),
        ({"instance": {"name": "x"}}, 400),
        ({"instance": {"name": "x", "image": "tiny", "colour": "red"}}, 400),
        ({"instance": {"name": "x", "image": "tiny", "user_data": "***"}}, 400),
        ({"instance": {"name": "x", "image": "tiny", "keys": [{"public_key": "ssh-rsa nope"}]}}, 400),
        ({"instance": {"name": "x", "image": "tiny", "addresses": ["169.254.169.254"]}}, 400),
        ({"instance": {"name": "x", "image": "tiny", "metadata_options": {"http_tokens": "maybe"}}}, 400),
        ({"instance": {"name": "x", "image": "missing"}}, 404),
    ],
)
def test_api_bad_requests(stack: MetadataStack, payload: dict[str, Any], status: int) -> None:
    with api(stack, "alice", "p1") as alice:
        answer = alice.post("/compute/v1/instances", json=payload)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["message"].endswith(".")
        not_json = alice.post(
            "/compute/v1/instances", content=b"name=x", headers={"Content-Type": "text/plain"}
        )
        assert not_json.status_code == 415


def test_api_address_conflict_is_409(stack: MetadataStack) -> None:
    with api(stack, "alice", "p1") as alice, api(stack, "bob", "p2") as bob:
        first = alice.post(
            "/compute/v1/instances", json=body(name="c1", image="tiny", addresses=["127.0.0.61"])
        )
        assert first.status_code == 201
        second = bob.post(
            "/compute/v1/instances", json=body(name="c2", image="tiny", addresses=["127.0.0.61"])
        )
        assert second.status_code == 409
        assert second.json()["error"]["message"] == "The address 127.0.0.61 belongs to another instance."
