"""Real metadata clients against the service: every value they read is the instance record's.

botocore's fetchers (IMDSv2, and its IMDSv1 fallback when the token request is refused), the
``ec2-metadata`` package, curl as the AWS docs use it, cloud-init's own EC2 and OpenStack
datasource code (Debian's package, unpacked), and openssl verifying the identity document's
three signatures with the certificate ``imagewright metadata certificate`` prints.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.utils import IMDSFetcher, InstanceMetadataRegionFetcher
from ec2_metadata import EC2Metadata
from tests.fixtures.metadata_service import GuestForwardBridge, bound_source
from tests.fixtures.tools import run
from tests.metadata_service.conftest import ADDRESSES, USER_DATA, VENDOR_DATA, Fleet

from imagewright.metadata.imds import ec2_image_id

CRAWLER = Path(__file__).with_name("cloud_init_crawl.py")


def crawl(site: Path, kind: str, base: str, source: str, mac: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(CRAWLER), str(site), kind, base, source, mac],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def mac_of(fleet: Fleet, name: str) -> str:
    return str(fleet.views[name]["interfaces"][0]["mac"])


# --- botocore -----------------------------------------------------------------------------------


class ForwardedForProxy:
    """An HTTP relay on the instance that adds X-Forwarded-For, as proxies do (the SSRF case)."""

    def __init__(self, target_port: int, source: str) -> None:
        self.target_port, self.source = target_port, source
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with client:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
                lines[1:1] = [b"X-Forwarded-For: 198.51.100.7", b"Connection: close"]
                request = b"\r\n".join(lines)
                with socket.create_connection(
                    ("127.0.0.1", self.target_port), source_address=(self.source, 0)
                ) as up:
                    up.sendall(request)
                    while chunk := up.recv(65536):
                        client.sendall(chunk)

    def __enter__(self) -> ForwardedForProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()


def test_botocore_imdsv2(fleet: Fleet) -> None:
    stack = fleet.stack
    for name in ("a", "b"):
        with bound_source(ADDRESSES[name], stack.metadata_port):
            fetcher = IMDSFetcher(base_url=stack.url + "/", timeout=5)
            token = fetcher._fetch_metadata_token()
            assert token
            answer = fetcher._get_request("latest/meta-data/instance-id", None, token)
            assert answer.text == fleet.id(name)
            region = InstanceMetadataRegionFetcher(base_url=stack.url + "/", timeout=5).retrieve_region()
    assert region == "nov"  # b's zone is "nova": botocore drops the zone letter, as on OpenStack
    with bound_source(ADDRESSES["a"], stack.metadata_port):
        assert (
            InstanceMetadataRegionFetcher(base_url=stack.url + "/", timeout=5).retrieve_region() == "zone-1"
        )


def test_botocore_falls_back_to_imdsv1_only_where_allowed(fleet: Fleet) -> None:
    """Through a proxy that adds X-Forwarded-For the token request is refused (403): botocore
    falls back to IMDSv1, which instance a allows and instance b (tokens required) refuses."""
    stack = fleet.stack
    for name, expected in (("a", "zone-1"), ("b", None)):
        with ForwardedForProxy(stack.metadata_port, ADDRESSES[name]) as proxy:
            base = f"http://127.0.0.1:{proxy.port}/"
            fetcher = IMDSFetcher(base_url=base, timeout=5)
            assert fetcher._fetch_metadata_token() is None
            assert InstanceMetadataRegionFetcher(base_url=base, timeout=5).retrieve_region() == expected
    line = f"{ADDRESSES['b']} {fleet.id('b')} PUT /latest/api/token 403"
    assert line in stack.access_log(waiting_for=line)


# --- ec2-metadata -------------------------------------------------------------------------------


@pytest.fixture
def ec2_metadata_client(fleet: Fleet) -> Iterator[EC2Metadata]:
    client = EC2Metadata()
    client.service_url = f"{fleet.stack.url}/latest/"
    client.dynamic_url = f"{client.service_url}dynamic/"
    client.metadata_url = f"{client.service_url}meta-data/"
    client.userdata_url = f"{client.service_url}user-data/"
    with bound_source(ADDRESSES["a"], fleet.stack.metadata_port):
        yield client


def test_ec2_metadata_package(fleet: Fleet, ec2_metadata_client: EC2Metadata) -> None:
    view, client = fleet.views["a"], ec2_metadata_client
    assert client.instance_id == view["id"]
    assert client.account_id == view["project_id"]
    assert client.ami_id == ec2_image_id(view["image_id"])
    assert client.availability_zone == "zone-1a"
    assert client.region == "RegionOne"
    assert client.instance_type == "m1.large"
    assert client.reservation_id == view["reservation_id"]
    assert client.private_hostname == "web-a"
    assert client.private_ipv4 == ADDRESSES["a"]
    assert client.public_ipv4 == "192.0.2.44"
    assert client.mac == mac_of(fleet, "a")
    assert client.security_groups == ["default"]
    assert client.user_data == USER_DATA["a"]
    keys = client.public_keys
    assert [keys[name].openssh_key for name in ("alice@example", "bob@example")] == fleet.keys
    interface = client.network_interfaces[mac_of(fleet, "a")]
    assert interface.private_ipv4s == [ADDRESSES["a"]]
    assert interface.public_ipv4s == ["192.0.2.44"]
    assert interface.device_number == 0
    assert client.tags == {"role": "web", "tier": "front"}
    document = client.instance_identity_document
    assert (document["instanceId"], document["privateIp"], document["imageId"]) == (
        view["id"],
        ADDRESSES["a"],
        ec2_image_id(view["image_id"]),
    )


# --- curl, as the AWS docs do it ----------------------------------------------------------------

CURL_SCRIPT = r"""
set -eu
M=$1; SRC=$2
curl_() { curl -s --interface "$SRC" "$@"; }
TOKEN=$(curl_ -X PUT "$M/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 21600")
echo "no-token $(curl_ -o /dev/null -w '%{http_code}' "$M/latest/meta-data/instance-id")"
echo "instance-id $(curl_ -H "X-aws-ec2-metadata-token: $TOKEN" "$M/latest/meta-data/instance-id")"
echo "key $(curl_ -H "X-aws-ec2-metadata-token: $TOKEN" "$M/latest/meta-data/public-keys/0/openssh-key")"
echo "keys $(curl_ -H "X-aws-ec2-metadata-token: $TOKEN" "$M/latest/meta-data/public-keys/")"
echo "user-data $(curl_ -H "X-aws-ec2-metadata-token: $TOKEN" "$M/latest/user-data" | base64 -w0)"
echo "listing $(curl_ -H "X-aws-ec2-metadata-token: $TOKEN" "$M/latest/meta-data/" | tr '\n' ' ')"
"""


def test_curl_like_the_aws_docs(fleet: Fleet, tmp_path: Path) -> None:
    script = tmp_path / "imds.sh"
    script.write_text(CURL_SCRIPT)
    out = run("bash", script, fleet.stack.url, ADDRESSES["b"]).stdout.decode()
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["no-token"] == "401"  # b requires tokens
    assert lines["instance-id"] == fleet.id("b")
    assert lines["key"] == fleet.keys[1]
    assert lines["keys"] == "0=bob@example"
    assert base64.b64decode(lines["user-data"]) == USER_DATA["b"]
    assert lines["listing"].split() == [
        "ami-id", "ami-launch-index", "ami-manifest-path", "block-device-mapping/", "hostname",
        "instance-action", "instance-id", "instance-life-cycle", "instance-type", "local-hostname",
        "local-ipv4", "mac", "network/", "placement/", "public-keys/", "reservation-id",
        "security-groups", "services/", "wmi-id",
    ]  # fmt: skip


# --- cloud-init ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "b"])
def test_cloud_init_ec2_datasource_on_aws(name: str, fleet: Fleet, cloud_init_site: Path) -> None:
    seen = crawl(cloud_init_site, "ec2-aws", fleet.stack.url, ADDRESSES[name], mac_of(fleet, name))
    view = fleet.views[name]
    assert seen["used_token"] is True
    assert seen["api_version"] == "2021-03-23"
    metadata = seen["metadata"]
    assert metadata["instance-id"] == view["id"]
    assert metadata["local-hostname"] == metadata["hostname"] == view["hostname"]
    assert metadata["local-ipv4"] == ADDRESSES[name]
    assert metadata["mac"] == mac_of(fleet, name)
    assert metadata["ami-id"] == ec2_image_id(view["image_id"])
    assert metadata["wmi-id"] == ec2_image_id(view["image_id"], "wmi")
    assert metadata["placement"]["availability-zone"] == view["availability_zone"]
    expected_keys = {
        "a": {"alice@example": fleet.keys[0], "bob@example": fleet.keys[1]},
        "b": {"bob@example": fleet.keys[1]},
    }
    # cloud-init turns the "0=name" listing into name -> key
    assert metadata["public-keys"] == expected_keys[name]
    assert base64.b64decode(seen["userdata_b64"]) == USER_DATA[name]
    document = seen["identity"]["document"]
    assert document["instanceId"] == view["id"] and document["privateIp"] == ADDRESSES[name]
    ethernet = seen["network"]["ethernets"]["ens3"]
    assert ethernet["match"]["macaddress"] == mac_of(fleet, name) and ethernet["dhcp4"] is True


def test_cloud_init_ec2_datasource_imdsv1_clone(fleet: Fleet, cloud_init_site: Path) -> None:
    seen = crawl(cloud_init_site, "ec2", fleet.stack.url, ADDRESSES["e"], mac_of(fleet, "e"))
    assert seen["used_token"] is False
    assert seen["metadata"]["instance-id"] == fleet.id("e")
    assert seen["metadata"]["public-keys"] == {} or "public-keys" not in seen["metadata"]
    assert seen["userdata_b64"] == ""  # no user-data: 404, which cloud-init reads as none


def test_cloud_init_openstack_reader(fleet: Fleet, cloud_init_site: Path) -> None:
    seen = crawl(cloud_init_site, "openstack", fleet.stack.url, ADDRESSES["a"], mac_of(fleet, "a"))
    view = fleet.views["a"]
    metadata = seen["metadata"]
    assert seen["version"] == 2  # the reader read the version 2 layout (openstack/<date>/)
    assert (metadata["uuid"], metadata["name"], metadata["hostname"]) == (view["id"], "web-a", "web-a")
    assert metadata["project_id"] == view["project_id"]
    assert metadata["availability_zone"] == "zone-1a" and metadata["launch_index"] == 0
    assert metadata["public_keys"] == {"alice@example": fleet.keys[0], "bob@example": fleet.keys[1]}
    assert [key["data"] for key in metadata["keys"]] == fleet.keys
    assert metadata["meta"] == {"role": "web", "tier": "front"}
    # cloud-init decodes the base64 random_seed itself (the crawler prints the bytes' repr)
    assert metadata["devices"] == [] and metadata["random_seed"].startswith("b")
    assert base64.b64decode(seen["userdata_b64"]) == USER_DATA["a"]
    assert seen["vendordata"] == VENDOR_DATA
    assert seen["vendordata2"] == {"static": VENDOR_DATA}
    assert seen["ec2_metadata"]["instance-id"] == view["id"]
    assert seen["network"]["config"][0]["mac_address"] == mac_of(fleet, "a")


def test_cloud_init_openstack_reader_through_the_forwarder(fleet: Fleet, cloud_init_site: Path) -> None:
    """Instance c has no fixed address: only its forwarder (guestfwd's cmd:) names it."""
    command = fleet.stack.channel.forwarder_command(fleet.id("c"))
    with GuestForwardBridge(command) as bridge:
        seen = crawl(cloud_init_site, "openstack", bridge.url, "-", "52:54:00:0c:0c:0c")
        ec2_seen = crawl(cloud_init_site, "ec2-aws", bridge.url, "-", "52:54:00:0c:0c:0c")
    assert seen["metadata"]["uuid"] == fleet.id("c")
    assert seen["metadata"]["hostname"] == "static-c.example.com"
    subnet = seen["network"]["config"][0]["subnets"][0]
    assert (subnet["type"], subnet["address"], subnet["netmask"]) == (
        "static",
        "10.20.30.40",
        "255.255.255.0",
    )
    assert subnet["gateway"] == "10.20.30.1"
    nameservers = [entry for entry in seen["network"]["config"] if entry["type"] == "nameserver"]
    assert [entry["address"] for entry in nameservers] in (["10.20.30.53"], [["10.20.30.53"]])
    nic = ec2_seen["metadata"]["network"]["interfaces"]["macs"]["52:54:00:0c:0c:0c"]
    assert {key: nic[key] for key in ("x-gateway", "x-netmask", "x-network", "x-broadcast", "x-metric")} == {
        "x-gateway": "10.20.30.1",
        "x-netmask": "255.255.255.0",
        "x-network": "10.20.30.0",
        "x-broadcast": "10.20.30.255",
        "x-metric": "0",
    }
    assert nic["subnet-ipv4-cidr-block"] == "10.20.30.0/24"
    assert ec2_seen["metadata"]["instance-id"] == fleet.id("c")


# --- the identity document's signatures ---------------------------------------------------------


def test_identity_signatures_verify_with_openssl(fleet: Fleet, tmp_path: Path) -> None:
    stack = fleet.stack
    certificate = tmp_path / "cert.pem"
    certificate.write_text(stack.server.imagewright("metadata", "certificate").stdout)
    files = {}
    for name in ("document", "signature", "pkcs7", "rsa2048"):
        answer = stack.get(f"/latest/dynamic/instance-identity/{name}", ADDRESSES["a"])
        assert answer.status == 200
        files[name] = tmp_path / name
        files[name].write_bytes(answer.body if name == "document" else base64.b64decode(answer.body))
    public = tmp_path / "public.pem"
    public.write_bytes(run("openssl", "x509", "-pubkey", "-noout", "-in", certificate).stdout)
    verified = run(
        "openssl", "dgst", "-sha256", "-verify", public, "-signature", files["signature"], files["document"]
    )
    assert verified.stdout.strip() == b"Verified OK"
    run(
        "openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", files["pkcs7"], "-content",
        files["document"], "-certfile", certificate, "-CAfile", certificate, "-out", tmp_path / "out1",
    )  # fmt: skip
    run(
        "openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", files["rsa2048"], "-certfile",
        certificate, "-CAfile", certificate, "-out", tmp_path / "out2",
    )  # fmt: skip
    assert (tmp_path / "out2").read_bytes() == files["document"].read_bytes()
    tampered = tmp_path / "tampered"
    tampered.write_bytes(
        files["document"].read_bytes().replace(fleet.id("a").encode(), fleet.id("b").encode())
    )
    refused = run(
        "openssl",
        "dgst",
        "-sha256",
        "-verify",
        public,
        "-signature",
        files["signature"],
        tampered,
        check=False,
    )
    assert refused.returncode != 0
