"""What counts as one address for the per-address limits (SECURITY D3, D8)."""

from __future__ import annotations

import pytest

from bridge.addresses import address_key


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::1", "::/64"),
        ("testclient", "testclient"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_an_address_is_an_ipv4_host_or_an_ipv6_64(host: str | None, key: str) -> None:
    assert address_key(host) == key


def test_d3_one_ipv6_host_rotating_through_its_64_is_one_address() -> None:
    """A guesser with a /64 could otherwise use a fresh address for every attempt and
    never meet the per-address or per-(username, address) limits."""
    keys = {address_key(f"2001:db8:5:6::{n:x}") for n in range(1, 500)}
    assert keys == {"2001:db8:5:6::/64"}
    assert address_key("2001:db8:5:7::1") != address_key("2001:db8:5:6::1")
