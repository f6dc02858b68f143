"""cloud-init itself reads our NoCloud, config drive and OpenNebula media.

The reader is Debian 12's cloud-init package, unpacked (``tests.fixtures.cloud_init``). Its
datasource code reads the files copied off each ISO (``xorriso -extract``), and its renderers
turn the network part into what a Debian (ENI) or Ubuntu (netplan) guest would write.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fixtures.tools import run

from imagewright.metadata.context import build_context_medium
from imagewright.metadata.instance import InstanceDescription

READER = Path(__file__).with_name("cloud_init_reader.py")


def copy_off(image: Path, directory: Path) -> Path:
    """The whole ISO tree (Rock Ridge names) into ``directory``, as a mount would show it."""
    run("xorriso", "-osirrox", "on", "-indev", image, "-extract", "/", directory)
    return directory


def cloud_init_reads(site: Path, kind: str, image: Path, tmp_path: Path, mac: str) -> dict[str, Any]:
    files = copy_off(image, tmp_path / f"{kind}-mount")
    proc = subprocess.run(
        [sys.executable, str(READER), str(site), kind, str(files), mac],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_nocloud(cloud_init_site: Path, static_instance: InstanceDescription, tmp_path: Path) -> None:
    image = tmp_path / "seed.iso"
    build_context_medium("nocloud", static_instance, image)
    seen = cloud_init_reads(cloud_init_site, "nocloud", image, tmp_path, static_instance.mac)
    assert seen["metadata"]["instance-id"] == "i-0123456789abcdef0"
    assert seen["metadata"]["local-hostname"] == "web1.example.com"
    assert seen["public_keys"] == [k.line for k in static_instance.ssh_keys]
    assert base64.b64decode(seen["userdata_b64"]) == static_instance.user_data
    eni = seen["eni"]
    assert "iface eth0 inet static" in eni
    assert "address 192.0.2.10/24" in eni
    # ifupdown's own gateway line, not a `route add` that needs net-tools.
    assert "gateway 192.0.2.1" in eni and "route add" not in eni
    assert "dns-nameservers 192.0.2.53 198.51.100.53" in eni
    assert "macaddress: 52:54:00:ab:cd:ef" in seen["netplan"]


def test_nocloud_dhcp_seed_is_accepted_without_network_config(
    cloud_init_site: Path, dhcp_instance: InstanceDescription, tmp_path: Path
) -> None:
    image = tmp_path / "seed.iso"
    build_context_medium("nocloud", dhcp_instance, image)
    seen = cloud_init_reads(cloud_init_site, "nocloud", image, tmp_path, dhcp_instance.mac)
    assert seen["metadata"]["instance-id"] == "iid-local01"
    assert "eni" not in seen  # no network-config: cloud-init's fallback is DHCP
    assert base64.b64decode(seen["userdata_b64"]).startswith(b"#cloud-config\nssh_authorized_keys:")


def test_configdrive(cloud_init_site: Path, static_instance: InstanceDescription, tmp_path: Path) -> None:
    image = tmp_path / "config.iso"
    build_context_medium("configdrive", static_instance, image)
    seen = cloud_init_reads(cloud_init_site, "configdrive", image, tmp_path, static_instance.mac)
    assert seen["version"] == 2
    metadata = seen["metadata"]
    assert metadata["instance-id"] == "i-0123456789abcdef0"
    assert metadata["local-hostname"] == "web1.example.com"
    assert sorted(seen["public_keys"]) == sorted(k.line for k in static_instance.ssh_keys)
    assert base64.b64decode(seen["userdata_b64"]) == static_instance.user_data
    assert seen["ec2_metadata"]["instance-id"] == "i-0123456789abcdef0"
    (nic, *nameservers) = seen["network_v1"]["config"]
    assert nic["name"] == "ens3" and nic["mac_address"] == "52:54:00:ab:cd:ef"
    assert [n["address"] for n in nameservers] == ["192.0.2.53", "198.51.100.53"]
    assert "iface ens3 inet static" in seen["eni"]
    assert "address 192.0.2.10/24" in seen["eni"]
    assert "gateway 192.0.2.1" in seen["eni"]


def test_opennebula(cloud_init_site: Path, static_instance: InstanceDescription, tmp_path: Path) -> None:
    image = tmp_path / "context.iso"
    build_context_medium("opennebula", static_instance, image)
    seen = cloud_init_reads(cloud_init_site, "opennebula", image, tmp_path, static_instance.mac)
    metadata = seen["metadata"]
    assert metadata["local-hostname"] == "web1.example.com"
    assert metadata["public-keys"] == [k.line for k in static_instance.ssh_keys]
    assert metadata["INSTANCE_ID"] == "i-0123456789abcdef0"
    assert base64.b64decode(metadata["START_SCRIPT_BASE64"]) == static_instance.user_data
    ethernet = seen["network_v2"]["ethernets"]["ens3"]
    assert ethernet["addresses"] == ["192.0.2.10/24"]
    assert ethernet["gateway4"] == "192.0.2.1"
    assert ethernet["nameservers"]["addresses"] == ["192.0.2.53", "198.51.100.53"]
