"""A demo Discourse forum: it asks the bridge for a sign-in exactly as Discourse does.

Owns the pages under ``/_demo/discourse/{slug}`` (mounted by ``bridge demo``,
see :func:`mount_demo_discourse`, or served alone by tests): a forum home with a
Log In link; ``/session/sso``, which sends the browser to the bridge's connect URL with a
signed request as Discourse's ``DiscourseConnect.generate_url`` does (a random
hex nonce remembered for ten minutes and bound to this browser,
``return_sso_url`` back to this forum, the hex HMAC-SHA256 of the strict Base64
payload); ``/session/sso_login``, which checks the answer as Discourse's
``DiscourseConnectBase.parse`` and ``SessionController#sso_login`` do (Base64
alphabet, signature, nonce known, unused and from this browser, then consumed;
``failed=true``; ``external_id`` present) and shows the fields it received; and
``/session/logout``, which goes to the registration's logout URL like
Discourse's ``logout_redirect``. It deliberately re-implements the protocol
from Discourse's side instead of calling :mod:`bridge.profiles.discourse`, so
it checks that code rather than agreeing with it. One check is the demo's own:
it refuses an answer carrying ``admin`` or ``moderator`` (SECURITY.md E8),
which real Discourse would apply. Mounted in a demo bridge, forum ``{slug}``
plays the forum of the bridge's ``discourse`` registration ``{slug}``, whose
connect secret it reads from the registry at every request. Its state lives in
process memory: it must never be mounted in production and holds no real accounts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bridge.services import Services, services
from bridge.templating import render

MOUNT_PATH = "/_demo/discourse"
#: DiscourseConnectBase.nonce_expiry_time and used_nonce_expiry_time.
NONCE_SECONDS = 600
USED_NONCE_SECONDS = 24 * 3600
#: How many nonces and sign-ins are remembered per process (oldest forgotten first).
MAX_REMEMBERED = 10_000
#: DiscourseConnect::BANNED_EXTERNAL_IDS.
BANNED_EXTERNAL_IDS = frozenset({"none", "nil", "blank", "null"})
_NOT_BASE64 = re.compile(r"[^a-zA-Z0-9=\r\n/+]")
_STATIC = Path(__file__).parent.parent / "static"


@dataclass(frozen=True, slots=True)
class DemoForumSettings:
    """What a forum admin types into Discourse: the connect URL, its secret, logout_redirect."""

    connect_url: str
    secret: str = field(repr=False)
    logout_redirect: str | None = None


#: slug -> the forum's settings, or None when there is no such forum. Called per
#: request, in a worker thread (a bridge's registry may ask its database).
ForumLookup = Callable[[str], DemoForumSettings | None]
ForumHandler = Callable[[Request, str, DemoForumSettings], Awaitable[Response]]


@dataclass
class _Nonce:
    slug: str
    browser: str
    return_path: str
    expires: float


@dataclass
class DemoSignIn:
    """One browser signed in to a demo forum, and the fields the bridge sent."""

    slug: str
    fields: dict[str, str]
    at: float


@dataclass
class _State:
    nonces: OrderedDict[str, _Nonce] = field(default_factory=OrderedDict)
    #: nonce -> when it stops being remembered as used.
    used: OrderedDict[str, float] = field(default_factory=OrderedDict)
    sign_ins: OrderedDict[str, DemoSignIn] = field(default_factory=OrderedDict)

    def forget_old(self, now: float) -> None:
        nonces, used = self.nonces, self.used
        while nonces and (
            len(nonces) > MAX_REMEMBERED or next(iter(nonces.values())).expires < now
        ):
            nonces.popitem(last=False)
        while used and (len(used) > MAX_REMEMBERED or next(iter(used.values())) < now):
            used.popitem(last=False)
        while len(self.sign_ins) > MAX_REMEMBERED:
            self.sign_ins.popitem(last=False)


class ForumError(Exception):
    """An answer the demo forum refuses; ``message`` is Discourse's wording where it has one."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def _sign(payload: str, secret: str) -> str:
    """OpenSSL::HMAC.hexdigest("sha256", secret, payload), as DiscourseConnectBase.sign."""
    return hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_request(
    settings: DemoForumSettings, nonce: str, return_sso_url: str, *, prompt_none: bool = False
) -> str:
    """The URL Discourse sends the browser to: ``connect_url?sso=…&sig=…`` (``to_url``)."""
    fields = {"nonce": nonce, "return_sso_url": return_sso_url}
    if prompt_none:
        fields["prompt"] = "none"
    payload = base64.b64encode(urlencode(fields).encode("utf-8")).decode("ascii")
    query = f"sso={quote_plus(payload)}&sig={_sign(payload, settings.secret)}"
    base = settings.connect_url
    return f"{base}{'&' if '?' in base else '?'}{query}"


def parse_answer(sso: str | None, sig: str | None, secret: str) -> dict[str, str]:
    """The fields of an answer, checked as DiscourseConnectBase.parse checks them."""
    if not sso:
        raise ForumError("The answer has no sso field")
    if _NOT_BASE64.search(sso):
        raise ForumError(
            "The SSO field should be Base64 encoded, using only A-Z, a-z, 0-9, +, /, "
            "and = characters."
        )
    if not sig or not hmac.compare_digest(_sign(sso, secret).encode(), sig.encode()):
        raise ForumError("Bad signature for payload")
    try:  # Ruby's Base64.decode64 is lenient; so is this
        decoded = base64.b64decode(sso + "=" * (-len(sso) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ForumError("The payload could not be decoded") from None
    return dict(parse_qsl(decoded, keep_blank_values=True))


def create_demo_forum(
    lookup: ForumLookup | None = None, *, clock: Callable[[], float] = time.time
) -> Starlette:
    """The demo forum. ``lookup`` gives a slug's settings at request time (a new secret is
    seen at once); without it (mounted in a demo bridge) the bridge's registry answers,
    found in the request's lifespan state. ``clock`` is the time, in seconds, that nonces
    expire by."""
    state = _State()

    def lookup_for(request: Request) -> ForumLookup:
        return lookup if lookup is not None else bridge_lookup(services(request))

    def forum_page(handler: ForumHandler) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` for a known forum slug; a 404 page for any other."""

        async def endpoint(request: Request) -> Response:
            slug = request.path_params["slug"]
            settings = await anyio.to_thread.run_sync(lookup_for(request), slug)
            if settings is None:
                return _page(
                    request,
                    "demo/discourse_message.html",
                    slug,
                    title="No such forum",
                    message=f"No Discourse registration of the bridge has the slug {slug!r}.",
                    status_code=404,
                )
            return await handler(request, slug, settings)

        return endpoint

    async def home(request: Request, slug: str, settings: DemoForumSettings) -> Response:
        signed_in = _signed_in(request, state, slug)
        return _page(
            request,
            "demo/discourse_home.html",
            slug,
            title="Member Forum",
            signed_in=signed_in,
            rows=sorted(signed_in.fields.items()) if signed_in else [],
            received=time.strftime("%H:%M:%S", time.localtime(signed_in.at)) if signed_in else "",
            failed=request.query_params.get("sso") == "failed",
            connect_url=settings.connect_url,
        )

    async def start_sign_in(request: Request, slug: str, settings: DemoForumSettings) -> Response:
        now = clock()
        state.forget_old(now)
        browser = request.cookies.get(_cookie(slug, "browser")) or secrets.token_urlsafe(24)
        nonce = secrets.token_hex(16)  # SecureRandom.hex, as Discourse
        state.nonces[nonce] = _Nonce(
            slug=slug,
            browser=browser,
            return_path=_local_path(request.query_params.get("return_path")),
            expires=now + NONCE_SECONDS,
        )
        return_sso_url = f"{_origin(request)}{_base_path(request, slug)}/session/sso_login"
        target = signed_request(
            settings,
            nonce,
            return_sso_url,
            prompt_none=request.query_params.get("prompt") == "none",
        )
        response = RedirectResponse(target, status_code=302)
        _set_cookie(request, response, slug, "browser", browser)
        return response

    async def finish_sign_in(request: Request, slug: str, settings: DemoForumSettings) -> Response:
        now = clock()
        state.forget_old(now)
        try:
            fields = parse_answer(
                request.query_params.get("sso"), request.query_params.get("sig"), settings.secret
            )
            pending = _take_nonce(state, slug, fields.get("nonce", ""), request, now)
            if fields.get("failed") == "true":
                return RedirectResponse(f"{_base_path(request, slug)}/?sso=failed", 302)
            _check_person(fields)
        except ForumError as exc:
            return _page(
                request,
                "demo/discourse_message.html",
                slug,
                title="Sign-in refused by the forum",
                message=exc.message,
                status_code=400,
            )
        sid = secrets.token_urlsafe(24)
        state.sign_ins[sid] = DemoSignIn(slug=slug, fields=fields, at=now)
        response = RedirectResponse(f"{_base_path(request, slug)}{pending.return_path}", 302)
        _set_cookie(request, response, slug, "session", sid)
        return response

    async def sign_out(request: Request, slug: str, settings: DemoForumSettings) -> Response:
        state.sign_ins.pop(request.cookies.get(_cookie(slug, "session"), ""), None)
        target = settings.logout_redirect or f"{_base_path(request, slug)}/"
        response = RedirectResponse(target, status_code=302)
        response.delete_cookie(_cookie(slug, "session"), path=_base_path(request, slug))
        return response

    routes: list[BaseRoute] = [
        Mount("/static", app=StaticFiles(directory=_STATIC), name="static"),
        Route("/{slug}", forum_page(home)),
        Route("/{slug}/", forum_page(home)),
        Route("/{slug}/session/sso", forum_page(start_sign_in)),
        Route("/{slug}/session/sso_login", forum_page(finish_sign_in)),
        Route("/{slug}/session/logout", forum_page(sign_out)),
    ]
    return Starlette(routes=routes)


def _take_nonce(state: _State, slug: str, nonce: str, request: Request, now: float) -> _Nonce:
    """DiscourseConnect#nonce_valid? then expire_nonce!: a nonce works once, in its browser."""
    pending = state.nonces.get(nonce) if nonce else None
    browser = request.cookies.get(_cookie(slug, "browser"))
    if (
        pending is None
        or pending.slug != slug
        or pending.expires < now
        or not browser
        or not hmac.compare_digest(pending.browser, browser)
    ):
        if nonce in state.used:
            raise ForumError("Nonce has already been used")
        raise ForumError(
            "Nonce is incorrect, was generated in a different browser session, or has expired"
        )
    del state.nonces[nonce]
    state.used[nonce] = now + USED_NONCE_SECONDS
    return pending


def _check_person(fields: dict[str, str]) -> None:
    external_id = fields.get("external_id", "").strip()
    if not external_id:
        raise ForumError("external_id is blank")
    if external_id.lower() in BANNED_EXTERNAL_IDS:
        raise ForumError(f"external_id {external_id!r} is banned")
    if not fields.get("email", "").strip():
        raise ForumError("email is blank: Discourse cannot create the account")
    staff = sorted(k for k in ("admin", "moderator") if k in fields)
    if staff:
        raise ForumError(
            f"The answer carries {' and '.join(staff)}: the bridge must never send these "
            "(a check of this demo, SECURITY.md E8)"
        )


def _signed_in(request: Request, state: _State, slug: str) -> DemoSignIn | None:
    found = state.sign_ins.get(request.cookies.get(_cookie(slug, "session"), ""))
    return found if found is not None and found.slug == slug else None


def _local_path(value: str | None) -> str:
    """Discourse's return_path: a path on this forum, else ``/``."""
    if (
        value
        and value.startswith("/")
        and not value.startswith(("//", "/\\"))
        and value.isascii()
        and not any(c in value for c in "\\\r\n\t ")
    ):
        return value
    return "/"


def _cookie(slug: str, kind: str) -> str:
    return f"demo-discourse-{slug}-{kind}"


def _set_cookie(request: Request, response: Response, slug: str, kind: str, value: str) -> None:
    response.set_cookie(
        _cookie(slug, kind),
        value,
        path=_base_path(request, slug),
        httponly=True,
        samesite="lax",  # the bridge's answer is a top-level GET navigation: Lax cookies go along
        secure=request.url.scheme == "https",
    )


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _root(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _base_path(request: Request, slug: str) -> str:
    return f"{_root(request)}/{slug}"


def _page(
    request: Request, template: str, slug: str, *, status_code: int = 200, **context: Any
) -> Response:
    return render(
        request,
        template,
        {
            "slug": slug,
            "base": _base_path(request, slug),
            "stylesheet": f"{_root(request)}/static/bridge.css",
            **context,
        },
        status_code=status_code,
        headers={"cache-control": "no-store"},
    )


def mount_demo_forum(lookup: ForumLookup, *, clock: Callable[[], float] = time.time) -> Mount:
    """The demo forum at :data:`MOUNT_PATH`, its forums given by ``lookup``."""
    return Mount(MOUNT_PATH, app=create_demo_forum(lookup, clock=clock))


# --- wiring into the bridge ---------------------------------------------------------


def bridge_lookup(found: Services) -> ForumLookup:
    """Forum ``slug`` as the forum admin of the bridge's registration ``slug`` set it up.

    The demo plays Discourse, so it reads a Discourse registration's options by name
    (as a forum admin copies them into Discourse's settings), not through the
    bridge's profile: the connect URL and ``logout_redirect`` the registration
    publishes, and its current connect secret (a new one is used at once).
    """

    def lookup(slug: str) -> DemoForumSettings | None:
        registration = found.registry.get(slug)
        if registration is None or registration.profile != "discourse":
            return None
        connect_url = f"{found.settings.issuer}/discourse/{registration.slug}"
        return DemoForumSettings(
            connect_url=connect_url,
            secret=str(getattr(registration.options, "connect_secret", "")),
            logout_redirect=f"{connect_url}/logout",
        )

    return lookup


def mount_demo_discourse() -> Mount:
    """The demo forum at :data:`MOUNT_PATH` of a demo bridge (its registry via lifespan state)."""
    return Mount(MOUNT_PATH, app=create_demo_forum())
