"""A demo Zendesk: a tiny help center that receives the bridge's JWT exactly as Zendesk would.

Owns the pages under ``/_demo/zendesk/{subdomain}`` (mounted only when
``settings.demo`` is true, or served alone by tests): a Help Center that sends
visitors who are not signed in to the registration's remote login URL with
``return_to``, ``brand_id``, ``locale_id`` and ``timestamp``; ``/access/jwt``,
which verifies the posted token like Zendesk (HS256 only, the registration's
current shared secret, ``iat`` within three minutes, no replayed ``jti``, email
and name present, phone in E.164) and on failure redirects to the remote logout
URL with ``kind=error&message=...``; and stand-ins for ``/access/normal`` and
``/access/sso_bypass``. Its state (demo sign-ins, used jti values) lives in
process memory, which is enough for a demo and wrong for anything else: it must
never be mounted in production, it holds no real accounts, and it never
derives the shared secret from anything but the registry.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio.to_thread
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bridge.registry import Registration
from bridge.services import Services, services
from bridge.templating import render

MOUNT_PATH = "/_demo/zendesk"
#: Zendesk refuses a token whose iat is further than this from its clock.
IAT_WINDOW_SECONDS = 180
#: How many demo sign-ins and used jti values are remembered (oldest forgotten first).
MAX_REMEMBERED = 10_000
#: What the demo sends as brand_id and locale_id (Zendesk sends its own numbers).
DEMO_BRAND_ID = "360000000001"
DEMO_LOCALE_ID = "1"
_STATIC = Path(__file__).parent.parent / "static"
#: Zendesk's rule for ``phone``, written here rather than borrowed from the
#: profile: the demo checks what the bridge sends, it does not trust it.
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")

SecretLookup = Callable[[str], str | None]
UrlLookup = Callable[[str], str | None]


@dataclass
class DemoSignIn:
    """One browser signed in to the demo help center, and what its token said."""

    header: dict[str, Any]
    claims: dict[str, Any]
    at: int


@dataclass
class _State:
    sign_ins: OrderedDict[str, DemoSignIn] = field(default_factory=OrderedDict)
    #: jti -> iat. In memory, per process: enough for a demo (Zendesk keeps them centrally).
    used_jti: OrderedDict[str, int] = field(default_factory=OrderedDict)

    def remember_jti(self, jti: str, iat: int, now: int) -> bool:
        """False when ``jti`` was already used; otherwise remember it."""
        while self.used_jti and (
            len(self.used_jti) >= MAX_REMEMBERED
            or next(iter(self.used_jti.values())) < now - 2 * IAT_WINDOW_SECONDS
        ):
            self.used_jti.popitem(last=False)
        if jti in self.used_jti:
            return False
        self.used_jti[jti] = iat
        return True

    def sign_in(self, header: dict[str, Any], claims: dict[str, Any], now: int) -> str:
        sid = secrets.token_urlsafe(24)
        self.sign_ins[sid] = DemoSignIn(header=header, claims=claims, at=now)
        while len(self.sign_ins) > MAX_REMEMBERED:
            self.sign_ins.popitem(last=False)
        return sid


@dataclass(frozen=True, slots=True)
class Verified:
    header: dict[str, Any]
    claims: dict[str, Any]


def verify_token(token: str, secret: str, *, now: int, state: _State) -> Verified | str:
    """Check a posted token as Zendesk does: the claims, or Zendesk-like error text."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return "Invalid JWT: the token could not be read"
    if header.get("alg") != "HS256":
        return f"Unsupported JWT algorithm {header.get('alg')!r}: only HS256 is accepted"
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret.encode("utf-8"),
            algorithms=["HS256"],
            options={"verify_iat": False, "require": ["iat", "jti"]},
        )
    except jwt.InvalidSignatureError:
        return "Invalid JWT signature"
    except jwt.MissingRequiredClaimError as exc:
        return f"The JWT has no {exc.claim} claim"
    except jwt.PyJWTError as exc:
        return f"Invalid JWT: {exc}"
    iat = claims["iat"]
    if isinstance(iat, bool) or not isinstance(iat, int):
        return "The iat claim must be a whole number of seconds"
    if abs(now - iat) > IAT_WINDOW_SECONDS:
        return "The JWT has expired: iat is more than 3 minutes from Zendesk's clock"
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti:
        return "The jti claim must be a non-empty string"
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email.strip("@"):
        return "Please provide a valid email address"
    name = claims.get("name")
    if not isinstance(name, str) or not name.strip():
        return "Please provide a name"
    phone = claims.get("phone")
    if phone is not None and not (isinstance(phone, str) and _E164.match(phone)):
        return "Phone number is invalid: Zendesk expects E.164, e.g. +12025550100"
    if not state.remember_jti(jti, iat, now):
        return "The JWT has already been used (jti reused)"
    return Verified(header=header, claims=claims)


# --- the app ---------------------------------------------------------------------


def create_demo_zendesk(
    get_secret: SecretLookup | None = None, remote_login_url: UrlLookup | None = None
) -> Starlette:
    """The demo Zendesk. Both look-ups take a subdomain and are called at request time.

    ``get_secret`` returns the registration's current shared secret (so a new
    secret is seen at once); ``remote_login_url`` the bridge's remote login URL
    of the registration with that subdomain. Either returns None when there is
    no such registration. Without them (mounted in a demo bridge), both are
    answered by the bridge's registry, found in the request's lifespan state.
    """
    state = _State()

    def lookups(request: Request) -> tuple[SecretLookup, UrlLookup]:
        if get_secret is not None and remote_login_url is not None:
            return get_secret, remote_login_url
        found = services(request)
        return bridge_lookups(lambda: found)

    async def lookup(fn: UrlLookup, subdomain: str) -> str | None:
        return await anyio.to_thread.run_sync(fn, subdomain)

    async def known(request: Request) -> tuple[str, str] | Response:
        subdomain = request.path_params["subdomain"]
        login_url = await lookup(lookups(request)[1], subdomain)
        if login_url is None:
            return _page(
                request,
                "demo/zendesk_message.html",
                subdomain,
                title="No such help center",
                message=f"No Zendesk registration of the bridge uses the subdomain {subdomain!r}.",
                status_code=404,
            )
        return subdomain, login_url

    async def help_center(request: Request) -> Response:
        found = await known(request)
        if isinstance(found, Response):
            return found
        subdomain, login_url = found
        signed_in = state.sign_ins.get(request.cookies.get(_cookie(subdomain), ""))
        if signed_in is None:
            query = {
                "return_to": str(request.url),
                "brand_id": DEMO_BRAND_ID,
                "locale_id": DEMO_LOCALE_ID,
                "timestamp": str(int(time.time())),
            }
            return RedirectResponse(f"{login_url}?{urlencode(query)}", status_code=302)
        return _page(
            request,
            "demo/zendesk_hc.html",
            subdomain,
            title="Help Center",
            signed_in=signed_in,
            rows=_rows(signed_in.claims),
            header_json=json.dumps(signed_in.header, separators=(",", ":")),
            received=time.strftime("%H:%M:%S", time.localtime(signed_in.at)),
            path=request.url.path.removeprefix(_base_path(request, subdomain)) or "/hc",
        )

    async def access_jwt(request: Request) -> Response:
        found = await known(request)
        if isinstance(found, Response):
            return found
        subdomain, login_url = found
        form = await request.form()
        token, return_to = form.get("jwt"), form.get("return_to")
        secret = await lookup(lookups(request)[0], subdomain)
        now = int(time.time())
        outcome: Verified | str
        if not isinstance(token, str) or not token:
            outcome = "No JWT was posted"
        elif not secret:
            outcome = "JWT single sign-on is not set up: no shared secret"
        else:
            outcome = verify_token(token, secret, now=now, state=state)
        if isinstance(outcome, str):
            query = urlencode({"kind": "error", "message": outcome})
            return RedirectResponse(f"{login_url}/logout?{query}", status_code=302)
        sid = state.sign_in(outcome.header, outcome.claims, now)
        target = _follow(request, subdomain, return_to if isinstance(return_to, str) else None)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            _cookie(subdomain),
            sid,
            path=_base_path(request, subdomain),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    async def sign_out(request: Request) -> Response:
        found = await known(request)
        if isinstance(found, Response):
            return found
        subdomain, login_url = found
        signed_in = state.sign_ins.pop(request.cookies.get(_cookie(subdomain), ""), None)
        query = {"brand_id": DEMO_BRAND_ID}
        if signed_in is not None:
            query["email"] = str(signed_in.claims.get("email", ""))
            query["external_id"] = str(signed_in.claims.get("external_id", ""))
        response = RedirectResponse(f"{login_url}/logout?{urlencode(query)}", status_code=302)
        response.delete_cookie(_cookie(subdomain), path=_base_path(request, subdomain))
        return response

    async def access_normal(request: Request) -> Response:
        found = await known(request)
        if isinstance(found, Response):
            return found
        return _page(request, "demo/zendesk_access.html", found[0], title="Sign in", bypass=False)

    async def access_bypass(request: Request) -> Response:
        found = await known(request)
        if isinstance(found, Response):
            return found
        return _page(request, "demo/zendesk_access.html", found[0], title="SSO bypass", bypass=True)

    async def home(request: Request) -> Response:
        base = _base_path(request, request.path_params["subdomain"])
        return RedirectResponse(f"{base}/hc", status_code=302)

    routes: list[BaseRoute] = [
        Mount("/static", app=StaticFiles(directory=_STATIC), name="static"),
        Route("/{subdomain}", home),
        Route("/{subdomain}/hc", help_center),
        Route("/{subdomain}/hc/{rest:path}", help_center),
        Route("/{subdomain}/access/jwt", access_jwt, methods=["POST"]),
        Route("/{subdomain}/access/normal", access_normal),
        Route("/{subdomain}/access/sso_bypass", access_bypass),
        Route("/{subdomain}/access/logout", sign_out),
    ]
    return Starlette(routes=routes)


def _cookie(subdomain: str) -> str:
    return f"demo-zendesk-{subdomain}"


def _root(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _base_path(request: Request, subdomain: str) -> str:
    return f"{_root(request)}/{subdomain}"


def _follow(request: Request, subdomain: str, return_to: str | None) -> str:
    """Where the demo goes after a sign-in: return_to when it is this demo, else its /hc."""
    base = _base_path(request, subdomain)
    if return_to and return_to.startswith("/") and not return_to.startswith("//"):
        return base + return_to
    if return_to:
        parts = urlsplit(return_to)
        here = urlsplit(str(request.url))
        if (parts.scheme, parts.netloc) == (here.scheme, here.netloc) and (
            parts.path == base or parts.path.startswith(base + "/")
        ):
            return return_to
    return f"{base}/hc"


def _rows(claims: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key in sorted(claims):
        value = claims[key]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        rows.append((key, text))
    return rows


def _page(
    request: Request, template: str, subdomain: str, *, status_code: int = 200, **context: Any
) -> Response:
    base = _base_path(request, subdomain)
    return render(
        request,
        template,
        {
            "subdomain": subdomain,
            "base": base,
            "stylesheet": f"{_root(request)}/static/bridge.css",
            **context,
        },
        status_code=status_code,
        headers={"cache-control": "no-store"},
    )


# --- wiring into the bridge ---------------------------------------------------------


def bridge_lookups(get_services: Callable[[], Services]) -> tuple[SecretLookup, UrlLookup]:
    """The two look-ups of :func:`create_demo_zendesk`, answered by a running bridge.

    ``get_services`` returns the bridge's :class:`~bridge.services.Services`; the
    registry is asked on every call, so a secret changed by the CLI or the
    admin is used on the next sign-in.
    """

    # The demo plays Zendesk, so it reads a Zendesk registration's options by name
    # (as an admin reads them in Admin Center), not through the bridge's profile.
    def registration(subdomain: str) -> Registration | None:
        for reg in get_services().registry.all():
            if reg.profile == "zendesk" and getattr(reg.options, "subdomain", None) == subdomain:
                return reg
        return None

    def get_secret(subdomain: str) -> str | None:
        found = registration(subdomain)
        return str(getattr(found.options, "shared_secret", "")) if found is not None else None

    def remote_login_url(subdomain: str) -> str | None:
        found = registration(subdomain)
        if found is None:
            return None
        return f"{get_services().settings.issuer}/zendesk/{found.slug}"

    return get_secret, remote_login_url


def mount_demo_zendesk() -> Mount:
    """The demo Zendesk at :data:`MOUNT_PATH` of a demo bridge (its registry via lifespan state)."""
    return Mount(MOUNT_PATH, app=create_demo_zendesk())
