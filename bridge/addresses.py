"""Client addresses as the bridge's per-address limits count them.

Sign-in throttling and the bound on pending sign-in requests count "one
address". An IPv4 address is one host, but an IPv6 host is routinely given a
whole /64 and can pick a new address from it for every request, so an IPv6
address counts as its /64 network: one attacker cannot become 2**64 addresses.
Pure functions; nothing here reads a request.
"""

from __future__ import annotations

import ipaddress

#: The prefix an IPv6 end site hands to one link (RFC 6177, RFC 7421): one host's reach.
IPV6_PREFIX = 64


def address_key(host: str | None) -> str:
    """What one "address" is for a limit: the IPv4 address, or the IPv6 /64 network.

    IPv4-mapped IPv6 addresses count as their IPv4 address; anything that is
    not an IP address (a Unix socket, a test client) is kept as given.
    """
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)
