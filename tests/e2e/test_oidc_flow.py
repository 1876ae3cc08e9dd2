"""A full OpenID Connect flow over real HTTP, driven by an independent RP (Authlib's client).

The bridge and the iMIS simulator run as real servers on loopback; the RP side
is Authlib's httpx OAuth2 client plus PyJWT verifying the ID token against the
published JWKS: discovery, login form, code, token, userinfo, refresh,
revocation, introspection and logout.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from authlib.integrations.base_client.errors import OAuthError

from tests.support.bridge import Harness, hidden_fields, running_bridge, sign_in

SECRET = "portal-secret-0123456789abcdef"
REDIRECT = "https://portal.example.org/callback"

# Authlib's httpx client (the independent RP here) announces a rename when imported;
# whether pytest's filter or Authlib's own "always" filter is first depends on import order.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

PORTAL = f"""
name = "Member Portal"
profile = "oidc"
client_id = "portal"
client_secret = "{SECRET}"
redirect_uris = ["{REDIRECT}"]
post_logout_redirect_uris = ["https://portal.example.org/"]
scopes = ["openid", "profile", "email", "phone", "offline_access"]

[claims]
imis_id = "imis_id"
organization = "organization_name"
"""

SPA = f"""
name = "Member App"
profile = "oidc"
client_id = "spa"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "profile"]
id_token_signed_response_alg = "ES256"
"""


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("oidc")
    with running_bridge(tmp, database_url, registrations={"portal": PORTAL, "spa": SPA}) as h:
        yield h


def discovery(bridge: Harness) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{bridge.url}/.well-known/openid-configuration").json()
    return data


def rp(bridge: Harness, **kwargs: Any) -> OAuth2Client:
    return OAuth2Client(
        client_id=kwargs.pop("client_id", "portal"),
        client_secret=kwargs.pop("client_secret", SECRET),
        redirect_uri=REDIRECT,
        scope=kwargs.pop("scope", "openid profile email phone offline_access"),
        code_challenge_method="S256",
        **kwargs,
    )


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(bridge: Harness, client: OAuth2Client, verifier: str, **extra: Any) -> str:
    meta = discovery(bridge)
    url, _state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, **extra
    )
    return str(url)


def verify_id_token(bridge: Harness, token: str, audience: str) -> dict[str, Any]:
    meta = discovery(bridge)
    keys = jwt.PyJWKClient(meta["jwks_uri"])
    key = keys.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=meta["id_token_signing_alg_values_supported"],
        audience=audience,
        issuer=meta["issuer"],
    )
    return claims


def code_from(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    return parse_qs(urlsplit(location).query)


def test_full_flow_with_an_independent_rp(bridge: Harness) -> None:
    """C1, A4, B5 and the whole happy path as a standard RP sees it."""
    meta = discovery(bridge)
    assert meta["issuer"] == bridge.url
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True

    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    with rp(bridge) as client, bridge.client() as browser:
        url = authorize_url(bridge, client, verifier, nonce=nonce, state="st-123")
        callback = sign_in(browser, url, "jdoe")
        params = code_from(callback)
        assert params["state"] == ["st-123"]
        assert params["iss"] == [bridge.url]

        token = client.fetch_token(
            meta["token_endpoint"],
            authorization_response=callback.headers["location"],
            code_verifier=verifier,
        )
        assert token["token_type"].lower() == "bearer"
        assert "refresh_token" in token
        claims = verify_id_token(bridge, token["id_token"], "portal")
        assert claims["sub"] == "23210"
        assert claims["nonce"] == nonce
        assert claims["name"] == "Jane Doe"
        assert claims["email"] == "jane.doe@example.org"
        assert claims["email_verified"] is False
        assert claims["phone_number"] == "+12025550100"
        assert claims["imis_id"] == "23210"
        assert claims["organization"] == "Contoso Ltd"
        for required in ("iss", "aud", "exp", "iat", "auth_time", "at_hash"):
            assert required in claims

        userinfo = client.get(meta["userinfo_endpoint"]).json()
        assert userinfo["sub"] == "23210"
        assert userinfo["email"] == "jane.doe@example.org"
        posted = httpx.post(
            meta["userinfo_endpoint"],
            headers={"authorization": f"Bearer {token['access_token']}"},
        )
        assert posted.status_code == 200
        assert posted.json() == userinfo

        intro = httpx.post(
            meta["introspection_endpoint"],
            data={"token": token["access_token"]},
            auth=("portal", SECRET),
        ).json()
        assert intro["active"] is True
        assert intro["sub"] == "23210"
        assert intro["client_id"] == "portal"

        refreshed = client.refresh_token(
            meta["token_endpoint"], refresh_token=token["refresh_token"]
        )
        assert refreshed["refresh_token"] != token["refresh_token"]
        assert refreshed["access_token"] != token["access_token"]

        revoked = httpx.post(
            meta["revocation_endpoint"],
            data={"token": refreshed["access_token"], "token_type_hint": "access_token"},
            auth=("portal", SECRET),
        )
        assert revoked.status_code == 200
        after = httpx.get(
            meta["userinfo_endpoint"],
            headers={"authorization": f"Bearer {refreshed['access_token']}"},
        )
        assert after.status_code == 401

        logout = browser.get(
            meta["end_session_endpoint"],
            params={
                "id_token_hint": token["id_token"],
                "post_logout_redirect_uri": "https://portal.example.org/",
                "state": "bye",
            },
        )
        assert logout.status_code == 303
        assert logout.headers["location"] == "https://portal.example.org/?state=bye"
        again = browser.get(url)
        assert again.status_code == 303
        assert again.headers["location"].startswith("/login")


def test_public_client_with_es256_id_token(bridge: Harness) -> None:
    verifier = secrets.token_urlsafe(48)
    with (
        rp(
            bridge,
            client_id="spa",
            client_secret=None,
            scope="openid profile email",
            token_endpoint_auth_method="none",
        ) as client,
        bridge.client() as browser,
    ):
        url = authorize_url(bridge, client, verifier, nonce="n1")
        callback = sign_in(browser, url, "jdoe")
        token = client.fetch_token(
            discovery(bridge)["token_endpoint"],
            authorization_response=callback.headers["location"],
            code_verifier=verifier,
        )
    header = jwt.get_unverified_header(token["id_token"])
    assert header["alg"] == "ES256"
    claims = verify_id_token(bridge, token["id_token"], "spa")
    assert "email" not in claims  # A6: a scope the registration lacks is dropped
    assert token["scope"] == "openid profile"
    assert "refresh_token" not in token


def test_sign_out_ends_the_tokens_of_the_session_but_not_offline_grants(bridge: Harness) -> None:
    """D4 single logout: tokens bound to the browser session die with it; offline_access
    grants (OIDC Core §11) are not bound to the session and survive."""
    meta = discovery(bridge)
    with bridge.client() as browser:
        tokens = {}
        for client_id, secret, scope in (
            ("spa", None, "openid profile"),
            ("portal", SECRET, "openid profile offline_access"),
        ):
            verifier = secrets.token_urlsafe(48)
            auth = {"token_endpoint_auth_method": "none"} if secret is None else {}
            with rp(bridge, client_id=client_id, client_secret=secret, scope=scope, **auth) as c:
                url = authorize_url(bridge, c, verifier)
                callback = sign_in(browser, url, "bsmith")
                tokens[client_id] = c.fetch_token(
                    meta["token_endpoint"],
                    authorization_response=callback.headers["location"],
                    code_verifier=verifier,
                )
        logout = browser.get(
            meta["end_session_endpoint"], params={"id_token_hint": tokens["spa"]["id_token"]}
        )
        assert logout.status_code == 200
        assert "signed out" in logout.text.lower()

    def userinfo_status(access_token: str) -> int:
        return httpx.get(
            meta["userinfo_endpoint"], headers={"authorization": f"Bearer {access_token}"}
        ).status_code

    assert userinfo_status(tokens["spa"]["access_token"]) == 401
    assert userinfo_status(tokens["portal"]["access_token"]) == 200
    with rp(bridge, scope="openid profile offline_access") as portal:
        refreshed = portal.refresh_token(
            meta["token_endpoint"], refresh_token=tokens["portal"]["refresh_token"]
        )
    assert "access_token" in refreshed


def test_a_code_issued_before_sign_out_cannot_be_redeemed_after_it(bridge: Harness) -> None:
    """D4: sign-out voids the session's codes that were not yet exchanged."""
    meta = discovery(bridge)
    verifier = secrets.token_urlsafe(48)
    with rp(bridge, scope="openid profile") as client, bridge.client() as browser:
        callback = sign_in(browser, authorize_url(bridge, client, verifier), "clocal")
        page = browser.get(meta["end_session_endpoint"])  # no hint: a confirmation page
        fields = hidden_fields(page.text)
        assert browser.post(meta["end_session_endpoint"], data=fields).status_code == 200
        with pytest.raises(OAuthError, match="invalid_grant"):
            client.fetch_token(
                meta["token_endpoint"],
                authorization_response=callback.headers["location"],
                code_verifier=verifier,
            )
