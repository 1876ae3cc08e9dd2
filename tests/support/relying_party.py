"""A small, real relying party on its own origin, for the browser tests.

Every real deployment has its apps on origins other than the bridge's, and the
browser treats such a flow differently (CSP ``form-action`` applies to the
redirect back to the app, cookies are cross-site, a script needs CORS). So the
tests start this app on its own loopback port and reach it as
``http://localhost:PORT`` while the bridge is ``http://127.0.0.1:PORT``: two
origins, two sites.

It plays two clients:

- a confidential web app (``/login``, ``/callback``, ``/logout``, ``/signed-out``)
  that redeems the code on its back channel and shows who signed in;
- a browser-based public client (``/spa/``) whose page script does PKCE itself
  and calls ``/token`` and ``/userinfo`` with ``fetch()`` (CORS).

Its state lives in memory: it is a test double of an app, nothing more.
"""

from __future__ import annotations

import html
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.oauth.rp import pkce
from tests.support.leaks import register_response, register_token
from tests.support.servers import free_port, serve

COOKIE = "rp-session"
WEB_CLIENT_ID = "cross-origin-app"
WEB_SECRET = "cross-origin-secret-0123456789"
SPA_CLIENT_ID = "cross-origin-spa"


@dataclass
class RelyingParty:
    """Where the relying party lives: ``url`` is its own origin (``http://localhost:PORT``)."""

    port: int
    url: str = ""
    issuer: str = ""
    #: state -> (code_verifier, nonce) of authorization requests on their way.
    started: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: RP session cookie -> (person's name, ID token).
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.url = self.url or f"http://localhost:{self.port}"

    @property
    def web_registration(self) -> str:
        return f"""
        name = "Cross-Origin App"
        profile = "oidc"
        client_id = "{WEB_CLIENT_ID}"
        client_secret = "{WEB_SECRET}"
        redirect_uris = ["{self.url}/callback"]
        post_logout_redirect_uris = ["{self.url}/signed-out"]
        scopes = ["openid", "profile", "email"]
        """

    def spa_registration(self, web_origins: list[str] | None = None) -> str:
        origins = json.dumps(web_origins if web_origins is not None else [self.url])
        return f"""
        name = "Cross-Origin SPA"
        profile = "oidc"
        client_id = "{SPA_CLIENT_ID}"
        redirect_uris = ["{self.url}/spa/"]
        scopes = ["openid", "profile", "email"]
        web_origins = {origins}
        """


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<link rel='icon' href='data:,'><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{body}</body></html>",
        headers={"cache-control": "no-store"},
    )


def create_relying_party(rp: RelyingParty) -> Starlette:
    async def home(request: Request) -> Response:
        found = rp.sessions.get(request.cookies.get(COOKIE, ""))
        if found is None:
            return _page("Relying party", "<p id='status'>Not signed in</p>")
        return _page("Relying party", f"<p id='status'>Signed in as {html.escape(found[0])}</p>")

    async def login(request: Request) -> Response:
        verifier, challenge = pkce()
        state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        rp.started[state] = (verifier, nonce)
        params = {
            "response_type": "code",
            "client_id": WEB_CLIENT_ID,
            "redirect_uri": f"{rp.url}/callback",
            "scope": "openid profile email",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if request.query_params.get("prompt"):
            params["prompt"] = request.query_params["prompt"]
        return RedirectResponse(f"{rp.issuer}/authorize?{urlencode(params)}", 303)

    async def callback(request: Request) -> Response:
        query = request.query_params
        started = rp.started.pop(query.get("state", ""), None)
        if started is None or query.get("iss") != rp.issuer or "code" not in query:
            return _page("Relying party: refused", f"<p id='status'>{html.escape(str(query))}</p>")
        async with httpx.AsyncClient(timeout=10) as http:
            token = await http.post(
                f"{rp.issuer}/token",
                data={
                    "grant_type": "authorization_code",
                    "code": query["code"],
                    "redirect_uri": f"{rp.url}/callback",
                    "code_verifier": started[0],
                },
                auth=(WEB_CLIENT_ID, WEB_SECRET),
            )
            token.raise_for_status()
            register_token(query["code"])
            register_response(token)
            tokens = token.json()
            info = await http.get(
                f"{rp.issuer}/userinfo",
                headers={"authorization": f"Bearer {tokens['access_token']}"},
            )
            info.raise_for_status()
        key = secrets.token_urlsafe(12)
        rp.sessions[key] = (info.json()["name"], tokens["id_token"])
        response = RedirectResponse(f"{rp.url}/", 303)
        response.set_cookie(COOKIE, key, httponly=True, samesite="lax")
        return response

    async def logout(request: Request) -> Response:
        """RP-initiated logout; ``?hint=no`` leaves the ID token out (the bridge then asks)."""
        found = rp.sessions.pop(request.cookies.get(COOKIE, ""), None)
        params = {
            "client_id": WEB_CLIENT_ID,
            "post_logout_redirect_uri": f"{rp.url}/signed-out",
            "state": "bye",
        }
        if found is not None and request.query_params.get("hint") != "no":
            params["id_token_hint"] = found[1]
        response = RedirectResponse(f"{rp.issuer}/end_session?{urlencode(params)}", 303)
        response.delete_cookie(COOKIE)
        return response

    async def signed_out(request: Request) -> Response:
        state = html.escape(request.query_params.get("state", ""))
        return _page("Signed out of the relying party", f"<p id='status'>state={state}</p>")

    async def spa(request: Request) -> Response:
        return HTMLResponse(_SPA.replace("ISSUER", json.dumps(rp.issuer)))

    async def call_api(request: Request) -> Response:
        """A page that calls ``/userinfo`` and ``/token`` from this origin with the given token."""
        return HTMLResponse(_CALL.replace("ISSUER", json.dumps(rp.issuer)))

    return Starlette(
        routes=[
            Route("/", home),
            Route("/login", login),
            Route("/callback", callback),
            Route("/logout", logout),
            Route("/signed-out", signed_out),
            Route("/spa/", spa),
            Route("/spa/call", call_api),
        ]
    )


@contextmanager
def running_relying_party(issuer: str, rp: RelyingParty) -> Iterator[RelyingParty]:
    """Serve ``rp`` on its port (bound to 127.0.0.1, reached as ``rp.url``)."""
    rp.issuer = issuer
    with serve(create_relying_party(rp), port=rp.port):
        yield rp


def new_relying_party() -> RelyingParty:
    return RelyingParty(port=free_port())


# A public client in the page: PKCE S256 with WebCrypto, the code redeemed with fetch().
_SPA = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<link rel="icon" href="data:,"><title>SPA</title></head>
<body><h1>SPA</h1><p id="status">starting</p><pre id="out"></pre>
<script>
const issuer = ISSUER;
const clientId = "%s";
const redirectUri = location.origin + "/spa/";
const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
  .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
const show = (status, data) => {
  document.getElementById("status").textContent = status;
  document.getElementById("out").textContent = JSON.stringify(data);
};
async function start() {
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(48)));
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  const challenge = b64url(digest);
  const state = b64url(crypto.getRandomValues(new Uint8Array(12)));
  sessionStorage.setItem("pkce", JSON.stringify({verifier, state}));
  const params = new URLSearchParams({response_type: "code", client_id: clientId,
    redirect_uri: redirectUri, scope: "openid profile email", state,
    code_challenge: challenge, code_challenge_method: "S256"});
  location.assign(issuer + "/authorize?" + params);
}
async function finish(query) {
  const saved = JSON.parse(sessionStorage.getItem("pkce"));
  if (query.get("state") !== saved.state) return show("state mismatch", {});
  const token = await fetch(issuer + "/token", {method: "POST", body: new URLSearchParams({
    grant_type: "authorization_code", code: query.get("code"), redirect_uri: redirectUri,
    client_id: clientId, code_verifier: saved.verifier})});
  const tokens = await token.json();
  if (!token.ok) return show("token error", tokens);
  const info = await fetch(issuer + "/userinfo",
    {headers: {Authorization: "Bearer " + tokens.access_token}});
  const claims = await info.json();
  window.accessToken = tokens.access_token;
  show(info.ok ? "signed in as " + claims.name : "userinfo error", claims);
}
const query = new URLSearchParams(location.search);
(query.has("code") ? finish(query) : start()).catch((e) => show("failed: " + e, {}));
</script></body></html>""".replace("%s", SPA_CLIENT_ID)

# Calls the bridge's token-side endpoints from whatever origin serves it.
_CALL = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<link rel="icon" href="data:,"><title>Call</title></head>
<body><h1>Call</h1><p id="userinfo">pending</p><p id="token">pending</p>
<script>
const issuer = ISSUER;
const token = new URLSearchParams(location.search).get("token");
const later = (r) => r.status === 503 ? ` (retry after ${r.headers.get("Retry-After")} s)` : "";
fetch(issuer + "/userinfo", {headers: {Authorization: "Bearer " + token}})
  .then((r) => r.json().then((c) => "read: " + (c.name ?? c.error) + later(r)),
        (e) => "blocked: " + e)
  .then((t) => { document.getElementById("userinfo").textContent = t; });
fetch(issuer + "/token", {method: "POST", body: new URLSearchParams({
    grant_type: "authorization_code", code: "x", client_id: "%s",
    redirect_uri: location.origin + "/spa/", code_verifier: "x".repeat(43)})})
  .then((r) => r.json().then((b) => "read: " + b.error + later(r)), (e) => "blocked: " + e)
  .then((t) => { document.getElementById("token").textContent = t; });
</script></body></html>""".replace("%s", SPA_CLIENT_ID)
