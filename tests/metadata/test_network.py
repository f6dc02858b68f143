from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv4Interface

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagewright.errors import ImagewrightError, InvalidArgumentError
from imagewright.metadata.network import DhcpNetwork, StaticNetwork, parse_network_spec


def test_dhcp_in_any_case() -> None:
    assert parse_network_spec("dhcp") == DhcpNetwork()
    assert parse_network_spec(" DHCP ") == DhcpNetwork()


def test_static_with_prefix_gateway_and_two_dns() -> None:
    net = parse_network_spec("static:192.0.2.10/24,192.0.2.1,192.0.2.53,198.51.100.53")
    assert isinstance(net, StaticNetwork)
    assert net.address == IPv4Address("192.0.2.10")
    assert net.prefixlen == 24
    assert net.netmask == IPv4Address("255.255.255.0")
    assert net.network.network_address == IPv4Address("192.0.2.0")
    assert net.broadcast == IPv4Address("192.0.2.255")
    assert net.gateway == IPv4Address("192.0.2.1")
    assert net.dns == (IPv4Address("192.0.2.53"), IPv4Address("198.51.100.53"))


def test_dotted_netmask_equals_prefix() -> None:
    assert parse_network_spec("static:10.1.2.3/255.255.240.0,10.1.0.1") == parse_network_spec(
        "static:10.1.2.3/20,10.1.0.1"
    )


def test_gateway_and_dns_are_optional() -> None:
    bare = parse_network_spec("static:10.0.0.5/8")
    assert isinstance(bare, StaticNetwork)
    assert bare.gateway is None and bare.dns == ()
    no_gw = parse_network_spec("static:10.0.0.5/8,,10.0.0.53")
    assert isinstance(no_gw, StaticNetwork)
    assert no_gw.gateway is None and no_gw.dns == (IPv4Address("10.0.0.53"),)


def test_point_to_point_prefixes_allow_edge_addresses() -> None:
    net = parse_network_spec("static:192.0.2.0/31,192.0.2.1")
    assert isinstance(net, StaticNetwork) and net.address == IPv4Address("192.0.2.0")
    assert isinstance(parse_network_spec("static:192.0.2.7/32"), StaticNetwork)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "not understood"),
        ("static", "not understood"),
        ("manual:1.2.3.4/24", "not understood"),
        ("static:", "no address"),
        ("static:192.0.2.10", "needs a mask"),
        ("static:192.0.2.10/", "needs a mask"),
        ("static:192.0.2.300/24", "not an IPv4 address"),
        ("static:2001:db8::5/64", "IPv6; only IPv4"),
        ("static:2001:db8::5/64,2001:db8::1", "IPv6; only IPv4"),
        ("static:192.0.2.10/33", "between 1 and 32"),
        ("static:192.0.2.10/0", "between 1 and 32"),
        ("static:192.0.2.10/255.0.255.0", "not a contiguous netmask"),
        ("static:192.0.2.10/0.0.0.0", "not a contiguous netmask"),
        ("static:192.0.2.10/abc", "neither a prefix length"),
        ("static:192.0.2.0/24,192.0.2.1", "network address"),
        ("static:192.0.2.255/24,192.0.2.1", "broadcast address"),
        ("static:192.0.2.10/24,192.0.3.1", "outside the instance's subnet"),
        ("static:192.0.2.10/24,192.0.2.10", "own address"),
        ("static:192.0.2.10/24,192.0.2.255", "not a host address"),
        ("static:192.0.2.10/24,gw", "not an IPv4 address"),
        ("static:192.0.2.10/24,192.0.2.1,dns", "not an IPv4 address"),
        ("static:192.0.2.10/24,192.0.2.1,", "empty DNS"),
        ("static:192.0.2.10/24,192.0.2.1,1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4", "at most 3"),
        ("static:127.0.0.5/8", "loopback"),
        ("static:0.0.0.0/8", "unspecified"),
        ("static:224.0.0.5/24", "multicast"),
        ("static:169.254.3.4/16", "link-local"),
        ("static:240.0.0.5/8", "reserved"),
        ("static:192.0.2.10/24,192.0.2.1,127.0.0.53", "loopback"),
        ("static:192.0.2.7/32,192.0.2.1", "outside"),
    ],
)
def test_bad_specs_are_one_clear_sentence(spec: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_network_spec(spec)
    message = str(caught.value)
    assert reason in message
    assert message.endswith(".") and "\n" not in message


def test_ipv6_dns_server_is_refused_as_ipv6() -> None:
    with pytest.raises(InvalidArgumentError, match="IPv6"):
        parse_network_spec("static:192.0.2.10/24,192.0.2.1,::1")


def test_static_network_validates_when_built_directly() -> None:
    with pytest.raises(InvalidArgumentError, match="outside"):
        StaticNetwork(IPv4Interface("10.0.0.5/24"), IPv4Address("10.0.1.1"))


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_any_text_gives_a_network_or_an_imagewright_error(text: str) -> None:
    with contextlib.suppress(ImagewrightError):
        parse_network_spec(text)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["static:", "dhcp", "static:10.0.0.5/24,10.0.0.1,10.0.0.53"]),
    st.lists(st.sampled_from(list("0123456789./,:abcdefx ")), max_size=30),
)
def test_mutated_specs_never_escape_as_other_errors(prefix: str, noise: list[str]) -> None:
    with contextlib.suppress(ImagewrightError):
        parse_network_spec(prefix + "".join(noise))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0x01000000, max_value=0xDFFFFFFF), st.integers(min_value=8, max_value=30))
def test_valid_host_addresses_round_trip_through_both_mask_spellings(address: int, prefix: int) -> None:
    interface = IPv4Interface(f"{IPv4Address(address)}/{prefix}")
    try:
        net = parse_network_spec(f"static:{interface.with_prefixlen}")
    except InvalidArgumentError:
        return  # loopback, link-local, network or broadcast address: refused on purpose
    assert isinstance(net, StaticNetwork)
    assert net.interface == interface
    assert parse_network_spec(f"static:{interface.with_netmask}") == net
