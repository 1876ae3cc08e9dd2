"""Real ``bridge serve`` processes sharing one database and one keys_dir (SECURITY G3, G4).

G4: two processes, A and B, run on the same configuration folder (so the same
issuer, database and keys_dir) on two loopback ports, as several processes behind
one load balancer do. A flow started at one finishes at the other: a code, a
refresh token, a browser session. The backend is the run's: a SQLite file shared
by the two processes on this host by default, PostgreSQL when
``BRIDGE_TEST_DATABASE_URL`` is set (what G4 promises; CI runs both).

G3: one process is stopped with SIGTERM and started again on the same
configuration; what the browser and the client held before still works after.

The iMIS simulator runs in the test process on its own port.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from bridge import cli
from bridge.demo.simulator import create_simulator
from bridge.keys import retire_after_seconds
from bridge.settings import load_settings
from tests.conftest import DatabaseFactory
from tests.oauth.rp import Authorization, Rp, jwks, new_browser, query_of
from tests.support.bridge import Harness, served_bridge, write_config
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.slow

PORTAL_SECRET = "portal-secret-0123456789abcdef"
CALLBACK = "https://portal.example.org/callback"
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


@dataclass
class Setup:
    """One configuration folder (issuer: ``http://127.0.0.1:<port>``) and its iMIS."""

    config: Path
    port: int
    imis_url: str

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def imis_url() -> Iterator[str]:
    with serve(create_simulator()) as url:
        yield url


def new_setup(tmp: Path, database_url: str, imis_url: str) -> Setup:
    port = free_port()
    config = write_config(
        tmp / "config",
        issuer=f"http://127.0.0.1:{port}",
        database_url=database_url,
        imis_url=imis_url,
        registrations=REGISTRATIONS,
    )
    return Setup(config, port, imis_url)


@contextmanager
def started(setup: Setup, logs: Path, port: int) -> Iterator[Harness]:
    """``bridge serve`` on ``setup``'s configuration, listening on ``port``."""
    logs.mkdir(parents=True, exist_ok=True)
    with served_bridge(logs, setup.config, port, setup.imis_url) as (bridge, _):
        yield bridge


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory, imis_url: str
) -> Iterator[tuple[Harness, Harness]]:
    """A and B: one configuration, two processes (A first, so B finds the keys it made)."""
    tmp = tmp_path_factory.mktemp("two-processes")
    setup = new_setup(tmp, database_factory.migrated_url(), imis_url)
    with started(setup, tmp / "a", setup.port) as a, started(setup, tmp / "b", free_port()) as b:
        yield a, b


def portal(bridge: Harness, http: httpx.Client) -> Rp:
    return Rp(bridge, http, "portal", PORTAL_SECRET, CALLBACK)


def verify_at(http: httpx.Client, bridge: Harness, token: str, issuer: str) -> dict[str, Any]:
    """Verify an ID token against ``bridge``'s JWKS, as an RP that fetched it there."""
    header = jwt.get_unverified_header(token)
    published = {k["kid"]: k for k in jwks(http, bridge)["keys"]}
    assert header["kid"] in published, "the signing key is not in this process's JWKS"
    key = jwt.PyJWK(published[header["kid"]]).key
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[header["alg"]], audience="portal", issuer=issuer
    )
    return claims


def code_from(rp: Rp, response: httpx.Response, params: dict[str, str]) -> Authorization:
    """The code in ``response`` (a redirect to the portal), whose ``iss`` is the issuer
    the configuration names whichever process answered (a copy of
    :meth:`Rp.authorization_from`, which expects the issuer to be the process's URL)."""
    assert response.status_code == 303, response.text
    got = query_of(response.headers["location"])
    assert response.headers["location"].startswith(CALLBACK + "?"), got
    assert got["iss"] == rp.bridge.settings.issuer
    return Authorization(
        code=got["code"],
        verifier=params["code_verifier"],
        state=got.get("state"),
        nonce=params.get("nonce"),
        redirect_uri=CALLBACK,
        params=got,
    )


def assert_invalid_grant(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


# --- G4: two processes ---------------------------------------------------------------------


def test_g4_a_code_issued_at_one_process_is_redeemed_at_the_other_once(
    pair: tuple[Harness, Harness], http: httpx.Client
) -> None:
    """G4 (B1 across processes): a code from A is redeemed at B; the ID token verifies
    against A's JWKS; a second redemption at A fails and revokes what B issued."""
    a, b = pair
    with new_browser(a) as browser:
        authz = portal(a, http).sign_in(browser)
    redeemed = portal(b, http).redeem(authz)
    assert redeemed.status_code == 200, redeemed.text
    tokens = redeemed.json()
    claims = verify_at(http, a, tokens["id_token"], a.settings.issuer)
    assert claims["nonce"] == authz.nonce
    assert portal(a, http).userinfo(tokens["access_token"]).status_code == 200

    assert_invalid_grant(portal(a, http).redeem(authz))
    assert portal(a, http).userinfo(tokens["access_token"]).status_code == 401
    assert portal(b, http).userinfo(tokens["access_token"]).status_code == 401
    assert_invalid_grant(portal(a, http).refresh(tokens["refresh_token"]))


def test_g4_a_refresh_token_rotated_at_one_process_and_replayed_at_the_other_is_reuse(
    pair: tuple[Harness, Harness], http: httpx.Client
) -> None:
    """G4 (B4 across processes): rotate at A, replay the old token at B: the family is
    revoked at both."""
    a, b = pair
    with new_browser(a) as browser:
        first = portal(a, http).tokens(browser)
    rotated = portal(a, http).refresh(first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()

    assert_invalid_grant(portal(b, http).refresh(first["refresh_token"]))
    for bridge in (a, b):
        assert_invalid_grant(portal(bridge, http).refresh(second["refresh_token"]))
        assert portal(bridge, http).userinfo(second["access_token"]).status_code == 401
        assert portal(bridge, http).introspect(second["refresh_token"])["active"] is False


def test_g4_a_session_started_at_one_process_is_known_at_the_other_until_logout(
    pair: tuple[Harness, Harness], http: httpx.Client
) -> None:
    """G4: a browser signed in at A is not asked to sign in at B; a logout at A
    (end_session) ends the session at B too."""
    a, b = pair
    at_b = portal(b, http)
    with new_browser(a) as browser:
        tokens = portal(a, http).tokens(browser)
        # The same browser (cookies are per host, not per port) asks B.
        params = at_b.authorize_params()
        silent = browser.get(at_b.authorize_url(params))
        authz = code_from(at_b, silent, params)
        assert at_b.redeem(authz).status_code == 200

        logout = browser.get(f"{a.url}/end_session", params={"id_token_hint": tokens["id_token"]})
        assert logout.status_code == 200, logout.text

        params = at_b.authorize_params()
        again = browser.get(at_b.authorize_url(params))
        assert again.status_code == 303
        assert again.headers["location"].startswith("/login"), again.headers["location"]
        params = at_b.authorize_params(prompt="none")
        silent = browser.get(at_b.authorize_url(params))
        assert silent.status_code == 303
        assert query_of(silent.headers["location"])["error"] == "login_required"


# --- G3: a restart ---------------------------------------------------------------------------


def test_g3_a_restart_keeps_the_session_an_unredeemed_code_and_a_refresh_token(
    tmp_path: Path, database_factory: DatabaseFactory, imis_url: str, http: httpx.Client
) -> None:
    """G3: SIGTERM, then the same configuration, database and keys_dir again: the browser's
    session, a code issued before and a refresh token issued before all still work."""
    setup = new_setup(tmp_path, database_factory.migrated_url(), imis_url)
    settings = load_settings(setup.config, env={})
    with new_browser(Harness(setup.issuer, imis_url, setup.config, settings, None)) as browser:
        with started(setup, tmp_path / "before", setup.port) as before:
            earlier = portal(before, http).tokens(browser)
            pending = portal(before, http).sign_in(browser)  # signed in already: no form
        with started(setup, tmp_path / "after", setup.port) as after:
            at = portal(after, http)
            redeemed = at.redeem(pending)
            assert redeemed.status_code == 200, redeemed.text
            verify_at(http, after, redeemed.json()["id_token"], setup.issuer)
            refreshed = at.refresh(earlier["refresh_token"])
            assert refreshed.status_code == 200, refreshed.text
            assert at.userinfo(refreshed.json()["access_token"]).status_code == 200
            params = at.authorize_params(prompt="none")
            silent = browser.get(at.authorize_url(params))
            at.authorization_from(silent, params)  # the session survived: a code, no login


def test_g4_c3_a_process_accepts_an_id_token_hint_signed_after_a_rotation_it_has_not_seen(
    pair: tuple[Harness, Harness], http: httpx.Client
) -> None:
    """G4 (C3 across processes): keys rotated (by the CLI's code, on the shared keys_dir)
    while B is idle; A signs an ID token with the new key; B, asked to log out with that
    token as id_token_hint before it has signed anything since, accepts it."""
    a, b = pair
    assert jwks(http, b)["keys"]  # B has read keys_dir before the rotation
    retire_after = retire_after_seconds(
        a.settings.tokens.id_token_seconds, a.settings.tokens.access_token_seconds
    )
    out = io.StringIO()
    rotated = cli.keys_rotate(
        a.settings.keys_dir, "RS256", True, retire_after, as_json=True, out=out
    )
    assert rotated == 0, out.getvalue()
    with new_browser(a) as browser:
        tokens = portal(a, http).tokens(browser)
    assert (
        jwt.get_unverified_header(tokens["id_token"])["kid"]
        == json.loads(out.getvalue())["promoted"]
    )
    hint = http.get(f"{b.url}/end_session", params={"id_token_hint": tokens["id_token"]})
    assert hint.status_code == 200, hint.text
