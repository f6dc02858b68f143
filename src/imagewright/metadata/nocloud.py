"""cloud-init NoCloud seed: an ISO 9660 volume labelled ``cidata``.

Files in the root (cloud-init ``DataSourceNoCloud``, docs "NoCloud"):

``meta-data``
    YAML. ``instance-id`` (required by cloud-init; a new id means a new instance),
    ``local-hostname``, and ``public-keys`` as a list of OpenSSH key lines (cloud-init's
    ``get_public_ssh_keys`` reads it for the default user). Written in one fixed,
    line-oriented shape so a POSIX sh agent can read it with ``sed`` as well::

        instance-id: "i-0abc"
        local-hostname: "web1"
        public-keys:
          - "ssh-ed25519 AAAA... alice@example"

    Every string is a YAML double-quoted scalar (JSON string syntax; the values are
    validated printable text, so only ``\\"`` and ``\\\\`` can occur as escapes). Quoting
    everything avoids YAML 1.1 surprises: an unquoted ``0123`` is an octal number and an
    unquoted ``52:54:00:12:34:56`` a base-60 integer.

``user-data``
    The user's bytes, unchanged. cloud-init *requires* this file on a seed (it reads the
    seed with ``required=["user-data", "meta-data"]`` and ignores a medium without it), so
    when none is given we write a minimal ``#cloud-config`` holding ``ssh_authorized_keys``
    - the keys reach the default user even on images whose cloud-init ignores meta-data
    keys. Our agent only *runs* user-data that starts with ``#!``, so the generated
    ``#cloud-config`` is never executed by it; it takes keys from ``meta-data``.

``network-config``
    Only for a static network: netplan-style version 2 YAML with one ethernet matched by MAC
    address, renamed ``eth0``, its address, ``gateway4`` and nameservers. ``gateway4`` rather
    than a ``routes`` entry, checked against cloud-init 22.4's own renderers: its ENI
    renderer (Debian) turns ``gateway4`` into ifupdown's ``gateway`` line, but a
    ``to: 0.0.0.0/0`` route into ``post-up route add default gw … || true``, which silently
    does nothing without net-tools; ``to: default`` is refused outright ("Address default is
    not a valid ip address"). netplan calls ``gateway4`` deprecated but still honours it, and
    cloud-init's own OpenNebula source emits it. For DHCP the file is left out: cloud-init's
    documented behaviour without network configuration is DHCP on the first NIC, which is what
    DHCP asks for.
"""

from __future__ import annotations

import json

from imagewright.metadata.builder import refuse_unsupported
from imagewright.metadata.instance import InstanceDescription
from imagewright.metadata.layout import Filesystem, MediumFile, MediumLayout
from imagewright.metadata.network import StaticNetwork

LABEL = "cidata"


def yaml_string(value: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is a subset YAML 1.1 and 1.2 read)."""
    return json.dumps(value, ensure_ascii=False)


def meta_data(instance: InstanceDescription) -> bytes:
    lines = [
        f"instance-id: {yaml_string(instance.instance_id)}",
        f"local-hostname: {yaml_string(instance.hostname)}",
    ]
    if instance.ssh_keys:
        lines.append("public-keys:")
        lines.extend(f"  - {yaml_string(key.line)}" for key in instance.ssh_keys)
    return ("\n".join(lines) + "\n").encode("utf-8")


def default_user_data(instance: InstanceDescription) -> bytes:
    lines = ["#cloud-config"]
    if instance.ssh_keys:
        lines.append("ssh_authorized_keys:")
        lines.extend(f"  - {yaml_string(key.line)}" for key in instance.ssh_keys)
    return ("\n".join(lines) + "\n").encode("utf-8")


def network_config(instance: InstanceDescription) -> bytes | None:
    network = instance.network
    if not isinstance(network, StaticNetwork):
        return None
    lines = [
        "version: 2",
        "ethernets:",
        "  eth0:",
        "    match:",
        f"      macaddress: {yaml_string(instance.mac)}",
        f"    set-name: {yaml_string('eth0')}",
        "    addresses:",
        f"      - {yaml_string(network.interface.with_prefixlen)}",
    ]
    if network.gateway is not None:
        lines.append(f"    gateway4: {yaml_string(str(network.gateway))}")
    if network.dns:
        lines += ["    nameservers:", "      addresses:"]
        lines += [f"        - {yaml_string(str(server))}" for server in network.dns]
    return ("\n".join(lines) + "\n").encode("utf-8")


class NoCloudBuilder:
    kind = "nocloud"
    label = LABEL
    filesystem: Filesystem = "iso9660"
    description = "cloud-init NoCloud seed"

    def layout(self, instance: InstanceDescription) -> MediumLayout:
        refuse_unsupported(instance, self.kind, extra_hosts=False, init_script=False)
        user_data = instance.user_data if instance.user_data is not None else default_user_data(instance)
        files = [
            MediumFile("meta-data", meta_data(instance)),
            MediumFile("user-data", user_data),
        ]
        net = network_config(instance)
        if net is not None:
            files.append(MediumFile("network-config", net))
        return MediumLayout(self.kind, self.label, self.filesystem, tuple(files))
