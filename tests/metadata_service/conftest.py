"""A registry + metadata service (one per session), with a handful of instances made by the CLI.

Instances (fixed loopback addresses: Linux lets a client bind any 127/8 address as its source):

- ``a``  127.0.0.21, two keys, user-data, tags, vendor data, a public address, tokens optional;
- ``b``  127.0.0.22, tokens required, its own user-data;
- ``c``  no address, a static network (x-* keys): reached only through its forwarder;
- ``d``  127.0.0.24, ``--endpoint disabled``;
- ``e``  127.0.0.25, no user-data, no keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.metadata_service import MetadataStack, start_stack
from tests.fixtures.tools import run

ADDRESSES = {"a": "127.0.0.21", "b": "127.0.0.22", "d": "127.0.0.24", "e": "127.0.0.25"}
USER_DATA = {
    "a": b"#!/bin/sh\necho user-data-of-A-s3cr3t\n",
    "b": b"#cloud-config\n# user-data-of-B-s3cr3t\n",
}
VENDOR_DATA = {"cloud-init": "#cloud-config\nruncmd: [echo vendor]\n", "site": "lab-1"}


@dataclass
class Fleet:
    stack: MetadataStack
    views: dict[str, dict[str, Any]]
    keys: list[str]
    directory: Path

    def id(self, name: str) -> str:
        return str(self.views[name]["id"])


def make_keys(directory: Path) -> list[Path]:
    paths = []
    for key_type, comment in (("ed25519", "alice@example"), ("ecdsa", "bob@example")):
        private = directory / f"id_{key_type}"
        run("ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", private)
        paths.append(private.with_name(private.name + ".pub"))
    return paths


def make_fleet(stack: MetadataStack, directory: Path) -> Fleet:
    keys = make_keys(directory)
    for name, data in USER_DATA.items():
        (directory / f"ud-{name}").write_bytes(data)
    (directory / "vendor.json").write_text(json.dumps(VENDOR_DATA))
    views = {
        "a": stack.create_instance(
            "--name", "web-a", "--address", ADDRESSES["a"], "--key-file", str(keys[0]), "--key-file",
            str(keys[1]), "--user-data", str(directory / "ud-a"), "--tag", "role=web", "--tag", "tier=front",
            "--vendor-data", str(directory / "vendor.json"), "--public-address", "192.0.2.44",
            "--type", "m1.large", "--availability-zone", "zone-1a",
        ),
        "b": stack.create_instance(
            "--name", "web-b", "--address", ADDRESSES["b"], "--key-file", str(keys[1]), "--user-data",
            str(directory / "ud-b"), "--tokens", "required",
        ),
        "c": stack.create_instance(
            "--name", "static-c", "--hostname", "static-c.example.com", "--key-file", str(keys[0]),
            "--network", "static:10.20.30.40/24,10.20.30.1,10.20.30.53", "--mac", "52:54:00:0c:0c:0c",
            "--vendor-data", str(directory / "vendor.json"),
        ),
        "d": stack.create_instance("--name", "off-d", "--address", ADDRESSES["d"], "--endpoint", "disabled"),
        "e": stack.create_instance("--name", "bare-e", "--address", ADDRESSES["e"]),
    }  # fmt: skip
    return Fleet(stack, views, [path.read_text().strip() for path in keys], directory)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("metadata")
    stack = start_stack(directory / "data")
    try:
        yield make_fleet(stack, directory)
    finally:
        stack.server.stop()
