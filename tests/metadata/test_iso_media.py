"""NoCloud, config drive and OpenNebula media, read back by tools that are not ours."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fixtures.tools import blkid
from tests.metadata.conftest import isoinfo_extract, isoinfo_names, source_in_shell, xorriso_paths

from imagewright.errors import InvalidArgumentError, OutputExistsError
from imagewright.metadata.context import build_context_medium
from imagewright.metadata.instance import ExtraHost, InstanceDescription
from imagewright.metadata.network import StaticNetwork
from imagewright.metadata.opennebula import MAX_USER_DATA_BYTES


def _check_iso(path: Path, label: str, files: list[str]) -> None:
    """Label seen by blkid, names seen by isoinfo (RR and Joliet) and xorriso."""
    probe = blkid(path)
    assert probe["TYPE"] == "iso9660"
    assert probe["LABEL"] == label
    expected = {"/" + f for f in files}
    for listing in (isoinfo_names(path, "-R"), isoinfo_names(path, "-J"), xorriso_paths(path)):
        assert {p for p in listing if p in expected} == expected
        # Only the files and their directories: no stray or mangled names.
        assert all(any(e == p or e.startswith(p + "/") for e in expected) for p in listing)


# --- NoCloud ------------------------------------------------------------------------------------


def test_nocloud_static(tmp_path: Path, static_instance: InstanceDescription) -> None:
    out = tmp_path / "seed.iso"
    report = build_context_medium("nocloud", static_instance, out)
    assert report.label == "cidata" and report.filesystem == "iso9660"
    assert report.files == ("meta-data", "user-data", "network-config")
    assert report.size == out.stat().st_size
    _check_iso(out, "cidata", list(report.files))

    meta = yaml.safe_load(isoinfo_extract(out, "/meta-data"))
    assert meta == {
        "instance-id": "i-0123456789abcdef0",
        "local-hostname": "web1.example.com",
        "public-keys": [k.line for k in static_instance.ssh_keys],
    }
    assert isoinfo_extract(out, "/user-data") == static_instance.user_data
    assert isoinfo_extract(out, "/user-data", "-J") == static_instance.user_data

    net = yaml.safe_load(isoinfo_extract(out, "/network-config"))
    assert net == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "52:54:00:ab:cd:ef"},
                "set-name": "eth0",
                "addresses": ["192.0.2.10/24"],
                "gateway4": "192.0.2.1",
                "nameservers": {"addresses": ["192.0.2.53", "198.51.100.53"]},
            }
        },
    }


def test_nocloud_dhcp_without_user_data_gets_a_cloud_config_with_the_keys(
    tmp_path: Path, dhcp_instance: InstanceDescription
) -> None:
    out = tmp_path / "seed.iso"
    report = build_context_medium("nocloud", dhcp_instance, out)
    # cloud-init needs user-data on a seed; DHCP needs no network-config.
    assert report.files == ("meta-data", "user-data")
    _check_iso(out, "cidata", ["meta-data", "user-data"])
    user_data = isoinfo_extract(out, "/user-data")
    assert user_data.startswith(b"#cloud-config\n")
    assert yaml.safe_load(user_data) == {"ssh_authorized_keys": [dhcp_instance.ssh_keys[0].line]}
    meta = yaml.safe_load(isoinfo_extract(out, "/meta-data"))
    # 'iid-local01' and a key comment full of quotes, '#', ': ' and '$' survive YAML.
    assert meta["instance-id"] == "iid-local01"
    assert meta["public-keys"] == [dhcp_instance.ssh_keys[0].line]


def test_nocloud_yaml_keeps_numeric_looking_ids_as_strings(tmp_path: Path) -> None:
    out = tmp_path / "seed.iso"
    build_context_medium("nocloud", InstanceDescription("0123", "h"), out)
    meta = yaml.safe_load(isoinfo_extract(out, "/meta-data"))
    assert meta == {"instance-id": "0123", "local-hostname": "h"}
    assert yaml.safe_load(isoinfo_extract(out, "/user-data")) is None  # '#cloud-config' alone


# --- OpenStack config drive --------------------------------------------------------------------


def _json_file(path: Path, name: str) -> Any:
    return json.loads(isoinfo_extract(path, "/" + name))


def test_configdrive_static(tmp_path: Path, static_instance: InstanceDescription) -> None:
    out = tmp_path / "config.iso"
    report = build_context_medium("configdrive", static_instance, out)
    assert report.label == "config-2"
    _check_iso(out, "config-2", list(report.files))
    for version in ("latest", "2018-08-27"):
        meta = _json_file(out, f"openstack/{version}/meta_data.json")
        lines = [k.line for k in static_instance.ssh_keys]
        assert meta["uuid"] == "i-0123456789abcdef0"
        assert meta["hostname"] == meta["name"] == "web1.example.com"
        assert meta["launch_index"] == 0 and meta["availability_zone"] == "nova"
        assert meta["public_keys"] == {"key-0": lines[0], "key-1": lines[1]}
        assert meta["keys"] == [
            {"name": "key-0", "type": "ssh", "data": lines[0]},
            {"name": "key-1", "type": "ssh", "data": lines[1]},
        ]
        assert len(base64.b64decode(meta["random_seed"])) == 512
        assert isoinfo_extract(out, f"/openstack/{version}/user_data") == static_instance.user_data

        net = _json_file(out, f"openstack/{version}/network_data.json")
        assert net["links"] == [
            {"id": "interface0", "type": "phy", "ethernet_mac_address": "52:54:00:ab:cd:ef"}
        ]
        (network,) = net["networks"]
        assert network["type"] == "ipv4" and network["link"] == "interface0"
        assert network["ip_address"] == "192.0.2.10" and network["netmask"] == "255.255.255.0"
        assert network["routes"] == [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"}]
        dns = [{"type": "dns", "address": "192.0.2.53"}, {"type": "dns", "address": "198.51.100.53"}]
        assert network["services"] == dns and net["services"] == dns
    # The dated directory mirrors latest exactly (same random seed included).
    for name in ("meta_data.json", "network_data.json", "user_data"):
        assert isoinfo_extract(out, f"/openstack/latest/{name}") == isoinfo_extract(
            out, f"/openstack/2018-08-27/{name}"
        )
    ec2 = _json_file(out, "ec2/latest/meta-data.json")
    assert ec2["instance-id"] == "i-0123456789abcdef0" and ec2["local-ipv4"] == "192.0.2.10"
    assert ec2["public-keys"]["1"]["openssh-key"] == static_instance.ssh_keys[1].line
    assert isoinfo_extract(out, "/ec2/latest/user-data") == static_instance.user_data


def test_configdrive_dhcp_has_no_user_data_when_none_given(
    tmp_path: Path, dhcp_instance: InstanceDescription
) -> None:
    out = tmp_path / "config.iso"
    report = build_context_medium("configdrive", dhcp_instance, out)
    assert not any("user" in f for f in report.files)
    net = _json_file(out, "openstack/latest/network_data.json")
    assert [n["type"] for n in net["networks"]] == ["ipv4_dhcp"]
    assert net["services"] == []
    assert _json_file(out, "openstack/latest/meta_data.json")["uuid"] == "iid-local01"


# --- OpenNebula ----------------------------------------------------------------------------


def test_opennebula_context_sh_sources_to_the_exact_values(
    tmp_path: Path, static_instance: InstanceDescription, shells: dict[str, list[str]]
) -> None:
    out = tmp_path / "context.iso"
    report = build_context_medium("opennebula", static_instance, out)
    assert report.files == ("context.sh",)
    _check_iso(out, "CONTEXT", ["context.sh"])
    script = tmp_path / "context.sh"
    script.write_bytes(isoinfo_extract(out, "/context.sh"))
    assert script.read_bytes().startswith(b"# Context variables generated by OpenNebula\n")
    assert isinstance(static_instance.network, StaticNetwork)
    expected = {
        "HOSTNAME": "web1.example.com",
        "SET_HOSTNAME": "web1.example.com",
        "INSTANCE_ID": "i-0123456789abcdef0",
        "NETWORK": "YES",
        "ETH0_MAC": "52:54:00:ab:cd:ef",
        "ETH0_IP": "192.0.2.10",
        "ETH0_MASK": "255.255.255.0",
        "ETH0_NETWORK": "192.0.2.0",
        "ETH0_GATEWAY": "192.0.2.1",
        "ETH0_DNS": "192.0.2.53 198.51.100.53",
        # Two keys, one per line; the first comment holds quotes, '$' and '#'.
        "SSH_PUBLIC_KEY": "\n".join(k.line for k in static_instance.ssh_keys),
    }
    for name, shell in shells.items():
        for variable, value in expected.items():
            got = source_in_shell(shell, script, f'printf %s "${variable}"')
            assert got == value.encode(), (name, variable)
        decoded = source_in_shell(shell, script, 'printf %s "$START_SCRIPT_BASE64"')
        assert base64.b64decode(decoded) == static_instance.user_data
        assert source_in_shell(shell, script, 'printf %s "${VMID-unset}"') == b"unset"


def test_opennebula_dhcp_numeric_id_and_init_script(tmp_path: Path, shells: dict[str, list[str]]) -> None:
    instance = InstanceDescription("42", "one-vm", init_script=b"#!/bin/sh\necho init\n")
    out = tmp_path / "context.iso"
    report = build_context_medium("opennebula", instance, out)
    assert report.files == ("context.sh", "init.sh")
    _check_iso(out, "CONTEXT", ["context.sh", "init.sh"])
    assert isoinfo_extract(out, "/init.sh") == instance.init_script
    script = tmp_path / "context.sh"
    script.write_bytes(isoinfo_extract(out, "/context.sh"))
    for shell in shells.values():
        values = source_in_shell(
            shell,
            script,
            'printf "%s|" "$VMID" "$INSTANCE_ID" "$ETH0_METHOD" "$INIT_SCRIPTS" "${ETH0_IP-none}"',
        )
        assert values == b"42|42|dhcp|init.sh|none|"


def test_opennebula_refuses_user_data_over_64_kib(tmp_path: Path) -> None:
    out = tmp_path / "context.iso"
    build_context_medium(
        "opennebula",
        InstanceDescription("i-1", "h", user_data=b"x" * MAX_USER_DATA_BYTES),
        tmp_path / "ok.iso",
    )
    with pytest.raises(InvalidArgumentError, match="more than the 64 KiB an OpenNebula context can carry"):
        build_context_medium("opennebula", InstanceDescription("i-1", "h", user_data=b"x" * 65537), out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ok.iso"]


# --- what every kind shares -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nocloud", "configdrive", "opennebula"])
def test_extra_hosts_are_refused_by_kinds_that_cannot_carry_them(tmp_path: Path, kind: str) -> None:
    from ipaddress import IPv4Address

    instance = InstanceDescription("i-1", "h", extra_hosts=(ExtraHost("db", IPv4Address("192.0.2.2")),))
    with pytest.raises(InvalidArgumentError, match="only carried by the wakame medium"):
        build_context_medium(kind, instance, tmp_path / "x.iso")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_then_replaced_with_force(
    tmp_path: Path, dhcp_instance: InstanceDescription
) -> None:
    out = tmp_path / "seed.iso"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--force"):
        build_context_medium("nocloud", dhcp_instance, out)
    assert out.read_bytes() == b"precious"
    report = build_context_medium("nocloud", dhcp_instance, out, force=True)
    assert blkid(out)["LABEL"] == "cidata"
    assert report.size == out.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]  # no temporary left behind


def test_media_are_private_to_their_owner(tmp_path: Path, dhcp_instance: InstanceDescription) -> None:
    out = tmp_path / "seed.iso"
    build_context_medium("nocloud", dhcp_instance, out)
    assert out.stat().st_mode & 0o777 == 0o600
