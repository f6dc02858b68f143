"""The trees the instance metadata service serves: EC2 (with Wakame-vdc's keys) and OpenStack.

Pure functions from a ``ServedInstance`` to ``path -> body`` tables; the service
(``imagewright.service.imds``) computes a table once per instance, caches it, and answers every
request with one dictionary lookup. Nothing here knows about HTTP or the catalog.

EC2 tree (spec digest §4.1/§4.2; AWS "Instance metadata categories"; cloud-init
``sources/helpers/ec2.py`` ``MetadataMaterializer``)::

    latest/                         dynamic, meta-data, user-data (user-data only when given)
    latest/meta-data/               ami-id ami-launch-index ami-manifest-path block-device-mapping/
                                    hostname instance-action instance-id instance-life-cycle
                                    instance-type local-hostname local-ipv4 mac network/ placement/
                                    public-ipv4 public-keys/ reservation-id security-groups services/
                                    tags/ wmi-id                       (sorted, as EC2 lists them)
    latest/meta-data/public-keys/   "0=name" lines (no trailing slash); public-keys/0/ -> openssh-key
    latest/meta-data/network/interfaces/macs/<mac>/
                                    device-number interface-id local-hostname local-ipv4s (or ipv6s)
                                    mac owner-id public-ipv4s security-groups subnet-ipv4-cidr-block
                                    vpc-id and Wakame-vdc's x-gateway x-netmask x-network
                                    x-broadcast x-metric x-dns (static network only)
    latest/dynamic/instance-identity/  rsa2048 pkcs7 document signature (EC2's own order)
    latest/user-data                raw bytes as given (absent: 404)

Listing rules: newline-separated names without a trailing newline; a child that is a directory
ends in ``/``; a leaf asked for with a trailing ``/`` is the leaf (botocore asks for
``placement/availability-zone/``). Every dated version serves the same tree as ``latest`` (as
Nova's EC2 tree does; EC2 itself hides categories newer than the version).

``wmi-id`` is Wakame-vdc's name for the machine image (``wmi-…``); its ``x-*`` keys are the ones
``metadata.wakame`` writes on the metadata drive (the same function computes them), but under
the colon-separated MAC directory EC2 clients expect (the drive uses hyphens because FAT cannot).

OpenStack tree (Nova ``api/metadata/base.py``; cloud-init ``sources/helpers/openstack.py``)::

    openstack/                      the dated versions cloud-init knows, then latest
    openstack/<v>/                  meta_data.json network_data.json user_data vendor_data.json
                                    vendor_data2.json (user_data only when given)

``meta_data.json`` carries uuid, name, hostname, launch_index, availability_zone, project_id,
public_keys, keys, meta (the tags), devices, random_seed; ``network_data.json`` is the config
drive's (``metadata.configdrive.network_data``) plus a DHCP link per further interface;
``vendor_data.json`` is the instance's vendor data (``{}`` when none) and ``vendor_data2.json``
holds it under ``static``, as Nova's StaticJSON provider does.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, ip_address
from typing import Any

from imagewright.metadata import configdrive, wakame
from imagewright.metadata.instance import InstanceDescription
from imagewright.metadata.network import StaticNetwork

#: EC2's dated versions (``GET /`` lists them, then ``latest``).
EC2_VERSIONS: tuple[str, ...] = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-09-24",
    "latest",
)
#: OpenStack metadata versions (Nova's list up to the newest cloud-init reads), then latest.
OPENSTACK_VERSIONS: tuple[str, ...] = (
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "latest",
)
#: The order EC2 lists ``dynamic/instance-identity/`` in (AWS "Retrieve dynamic data").
IDENTITY_ORDER = ("rsa2048", "pkcs7", "document", "signature")
IDENTITY_DOCUMENT_VERSION = "2017-09-30"
RANDOM_SEED_BYTES = 512


@dataclass(frozen=True)
class ServedInterface:
    device_index: int
    mac: str
    #: Canonical text of the fixed address (IPv4 or IPv6), or None.
    address: str | None = None
    public_address: str | None = None


@dataclass(frozen=True)
class ServedInstance:
    """What the metadata service says about one instance (built from its catalog row)."""

    #: id, hostname, keys, user-data, network (of interface 0), mac (of interface 0), image id.
    description: InstanceDescription
    name: str
    project_id: str
    #: The registry image (a Glance UUID); ``description.image_id`` is its EC2 form.
    image_uuid: str
    key_names: tuple[str, ...]
    interfaces: tuple[ServedInterface, ...]
    instance_type: str
    availability_zone: str
    region: str
    reservation_id: str
    launch_index: int
    security_groups: tuple[str, ...]
    tags: tuple[tuple[str, str], ...] = ()
    vendor_data: Mapping[str, Any] | None = None
    created_at: datetime = field(default_factory=lambda: datetime(1970, 1, 1))

    @property
    def instance_id(self) -> str:
        return self.description.instance_id


@dataclass(frozen=True)
class IdentityDocuments:
    """The instance identity document and its three signed forms (made by the service's key)."""

    document: bytes
    signature: bytes
    pkcs7: bytes
    rsa2048: bytes


def ec2_image_id(image_uuid: str, prefix: str = "ami") -> str:
    """A registry image id in EC2's shape: ``ami-`` and the first 17 hex digits of its UUID."""
    digits = "".join(c for c in image_uuid.lower() if c in "0123456789abcdef")
    return f"{prefix}-{digits[:17]}"


def _primary_ipv4(instance: ServedInstance) -> str | None:
    for interface in instance.interfaces[:1]:
        if interface.address and isinstance(ip_address(interface.address), IPv4Address):
            return interface.address
    return None


def identity_document(instance: ServedInstance) -> bytes:
    """EC2's instance identity document: its keys in EC2's order, printed as EC2 prints it."""
    document = {
        "accountId": instance.project_id,
        "architecture": "x86_64",
        "availabilityZone": instance.availability_zone,
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": instance.description.image_id,
        "instanceId": instance.instance_id,
        "instanceType": instance.instance_type,
        "kernelId": None,
        "pendingTime": instance.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "privateIp": _primary_ipv4(instance),
        "ramdiskId": None,
        "region": instance.region,
        "version": IDENTITY_DOCUMENT_VERSION,
    }
    return json.dumps(document, indent=2, separators=(",", " : ")).encode("utf-8")


# --- EC2 ----------------------------------------------------------------------------------------

Tree = dict[str, Any]


def _interface_tree(instance: ServedInstance, interface: ServedInterface) -> Tree:
    description = instance.description
    node: Tree = {
        "device-number": str(interface.device_index),
        "interface-id": f"eni-{interface.mac.replace(':', '')}{instance.instance_id[2:7]}",
        "local-hostname": description.hostname,
        "mac": interface.mac,
        "owner-id": instance.project_id,
        "security-groups": "\n".join(instance.security_groups),
        "vpc-id": f"vpc-{instance.project_id[:17]}",
    }
    if interface.address:
        key = "local-ipv4s" if isinstance(ip_address(interface.address), IPv4Address) else "ipv6s"
        node[key] = interface.address
    if interface.public_address:
        node["public-ipv4s"] = interface.public_address
        if interface.address:
            node["ipv4-associations"] = {interface.public_address: interface.address}
    network = description.network
    if interface.device_index == 0 and isinstance(network, StaticNetwork):
        node["subnet-ipv4-cidr-block"] = str(network.network)
        node["vpc-ipv4-cidr-block"] = str(network.network)
        # Wakame-vdc's keys, computed as the metadata drive computes them.
        drive_dir = f"network/interfaces/macs/{wakame.mac_directory_name(interface.mac)}/"
        for path, value in wakame.metadata_values(description).items():
            if path.startswith(drive_dir) and path[len(drive_dir) :].startswith("x-"):
                node[path[len(drive_dir) :]] = value
    return node


def ec2_meta_data(instance: ServedInstance) -> Tree:
    """The ``meta-data/`` tree: dicts are directories, strings are leaves."""
    description = instance.description
    primary = instance.interfaces[0] if instance.interfaces else None
    tree: Tree = {
        "ami-id": description.image_id,
        "ami-launch-index": str(instance.launch_index),
        "ami-manifest-path": "(unknown)",
        "block-device-mapping": {"ami": "/dev/vda", "root": "/dev/vda"},
        "hostname": description.hostname,
        "instance-action": "none",
        "instance-id": instance.instance_id,
        "instance-life-cycle": "on-demand",
        "instance-type": instance.instance_type,
        "local-hostname": description.hostname,
        "mac": description.mac,
        "network": {
            "interfaces": {
                "macs": {
                    interface.mac: _interface_tree(instance, interface) for interface in instance.interfaces
                }
            }
        },
        "placement": {"availability-zone": instance.availability_zone, "region": instance.region},
        "public-keys": {
            str(index): {"openssh-key": key.line} for index, key in enumerate(description.ssh_keys)
        },
        "reservation-id": instance.reservation_id,
        "security-groups": "\n".join(instance.security_groups),
        "services": {"domain": "amazonaws.com", "partition": "aws"},
        "wmi-id": ec2_image_id(instance.image_uuid, "wmi"),
    }
    ipv4 = _primary_ipv4(instance)
    if ipv4 is not None:
        tree["local-ipv4"] = ipv4
    if primary is not None and primary.public_address:
        tree["public-ipv4"] = primary.public_address
    if instance.tags:
        tree["tags"] = {"instance": dict(instance.tags)}
    return tree


def _listing(node: Tree) -> bytes:
    return "\n".join(
        f"{name}/" if isinstance(child, dict) else name for name, child in sorted(node.items())
    ).encode("utf-8")


def _flatten(node: Tree, prefix: str, out: dict[str, bytes]) -> None:
    out[prefix] = _listing(node)
    for name, child in node.items():
        path = f"{prefix}/{name}"
        if isinstance(child, dict):
            _flatten(child, path, out)
        else:
            out[path] = child if isinstance(child, bytes) else str(child).encode("utf-8")


def ec2_entries(instance: ServedInstance, identity: IdentityDocuments) -> dict[str, bytes]:
    """Every path under a version (``meta-data/instance-id``, ``meta-data`` …) and its body.

    A path has no leading or trailing ``/``; the version's own listing is the key ``""``.
    """
    out: dict[str, bytes] = {}
    meta = ec2_meta_data(instance)
    _flatten(meta, "meta-data", out)
    # public-keys/ lists "N=name" (no trailing slash), EC2's one exception to the listing rule.
    out["meta-data/public-keys"] = "\n".join(
        f"{index}={name}" for index, name in enumerate(instance.key_names)
    ).encode("utf-8")
    identity_files = {
        "document": identity.document,
        "signature": identity.signature,
        "pkcs7": identity.pkcs7,
        "rsa2048": identity.rsa2048,
    }
    for name, body in identity_files.items():
        out[f"dynamic/instance-identity/{name}"] = body
    out["dynamic/instance-identity"] = "\n".join(IDENTITY_ORDER).encode("ascii")
    out["dynamic"] = b"instance-identity/"
    top = ["dynamic", "meta-data"]
    if instance.description.user_data is not None:
        out["user-data"] = instance.description.user_data
        top.append("user-data")
    out[""] = "\n".join(top).encode("ascii")
    return out


# --- OpenStack ----------------------------------------------------------------------------------


def openstack_meta_data(instance: ServedInstance, random_seed: bytes | None = None) -> dict[str, Any]:
    description = instance.description
    pairs = list(zip(instance.key_names, description.ssh_keys, strict=True))
    seed = os.urandom(RANDOM_SEED_BYTES) if random_seed is None else random_seed
    return {
        "uuid": instance.instance_id,
        "name": instance.name,
        "hostname": description.hostname,
        "launch_index": instance.launch_index,
        "availability_zone": instance.availability_zone,
        "project_id": instance.project_id,
        "public_keys": {name: key.line for name, key in pairs},
        "keys": [{"name": name, "type": "ssh", "data": key.line} for name, key in pairs],
        "meta": dict(instance.tags),
        "devices": [],
        "random_seed": base64.b64encode(seed).decode("ascii"),
    }


def openstack_network_data(instance: ServedInstance) -> dict[str, Any]:
    data = configdrive.network_data(instance.description)
    for interface in instance.interfaces[1:]:
        link_id = f"interface{interface.device_index}"
        data["links"].append({"id": link_id, "type": "phy", "ethernet_mac_address": interface.mac})
        data["networks"].append(
            {"id": f"network{interface.device_index}", "link": link_id, "type": "ipv4_dhcp"}
        )
    return data


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": ")).encode("utf-8")


def openstack_entries(instance: ServedInstance) -> dict[str, bytes]:
    """``name -> body`` for one OpenStack version directory, and its listing under ``""``."""
    vendor = dict(instance.vendor_data or {})
    files = {
        "meta_data.json": _json(openstack_meta_data(instance)),
        "network_data.json": _json(openstack_network_data(instance)),
        "vendor_data.json": _json(vendor),
        "vendor_data2.json": _json({"static": vendor}),
    }
    if instance.description.user_data is not None:
        files["user_data"] = instance.description.user_data
    files[""] = "\n".join(sorted(files)).encode("ascii")
    return files
