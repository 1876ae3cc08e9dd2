"""Nothing an anonymous client creates grows forever (SECURITY D8), against a served bridge.

The scheduled purge runs inside the real server (a short interval here), and
the bound on pending sign-in requests per client address is seen over real
HTTP from two loopback addresses (Linux routes all of 127.0.0.0/8 to lo).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.oauth.rp import pkce
from tests.support.bridge import Harness, hidden_fields, running_bridge

PORTAL = """\
name = "Member Portal"
profile = "oidc"
client_id = "member-portal"
redirect_uris = ["http://127.0.0.1:9/callback"]
"""
EXPIRED_TITLE = "This sign-in link has expired"


def browser_at(bridge: Harness, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address, verify=False)
    return httpx.Client(base_url=bridge.url, transport=transport, timeout=30)


def open_sign_in(browser: httpx.Client) -> str:
    """Start an authorization request as the app would; returns the sign-in page's URL."""
    _, challenge = pkce()
    response = browser.get(
        "/authorize",
        params={
            "response_type": "code",
            "client_id": "member-portal",
            "redirect_uri": "http://127.0.0.1:9/callback",
            "scope": "openid",
            "state": "s",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code in (302, 303), response.text
    location: str = response.headers["location"]
    assert location.startswith("/login?request="), location
    return location


def test_d8_one_address_holds_a_bounded_number_of_pending_sign_ins(
    tmp_path: Path, database_factory: Any
) -> None:
    extra = "[login]\npending_per_address = 2\n"
    with (
        running_bridge(
            tmp_path,
            database_factory.migrated_url(),
            registrations={"member-portal": PORTAL},
            extra=extra,
        ) as bridge,
        browser_at(bridge, "127.0.0.5") as many_tabs,
        browser_at(bridge, "127.0.0.6") as neighbour,
    ):
        theirs = open_sign_in(neighbour)
        tabs = []
        for _ in range(3):
            tabs.append(open_sign_in(many_tabs))
            time.sleep(1.05)  # ages are whole seconds: make "oldest" unambiguous
        oldest = many_tabs.get(tabs[0])
        assert oldest.status_code == 400
        assert EXPIRED_TITLE in oldest.text
        assert [many_tabs.get(tab).status_code for tab in tabs[1:]] == [200, 200]
        assert neighbour.get(theirs).status_code == 200  # another address is untouched

        # The newest tab still signs in and reaches the app.
        page = many_tabs.get(tabs[-1])
        response = many_tabs.post(
            "/login",
            data={**hidden_fields(page.text), "username": "jdoe", "password": "password1"},
        )
        assert response.status_code == 303
        final = many_tabs.get(response.headers["location"])
        assert final.headers["location"].startswith("http://127.0.0.1:9/callback?code=")


def test_d8_the_server_purges_expired_rows_on_its_own(
    tmp_path: Path, database_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.housekeeping")
    with running_bridge(
        tmp_path, database_factory.migrated_url(), extra="purge_interval_seconds = 0.2\n"
    ) as bridge:
        store = bridge.services.store
        now = int(time.time())
        expired = store.create_pending(
            kind="oidc", registration="a", params={}, now=now - 100, ttl_seconds=10
        )
        live = store.create_pending(
            kind="oidc", registration="a", params={}, now=now, ttl_seconds=600
        )
        store.record_failure(["user:forgotten"], now=now - 2 * 24 * 3600)

        def forgotten() -> int:
            return 0 if store.failures_of("user:forgotten") is None else 1

        # Wait for both: a purge may run between the inserts and take only the first.
        deadline = time.monotonic() + 15
        while store.get_pending(expired, now=now - 95) is not None or forgotten():
            assert time.monotonic() < deadline, "the scheduled purge never ran"
            time.sleep(0.1)
        assert store.get_pending(live, now=int(time.time())) is not None
        assert forgotten() == 0
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5  # the purge task ends with the server
    assert any("purged expired rows: " in r.getMessage() for r in caplog.records)
