"""OpenStack config drive: an ISO 9660 volume labelled ``config-2``, laid out as nova does.

Tree (nova ``virt/configdrive.py`` + ``api/metadata/base.py``; cloud-init
``DataSourceConfigDrive`` reads the newest version it knows, else ``latest``)::

    openstack/2018-08-27/{meta_data.json, network_data.json, user_data}
    openstack/latest/    (the same three files)
    ec2/2009-04-04/meta-data.json, ec2/latest/meta-data.json   (+ user-data)

``2018-08-27`` is the newest OpenStack metadata version cloud-init knows; ``network_data.json``
exists since 2015-10-15, so a reader of the dated directory finds everything. ``user_data``
is present only when user-data was given (as nova does).

``meta_data.json``: ``uuid`` (cloud-init's instance-id), ``hostname``, ``name``,
``launch_index``, ``availability_zone``, ``public_keys`` ({name: key}) and ``keys``
([{name, type: "ssh", data}]) - keys are named ``key-0``, ``key-1``... in the order given -
``meta`` {}, ``files`` [], ``devices`` [] and ``random_seed`` (512 random bytes, base64, which
cloud-init feeds to the guest's entropy pool, as nova does).

``network_data.json``: one link ``interface0`` of type ``phy`` with ``ethernet_mac_address``;
one network ``network0`` on it, ``ipv4`` (``ip_address``, ``netmask``, a default route
``0.0.0.0/0.0.0.0 via gateway``, per-network ``dns`` services) or ``ipv4_dhcp``; and the DNS
servers again as top-level ``services``. cloud-init's ``convert_net_json`` matches the link to
a NIC by MAC address. The network also carries a ``gateway`` key, which is not in nova's
output but which ``convert_net_json`` copies into the subnet: checked against cloud-init
22.4, its ENI renderer (Debian) makes a route-only default gateway a ``post-up route add
default gw … || true`` line that silently does nothing without net-tools, while ``gateway``
becomes ifupdown's own ``gateway`` line. Readers that follow the spec use ``routes``.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from ipaddress import IPv4Address
from typing import Any

from imagewright.metadata.builder import refuse_unsupported
from imagewright.metadata.instance import InstanceDescription
from imagewright.metadata.layout import Filesystem, MediumFile, MediumLayout
from imagewright.metadata.network import StaticNetwork

LABEL = "config-2"
OPENSTACK_VERSION = "2018-08-27"
EC2_VERSION = "2009-04-04"
AVAILABILITY_ZONE = "nova"
LINK_ID = "interface0"
NETWORK_ID = "network0"
RANDOM_SEED_BYTES = 512
#: network and netmask of a default route in network_data.json (not a listening address).
ANY_IPV4 = str(IPv4Address(0))


def key_names(instance: InstanceDescription) -> list[str]:
    return [f"key-{index}" for index in range(len(instance.ssh_keys))]


def meta_data(instance: InstanceDescription, random_seed: bytes | None = None) -> dict[str, Any]:
    names = key_names(instance)
    seed = os.urandom(RANDOM_SEED_BYTES) if random_seed is None else random_seed
    return {
        "uuid": instance.instance_id,
        "hostname": instance.hostname,
        "name": instance.hostname,
        "launch_index": 0,
        "availability_zone": AVAILABILITY_ZONE,
        "public_keys": {name: key.line for name, key in zip(names, instance.ssh_keys, strict=True)},
        "keys": [
            {"name": name, "type": "ssh", "data": key.line}
            for name, key in zip(names, instance.ssh_keys, strict=True)
        ],
        "meta": {},
        "files": [],
        "devices": [],
        "random_seed": base64.b64encode(seed).decode("ascii"),
    }


def network_data(instance: InstanceDescription) -> dict[str, Any]:
    network = instance.network
    # A stable id, like neutron's network UUID, so two builds of one instance agree.
    network_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"imagewright:{instance.instance_id}:{NETWORK_ID}"))
    link = {"id": LINK_ID, "type": "phy", "ethernet_mac_address": instance.mac}
    entry: dict[str, Any] = {"id": NETWORK_ID, "link": LINK_ID, "network_id": network_uuid}
    services: list[dict[str, str]] = []
    if isinstance(network, StaticNetwork):
        services = [{"type": "dns", "address": str(server)} for server in network.dns]
        entry.update(
            {
                "type": "ipv4",
                "ip_address": str(network.address),
                "netmask": str(network.netmask),
                **({"gateway": str(network.gateway)} if network.gateway is not None else {}),
                "routes": (
                    [{"network": ANY_IPV4, "netmask": ANY_IPV4, "gateway": str(network.gateway)}]
                    if network.gateway is not None
                    else []
                ),
                "services": services,
            }
        )
    else:
        entry["type"] = "ipv4_dhcp"
    return {"links": [link], "networks": [entry], "services": services}


def ec2_meta_data(instance: InstanceDescription) -> dict[str, Any]:
    """The EC2-style mirror nova writes under ``ec2/``: the meta-data tree as one JSON object."""
    data: dict[str, Any] = {
        "ami-id": instance.image_id,
        "ami-launch-index": 0,
        "hostname": instance.hostname,
        "local-hostname": instance.hostname,
        "instance-id": instance.instance_id,
        "mac": instance.mac,
        "placement": {"availability-zone": AVAILABILITY_ZONE},
        "public-keys": {str(index): {"openssh-key": key.line} for index, key in enumerate(instance.ssh_keys)},
    }
    if isinstance(instance.network, StaticNetwork):
        data["local-ipv4"] = str(instance.network.address)
    return data


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


class ConfigDriveBuilder:
    kind = "configdrive"
    label = LABEL
    filesystem: Filesystem = "iso9660"
    description = "OpenStack config drive"

    def layout(self, instance: InstanceDescription) -> MediumLayout:
        refuse_unsupported(instance, self.kind, extra_hosts=False, init_script=False)
        openstack = {
            "meta_data.json": _json(meta_data(instance)),
            "network_data.json": _json(network_data(instance)),
        }
        ec2 = {"meta-data.json": _json(ec2_meta_data(instance))}
        if instance.user_data is not None:
            openstack["user_data"] = instance.user_data
            ec2["user-data"] = instance.user_data
        files: list[MediumFile] = []
        for version in (OPENSTACK_VERSION, "latest"):
            files += [MediumFile(f"openstack/{version}/{name}", data) for name, data in openstack.items()]
        for version in (EC2_VERSION, "latest"):
            files += [MediumFile(f"ec2/{version}/{name}", data) for name, data in ec2.items()]
        return MediumLayout(self.kind, self.label, self.filesystem, tuple(files))
