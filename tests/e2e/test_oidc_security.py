"""The OIDC security cases of SECURITY.md (A1-A6, B1-B5, C1-C3) against a real bridge.

Every test speaks real HTTP to a bridge on a loopback port (the iMIS simulator
behind it), as a relying party or a browser would; none reaches into the
bridge's objects except to read its database (B3: what is stored) and to
rotate its keys (C3: what an operator does with ``bridge keys rotate``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlmodel import select

from bridge.storage.models import AuthorizationCodeRow, BrowserSessionRow, TokenRow
from bridge.storage.repo import hash_token
from tests.oauth.rp import (
    Authorization,
    Rp,
    jwks,
    new_browser,
    query_of,
    verify_with_jwks,
)
from tests.support.bridge import Harness, running_bridge, sign_in

PORTAL_SECRET = "portal-secret-0123456789abcdef"
REPORTS_SECRET = "reports-secret-0123456789abcdef"
NARROW_SECRET = "narrow-secret-0123456789abcdef"
CALLBACK = "https://portal.example.org/callback"
OTHER_CALLBACK = "https://portal.example.org/other"
REPORTS_CALLBACK = "https://reports.example.org/cb"
ODD = "a b+c/d?e=f&g#h%20%25 ü☃ <'\">;,\\"

REGISTRATIONS = {
    "portal": f"""
        name = "Member Portal"
        profile = "oidc"
        client_id = "portal"
        client_secret = "{PORTAL_SECRET}"
        redirect_uris = ["{CALLBACK}", "{OTHER_CALLBACK}"]
        post_logout_redirect_uris = ["https://portal.example.org/"]
        scopes = ["openid", "profile", "email", "phone", "offline_access"]
    """,
    "reports": f"""
        name = "Reports"
        profile = "oidc"
        client_id = "reports"
        client_secret = "{REPORTS_SECRET}"
        redirect_uris = ["{REPORTS_CALLBACK}", "{CALLBACK}"]
        scopes = ["openid", "profile", "offline_access"]
    """,
    "narrow": f"""
        name = "Narrow App"
        profile = "oidc"
        client_id = "narrow"
        client_secret = "{NARROW_SECRET}"
        redirect_uris = ["https://narrow.example.org/cb"]
        scopes = ["openid", "profile"]
    """,
    "spa": f"""
        name = "Member App"
        profile = "oidc"
        client_id = "spa"
        redirect_uris = ["{CALLBACK}"]
        scopes = ["openid", "profile"]
        id_token_signed_response_alg = "ES256"
    """,
}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("oidc-security")
    with running_bridge(tmp, database_url, registrations=REGISTRATIONS) as harness:
        yield harness


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    """A second bridge: 2-second codes, no refresh reuse grace, keys of its own (C3)."""
    tmp: Path = tmp_path_factory.mktemp("oidc-strict")
    extra = """
        [tokens]
        code_seconds = 2
        refresh_reuse_grace_seconds = 0
    """
    with running_bridge(tmp, database_url, registrations=REGISTRATIONS, extra=extra) as harness:
        yield harness


def portal_of(harness: Harness, http: httpx.Client) -> Rp:
    return Rp(harness, http, "portal", PORTAL_SECRET, CALLBACK)


@pytest.fixture
def portal(bridge: Harness, http: httpx.Client) -> Rp:
    return portal_of(bridge, http)


@pytest.fixture
def reports(bridge: Harness, http: httpx.Client) -> Rp:
    return Rp(bridge, http, "reports", REPORTS_SECRET, REPORTS_CALLBACK, scope="openid profile")


def assert_our_page(response: httpx.Response) -> None:
    """Refused on the bridge's own error page: 400, HTML, and no redirect anywhere."""
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "Traceback" not in response.text


def assert_error_redirect(
    response: httpx.Response, bridge: Harness, error: str, state: str | None
) -> dict[str, str]:
    """An OAuth error sent to the client's registered redirect URI, with state and iss."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?"), location
    params = query_of(location)
    assert params["error"] == error, params
    assert params["iss"] == bridge.url
    if state is None:
        assert "state" not in params
    else:
        assert params["state"] == state
    assert "code" not in params
    return params


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == error
    assert "no-store" in response.headers["cache-control"]


def assert_dead(rp: Rp, *tokens: str) -> None:
    """Neither userinfo nor introspection accepts any of ``tokens`` any more."""
    for token in tokens:
        assert rp.introspect(token) == {"active": False}
    for token in tokens:
        response = rp.userinfo(token)
        assert response.status_code == 401, response.text


# --- A1 redirect_uri ----------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        CALLBACK + "/",  # trailing slash
        "https://portal.example.org/Callback",  # different case in the path
        "HTTPS://PORTAL.EXAMPLE.ORG/callback",  # different case in scheme and host
        CALLBACK + "?next=1",  # extra query
        CALLBACK + "#frag",  # fragment
        "https://portal.example.org/call",  # a prefix of the registered one
        CALLBACK + "x",  # the registered one is a prefix of it
        CALLBACK + "/../evil",  # path tricks
        "https://portal.example.org.evil.example/callback",
        "https://evil.example/callback",  # unregistered
        "https://portal.example.org:443/callback",  # same URL by RFC 3986, not by string
        "",  # empty
    ],
)
def test_a1_redirect_uri_mismatch_is_shown_on_our_page(
    browser: httpx.Client, portal: Rp, redirect_uri: str
) -> None:
    """A1: compared by exact string match; a mismatch is never redirected to."""
    params = portal.authorize_params(redirect_uri=redirect_uri)
    response = browser.get(portal.authorize_url(params))
    assert_our_page(response)
    assert "not registered" in response.text or "redirect_uri" in response.text


def test_a1_missing_redirect_uri_is_shown_on_our_page(browser: httpx.Client, portal: Rp) -> None:
    response = browser.get(portal.authorize_url(portal.authorize_params(redirect_uri=None)))
    assert_our_page(response)


def test_a1_redirect_uri_of_another_client_is_refused(browser: httpx.Client, portal: Rp) -> None:
    """A1: a URI registered for another client is not registered for this one."""
    response = browser.get(
        portal.authorize_url(portal.authorize_params(redirect_uri=REPORTS_CALLBACK))
    )
    assert_our_page(response)


def test_a1_second_registered_redirect_uri_is_accepted(browser: httpx.Client, portal: Rp) -> None:
    authz = portal.sign_in(browser, redirect_uri=OTHER_CALLBACK)
    assert authz.redirect_uri == OTHER_CALLBACK


# --- A2 client_id and response_type -------------------------------------------------------


@pytest.mark.parametrize("client_id", ["unknown-app", "", "PORTAL", "portal "])
def test_a2_unknown_client_id_is_shown_on_our_page(
    browser: httpx.Client, portal: Rp, client_id: str
) -> None:
    response = browser.get(portal.authorize_url(portal.authorize_params(client_id=client_id)))
    assert_our_page(response)


def test_a2_missing_client_id_is_shown_on_our_page(browser: httpx.Client, portal: Rp) -> None:
    response = browser.get(portal.authorize_url(portal.authorize_params(client_id=None)))
    assert_our_page(response)


def test_a2_missing_response_type_is_shown_on_our_page(browser: httpx.Client, portal: Rp) -> None:
    response = browser.get(portal.authorize_url(portal.authorize_params(response_type=None)))
    assert_our_page(response)


@pytest.mark.parametrize(
    "response_type", ["token", "id_token", "code id_token", "id_token token", "none", "CODE"]
)
def test_a2_unsupported_response_type_goes_back_to_the_client(
    bridge: Harness, browser: httpx.Client, portal: Rp, response_type: str
) -> None:
    """A2: the client and its redirect URI are trusted, so RFC 6749 §4.1.2.1 applies:
    ``unsupported_response_type`` in the query of the registered redirect URI."""
    params = portal.authorize_params(response_type=response_type, state="s-1")
    response = browser.get(portal.authorize_url(params))
    assert_error_redirect(response, bridge, "unsupported_response_type", "s-1")


def test_a2_unsupported_response_type_with_a_bad_redirect_uri_stays_on_our_page(
    browser: httpx.Client, portal: Rp
) -> None:
    params = portal.authorize_params(response_type="token", redirect_uri="https://evil.example/")
    assert_our_page(browser.get(portal.authorize_url(params)))


# --- A3 PKCE ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge": None},
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},
        {"code_challenge_method": "s256"},
        {"code_challenge": "too-short"},
        {"code_challenge": "x" * 129},
    ],
    ids=[
        "no-challenge",
        "no-pkce",
        "plain",
        "no-method",
        "lowercase-method",
        "short-challenge",
        "long-challenge",
    ],
)
def test_a3_pkce_s256_is_required(
    bridge: Harness, browser: httpx.Client, portal: Rp, overrides: dict[str, str | None]
) -> None:
    params = portal.authorize_params(state="pkce", **overrides)
    response = browser.get(portal.authorize_url(params))
    assert_error_redirect(response, bridge, "invalid_request", "pkce")


def test_a3_pkce_is_required_before_sign_in_for_a_public_client_too(
    bridge: Harness, browser: httpx.Client, http: httpx.Client
) -> None:
    spa = Rp(bridge, http, "spa", None, CALLBACK, scope="openid")
    params = spa.authorize_params(code_challenge=None, state="spa")
    assert_error_redirect(browser.get(spa.authorize_url(params)), bridge, "invalid_request", "spa")


def test_a3_wrong_verifier_is_invalid_grant(browser: httpx.Client, portal: Rp) -> None:
    authz = portal.sign_in(browser)
    response = portal.redeem(authz, code_verifier=secrets.token_urlsafe(48))
    assert_oauth_error(response, 400, "invalid_grant")
    # The failed attempt used the code up: the right verifier now fails too.
    assert_oauth_error(portal.redeem(authz), 400, "invalid_grant")


def test_a3_missing_verifier_is_refused(browser: httpx.Client, portal: Rp) -> None:
    authz = portal.sign_in(browser)
    response = portal.redeem(authz, code_verifier=None)
    assert_oauth_error(response, 400, "invalid_request")


def test_a3_public_client_wrong_verifier_is_invalid_grant(
    bridge: Harness, browser: httpx.Client, http: httpx.Client
) -> None:
    spa = Rp(bridge, http, "spa", None, CALLBACK, scope="openid profile")
    authz = spa.sign_in(browser)
    assert_oauth_error(
        spa.redeem(authz, code_verifier=secrets.token_urlsafe(48)), 400, "invalid_grant"
    )
    authz = spa.sign_in(browser)
    assert spa.redeem(authz).status_code == 200


# --- A4 state, nonce, iss --------------------------------------------------------------------


def test_a4_state_and_nonce_are_echoed_exactly(browser: httpx.Client, portal: Rp) -> None:
    authz = portal.sign_in(browser, state=ODD, nonce=ODD + "n")
    assert authz.state == ODD
    token = portal.redeem(authz).json()
    assert portal.verify_id_token(token["id_token"])["nonce"] == ODD + "n"


def test_a4_no_state_sent_means_none_returned(browser: httpx.Client, portal: Rp) -> None:
    authz = portal.sign_in(browser, state=None)
    assert "state" not in authz.params
    assert set(authz.params) == {"code", "iss"}


def test_a4_iss_and_state_in_error_responses(
    bridge: Harness, browser: httpx.Client, portal: Rp
) -> None:
    """RFC 9207: iss in every authorization response, errors included."""
    params = portal.authorize_params(scope="profile", state=ODD)
    assert_error_redirect(browser.get(portal.authorize_url(params)), bridge, "invalid_scope", ODD)


# --- A5 prompt and max_age --------------------------------------------------------------------


def test_a5_prompt_none_without_session_is_login_required(bridge: Harness, portal: Rp) -> None:
    with new_browser(bridge) as fresh:
        params = portal.authorize_params(prompt="none", state=ODD)
        response = fresh.get(portal.authorize_url(params))
    assert_error_redirect(response, bridge, "login_required", ODD)


def _goes_to_login(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/login?")


def test_a5_prompt_login_forces_a_fresh_login(bridge: Harness, portal: Rp) -> None:
    with new_browser(bridge) as browser:
        first = portal.redeem(portal.sign_in(browser)).json()
        first_auth_time = portal.verify_id_token(first["id_token"])["auth_time"]
        time.sleep(1.1)  # auth_time has a resolution of one second
        params = portal.authorize_params(prompt="login")
        response = browser.get(portal.authorize_url(params))
        assert _goes_to_login(response), "a session must not satisfy prompt=login"
        # The login page asks for the password again instead of passing the session on.
        page = browser.get(response.headers["location"])
        assert page.status_code == 200
        assert 'name="password"' in page.text
        authz = portal.authorization_from(
            sign_in(browser, portal.authorize_url(params), "jdoe"), params
        )
        second = portal.redeem(authz).json()
    claims = portal.verify_id_token(second["id_token"])
    assert claims["auth_time"] > first_auth_time


def test_a5_max_age_forces_a_fresh_login(bridge: Harness, portal: Rp) -> None:
    with new_browser(bridge) as browser:
        first = portal.redeem(portal.sign_in(browser)).json()
        auth_time = portal.verify_id_token(first["id_token"])["auth_time"]

        # A recent enough sign-in is reused, and auth_time tells the client when it was.
        params = portal.authorize_params(max_age="300")
        authz = portal.authorization_from(browser.get(portal.authorize_url(params)), params)
        claims = portal.verify_id_token(portal.redeem(authz).json()["id_token"])
        assert claims["auth_time"] == auth_time

        # max_age=0 is prompt=login (OIDC Core §3.1.2.1), even within the same second.
        response = browser.get(portal.authorize_url(portal.authorize_params(max_age="0")))
        assert _goes_to_login(response)

        time.sleep(2.1)
        params = portal.authorize_params(max_age="1")
        response = browser.get(portal.authorize_url(params))
        assert _goes_to_login(response)
        authz = portal.authorization_from(
            sign_in(browser, portal.authorize_url(params), "jdoe"), params
        )
        claims = portal.verify_id_token(portal.redeem(authz).json()["id_token"])
    assert claims["auth_time"] > auth_time
    assert claims["auth_time"] >= int(time.time()) - 5


@pytest.mark.parametrize("max_age", ["-1", "1.5", "abc", "99999999999"])
def test_a5_malformed_max_age_is_invalid_request(
    bridge: Harness, browser: httpx.Client, portal: Rp, max_age: str
) -> None:
    params = portal.authorize_params(max_age=max_age, state="m")
    assert_error_redirect(browser.get(portal.authorize_url(params)), bridge, "invalid_request", "m")


# --- A6 scopes --------------------------------------------------------------------------------


def test_a6_scopes_not_allowed_are_dropped(
    bridge: Harness, browser: httpx.Client, http: httpx.Client
) -> None:
    narrow = Rp(
        bridge,
        http,
        "narrow",
        NARROW_SECRET,
        "https://narrow.example.org/cb",
        scope="openid profile email phone offline_access admin",
    )
    token = narrow.tokens(browser)
    assert token["scope"] == "openid profile"
    assert "refresh_token" not in token
    claims = narrow.verify_id_token(token["id_token"])
    assert claims["name"] == "Jane Doe"
    for claim in ("email", "email_verified", "phone_number"):
        assert claim not in claims
    info = narrow.userinfo(token["access_token"]).json()
    assert info == {"sub": "23210", "name": "Jane Doe", "given_name": "Jane", "family_name": "Doe"}
    assert narrow.introspect(token["access_token"])["scope"] == "openid profile"


# --- B1 one redemption ------------------------------------------------------------------------


def test_b1_parallel_redemptions_exactly_one_wins(browser: httpx.Client, portal: Rp) -> None:
    authz = portal.sign_in(browser)
    start = threading.Barrier(20)

    def redeem(_: int) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            start.wait()
            return client.post(
                f"{portal.url}/token",
                data={
                    "grant_type": "authorization_code",
                    "code": authz.code,
                    "redirect_uri": authz.redirect_uri,
                    "code_verifier": authz.verifier,
                },
                auth=(portal.client_id, PORTAL_SECRET),
            )

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(redeem, range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [400] * 19, statuses
    for response in responses:
        if response.status_code == 400:
            assert response.json()["error"] == "invalid_grant"
    # Nineteen replays of a redeemed code: the tokens it gave are revoked too.
    won = next(r for r in responses if r.status_code == 200).json()
    assert_dead(portal, won["access_token"], won["refresh_token"])


def test_b1_second_redemption_revokes_the_tokens_of_the_code(
    browser: httpx.Client, portal: Rp
) -> None:
    authz = portal.sign_in(browser)
    first = portal.redeem(authz)
    assert first.status_code == 200
    token = first.json()
    assert portal.userinfo(token["access_token"]).status_code == 200
    refreshed = portal.refresh(token["refresh_token"]).json()

    assert_oauth_error(portal.redeem(authz), 400, "invalid_grant")
    assert_dead(
        portal,
        token["access_token"],
        token["refresh_token"],
        refreshed["access_token"],
        refreshed["refresh_token"],
    )
    assert_oauth_error(portal.refresh(refreshed["refresh_token"]), 400, "invalid_grant")


# --- B2 code binding and lifetime ----------------------------------------------------------


def test_b2_code_is_bound_to_its_client(browser: httpx.Client, portal: Rp, reports: Rp) -> None:
    """Another client, with its own valid secret and a redirect URI it has registered too."""
    authz = portal.sign_in(browser)
    stolen = Authorization(authz.code, authz.verifier, None, None, CALLBACK, {})
    response = reports.redeem(stolen)
    assert_oauth_error(response, 400, "invalid_grant")
    response = reports.redeem(stolen, basic=False)
    assert_oauth_error(response, 400, "invalid_grant")


def test_b2_code_is_bound_to_its_redirect_uri(browser: httpx.Client, portal: Rp) -> None:
    authz = portal.sign_in(browser)
    assert_oauth_error(portal.redeem(authz, redirect_uri=OTHER_CALLBACK), 400, "invalid_grant")
    authz = portal.sign_in(browser)
    assert_oauth_error(portal.redeem(authz, redirect_uri=None), 400, "invalid_grant")


def test_b2_code_is_bound_to_its_verifier(browser: httpx.Client, portal: Rp) -> None:
    authz = portal.sign_in(browser)
    other = portal.sign_in(browser)
    assert_oauth_error(portal.redeem(authz, code_verifier=other.verifier), 400, "invalid_grant")


def test_b2_code_lives_at_most_60_seconds(
    bridge: Harness, browser: httpx.Client, portal: Rp
) -> None:
    portal.sign_in(browser)
    now = int(time.time())
    with bridge.services.db.session(write=False) as s:
        # live codes only: the database is shared, and a sign-out elsewhere voids the
        # codes of its session (their expiry is set to the moment of the sign-out)
        codes = list(
            s.exec(select(AuthorizationCodeRow).where(AuthorizationCodeRow.expires_at >= now))
        )
    assert codes
    assert all(0 < c.expires_at - c.created_at <= 60 for c in codes)


def test_b2_expired_code_is_invalid_grant(strict: Harness, http: httpx.Client) -> None:
    portal = portal_of(strict, http)
    with new_browser(strict) as browser:
        authz = portal.sign_in(browser)
    time.sleep(3)
    assert_oauth_error(portal.redeem(authz), 400, "invalid_grant")


# --- B3 client authentication ------------------------------------------------------------------


def test_b3_client_secret_basic_and_post_both_work(browser: httpx.Client, portal: Rp) -> None:
    assert portal.redeem(portal.sign_in(browser), basic=True).status_code == 200
    assert portal.redeem(portal.sign_in(browser), basic=False).status_code == 200


@pytest.mark.parametrize("basic", [True, False], ids=["basic", "post"])
def test_b3_wrong_secret_is_invalid_client(
    bridge: Harness, browser: httpx.Client, basic: bool, http: httpx.Client
) -> None:
    """RFC 6749 §5.2: 401 with a WWW-Authenticate challenge of the scheme used."""
    authz = Rp(bridge, http, "portal", PORTAL_SECRET, CALLBACK).sign_in(browser)
    wrong = Rp(bridge, http, "portal", PORTAL_SECRET[:-1] + "X", CALLBACK)
    response = wrong.redeem(authz, basic=basic)
    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")
    # A failed authentication does not use the code up.
    assert Rp(bridge, http, "portal", PORTAL_SECRET, CALLBACK).redeem(authz).status_code == 200


@pytest.mark.parametrize(
    "creds",
    [
        {"client_id": "portal"},  # confidential client without its secret
        {"client_id": "nobody", "client_secret": "x" * 30},
        {"client_id": "portal", "client_secret": ""},
    ],
    ids=["no-secret", "unknown-client", "empty-secret"],
)
def test_b3_missing_or_unknown_client_is_invalid_client(
    bridge: Harness, browser: httpx.Client, portal: Rp, creds: dict[str, str], http: httpx.Client
) -> None:
    authz = portal.sign_in(browser)
    response = http.post(
        f"{bridge.url}/token",
        data={
            **creds,
            "grant_type": "authorization_code",
            "code": authz.code,
            "redirect_uri": CALLBACK,
            "code_verifier": authz.verifier,
        },
    )
    assert_oauth_error(response, 401, "invalid_client")
    assert "www-authenticate" in response.headers


def test_b3_unknown_client_with_basic_is_401(bridge: Harness, http: httpx.Client) -> None:
    response = http.post(
        f"{bridge.url}/token",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        auth=("nobody", "x" * 30),
    )
    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


def test_b3_secrets_and_tokens_are_stored_hashed(
    bridge: Harness, browser: httpx.Client, portal: Rp
) -> None:
    registration = bridge.services.registry.by_client_id("portal")
    stored = registration.options.client_secret_hash
    assert stored.startswith("hmac-sha256$")
    assert PORTAL_SECRET not in stored
    assert PORTAL_SECRET not in repr(registration)
    assert PORTAL_SECRET not in json.dumps(registration.to_data())

    authz = portal.sign_in(browser)
    token = portal.redeem(authz).json()
    cookie = next(iter(browser.cookies.values()))
    raw_values = [authz.code, token["access_token"], token["refresh_token"]]
    with bridge.services.db.session(write=False) as s:
        tokens = {t.token_hash for t in s.exec(select(TokenRow))}
        codes = {c.code_hash for c in s.exec(select(AuthorizationCodeRow))}
        sessions = {b.id_hash for b in s.exec(select(BrowserSessionRow))}
    stored_values = tokens | codes | sessions
    for raw in [*raw_values, cookie]:
        assert raw not in stored_values
    assert hash_token(token["access_token"]) in tokens
    assert hash_token(token["refresh_token"]) in tokens
    assert hash_token(authz.code) in codes


# --- B4 refresh rotation -----------------------------------------------------------------------


def test_b4_refresh_token_of_another_client_is_refused(
    browser: httpx.Client, portal: Rp, reports: Rp
) -> None:
    token = portal.tokens(browser)
    assert_oauth_error(reports.refresh(token["refresh_token"]), 400, "invalid_grant")
    assert portal.refresh(token["refresh_token"]).status_code == 200


def test_b4_reuse_after_grace_revokes_the_family(strict: Harness, http: httpx.Client) -> None:
    portal = portal_of(strict, http)
    with new_browser(strict) as browser:
        token = portal.tokens(browser)
    second = portal.refresh(token["refresh_token"]).json()
    third = portal.refresh(second["refresh_token"]).json()
    time.sleep(1.1)
    assert_oauth_error(portal.refresh(token["refresh_token"]), 400, "invalid_grant")
    assert_dead(portal, third["access_token"], third["refresh_token"], token["access_token"])
    assert_oauth_error(portal.refresh(third["refresh_token"]), 400, "invalid_grant")


def test_b4_invalid_scope_on_refresh_does_not_use_the_token_up(
    strict: Harness, http: httpx.Client
) -> None:
    portal = portal_of(strict, http)
    with new_browser(strict) as browser:
        token = portal.tokens(browser, scope="openid profile offline_access")
    assert_oauth_error(
        portal.refresh(token["refresh_token"], scope="openid email"), 400, "invalid_scope"
    )
    time.sleep(1.1)  # past the (zero) grace window: a used-up token would now be a reuse
    assert portal.refresh(token["refresh_token"]).status_code == 200


# --- B5 no-store --------------------------------------------------------------------------------


def _no_store(response: httpx.Response) -> None:
    assert "no-store" in response.headers.get("cache-control", ""), response.headers
    assert response.headers.get("pragma") == "no-cache", response.headers


def test_b5_token_side_responses_are_not_cached(
    bridge: Harness, browser: httpx.Client, portal: Rp, http: httpx.Client
) -> None:
    authz = portal.sign_in(browser)
    ok = portal.redeem(authz)
    token = ok.json()
    responses = [
        ok,
        portal.redeem(authz),  # invalid_grant
        Rp(bridge, http, "portal", "wrong-secret-0123456789", CALLBACK).redeem(authz),
        http.post(f"{bridge.url}/token", json={"grant_type": "x"}),
        portal.refresh(token["refresh_token"]),
        portal.post("/introspect", {"token": token["access_token"]}),
        portal.post("/introspect", {}),
        http.post(f"{bridge.url}/introspect", data={"token": "x"}),
        portal.revoke("not-a-token"),
        portal.userinfo("not-a-token"),
        http.get(f"{bridge.url}/userinfo"),
    ]
    with new_browser(bridge) as client:
        responses.append(client.get("/userinfo", headers={"authorization": "Bearer x"}))
    for response in responses:
        _no_store(response)


def test_b5_userinfo_success_is_not_cached(browser: httpx.Client, portal: Rp) -> None:
    token = portal.tokens(browser)
    response = portal.userinfo(token["access_token"])
    assert response.status_code == 200
    _no_store(response)


# --- C1 ID token -------------------------------------------------------------------------------


def _at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize("client_id", ["portal", "spa"])
def test_c1_id_token_claims(
    bridge: Harness, browser: httpx.Client, client_id: str, http: httpx.Client
) -> None:
    rp = (
        Rp(bridge, http, "portal", PORTAL_SECRET, CALLBACK)
        if client_id == "portal"
        else Rp(bridge, http, "spa", None, CALLBACK, scope="openid profile")
    )
    before = int(time.time())
    authz = rp.sign_in(browser, "jdoe", nonce="n-0")
    token = rp.redeem(authz).json()
    claims = rp.verify_id_token(token["id_token"])
    header = jwt.get_unverified_header(token["id_token"])
    assert header["alg"] == ("RS256" if client_id == "portal" else "ES256")
    assert claims["iss"] == bridge.url
    assert claims["sub"] == "23210"
    assert "@" not in claims["sub"]
    assert claims["aud"] == client_id
    assert claims["azp"] == client_id
    assert before - 1 <= claims["iat"] <= int(time.time()) + 1
    assert claims["exp"] > claims["iat"]
    assert claims["auth_time"] <= claims["iat"]
    assert claims["nonce"] == "n-0"
    assert claims["at_hash"] == _at_hash(token["access_token"])


def test_c1_sub_is_stable_per_person(bridge: Harness, portal: Rp) -> None:
    subs = []
    for username in ("jdoe", "bsmith", "jdoe"):
        with new_browser(bridge) as browser:
            token = portal.tokens(browser, username)
        subs.append(portal.verify_id_token(token["id_token"])["sub"])
    assert subs == ["23210", "23211", "23210"]


# --- C2 forged and foreign tokens -------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def forged_tokens(bridge: Harness, http: httpx.Client) -> dict[str, str]:
    """ID-token-like JWTs an attacker could present, each wrong in one way."""
    now = int(time.time())
    claims = {
        "iss": bridge.url,
        "sub": "23210",
        "aud": "portal",
        "iat": now,
        "exp": now + 600,
        "auth_time": now,
    }
    keys = bridge.services.keys
    rs_kid = next(k["kid"] for k in jwks(http, bridge)["keys"] if k["kty"] == "RSA")
    es_kid = next(k["kid"] for k in jwks(http, bridge)["keys"] if k["kty"] == "EC")
    public_pem = keys.verification_key(rs_kid).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": rs_kid}, claims)
    hs_sig = hmac.new(public_pem, hs_input.encode("ascii"), hashlib.sha256).digest()
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "alg-none": _unsigned({"alg": "none", "typ": "JWT", "kid": rs_kid}, claims) + ".",
        "hs256-public-key": f"{hs_input}.{_b64(hs_sig)}",
        "unknown-kid": jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "k" * 43}),
        "kid-of-our-key-other-signer": jwt.encode(
            claims, stranger, algorithm="RS256", headers={"kid": rs_kid}
        ),
        "kid-of-another-alg": jwt.encode(
            claims, stranger, algorithm="RS256", headers={"kid": es_kid}
        ),
        "wrong-iss": keys.sign_jwt({**claims, "iss": "https://evil.example"}),
        "wrong-aud": keys.sign_jwt({**claims, "aud": "nobody"}),
        "no-exp": keys.sign_jwt({k: v for k, v in claims.items() if k != "exp"}),
        "long-expired": keys.sign_jwt({**claims, "iat": now - 10**6, "exp": now - 10**6 + 600}),
        "garbage": "not.a.jwt",
    }


FORGED = [
    "alg-none",
    "hs256-public-key",
    "unknown-kid",
    "kid-of-our-key-other-signer",
    "kid-of-another-alg",
    "wrong-iss",
    "wrong-aud",
    "no-exp",
    "long-expired",
    "garbage",
]


@pytest.fixture(scope="module")
def forged(bridge: Harness, http: httpx.Client) -> dict[str, str]:
    tokens = forged_tokens(bridge, http)
    assert sorted(tokens) == sorted(FORGED)
    return tokens


@pytest.mark.parametrize("kind", FORGED)
def test_c2_forged_tokens_are_refused_by_userinfo(
    portal: Rp, forged: dict[str, str], kind: str
) -> None:
    response = portal.userinfo(forged[kind])
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["error"] == "invalid_token"


@pytest.mark.parametrize("kind", FORGED)
def test_c2_forged_tokens_are_inactive_at_introspection(
    portal: Rp, forged: dict[str, str], kind: str
) -> None:
    assert portal.introspect(forged[kind]) == {"active": False}


@pytest.mark.parametrize("kind", FORGED)
def test_c2_forged_tokens_are_refused_as_id_token_hint(
    bridge: Harness, forged: dict[str, str], kind: str
) -> None:
    with new_browser(bridge) as client:
        response = client.get("/end_session", params={"id_token_hint": forged[kind]})
    assert_our_page(response)


def test_c2_real_id_token_is_not_an_access_token(browser: httpx.Client, portal: Rp) -> None:
    token = portal.tokens(browser)
    assert portal.userinfo(token["id_token"]).status_code == 401
    assert portal.introspect(token["id_token"]) == {"active": False}
    assert portal.userinfo(token["refresh_token"]).status_code == 401


def test_c2_recently_expired_id_token_is_still_a_logout_hint(bridge: Harness) -> None:
    """RP-Initiated Logout §4: the OP SHOULD accept an ID token whose exp has passed
    while its session could still be alive; one older than any session is refused above."""
    now = int(time.time())
    hint = bridge.services.keys.sign_jwt(
        {"iss": bridge.url, "sub": "23210", "aud": "portal", "iat": now - 700, "exp": now - 100}
    )
    with new_browser(bridge) as client:
        response = client.get(
            "/end_session",
            params={
                "id_token_hint": hint,
                "post_logout_redirect_uri": "https://portal.example.org/",
            },
        )
    assert response.status_code == 303
    assert response.headers["location"] == "https://portal.example.org/"


# --- C3 key rotation --------------------------------------------------------------------------


def test_c3_key_rotation(strict: Harness, http: httpx.Client) -> None:
    portal = portal_of(strict, http)
    keys = strict.services.keys

    def id_token() -> str:
        with new_browser(strict) as browser:
            return str(portal.tokens(browser, scope="openid")["id_token"])

    old_token = id_token()
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    published = keys.rotate("RS256", retire_after_seconds=60)
    new_kid = published.published
    assert new_kid
    assert new_kid != old_kid
    assert published.promoted is None
    kids = {k["kid"] for k in jwks(http, strict)["keys"]}
    assert {old_kid, new_kid} <= kids
    # Published, but not signing yet.
    assert jwt.get_unverified_header(id_token())["kid"] == old_kid

    promoted = keys.rotate("RS256", retire_after_seconds=2, immediate=True)
    assert promoted.promoted == new_kid
    assert promoted.retired == old_kid
    new_token = id_token()
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    for token in (old_token, new_token):
        assert verify_with_jwks(http, strict, token, audience="portal")["sub"] == "23210"

    time.sleep(2.1)  # the old key's retire time is up
    remaining = {k["kid"] for k in jwks(http, strict)["keys"]}
    assert old_kid not in remaining
    assert new_kid in remaining
    with new_browser(strict) as client:
        assert client.get("/end_session", params={"id_token_hint": old_token}).status_code == 400
    verify_with_jwks(http, strict, new_token, audience="portal")
