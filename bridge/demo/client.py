"""The demo OIDC relying party, served by ``bridge demo`` on an origin of its own.

A small but honest RP: it sends the browser to ``/authorize`` with state,
nonce and PKCE S256, exchanges the code at ``/token`` over real HTTP, verifies
the ID token's signature against the published JWKS (plus iss, aud, nonce),
calls ``/userinfo`` and shows both. Like every real app it lives on another
origin than the bridge (``http://localhost:PORT+1`` beside
``http://127.0.0.1:PORT``), so the demo shows what browsers do across origins.
It is a public client (PKCE, no secret), so it holds nothing worth stealing;
its per-browser state lives in process memory, which is fine for a
single-process demo and is never used otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bridge.middleware import SecurityHeadersMiddleware, page_csp
from bridge.settings import UiSettings
from bridge.templating import environment

COOKIE = "demo-client"
CLIENT_ID = "demo-client"


@dataclass
class _Browser:
    pending: dict[str, tuple[str, str]] = field(default_factory=dict)  # state -> (verifier, nonce)
    result: dict[str, Any] | None = None


def create_demo_client(
    issuer: str, base_url: str, ui: UiSettings | None = None, client_id: str = CLIENT_ID
) -> Starlette:
    """The demo RP for ``issuer``, served at the root of ``base_url`` (its own origin)."""
    browsers: dict[str, _Browser] = {}
    redirect_uri = f"{base_url}/callback"
    home_url = f"{base_url}/"

    def render(name: str, context: dict[str, Any], headers: dict[str, str]) -> HTMLResponse:
        page = environment().get_template(name).render(ui=ui, issuer=issuer, **context)
        return HTMLResponse(page, headers=headers)

    def browser_of(request: Request) -> tuple[str, _Browser]:
        key = request.cookies.get(COOKIE, "")
        if key not in browsers:
            key = secrets.token_urlsafe(16)
            if len(browsers) > 1000:  # a demo: bound the memory it can take
                browsers.clear()
            browsers[key] = _Browser()
        return key, browsers[key]

    def with_cookie(response: Response, key: str) -> Response:
        response.set_cookie(COOKIE, key, httponly=True, samesite="lax", path="/")
        return response

    async def home(request: Request) -> Response:
        key, state = browser_of(request)
        page = render(
            "demo/client.html",
            {
                "title": "Demo Member Portal",
                "result": state.result,
                "pretty": lambda data: json.dumps(data, indent=2, ensure_ascii=False),
            },
            # Signing out posts here, then goes on to the bridge's /end_session.
            {"cache-control": "no-store", "content-security-policy": page_csp([issuer])},
        )
        return with_cookie(page, key)

    async def login(request: Request) -> Response:
        key, state = browser_of(request)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        nonce = secrets.token_urlsafe(16)
        st = secrets.token_urlsafe(16)
        state.pending = {st: (verifier, nonce)}
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid profile email phone",
            "state": st,
            "nonce": nonce,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
        if request.query_params.get("prompt") == "login":
            params["prompt"] = "login"
        return with_cookie(RedirectResponse(f"{issuer}/authorize?{urlencode(params)}", 303), key)

    async def callback(request: Request) -> Response:
        key, state = browser_of(request)
        query = request.query_params
        if "error" in query:
            state.result = {
                "error": query.get("error"),
                "description": query.get("error_description"),
            }
            return with_cookie(RedirectResponse(home_url, 303), key)
        pending = state.pending.pop(query.get("state", ""), None)
        if pending is None or query.get("iss") != issuer:
            state.result = {"error": "state or iss did not match: request refused"}
            return with_cookie(RedirectResponse(home_url, 303), key)
        verifier, nonce = pending
        async with httpx.AsyncClient(timeout=10) as http:
            token = await http.post(
                f"{issuer}/token",
                data={
                    "grant_type": "authorization_code",
                    "code": query.get("code", ""),
                    "redirect_uri": redirect_uri,
                    "client_id": client_id,
                    "code_verifier": verifier,
                },
            )
            body = token.json()
            if token.status_code != 200:
                state.result = {
                    "error": body.get("error"),
                    "description": body.get("error_description"),
                }
                return with_cookie(RedirectResponse(home_url, 303), key)
            jwks = jwt.PyJWKSet.from_dict(
                (await http.get(f"{issuer}/.well-known/jwks.json")).json()
            )
            kid = jwt.get_unverified_header(body["id_token"]).get("kid")
            signing = next(k for k in jwks.keys if k.key_id == kid)
            claims = jwt.decode(
                body["id_token"],
                signing.key,
                algorithms=["RS256", "ES256"],
                audience=client_id,
                issuer=issuer,
            )
            if claims.get("nonce") != nonce:
                raise ValueError("nonce mismatch")
            userinfo = (
                await http.get(
                    f"{issuer}/userinfo",
                    headers={"authorization": f"Bearer {body['access_token']}"},
                )
            ).json()
        state.result = {
            "id_token_claims": claims,
            "userinfo": userinfo,
            "id_token": body["id_token"],
            "received_at": time.strftime("%H:%M:%S"),
        }
        return with_cookie(RedirectResponse(home_url, 303), key)

    async def logout(request: Request) -> Response:
        key, state = browser_of(request)
        hint = (state.result or {}).get("id_token")
        state.result = None
        params = {"post_logout_redirect_uri": home_url, "client_id": client_id}
        if hint:
            params["id_token_hint"] = hint
        return with_cookie(RedirectResponse(f"{issuer}/end_session?{urlencode(params)}", 303), key)

    async def forgot_password(request: Request) -> Response:
        return render(
            "error.html",
            {
                "title": "Forgot your password?",
                "message": "In a real deployment this link opens iMIS's own password reset page "
                "([ui] forgot_password_url). In the demo every person's password is "
                "listed in the terminal where the demo was started.",
            },
            {},
        )

    return Starlette(
        routes=[
            Route("/forgot-password", forgot_password),
            Route("/", home),
            Route("/login", login),
            Route("/callback", callback),
            Route("/logout", logout, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=Path(__file__).parent.parent / "static")),
        ],
        middleware=[Middleware(SecurityHeadersMiddleware)],
    )
