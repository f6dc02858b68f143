"""The network an instance is told to configure: DHCP, or one static IPv4 address.

A user writes it as ``dhcp`` or ``static:IP/MASK[,GATEWAY[,DNS[,DNS2[,DNS3]]]]`` where MASK is
a prefix length (``24``) or a dotted netmask (``255.255.255.0``) and GATEWAY may be left empty
(``static:10.0.0.5/24,,10.0.0.1``). Only IPv4: every medium we write (cloud-init v2
``addresses``, OpenStack ``ipv4``, OpenNebula ``ETH0_IP``/``ETH0_MASK``, Wakame-vdc
``local-ipv4s``/``x-netmask``) has an IPv4 form in common; IPv6 is refused rather than half-done.

What is checked, because a typo here gives an instance nobody can reach:
- the address is a usable host address: not the network or broadcast address of its subnet
  (for prefixes up to /30), not 0.0.0.0, loopback, multicast, link-local or reserved;
- the gateway lies inside the subnet and is not the address itself;
- at most three DNS servers, because glibc's resolver reads no more (``MAXNS`` in resolv.h).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from imagewright.errors import InvalidArgumentError

#: glibc's resolver uses at most three ``nameserver`` lines (MAXNS).
MAX_DNS_SERVERS = 3

_SPEC_HELP = "write 'dhcp' or 'static:IP/MASK,GATEWAY,DNS' such as static:192.0.2.10/24,192.0.2.1,192.0.2.53"


@dataclass(frozen=True)
class DhcpNetwork:
    """Ask the network's DHCP server for an address (the default)."""

    method = "dhcp"

    def describe(self) -> str:
        return "dhcp"


@dataclass(frozen=True)
class StaticNetwork:
    """One IPv4 address with its subnet, an optional default gateway and DNS servers."""

    interface: IPv4Interface
    gateway: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()

    method = "static"

    def __post_init__(self) -> None:
        _check_static(self.interface, self.gateway, self.dns)

    @property
    def address(self) -> IPv4Address:
        return self.interface.ip

    @property
    def prefixlen(self) -> int:
        return self.interface.network.prefixlen

    @property
    def netmask(self) -> IPv4Address:
        return self.interface.network.netmask

    @property
    def network(self) -> IPv4Network:
        return self.interface.network

    @property
    def broadcast(self) -> IPv4Address:
        return self.interface.network.broadcast_address

    def describe(self) -> str:
        parts = [f"static {self.interface.with_prefixlen}"]
        if self.gateway is not None:
            parts.append(f"gateway {self.gateway}")
        if self.dns:
            parts.append("dns " + " ".join(str(d) for d in self.dns))
        return ", ".join(parts)


NetworkConfig = DhcpNetwork | StaticNetwork


def parse_network_spec(text: str) -> NetworkConfig:
    """Parse ``dhcp`` or ``static:IP/MASK[,GW[,DNS...]]``; one clear sentence on any mistake."""
    spec = text.strip()
    if spec.lower() == "dhcp":
        return DhcpNetwork()
    method, sep, rest = spec.partition(":")
    if not sep or method.lower() != "static":
        raise InvalidArgumentError(f"The network '{text}' is not understood; {_SPEC_HELP}.")
    fields = [f.strip() for f in rest.split(",")]
    if not fields or not fields[0]:
        raise InvalidArgumentError(f"The network '{text}' has no address; {_SPEC_HELP}.")
    interface = _parse_interface(fields[0], text)
    gateway = None
    if len(fields) > 1 and fields[1]:
        gateway = _parse_address(fields[1], "gateway", text)
    dns_fields = fields[2:]
    if any(not f for f in dns_fields):
        raise InvalidArgumentError(f"The network '{text}' has an empty DNS server entry.")
    if len(dns_fields) > MAX_DNS_SERVERS:
        raise InvalidArgumentError(
            f"The network '{text}' names {len(dns_fields)} DNS servers; "
            f"at most {MAX_DNS_SERVERS} are used by a guest's resolver."
        )
    dns = tuple(_parse_address(f, "DNS server", text) for f in dns_fields)
    return StaticNetwork(interface, gateway, dns)


def _parse_interface(field: str, spec: str) -> IPv4Interface:
    address_text, slash, mask_text = field.partition("/")
    if not slash or not mask_text:
        raise InvalidArgumentError(
            f"The address '{field}' in '{spec}' needs a mask, such as {address_text or '192.0.2.10'}/24."
        )
    address = _parse_address(address_text, "address", spec)
    if mask_text.isdigit():
        prefix = int(mask_text)
        if not 1 <= prefix <= 32:
            raise InvalidArgumentError(
                f"The prefix length /{mask_text} in '{spec}' must be between 1 and 32."
            )
    else:
        try:
            mask = IPv4Address(mask_text)
        except ValueError:
            raise InvalidArgumentError(
                f"The mask '{mask_text}' in '{spec}' is neither a prefix length nor a dotted netmask."
            ) from None
        prefix = _prefix_of_netmask(mask, spec)
    return IPv4Interface(f"{address}/{prefix}")


def _prefix_of_netmask(mask: IPv4Address, spec: str) -> int:
    bits = int(mask)
    inverted = bits ^ 0xFFFFFFFF
    # A netmask is ones followed by zeros: its complement plus one is a power of two.
    if bits == 0 or inverted & (inverted + 1):
        raise InvalidArgumentError(f"The netmask {mask} in '{spec}' is not a contiguous netmask.")
    return 32 - inverted.bit_length()


def _parse_address(text: str, role: str, spec: str) -> IPv4Address:
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgumentError(f"The {role} '{text}' in '{spec}' is not an IPv4 address.") from None
    if not isinstance(parsed, IPv4Address):
        raise InvalidArgumentError(f"The {role} '{text}' in '{spec}' is IPv6; only IPv4 is supported.")
    _check_unicast(parsed, role)
    return parsed


def _check_unicast(address: IPv4Address, role: str) -> None:
    problem = None
    if address.is_unspecified:
        problem = "the unspecified address"
    elif address.is_loopback:
        problem = "a loopback address"
    elif address.is_multicast:
        problem = "a multicast address"
    elif address == IPv4Address("255.255.255.255"):
        problem = "the broadcast address"
    elif address.is_link_local:
        problem = "a link-local address"
    elif address.is_reserved:
        problem = "a reserved address"
    if problem:
        raise InvalidArgumentError(f"The {role} {address} is {problem} and cannot be used.")


def _check_static(
    interface: IPv4Interface, gateway: IPv4Address | None, dns: tuple[IPv4Address, ...]
) -> None:
    network = interface.network
    address = interface.ip
    _check_unicast(address, "address")
    if not 1 <= network.prefixlen <= 32:
        raise InvalidArgumentError(f"The prefix length /{network.prefixlen} must be between 1 and 32.")
    # /31 (RFC 3021) and /32 have no network or broadcast address to avoid.
    if network.prefixlen <= 30:
        if address == network.network_address:
            raise InvalidArgumentError(
                f"The address {address} is the network address of {network}; pick a host address."
            )
        if address == network.broadcast_address:
            raise InvalidArgumentError(
                f"The address {address} is the broadcast address of {network}; pick a host address."
            )
    if gateway is not None:
        _check_unicast(gateway, "gateway")
        if gateway == address:
            raise InvalidArgumentError(f"The gateway {gateway} is the instance's own address.")
        if gateway not in network:
            raise InvalidArgumentError(f"The gateway {gateway} is outside the instance's subnet {network}.")
        if network.prefixlen <= 30 and gateway in (network.network_address, network.broadcast_address):
            raise InvalidArgumentError(f"The gateway {gateway} is not a host address of {network}.")
    if len(dns) > MAX_DNS_SERVERS:
        raise InvalidArgumentError(f"At most {MAX_DNS_SERVERS} DNS servers are used by a guest's resolver.")
    for server in dns:
        _check_unicast(server, "DNS server")
