"""A minimal relying party over raw HTTP, for the OIDC security and conformance tests.

Unlike Authlib's client (used by ``tests/e2e/test_oidc_flow.py``) it lets a test
send exactly the request it wants: a wrong verifier, a repeated parameter, a
code of another client. The back channel goes through one :class:`httpx.Client`
the caller owns (see :func:`http_client`); the browser side is another.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt

from tests.support.bridge import Harness, sign_in
from tests.support.leaks import register, register_response

TIMEOUT = 30


def http_client(**kwargs: Any) -> httpx.Client:
    """A client for the loopback bridge. ``verify=False`` because every URL is plain
    http, and building the default TLS context costs ~50 ms per client."""
    return httpx.Client(verify=False, timeout=TIMEOUT, **kwargs)


def new_browser(bridge: Harness, **kwargs: Any) -> httpx.Client:
    """A fresh browser (its own cookie jar) on ``bridge``."""
    return bridge.client(verify=False, **kwargs)


def pkce() -> tuple[str, str]:
    """A fresh ``(code_verifier, S256 code_challenge)`` pair."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def query_of(location: str) -> dict[str, str]:
    """The query of a redirect as single values (a repeated parameter fails the test)."""
    parsed = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), parsed
    return {k: v[0] for k, v in parsed.items()}


@dataclass
class Authorization:
    """The outcome of one authorization request that reached the client with a code."""

    code: str
    verifier: str
    state: str | None
    nonce: str | None
    redirect_uri: str
    params: dict[str, str]


@dataclass
class Rp:
    """One registered client of a running bridge."""

    bridge: Harness
    http: httpx.Client
    client_id: str
    secret: str | None
    redirect_uri: str
    scope: str = "openid profile email phone offline_access"
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.bridge.url

    # --- front channel ---------------------------------------------------------------

    def authorize_params(self, **overrides: str | None) -> dict[str, str]:
        """A valid authorization request (fresh state, nonce, PKCE) with ``overrides``.

        A value of None removes that parameter. The verifier is returned under
        the key ``code_verifier`` only so the caller can keep it; it is never sent.
        """
        verifier, challenge = pkce()
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": secrets.token_urlsafe(8),
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "code_verifier": verifier,
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def authorize_url(self, params: dict[str, str]) -> str:
        sent = {k: v for k, v in params.items() if k != "code_verifier"}
        return f"{self.url}/authorize?{urlencode(sent)}"

    def sign_in(
        self, browser: httpx.Client, username: str = "jdoe", **overrides: str | None
    ) -> Authorization:
        """Run the authorization request through the login form; returns the code."""
        params = self.authorize_params(**overrides)
        response = sign_in(browser, self.authorize_url(params), username)
        return self.authorization_from(response, params)

    def authorization_from(self, response: httpx.Response, params: dict[str, str]) -> Authorization:
        """The code in ``response``, a redirect to this client (fails the test otherwise)."""
        assert response.status_code == 303, response.text
        location = response.headers["location"]
        redirect_uri = params.get("redirect_uri", self.redirect_uri)
        assert location.startswith(redirect_uri + "?"), location
        got = query_of(location)
        assert "code" in got, got
        assert got["iss"] == self.url
        return Authorization(
            code=got["code"],
            verifier=params["code_verifier"],
            state=got.get("state"),
            nonce=params.get("nonce"),
            redirect_uri=redirect_uri,
            params=got,
        )

    # --- back channel ------------------------------------------------------------------

    def _auth(self, basic: bool) -> tuple[httpx.BasicAuth | None, dict[str, str]]:
        if self.secret is None:
            return None, {"client_id": self.client_id}
        if basic:
            return httpx.BasicAuth(self.client_id, self.secret), {}
        return None, {"client_id": self.client_id, "client_secret": self.secret}

    def post(self, path: str, data: dict[str, str], *, basic: bool = True) -> httpx.Response:
        auth, creds = self._auth(basic)
        register(self.secret)  # no log line may hold the secret or what the bridge answers
        response = self.http.post(
            f"{self.url}{path}",
            data={**creds, **data},
            auth=auth,
            headers=self.headers,
        )
        register_response(response)
        return response

    def redeem(
        self, authz: Authorization, *, basic: bool = True, **overrides: str | None
    ) -> httpx.Response:
        data: dict[str, str | None] = {
            "grant_type": "authorization_code",
            "code": authz.code,
            "redirect_uri": authz.redirect_uri,
            "code_verifier": authz.verifier,
        }
        data.update(overrides)
        return self.post("/token", {k: v for k, v in data.items() if v is not None}, basic=basic)

    def tokens(self, browser: httpx.Client, username: str = "jdoe", **overrides: str | None) -> Any:
        """Sign in and redeem the code: the token response body (asserted 200)."""
        authz = self.sign_in(browser, username, **overrides)
        response = self.redeem(authz)
        assert response.status_code == 200, response.text
        return response.json()

    def refresh(self, refresh_token: str, **extra: str) -> httpx.Response:
        return self.post(
            "/token", {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
        )

    def introspect(self, token: str) -> dict[str, Any]:
        response = self.post("/introspect", {"token": token})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def revoke(self, token: str, **extra: str) -> httpx.Response:
        return self.post("/revoke", {"token": token, **extra})

    def userinfo(self, access_token: str) -> httpx.Response:
        return self.http.get(
            f"{self.url}/userinfo",
            headers={"authorization": f"Bearer {access_token}"},
        )

    # --- ID tokens -----------------------------------------------------------------------

    def verify_id_token(self, token: str) -> dict[str, Any]:
        """Verify ``token`` against the published JWKS as an RP does; returns its claims."""
        return verify_with_jwks(self.http, self.bridge, token, audience=self.client_id)


def jwks(http: httpx.Client, bridge: Harness) -> dict[str, Any]:
    response = http.get(f"{bridge.url}/.well-known/jwks.json")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def verify_with_jwks(
    http: httpx.Client, bridge: Harness, token: str, *, audience: str
) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    published = {k["kid"]: k for k in jwks(http, bridge)["keys"]}
    assert header["kid"] in published, "the signing key is not in the JWKS"
    key = jwt.PyJWK(published[header["kid"]])
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=[header["alg"]], audience=audience, issuer=bridge.url
    )
    return claims
