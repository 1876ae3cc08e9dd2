"""A stranger cannot lock a member out (SECURITY D3), over real HTTP from several addresses.

Linux routes all of 127.0.0.0/8 to the loopback interface, so each party gets
an address of its own by binding its client to it: the attacker 127.0.0.2, the
member's own browser 127.0.0.3, a new device of anybody 127.0.0.4. The bridge
sees them as three clients, exactly as it would across the Internet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge import sessions, throttle
from tests.support.bridge import Harness, hidden_fields, running_bridge

#: One free failure per (username, address), two per username from unknown
#: devices, then 5 s after each failure: long enough that the checks below all
#: happen while the attacker's last failure still counts.
THROTTLE = """
[login]
throttle_free_failures = 1
throttle_base_seconds = 5
throttle_max_seconds = 5
"""
MEMBER, PASSWORD = "bsmith", "password1"
ATTACKER, MEMBERS_BROWSER, NEW_DEVICE = "127.0.0.2", "127.0.0.3", "127.0.0.4"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_factory: Any) -> Iterator[Harness]:
    with running_bridge(
        tmp_path_factory.mktemp("lockout"), database_factory.migrated_url(), extra=THROTTLE
    ) as harness:
        yield harness


def browser_at(bridge: Harness, address: str) -> httpx.Client:
    """A browser (own cookie jar) whose requests come from ``address``."""
    transport = httpx.HTTPTransport(local_address=address, verify=False)
    return httpx.Client(base_url=bridge.url, transport=transport, timeout=30)


def sign_in(browser: httpx.Client, username: str, password: str) -> httpx.Response:
    form = hidden_fields(browser.get("/login").text)
    return browser.post("/login", data={**form, "username": username, "password": password})


def device_cookie(bridge: Harness, browser: httpx.Client) -> str | None:
    return browser.cookies.get(throttle.device_cookie_name(bridge.settings))


def test_d3_a_patient_attacker_elsewhere_cannot_lock_the_member_out(bridge: Harness) -> None:
    with (
        browser_at(bridge, ATTACKER) as attacker,
        browser_at(bridge, MEMBERS_BROWSER) as member,
        browser_at(bridge, NEW_DEVICE) as new_device,
    ):
        # Some day before, the member signed in from this browser, then closed it
        # (the session cookie is gone; the device cookie stays).
        first = sign_in(member, MEMBER, PASSWORD)
        assert first.status_code == 303
        assert device_cookie(bridge, member), first.headers.get_list("set-cookie")
        member.cookies.delete(sessions.cookie_name(bridge.settings))

        # The attacker guesses, waiting out every delay, until the username-wide
        # limit for unknown devices is reached.
        failures = 0
        while failures < 2:
            response = sign_in(attacker, MEMBER, f"guess-{failures}")
            if response.status_code == 429:
                time.sleep(int(response.headers["retry-after"]))
                continue
            assert response.status_code == 401, response.text
            failures += 1

        # Any unknown device now waits for this username...
        assert sign_in(new_device, MEMBER, PASSWORD).status_code == 429
        # ...but the member's own browser signs in at once.
        welcome = sign_in(member, MEMBER, PASSWORD)
        assert welcome.status_code == 303, welcome.text
        assert welcome.headers["location"] == "/login"
        # And the attacker's own address is still slowed down.
        assert sign_in(attacker, MEMBER, "guess-again").status_code == 429


def test_d3_the_device_cookie_is_signed_httponly_long_lived_and_names_nobody(
    bridge: Harness,
) -> None:
    with browser_at(bridge, MEMBERS_BROWSER) as member:
        response = sign_in(member, "jdoe", PASSWORD)
        assert response.status_code == 303
    name = throttle.device_cookie_name(bridge.settings)
    [header] = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "max-age", "path"} <= attributes
    assert "samesite=lax" in header.lower()
    assert f"max-age={bridge.settings.login.device_cookie_seconds}" in header.lower()
    value = header.split(";", 1)[0].split("=", 1)[1]
    assert "jdoe" not in value.lower()


def test_d3_a_stolen_device_cookie_gets_only_its_own_few_guesses(
    tmp_path: Path, database_factory: Any
) -> None:
    with running_bridge(tmp_path, database_factory.migrated_url(), extra=THROTTLE) as bridge:
        with browser_at(bridge, MEMBERS_BROWSER) as member:
            assert sign_in(member, MEMBER, PASSWORD).status_code == 303
            stolen = device_cookie(bridge, member)
        assert stolen
        name = throttle.device_cookie_name(bridge.settings)
        with browser_at(bridge, ATTACKER) as thief:
            thief.cookies.set(name, stolen)
            assert sign_in(thief, MEMBER, "guess-1").status_code == 401
            assert sign_in(thief, MEMBER, "guess-2").status_code == 429
