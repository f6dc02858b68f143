"""The trees as raw HTTP shows them: version lists, dated versions, optional keys, OpenStack files.

What the real clients in ``test_clients.py`` do not ask for: ``GET /`` and ``/openstack``,
a dated EC2 version (``/2009-04-04``, the oldest cloud-init and the seeds' agents use),
``public-ipv4`` present only for an instance with a public address, ``services/domain``,
``user-data`` listed and served only when given, and ``vendor_data.json``/``vendor_data2.json``.
"""

from __future__ import annotations

import json

from tests.metadata_service.conftest import ADDRESSES, USER_DATA, VENDOR_DATA, Fleet


def _get(fleet: Fleet, path: str, name: str) -> tuple[int, str]:
    answer = fleet.stack.get(path, ADDRESSES[name])
    return answer.status, answer.text


def test_version_lists(fleet: Fleet) -> None:
    status, text = _get(fleet, "/", "a")
    versions = text.split("\n")
    assert status == 200
    assert "2009-04-04" in versions and versions[-1] == "latest"
    status, text = _get(fleet, "/openstack", "a")
    assert status == 200 and text.split("\n")[-1] == "latest"


def test_dated_version_serves_the_latest_tree(fleet: Fleet) -> None:
    for path in ("meta-data/", "meta-data/instance-id", "meta-data/public-keys/0/openssh-key", "user-data"):
        dated, latest = _get(fleet, f"/2009-04-04/{path}", "a"), _get(fleet, f"/latest/{path}", "a")
        assert dated == latest and dated[0] == 200, path
    assert _get(fleet, "/2009-04-04/meta-data/instance-id", "a")[1] == fleet.id("a")
    assert _get(fleet, "/2009-04-04/user-data", "a")[1].encode() == USER_DATA["a"]
    assert _get(fleet, "/1999-01-01/meta-data/instance-id", "a")[0] == 404


def test_optional_keys(fleet: Fleet) -> None:
    # a has a public address and user-data; e has neither
    assert _get(fleet, "/latest/meta-data/public-ipv4", "a") == (200, "192.0.2.44")
    assert "public-ipv4" in _get(fleet, "/latest/meta-data/", "a")[1].split("\n")
    assert _get(fleet, "/latest/meta-data/public-ipv4", "e")[0] == 404
    assert "public-ipv4" not in _get(fleet, "/latest/meta-data/", "e")[1].split("\n")
    assert _get(fleet, "/latest/", "a") == (200, "dynamic\nmeta-data\nuser-data")
    assert _get(fleet, "/latest/", "e") == (200, "dynamic\nmeta-data")
    assert _get(fleet, "/latest/user-data", "e")[0] == 404
    assert _get(fleet, "/latest/meta-data/services/domain", "a") == (200, "amazonaws.com")
    assert _get(fleet, "/latest/meta-data/public-keys/0/", "a") == (200, "openssh-key")
    assert _get(fleet, "/latest/meta-data/public-keys/0/openssh-key", "a") == (200, fleet.keys[0])
    assert _get(fleet, "/latest/meta-data/public-keys/", "e") == (200, "")


def test_openstack_files(fleet: Fleet) -> None:
    status, listing = _get(fleet, "/openstack/latest/", "a")
    assert status == 200
    assert listing.split("\n") == [
        "meta_data.json", "network_data.json", "user_data", "vendor_data.json", "vendor_data2.json",
    ]  # fmt: skip
    assert "user_data" not in _get(fleet, "/openstack/latest/", "e")[1].split("\n")
    assert _get(fleet, "/openstack/latest/user_data", "e")[0] == 404
    assert json.loads(_get(fleet, "/openstack/latest/vendor_data.json", "a")[1]) == VENDOR_DATA
    assert json.loads(_get(fleet, "/openstack/latest/vendor_data2.json", "a")[1]) == {"static": VENDOR_DATA}
    assert json.loads(_get(fleet, "/openstack/latest/vendor_data.json", "e")[1]) == {}
    meta = json.loads(_get(fleet, "/openstack/2012-08-10/meta_data.json", "a")[1])
    view = fleet.views["a"]
    assert (meta["uuid"], meta["name"], meta["project_id"]) == (view["id"], "web-a", view["project_id"])
    assert meta["meta"] == {"role": "web", "tier": "front"}
    assert meta["availability_zone"] == "zone-1a"
