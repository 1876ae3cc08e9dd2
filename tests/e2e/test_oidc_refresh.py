"""Refresh token rotation never forks (SECURITY B4), over real HTTP.

Two bridges: one with the defaults (``refresh_reuse_grace_seconds = 0``: any
second use of a refresh token is a reuse and revokes the family, as Keycloak
and oidc-provider do), and one whose operator allows a grace window for
clients that retry a lost response. Inside the window a retry gets new tokens
and whatever the token's earlier exchanges issued is revoked, so one live chain
is left however many requests race. Parallel requests hit one bridge process;
the storage suite (tests/storage) proves the same atomicity per database
connection, on SQLite and PostgreSQL, which is what several processes share.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.oauth.rp import Rp, new_browser
from tests.support.bridge import Harness, running_bridge

PORTAL_SECRET = "portal-secret-0123456789abcdef"
CALLBACK = "https://portal.example.org/callback"
PARALLEL = 10

REGISTRATIONS = {
    "portal": f"""
        name = "Member Portal"
        profile = "oidc"
        client_id = "portal"
        client_secret = "{PORTAL_SECRET}"
        redirect_uris = ["{CALLBACK}"]
        scopes = ["openid", "profile", "email", "offline_access"]
    """,
}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    """The defaults: no grace window."""
    tmp: Path = tmp_path_factory.mktemp("oidc-refresh")
    with running_bridge(tmp, database_url, registrations=REGISTRATIONS) as harness:
        yield harness


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    """An operator's grace window, long enough never to run out during a test."""
    tmp: Path = tmp_path_factory.mktemp("oidc-refresh-grace")
    extra = """
        [tokens]
        refresh_reuse_grace_seconds = 60
    """
    with running_bridge(tmp, database_url, registrations=REGISTRATIONS, extra=extra) as harness:
        yield harness


def portal_of(harness: Harness, http: httpx.Client) -> Rp:
    return Rp(harness, http, "portal", PORTAL_SECRET, CALLBACK)


def signed_in(harness: Harness, portal: Rp) -> Any:
    with new_browser(harness) as browser:
        return portal.tokens(browser)


def is_live(portal: Rp, token: str) -> bool:
    return bool(portal.introspect(token)["active"])


def assert_invalid_grant(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


def in_parallel(portal: Rp, refresh_token: str) -> list[httpx.Response]:
    """``PARALLEL`` refreshes of one token at once, each on its own connection."""

    def one(_: int) -> httpx.Response:
        with httpx.Client(verify=False, timeout=30) as client:
            return Rp(portal.bridge, client, "portal", PORTAL_SECRET, CALLBACK).refresh(
                refresh_token
            )

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return list(pool.map(one, range(PARALLEL)))


def test_b4_default_grace_is_zero_so_any_reuse_revokes_the_family(
    bridge: Harness, http: httpx.Client
) -> None:
    """B4 by default: a rotated refresh token used again, even at once, revokes the family."""
    assert bridge.settings.tokens.refresh_reuse_grace_seconds == 0
    portal = portal_of(bridge, http)
    token = signed_in(bridge, portal)
    first = portal.refresh(token["refresh_token"])
    assert first.status_code == 200, first.text
    successor = first.json()

    assert_invalid_grant(portal.refresh(token["refresh_token"]))
    for raw in (successor["access_token"], successor["refresh_token"], token["access_token"]):
        assert not is_live(portal, raw)
    assert portal.userinfo(successor["access_token"]).status_code == 401
    assert_invalid_grant(portal.refresh(successor["refresh_token"]))


def test_b4_retry_within_grace_leaves_only_the_newest_successor(
    lenient: Harness, http: httpx.Client
) -> None:
    """B4 with a grace window: two rotations of one token, then only the newest works."""
    portal = portal_of(lenient, http)
    token = signed_in(lenient, portal)
    first = portal.refresh(token["refresh_token"])
    assert first.status_code == 200, first.text
    assert not is_live(portal, token["refresh_token"])
    # The response was lost; the client retries within the window.
    retry = portal.refresh(token["refresh_token"])
    assert retry.status_code == 200, retry.text
    first_pair, newest = first.json(), retry.json()
    assert newest["refresh_token"] != first_pair["refresh_token"]

    assert not is_live(portal, first_pair["refresh_token"])
    assert not is_live(portal, first_pair["access_token"])
    assert portal.userinfo(first_pair["access_token"]).status_code == 401
    assert is_live(portal, newest["refresh_token"])
    assert portal.userinfo(newest["access_token"]).status_code == 200
    # The first successor is refused; the newest goes on rotating.
    assert_invalid_grant(portal.refresh(first_pair["refresh_token"]))
    assert portal.refresh(newest["refresh_token"]).status_code == 200


def test_b4_retry_within_grace_after_the_successor_was_used_revokes_the_family(
    lenient: Harness, http: httpx.Client
) -> None:
    """B4: the client has its successor and used it: the old token again is theft."""
    portal = portal_of(lenient, http)
    token = signed_in(lenient, portal)
    successor = portal.refresh(token["refresh_token"]).json()
    latest = portal.refresh(successor["refresh_token"]).json()

    assert_invalid_grant(portal.refresh(token["refresh_token"]))
    assert not is_live(portal, latest["refresh_token"])
    assert not is_live(portal, latest["access_token"])


def test_b4_parallel_refreshes_without_grace_one_succeeds_and_the_family_is_revoked(
    bridge: Harness, http: httpx.Client
) -> None:
    """B4, grace 0: of 10 parallel refreshes exactly one is answered with tokens; the
    other nine are reuses, so the family is revoked and nothing stays live (a client
    must not refresh one token in parallel; an attacker racing it cannot win)."""
    portal = portal_of(bridge, http)
    token = signed_in(bridge, portal)
    responses = in_parallel(portal, token["refresh_token"])
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) == 1, [r.text for r in responses]
    for response in responses:
        if response.status_code != 200:
            assert_invalid_grant(response)
    issued = ok[0].json()
    for raw in (issued["refresh_token"], issued["access_token"], token["access_token"]):
        assert not is_live(portal, raw)
    assert_invalid_grant(portal.refresh(issued["refresh_token"]))


def test_b4_parallel_refreshes_within_grace_leave_exactly_one_live_chain(
    lenient: Harness, http: httpx.Client
) -> None:
    """B4 with a grace window: 10 parallel refreshes may all get tokens, but exactly one
    pair (the last issued) stays live, and it goes on rotating."""
    portal = portal_of(lenient, http)
    token = signed_in(lenient, portal)
    responses = in_parallel(portal, token["refresh_token"])
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    pairs = [r.json() for r in responses]
    live_refresh = [p for p in pairs if is_live(portal, p["refresh_token"])]
    live_access = [p for p in pairs if is_live(portal, p["access_token"])]
    assert len(live_refresh) == 1
    assert live_access == live_refresh
    assert portal.refresh(live_refresh[0]["refresh_token"]).status_code == 200
