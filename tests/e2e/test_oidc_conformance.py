"""What the OpenID Foundation's basic OP conformance modules check, against a real bridge.

Each test names the conformance module it stands in for (``oidcc-...``) or the
RFC section it checks; the malformed-input tests at the end are the token and
authorization endpoints' share of SECURITY G5 (4xx, never a 500).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import pytest

from tests.oauth.rp import Rp, jwks, new_browser, query_of
from tests.support.bridge import Harness, hidden_fields, running_bridge, sign_in

SECRET = "conformance-secret-0123456789abcdef"
OTHER_SECRET = "other-secret-0123456789abcdef"
CALLBACK = "https://rp.example.org/cb"
LOGGED_OUT = "https://rp.example.org/logged-out"

REGISTRATIONS = {
    "rp": f"""
        name = "Conformance RP"
        profile = "oidc"
        client_id = "rp"
        client_secret = "{SECRET}"
        redirect_uris = ["{CALLBACK}"]
        post_logout_redirect_uris = ["{LOGGED_OUT}"]
        scopes = ["openid", "profile", "email", "phone", "offline_access"]
    """,
    "other": f"""
        name = "Other RP"
        profile = "oidc"
        client_id = "other"
        client_secret = "{OTHER_SECRET}"
        redirect_uris = ["https://other.example.org/cb"]
        scopes = ["openid", "profile", "offline_access"]
    """,
}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("oidc-conformance")
    with running_bridge(tmp, database_url, registrations=REGISTRATIONS) as harness:
        yield harness


@pytest.fixture
def rp(bridge: Harness, http: httpx.Client) -> Rp:
    return Rp(bridge, http, "rp", SECRET, CALLBACK)


@pytest.fixture
def other(bridge: Harness, http: httpx.Client) -> Rp:
    return Rp(bridge, http, "other", OTHER_SECRET, "https://other.example.org/cb")


@pytest.fixture(scope="module")
def metadata(bridge: Harness, http: httpx.Client) -> dict[str, Any]:
    response = http.get(f"{bridge.url}/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    data: dict[str, Any] = response.json()
    return data


def _is_json_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert response.json()["error"] == error, response.text
    assert "no-store" in response.headers["cache-control"]


# --- discovery (oidcc-server, oidcc-discovery-*) ------------------------------------------


def test_discovery_metadata_is_valid(bridge: Harness, metadata: dict[str, Any]) -> None:
    """OpenID Connect Discovery 1.0 §3 and §4.3."""
    assert metadata["issuer"] == bridge.url
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
    ):
        url = metadata[name]
        parts = urlsplit(url)
        assert parts.scheme in ("http", "https"), url
        assert parts.netloc, url
        assert url.startswith(bridge.url + "/"), url
        assert not parts.query
        assert not parts.fragment
    assert "code" in metadata["response_types_supported"]
    assert metadata["subject_types_supported"] == ["public"]
    assert "RS256" in metadata["id_token_signing_alg_values_supported"]
    assert "none" not in metadata["id_token_signing_alg_values_supported"]
    assert "openid" in metadata["scopes_supported"]
    assert {"sub", "iss", "auth_time", "email", "name"} <= set(metadata["claims_supported"])
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert set(metadata["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    assert {"client_secret_basic", "client_secret_post"} <= set(
        metadata["token_endpoint_auth_methods_supported"]
    )
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["request_parameter_supported"] is False


def test_discovery_every_advertised_endpoint_answers(
    metadata: dict[str, Any], http: httpx.Client
) -> None:
    for name in ("authorization_endpoint", "userinfo_endpoint", "end_session_endpoint"):
        assert http.get(metadata[name]).status_code != 404, name
    for name in ("token_endpoint", "revocation_endpoint", "introspection_endpoint"):
        assert http.post(metadata[name], data={}).status_code in (400, 401), name


def test_jwks_serves_public_signing_keys(
    bridge: Harness, metadata: dict[str, Any], http: httpx.Client
) -> None:
    response = http.get(metadata["jwks_uri"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    keys = response.json()["keys"]
    assert keys
    kids = [k["kid"] for k in keys]
    assert len(kids) == len(set(kids))
    for key in keys:
        assert key["use"] == "sig"
        assert key["alg"] in metadata["id_token_signing_alg_values_supported"]
        assert key["kty"] == {"RS256": "RSA", "ES256": "EC"}[key["alg"]]
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key), "private member published"
    assert {k["alg"] for k in keys} >= {"RS256", "ES256"}
    assert jwks(http, bridge) == response.json()


# --- the code flow (oidcc-server, oidcc-codereuse, oidcc-ensure-request-without-nonce) ---------


def test_code_reuse_is_refused(browser: httpx.Client, rp: Rp) -> None:
    """oidcc-codereuse: the second use of a code fails and kills what the first gave."""
    authz = rp.sign_in(browser)
    token = rp.redeem(authz).json()
    _is_json_error(rp.redeem(authz), 400, "invalid_grant")
    assert rp.userinfo(token["access_token"]).status_code == 401


def test_request_without_nonce_gives_id_token_without_nonce(browser: httpx.Client, rp: Rp) -> None:
    """oidcc-ensure-request-without-nonce-succeeds-for-code-flow."""
    token = rp.tokens(browser, nonce=None)
    claims = rp.verify_id_token(token["id_token"])
    assert "nonce" not in claims


def test_nonce_is_in_the_id_token(browser: httpx.Client, rp: Rp) -> None:
    nonce = secrets.token_urlsafe(32)
    token = rp.tokens(browser, nonce=nonce)
    assert rp.verify_id_token(token["id_token"])["nonce"] == nonce


def test_token_response_shape(browser: httpx.Client, rp: Rp) -> None:
    """RFC 6749 §5.1 and OIDC Core §3.1.3.3."""
    authz = rp.sign_in(browser)
    response = rp.redeem(authz)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    token = response.json()
    assert token["token_type"] == "Bearer"
    assert isinstance(token["expires_in"], int)
    assert token["expires_in"] > 0
    assert set(token["scope"].split()) == set(rp.scope.split())
    assert {"access_token", "id_token", "refresh_token"} <= set(token)


# --- prompt and max_age (oidcc-prompt-none-*, oidcc-prompt-login, oidcc-max-age-*) --------


def test_prompt_none_with_a_session_returns_a_code_without_interaction(
    browser: httpx.Client, rp: Rp
) -> None:
    """oidcc-prompt-none-logged-in."""
    first = rp.tokens(browser)
    params = rp.authorize_params(prompt="none")
    response = browser.get(rp.authorize_url(params))
    authz = rp.authorization_from(response, params)
    token = rp.redeem(authz).json()
    assert rp.verify_id_token(token["id_token"])["sub"] == "23210"
    assert (
        rp.verify_id_token(token["id_token"])["auth_time"]
        == rp.verify_id_token(first["id_token"])["auth_time"]
    )


def test_prompt_none_without_a_session_is_login_required(bridge: Harness, rp: Rp) -> None:
    """oidcc-prompt-none-not-logged-in."""
    with new_browser(bridge) as fresh:
        response = fresh.get(rp.authorize_url(rp.authorize_params(prompt="none", state="x")))
    assert response.status_code == 303
    params = query_of(response.headers["location"])
    assert params == {
        "error": "login_required",
        "error_description": params["error_description"],
        "state": "x",
        "iss": bridge.url,
    }


def test_prompt_login_shows_the_login_page(browser: httpx.Client, rp: Rp) -> None:
    """oidcc-prompt-login (the later auth_time is checked in test_oidc_security A5)."""
    rp.tokens(browser)
    response = browser.get(rp.authorize_url(rp.authorize_params(prompt="login")))
    assert response.status_code == 303
    page = browser.get(response.headers["location"])
    assert 'name="password"' in page.text


def test_max_age_10000_reuses_the_session_with_auth_time(browser: httpx.Client, rp: Rp) -> None:
    """oidcc-max-age-10000 (max_age=1 is checked in test_oidc_security A5)."""
    rp.tokens(browser)
    params = rp.authorize_params(max_age="10000")
    authz = rp.authorization_from(browser.get(rp.authorize_url(params)), params)
    claims = rp.verify_id_token(rp.redeem(authz).json()["id_token"])
    assert isinstance(claims["auth_time"], int)


def test_unknown_prompt_and_login_hint(bridge: Harness, browser: httpx.Client, rp: Rp) -> None:
    response = browser.get(rp.authorize_url(rp.authorize_params(prompt="bogus", state="p")))
    assert query_of(response.headers["location"])["error"] == "invalid_request"
    with new_browser(bridge) as fresh:
        response = fresh.get(rp.authorize_url(rp.authorize_params(login_hint="bsmith")))
        page = fresh.get(response.headers["location"])
    assert 'value="bsmith"' in page.text


# --- userinfo (oidcc-userinfo-get, -post-header, -post-body; oidcc-scope-*) ---------------


def test_userinfo_get_and_post(
    bridge: Harness, browser: httpx.Client, rp: Rp, http: httpx.Client
) -> None:
    token = rp.tokens(browser)["access_token"]
    bearer = {"authorization": f"Bearer {token}"}
    get = http.get(f"{bridge.url}/userinfo", headers=bearer)
    post_header = http.post(f"{bridge.url}/userinfo", headers=bearer)
    post_body = http.post(f"{bridge.url}/userinfo", data={"access_token": token})
    for response in (get, post_header, post_body):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["sub"] == "23210"
    assert get.json() == post_header.json() == post_body.json()


def test_userinfo_token_in_two_places_is_invalid_request(
    bridge: Harness, browser: httpx.Client, rp: Rp, http: httpx.Client
) -> None:
    """RFC 6750 §2: a client MUST NOT use more than one method to send the token."""
    token = rp.tokens(browser)["access_token"]
    response = http.post(
        f"{bridge.url}/userinfo",
        headers={"authorization": f"Bearer {token}"},
        data={"access_token": token},
    )
    _is_json_error(response, 400, "invalid_request")


def test_userinfo_token_in_the_query_is_not_accepted(
    bridge: Harness, browser: httpx.Client, rp: Rp, http: httpx.Client
) -> None:
    """RFC 6750 §2.3 is optional and leaks tokens into logs: not supported."""
    token = rp.tokens(browser)["access_token"]
    response = http.get(f"{bridge.url}/userinfo", params={"access_token": token})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_userinfo_without_a_token_is_401_with_a_bearer_challenge(
    bridge: Harness, http: httpx.Client
) -> None:
    """RFC 6750 §3.1: no error code when the request carried no token at all."""
    response = http.get(f"{bridge.url}/userinfo")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "error=" not in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("scope", "claims"),
    [
        ("openid", set()),
        ("openid profile", {"name", "given_name", "family_name"}),
        ("openid email", {"email", "email_verified"}),
        ("openid phone", {"phone_number"}),
        (
            "openid profile email phone",
            {"name", "given_name", "family_name", "email", "email_verified", "phone_number"},
        ),
    ],
)
def test_scope_claims(browser: httpx.Client, rp: Rp, scope: str, claims: set[str]) -> None:
    """oidcc-scope-profile, -email, -phone, -all: each scope releases its claims."""
    token = rp.tokens(browser, scope=scope)
    info = rp.userinfo(token["access_token"]).json()
    assert set(info) == {"sub", *claims}
    id_claims = rp.verify_id_token(token["id_token"])
    assert claims <= set(id_claims)
    assert not ({"email", "phone_number", "name"} - claims) & set(id_claims)
    if "email" in claims:
        assert info["email"] == "jane.doe@example.org"
        assert isinstance(info["email_verified"], bool)
    if "phone_number" in claims:
        assert info["phone_number"] == "+12025550100"


def test_userinfo_with_an_access_token_lacking_openid(browser: httpx.Client, rp: Rp) -> None:
    """RFC 6749 §6: a refresh may narrow the scope; without openid userinfo is 403
    insufficient_scope (RFC 6750 §3.1), while the refresh token keeps its scope."""
    token = rp.tokens(browser)
    narrowed = rp.refresh(token["refresh_token"], scope="profile offline_access")
    assert narrowed.status_code == 200, narrowed.text
    body = narrowed.json()
    assert body["scope"] == "profile offline_access"
    response = rp.userinfo(body["access_token"])
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    # The refresh token still carries the whole grant.
    again = rp.refresh(body["refresh_token"]).json()
    assert set(again["scope"].split()) == set(rp.scope.split())
    assert rp.userinfo(again["access_token"]).status_code == 200


def test_refresh_narrowed_without_offline_access_still_rotates(
    browser: httpx.Client, rp: Rp
) -> None:
    token = rp.tokens(browser)
    narrowed = rp.refresh(token["refresh_token"], scope="openid")
    assert narrowed.status_code == 200, narrowed.text
    body = narrowed.json()
    assert body["scope"] == "openid"
    assert "refresh_token" in body, "the client must not lose its refresh token"
    assert rp.refresh(body["refresh_token"]).status_code == 200


def test_refresh_with_a_scope_never_granted_is_invalid_scope(browser: httpx.Client, rp: Rp) -> None:
    token = rp.tokens(browser, scope="openid offline_access")
    _is_json_error(rp.refresh(token["refresh_token"], scope="openid email"), 400, "invalid_scope")
    assert rp.refresh(token["refresh_token"]).status_code == 200


# --- refresh, revocation, introspection (oidcc-refresh-token, RFC 7009, RFC 7662) -----------


def test_refresh_grant_response(browser: httpx.Client, rp: Rp) -> None:
    """oidcc-refresh-token: a new access and refresh token, same scope."""
    token = rp.tokens(browser)
    response = rp.refresh(token["refresh_token"])
    assert response.status_code == 200
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    assert set(body["scope"].split()) == set(token["scope"].split())
    assert body["refresh_token"] != token["refresh_token"]
    if "id_token" in body:  # optional (OIDC Core §12.2); if present, same person and client
        claims = rp.verify_id_token(body["id_token"])
        assert claims["sub"] == "23210"
    info = rp.userinfo(body["access_token"])
    assert info.status_code == 200
    assert info.json()["sub"] == "23210"
    intro = rp.introspect(body["refresh_token"])
    assert intro["active"] is True
    assert intro["token_type"] == "refresh_token"


def test_revoking_a_refresh_token_revokes_the_family(browser: httpx.Client, rp: Rp) -> None:
    """RFC 7009 §2.1: revoking a refresh token also invalidates the access tokens of its grant."""
    token = rp.tokens(browser)
    second = rp.refresh(token["refresh_token"]).json()
    response = rp.revoke(second["refresh_token"], token_type_hint="refresh_token")
    assert response.status_code == 200
    for value in (token["access_token"], second["access_token"], second["refresh_token"]):
        assert rp.introspect(value) == {"active": False}
    assert rp.userinfo(second["access_token"]).status_code == 401
    _is_json_error(rp.refresh(second["refresh_token"]), 400, "invalid_grant")


def test_revoking_an_access_token_leaves_the_refresh_token(browser: httpx.Client, rp: Rp) -> None:
    token = rp.tokens(browser)
    assert rp.revoke(token["access_token"]).status_code == 200
    assert rp.userinfo(token["access_token"]).status_code == 401
    assert rp.refresh(token["refresh_token"]).status_code == 200


def test_revocation_of_unknown_or_foreign_tokens(browser: httpx.Client, rp: Rp, other: Rp) -> None:
    """RFC 7009 §2.2: 200 for an invalid token; another client's token is not revoked."""
    token = rp.tokens(browser)
    assert rp.revoke("no-such-token").status_code == 200
    assert other.revoke(token["refresh_token"]).status_code == 200
    assert other.revoke(token["access_token"]).status_code == 200
    assert rp.introspect(token["access_token"])["active"] is True
    assert rp.introspect(token["refresh_token"])["active"] is True


def test_token_type_hints_are_only_hints(browser: httpx.Client, rp: Rp) -> None:
    """RFC 7009 §2.1 / RFC 7662 §2.1: a wrong or unknown hint does not stop the lookup."""
    token = rp.tokens(browser)
    intro = rp.post("/introspect", {"token": token["access_token"], "token_type_hint": "id_token"})
    assert intro.json()["active"] is True
    response = rp.revoke(token["access_token"], token_type_hint="refresh_token")
    assert response.status_code == 200
    assert rp.introspect(token["access_token"]) == {"active": False}
    assert rp.revoke(token["refresh_token"], token_type_hint="bogus").status_code == 200
    assert rp.introspect(token["refresh_token"]) == {"active": False}


def test_introspection(
    bridge: Harness, browser: httpx.Client, rp: Rp, other: Rp, http: httpx.Client
) -> None:
    """RFC 7662: the owning client sees the token; another client sees active false."""
    token = rp.tokens(browser)
    intro = rp.introspect(token["access_token"])
    assert intro["active"] is True
    assert intro["client_id"] == "rp"
    assert intro["sub"] == "23210"
    assert intro["iss"] == bridge.url
    assert intro["token_type"] == "Bearer"
    assert intro["exp"] > intro["iat"]
    assert other.introspect(token["access_token"]) == {"active": False}
    assert other.introspect(token["refresh_token"]) == {"active": False}
    unauthenticated = http.post(f"{bridge.url}/introspect", data={"token": token["access_token"]})
    _is_json_error(unauthenticated, 401, "invalid_client")


# --- RP-initiated logout (oidcc-rp-initiated-logout-*) ---------------------------------------


def test_end_session_with_an_unregistered_post_logout_redirect_uri(
    browser: httpx.Client, rp: Rp
) -> None:
    token = rp.tokens(browser)
    for uri in ("https://evil.example/", LOGGED_OUT + "/", CALLBACK):
        response = browser.get(
            "/end_session",
            params={"id_token_hint": token["id_token"], "post_logout_redirect_uri": uri},
        )
        assert response.status_code == 400
        assert "location" not in response.headers
    response = browser.get(
        "/end_session",
        params={"client_id": "rp", "post_logout_redirect_uri": "https://evil.example/"},
    )
    assert response.status_code == 400
    # Still signed in: a refused logout request changes nothing.
    params = rp.authorize_params(prompt="none")
    rp.authorization_from(browser.get(rp.authorize_url(params)), params)


def test_end_session_with_a_hint_of_another_client_id_is_refused(
    browser: httpx.Client, rp: Rp
) -> None:
    token = rp.tokens(browser)
    response = browser.get(
        "/end_session", params={"id_token_hint": token["id_token"], "client_id": "other"}
    )
    assert response.status_code == 400


def test_end_session_with_hint_signs_out_and_returns_with_state(
    bridge: Harness, browser: httpx.Client, rp: Rp
) -> None:
    token = rp.tokens(browser)
    response = browser.get(
        "/end_session",
        params={
            "id_token_hint": token["id_token"],
            "post_logout_redirect_uri": LOGGED_OUT,
            "state": "s&t",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{LOGGED_OUT}?{urlencode({'state': 's&t'})}"
    _assert_signed_out(bridge, browser, rp)


def _assert_signed_out(bridge: Harness, browser: httpx.Client, rp: Rp) -> None:
    params = rp.authorize_params(prompt="none", state="after")
    response = browser.get(rp.authorize_url(params))
    assert query_of(response.headers["location"])["error"] == "login_required"


def test_end_session_without_hint_asks_and_post_confirms(
    bridge: Harness, browser: httpx.Client, rp: Rp
) -> None:
    rp.tokens(browser)
    old_cookies = dict(browser.cookies)
    page = browser.get(
        "/end_session", params={"client_id": "rp", "post_logout_redirect_uri": LOGGED_OUT}
    )
    assert page.status_code == 200
    assert "no-store" in page.headers["cache-control"]
    fields = hidden_fields(page.text)
    assert fields["csrf_token"]
    assert fields["confirm"] == "yes"
    assert fields["post_logout_redirect_uri"] == LOGGED_OUT

    # Without the CSRF token nothing happens.
    refused = browser.post(
        "/end_session", data={k: v for k, v in fields.items() if k != "csrf_token"}
    )
    assert refused.status_code == 400
    params = rp.authorize_params(prompt="none")
    rp.authorization_from(browser.get(rp.authorize_url(params)), params)

    done = browser.post("/end_session", data=fields)
    assert done.status_code == 303
    assert done.headers["location"] == LOGGED_OUT
    cleared = [v for k, v in done.headers.multi_items() if k == "set-cookie"]
    assert any(
        "bridge-session=" in c and ("Max-Age=0" in c or "expires=" in c.lower()) for c in cleared
    )
    _assert_signed_out(bridge, browser, rp)
    # The old cookie, replayed, is not signed in either (the session ended server-side).
    with new_browser(bridge, cookies=old_cookies) as replay:
        _assert_signed_out(bridge, replay, rp)


def test_end_session_without_a_session_shows_signed_out(bridge: Harness) -> None:
    with new_browser(bridge) as fresh:
        response = fresh.get("/end_session")
    assert response.status_code == 200
    assert "no-store" in response.headers["cache-control"]


# --- malformed input (SECURITY G5, token and authorization endpoints) -------------------------


def _raw_post(
    http: httpx.Client, bridge: Harness, path: str, body: bytes, content_type: str, **kw: Any
) -> httpx.Response:
    return http.post(
        f"{bridge.url}{path}", content=body, headers={"content-type": content_type}, **kw
    )


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect"])
def test_json_body_is_invalid_request(bridge: Harness, path: str, http: httpx.Client) -> None:
    response = _raw_post(
        http,
        bridge,
        path,
        b'{"grant_type": "authorization_code"}',
        "application/json",
        auth=("rp", SECRET),
    )
    _is_json_error(response, 400, "invalid_request")


@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect", "/userinfo"])
def test_bad_utf8_is_invalid_request(bridge: Harness, path: str, http: httpx.Client) -> None:
    response = _raw_post(
        http, bridge, path, b"grant_type=\xff\xfe&token=\xc3", FORM, auth=("rp", SECRET)
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


def test_g5_a_userinfo_refusal_naming_a_non_latin1_field_is_a_400(
    bridge: Harness, http: httpx.Client
) -> None:
    """The refusal names the repeated field; its ``WWW-Authenticate`` keeps only the
    characters RFC 6750 §3 allows there (a field outside Latin-1 was a 500, one with a
    quote broke the header's quoting). Found by tests/e2e/test_public_fuzz.py."""
    field = quote('\U00020043"\\x')
    response = _raw_post(http, bridge, "/userinfo", f"{field}=1&{field}=2".encode(), FORM)
    _is_json_error(response, 400, "invalid_request")
    assert "\U00020043" in response.json()["error_description"]
    header = response.headers["www-authenticate"]
    prefix = 'Bearer error="invalid_request", error_description="'
    assert header.startswith(prefix), header
    assert header.endswith('"'), header
    description = header.removeprefix(prefix).removesuffix('"')
    assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in description), header


def test_content_type_is_case_insensitive_and_may_carry_a_charset(
    bridge: Harness, browser: httpx.Client, rp: Rp, http: httpx.Client
) -> None:
    authz = rp.sign_in(browser)
    body = urlencode(
        {
            "grant_type": "authorization_code",
            "code": authz.code,
            "redirect_uri": CALLBACK,
            "code_verifier": authz.verifier,
        }
    ).encode()
    response = _raw_post(
        http,
        bridge,
        "/token",
        body,
        "Application/X-WWW-Form-URLEncoded; charset=UTF-8",
        auth=("rp", SECRET),
    )
    assert response.status_code == 200, response.text


def test_duplicate_parameters_at_the_token_endpoint(
    browser: httpx.Client, rp: Rp, http: httpx.Client
) -> None:
    authz = rp.sign_in(browser)
    body = (
        f"grant_type=authorization_code&code={authz.code}&code={authz.code}"
        f"&redirect_uri={CALLBACK}&code_verifier={authz.verifier}"
    ).encode()
    response = _raw_post(http, rp.bridge, "/token", body, FORM, auth=("rp", SECRET))
    _is_json_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "invalid_request"),
        ({"code": "x"}, "invalid_request"),
        ({"grant_type": ""}, "invalid_request"),
        ({"grant_type": "password", "username": "jdoe", "password": "p"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "urn:ietf:params:oauth:grant-type:device_code"}, "unsupported_grant_type"),
        ({"grant_type": "implicit"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "authorization_code", "code": "nope"}, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, "invalid_grant"),
    ],
)
def test_token_endpoint_grant_type_errors(rp: Rp, data: dict[str, str], error: str) -> None:
    response = rp.post("/token", data)
    _is_json_error(response, 400, error)


@pytest.mark.parametrize(
    "data",
    [
        {"grant_type": "authorization_code", "code": "c" * 40_000},
        {"grant_type": "refresh_token", "refresh_token": "r" * 40_000},
        {"grant_type": "authorization_code", "code": "x", "junk" * 5000: "y"},
        {"grant_type": "authorization_code", "code": "x\x00y", "redirect_uri": "\x00"},
        {"grant_type": "refresh_token", "refresh_token": "\x00"},
    ],
    ids=["huge-code", "huge-refresh", "huge-name", "nul-code", "nul-refresh"],
)
def test_token_endpoint_odd_parameters_are_4xx_json(rp: Rp, data: dict[str, str]) -> None:
    response = rp.post("/token", data)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"] in ("invalid_request", "invalid_grant")


@pytest.mark.parametrize(
    "client_id",
    ["\x00", "r\x00p", "x" * 5000, "rp\n", "ü"],
    ids=["nul", "inner-nul", "huge", "nl", "u"],
)
def test_token_endpoint_odd_client_ids(bridge: Harness, client_id: str, http: httpx.Client) -> None:
    for data in (
        {"grant_type": "refresh_token", "refresh_token": "x", "client_id": client_id},
        {
            "grant_type": "refresh_token",
            "refresh_token": "x",
            "client_id": client_id,
            "client_secret": SECRET,
        },
    ):
        response = http.post(f"{bridge.url}/token", data=data)
        _is_json_error(response, 401, "invalid_client")
    response = http.post(f"{bridge.url}/introspect", data={"token": "x"}, auth=(client_id, SECRET))
    _is_json_error(response, 401, "invalid_client")


def test_oversized_body_is_refused(bridge: Harness, http: httpx.Client) -> None:
    response = _raw_post(http, bridge, "/token", b"grant_type=x&code=" + b"a" * 100_000, FORM)
    assert response.status_code == 413


def test_bad_basic_header_is_invalid_client(bridge: Harness, http: httpx.Client) -> None:
    for header in ("Basic !!!", "Basic " + "QQ==" * 3, "Basic", "Bearer x", "Basic w7w6w7w="):
        response = http.post(
            f"{bridge.url}/token",
            data={"grant_type": "refresh_token", "refresh_token": "x"},
            headers={"authorization": header},
        )
        assert response.status_code in (400, 401), (header, response.text)
        assert response.json()["error"] in ("invalid_client", "invalid_request")


def test_token_endpoint_get_is_405(bridge: Harness, http: httpx.Client) -> None:
    assert http.get(f"{bridge.url}/token").status_code == 405


@pytest.mark.parametrize("max_age", ["\u00b2", "\u0663", "-1", "1.5", " 1"])
def test_g5_authorize_max_age_not_in_ascii_digits_is_invalid_request(
    bridge: Harness, browser: httpx.Client, rp: Rp, max_age: str
) -> None:
    """``str.isdigit`` also takes digits such as ``²`` that ``int()`` refuses (a 500)."""
    params = rp.authorize_params(max_age=max_age)
    response = browser.get(rp.authorize_url(params))
    assert response.status_code == 303, response.text
    got = query_of(response.headers["location"])
    assert got["error"] == "invalid_request", got


def test_authorize_with_duplicate_parameters(
    bridge: Harness, browser: httpx.Client, rp: Rp
) -> None:
    params = rp.authorize_params(state="d")
    sent = [(k, v) for k, v in params.items() if k != "code_verifier"]
    for name in ("scope", "nonce", "code_challenge", "response_type", "prompt"):
        value = params.get(name, "login")
        extra = [(name, value)] if name in params else [(name, value), (name, value)]
        url = f"{bridge.url}/authorize?{urlencode([*sent, *extra])}"
        response = browser.get(url)
        assert response.status_code == 303, (name, response.text)
        got = query_of(response.headers["location"])
        assert got["error"] == "invalid_request", name
        assert got["iss"] == bridge.url
    for name in ("client_id", "redirect_uri"):
        url = f"{bridge.url}/authorize?{urlencode([*sent, (name, params[name])])}"
        response = browser.get(url)
        assert response.status_code == 400, name
        assert "location" not in response.headers


@pytest.mark.parametrize(
    "overrides",
    [
        {"nonce": "n\x00"},
        {"state": "s\x00"},
        {"login_hint": "\x00"},
        {"nonce": "n" * 5000},
        {"scope": "openid " + "x" * 3000},
        {"max_age": "\x00"},
        {"ui_locales": "\x00"},
        {"request": "eyJhbGciOiJub25lIn0.e30."},
        {"request_uri": "https://evil.example/r"},
        {"response_mode": "fragment"},
        {"response_mode": "form_post"},
    ],
)
def test_authorize_odd_parameters_are_refused_to_the_client(
    bridge: Harness, browser: httpx.Client, rp: Rp, overrides: dict[str, str]
) -> None:
    params = rp.authorize_params(**overrides)
    response = browser.get(rp.authorize_url(params))
    assert response.status_code == 303, response.text
    got = query_of(response.headers["location"])
    assert got["error"] in ("invalid_request", "request_not_supported", "request_uri_not_supported")
    assert got["iss"] == bridge.url


@pytest.mark.parametrize("client_id", ["\x00", "x" * 5000, "rp\x00"], ids=["nul", "huge", "nul2"])
def test_authorize_odd_client_id_is_our_page(browser: httpx.Client, rp: Rp, client_id: str) -> None:
    response = browser.get(rp.authorize_url(rp.authorize_params(client_id=client_id)))
    assert response.status_code == 400
    assert "location" not in response.headers


def test_authorize_bad_utf8_in_the_query_is_not_a_500(
    bridge: Harness, browser: httpx.Client
) -> None:
    response = browser.get(f"{bridge.url}/authorize?client_id=%ff%fe&redirect_uri=%c3")
    assert response.status_code == 400


def test_authorize_post_works_like_get(bridge: Harness, rp: Rp) -> None:
    params = rp.authorize_params(state="posted", nonce="np")
    sent = {k: v for k, v in params.items() if k != "code_verifier"}
    with new_browser(bridge) as browser:
        first = browser.post("/authorize", data=sent)
        assert first.status_code == 303
        assert first.headers["location"].startswith("/login?")
        pending = query_of(first.headers["location"])["request"]
        response = sign_in(browser, f"/authorize/continue?request={pending}", "jdoe")
        authz = rp.authorization_from(response, params)
        assert authz.state == "posted"
        token = rp.redeem(authz).json()
        assert rp.verify_id_token(token["id_token"])["nonce"] == "np"
        # Errors come back the same way as for GET.
        refused = browser.post("/authorize", data={**sent, "code_challenge_method": "plain"})
        assert query_of(refused.headers["location"])["error"] == "invalid_request"
        unknown = browser.post("/authorize", data={**sent, "client_id": "nobody"})
        assert unknown.status_code == 400
        json_body = browser.post("/authorize", json=sent)
        assert json_body.status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"client_id": "\x00"},
        {"client_id": "x" * 5000},
        {"client_id": "nobody", "post_logout_redirect_uri": LOGGED_OUT},
        {"post_logout_redirect_uri": LOGGED_OUT},
        {"id_token_hint": "a.b\x00.c"},
        {"client_id": "rp", "post_logout_redirect_uri": LOGGED_OUT + "\x00"},
    ],
    ids=[
        "nul-client",
        "huge-client",
        "unknown-client",
        "uri-without-client",
        "nul-hint",
        "nul-uri",
    ],
)
def test_end_session_odd_parameters_are_400(bridge: Harness, params: dict[str, str]) -> None:
    with new_browser(bridge) as fresh:
        response = fresh.get("/end_session", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers


def test_a5_prompt_login_answered_within_the_same_second_reaches_the_app(
    browser: httpx.Client, rp: Rp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A5: a new password sign-in always counts as newer than the session it replaces.

    prompt=login asks for a sign-in later than the current session's ``auth_time``
    (whole seconds). A person (or a fast test) who signs in, then signs in again
    within that same second, used to be sent back to the sign-in page for ever.
    """
    frozen = float(int(time.time()))

    class Clock:
        @staticmethod
        def time() -> float:
            return frozen

    import bridge.routes.oidc
    import bridge.sessions

    monkeypatch.setattr(bridge.sessions, "time", Clock)
    monkeypatch.setattr(bridge.routes.oidc, "time", Clock)
    rp.tokens(browser)
    again = rp.sign_in(browser, prompt="login")
    claims = rp.verify_id_token(rp.redeem(again).json()["id_token"])
    assert claims["auth_time"] > frozen
