"""Wakame-vdc metadata drive: a FAT disk image labelled ``METADATA`` (a disk, not a CD).

Wakame-vdc's hypervisor agent (``dcmgr/lib/dcmgr/rpc/hva_handler.rb``, ``setup_metadata_drive``)
wrote the EC2 metadata categories as a directory tree, one file per value, and attached it as
a second disk; ``wakame-init`` in the guest mounts ``LABEL=METADATA`` and reads the files with
``cat`` (a directory is listed with ``ls``). We write the same tree::

    meta-data/ami-id, ami-launch-index, hostname, local-hostname, instance-id, mac
    meta-data/local-ipv4                                    (static network only)
    meta-data/public-keys/N/openssh-key                     (key N, N = 0, 1, ...; empty dir if none)
    meta-data/network/interfaces/macs/52-54-00-12-34-56/
        mac             52:54:00:12:34:56   (the real address, with colons)
        local-hostname
        local-ipv4s     x-netmask  x-network  x-broadcast  x-metric  (static only)
        x-gateway       (static, when a gateway is given)
        x-dns           (static, when DNS servers are given; one address per line)
    meta-data/extra-hosts/<name>                            (one file per host, holding its IP)
    user-data                                               (top level, only when given)

**The MAC directory is spelled with hyphens** (``52-54-00-12-34-56``, lower case): ``:`` is not
allowed in FAT names. That is what Wakame-vdc itself did ("vfat doesn't allow folder name
including ':'", ``mac_addr.unpack('A2'*6).join('-')``), while the ``mac`` file inside keeps the
colon form an agent compares with ``ip link``. An agent should list ``macs/`` and read each
``mac`` file rather than rebuild the directory name.

Each value file is the value plus one ``\\n``, as Wakame-vdc's ``File#puts`` wrote it (``$(cat
f)`` drops it). ``user-data`` is the user's bytes exactly, with nothing added. With DHCP the
MAC directory holds only ``mac`` and ``local-hostname``: no ``local-ipv4s`` means "use DHCP".
``x-metric`` is ``0``; wakame-init gives the default gateway to the NIC with the lowest
metric. ``x-dns`` is not in Wakame-vdc's Linux handler; its Windows test tooling wrote it,
and our agent reads it.

Why a superfloppy without partition table, see ``fat.py``.
"""

from __future__ import annotations

from imagewright.metadata.builder import refuse_unsupported
from imagewright.metadata.instance import InstanceDescription
from imagewright.metadata.layout import Filesystem, MediumFile, MediumLayout
from imagewright.metadata.network import StaticNetwork

LABEL = "METADATA"
TOP = "meta-data"
#: Route metric of the only NIC (wakame-init puts the gateway on the lowest).
METRIC = "0"


def mac_directory_name(mac: str) -> str:
    """``52:54:00:12:34:56`` → ``52-54-00-12-34-56`` (FAT names cannot hold ``:``)."""
    return mac.lower().replace(":", "-")


def _value(text: str) -> bytes:
    return (text + "\n").encode("utf-8")


def metadata_values(instance: InstanceDescription) -> dict[str, str]:
    """Path under ``meta-data/`` → value (without the trailing newline)."""
    values = {
        "ami-id": instance.image_id,
        "ami-launch-index": "0",
        "hostname": instance.hostname,
        "local-hostname": instance.hostname,
        "instance-id": instance.instance_id,
        "mac": instance.mac,
    }
    for index, key in enumerate(instance.ssh_keys):
        values[f"public-keys/{index}/openssh-key"] = key.line
    nic = f"network/interfaces/macs/{mac_directory_name(instance.mac)}"
    values[f"{nic}/mac"] = instance.mac
    values[f"{nic}/local-hostname"] = instance.hostname
    network = instance.network
    if isinstance(network, StaticNetwork):
        values["local-ipv4"] = str(network.address)
        values[f"{nic}/local-ipv4s"] = str(network.address)
        values[f"{nic}/x-netmask"] = str(network.netmask)
        values[f"{nic}/x-network"] = str(network.network.network_address)
        values[f"{nic}/x-broadcast"] = str(network.broadcast)
        values[f"{nic}/x-metric"] = METRIC
        if network.gateway is not None:
            values[f"{nic}/x-gateway"] = str(network.gateway)
        if network.dns:
            values[f"{nic}/x-dns"] = "\n".join(str(server) for server in network.dns)
    for host in instance.extra_hosts:
        values[f"extra-hosts/{host.name}"] = str(host.address)
    return values


class WakameBuilder:
    kind = "wakame"
    label = LABEL
    filesystem: Filesystem = "vfat"
    description = "Wakame-vdc metadata drive"

    def layout(self, instance: InstanceDescription) -> MediumLayout:
        refuse_unsupported(instance, self.kind, extra_hosts=True, init_script=False)
        files = [
            MediumFile(f"{TOP}/{path}", _value(value)) for path, value in metadata_values(instance).items()
        ]
        if instance.user_data is not None:
            files.append(MediumFile("user-data", instance.user_data))
        directories = () if instance.ssh_keys else (f"{TOP}/public-keys",)
        return MediumLayout(self.kind, self.label, self.filesystem, tuple(files), directories)
