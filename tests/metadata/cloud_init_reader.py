"""Read a context medium's files with cloud-init's own code; print what it understood as JSON.

Run as ``python cloud_init_reader.py CLOUDINIT_SITE KIND DIRECTORY MAC`` where CLOUDINIT_SITE holds
the ``cloudinit`` package (unpacked from Debian's cloud-init .deb) and DIRECTORY the files
copied off the medium. A separate process, so cloud-init's imports and logging stay out of
the test process. All it is told about the (pretend) guest: its NIC ``ens3`` has address MAC.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

#: The guest's one NIC: its MAC address is the fourth argument.
NICS_BY_MAC: dict[str, str] = {}


def _render(config: Any) -> dict[str, str]:
    from cloudinit.net import eni, netplan, network_state

    state = network_state.parse_net_config_data(config)
    return {
        "eni": eni.Renderer({})._render_interfaces(state),
        "netplan": netplan.Renderer({})._render_content(state),
    }


def read_nocloud(directory: str) -> dict[str, Any]:
    from cloudinit import sources, util
    from cloudinit.sources import DataSourceNoCloud

    # What DataSourceNoCloud does with a mounted seed.
    seeded = util.pathprefix2dict(
        directory, required=["user-data", "meta-data"], optional=["vendor-data", "network-config"]
    )
    merged = DataSourceNoCloud._merge_new_seed(
        {"meta-data": {}, "user-data": "", "vendor-data": "", "network-config": None}, seeded
    )
    result: dict[str, Any] = {
        "metadata": merged["meta-data"],
        "public_keys": sources.normalize_pubkey_data(merged["meta-data"].get("public-keys")),
        "userdata_b64": base64.b64encode(merged["user-data"]).decode(),
    }
    if merged["network-config"] is not None:
        result.update(_render(merged["network-config"]))
    return result


def read_configdrive(directory: str) -> dict[str, Any]:
    from cloudinit import sources
    from cloudinit.sources.helpers import openstack

    # What DataSourceConfigDrive does with a mounted drive.
    results = openstack.ConfigDriveReader(directory).read_v2()
    network = openstack.convert_net_json(results["networkdata"], known_macs=NICS_BY_MAC)
    return {
        "version": results["version"],
        "metadata": results["metadata"],
        # DataSourceConfigDrive.get_public_ssh_keys (SourceMixin) for a version 2 drive.
        "public_keys": sources.normalize_pubkey_data(results["metadata"].get("public_keys")),
        "userdata_b64": base64.b64encode(results.get("userdata") or b"").decode(),
        "ec2_metadata": results.get("ec2-metadata"),
        "network_v1": network,
        **_render(network),
    }


def read_opennebula(directory: str) -> dict[str, Any]:
    from cloudinit.sources import DataSourceOpenNebula

    # What DataSourceOpenNebula does with a mounted CD-ROM, with this host's NICs replaced.
    DataSourceOpenNebula.get_physical_nics_by_mac = lambda distro: dict(  # type: ignore[assignment]
        {mac: name for mac, name in NICS_BY_MAC.items()}
    )
    results = DataSourceOpenNebula.read_context_disk_dir(directory, distro=None, asuser=None)
    out: dict[str, Any] = {"metadata": results["metadata"]}
    if "network-interfaces" in results:
        out["network_v2"] = results["network-interfaces"]
        out.update(_render(results["network-interfaces"]))
    return out


def main() -> None:
    site, kind, directory, mac = sys.argv[1:5]
    NICS_BY_MAC[mac] = "ens3"
    sys.path.insert(0, site)
    reader = {"nocloud": read_nocloud, "configdrive": read_configdrive, "opennebula": read_opennebula}[kind]
    json.dump(reader(directory), sys.stdout, default=str)


if __name__ == "__main__":
    main()
