"""Who may use the admin pages, and for how long: the guard every ``/admin`` page goes through.

A person gets in by signing in on the bridge's own sign-in page: a request
without a session (or whose admin sign-in has lapsed) becomes a pending request
of kind :data:`KIND`, the sign-in page asks for the password and the flow
continues at :data:`CONTINUE_PATH`, which returns to the page that was asked
for. Only iMIS usernames listed in ``[admin] users`` (compared without regard to
case) get in; anyone else gets a 403 page (SECURITY F1).

An admin sign-in is its own step, even for a person who already has a bridge
session: it is recorded in an *admin grant*, a cookie holding the session it
belongs to, when the password was last entered and when the admin was last
active, encrypted and authenticated with the keyring (so every worker sharing
``keys_dir`` reads it, and nobody can forge or extend it). A grant idles out
after :data:`IDLE_SECONDS` without an admin request, whatever the bridge
session's own limits; changing a secret or deleting a registration needs the
password within the last :data:`STEP_UP_SECONDS` (step-up, SECURITY F5). Both
send the person through the sign-in page again, with a pending request whose
``min_auth_time`` makes it ask for the password even though a session exists
(the ``prompt=login`` mechanism), and back to the same page.

This module decides access only; the pages are :mod:`bridge.admin.pages`.
Times are read from :func:`clock` (tests replace it).
"""

from __future__ import annotations

import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge import csrf
from bridge.errors import BadRequest
from bridge.keys import SecretDecryptionError
from bridge.keys.encoding import b64url, b64url_decode
from bridge.middleware import page_csp
from bridge.services import Services, services
from bridge.sessions import Session, send_to_login
from bridge.settings import Settings

log = logging.getLogger("bridge.admin")

#: The pending-request kind of an admin sign-in (no profile is named so: a profile
#: named ``admin`` would be mounted at /admin too, and the catalogue refuses it there).
KIND = "admin"
PREFIX = "/admin"
CONTINUE_PATH = f"{PREFIX}/continue"
#: An admin grant ends after this long without an admin request.
IDLE_SECONDS = 30 * 60
#: Changing a secret or deleting needs the password within this long (step-up).
STEP_UP_SECONDS = 15 * 60
NO_STORE = {"cache-control": "no-store"}
#: The admin grant cookie is small; anything longer is not ours.
_MAX_GRANT = 1024


def clock() -> float:
    """Now, in seconds since the epoch (tests replace ``bridge.admin.auth.clock``)."""
    return time.time()


@dataclass(frozen=True, slots=True)
class Admin:
    """A signed-in administrator on one request."""

    session: Session
    #: When the password was last entered for the admin (the admin clock).
    signed_in_at: float
    now: float

    @property
    def username(self) -> str:
        return self.session.identity.username

    @property
    def actor(self) -> str:
        """Who the audit trail names (SECURITY F3)."""
        return f"admin:{self.username}"

    @property
    def recently_signed_in(self) -> bool:
        """Whether a step-up change may go ahead without asking for the password."""
        return self.now - self.signed_in_at <= STEP_UP_SECONDS


def is_admin(settings: Settings, username: str) -> bool:
    """Whether ``username`` is listed in ``[admin] users`` (case-insensitive, as in iMIS)."""
    folded = username.strip().casefold()
    return bool(folded) and folded in {u.strip().casefold() for u in settings.admin.users}


def cookie_name(settings: Settings) -> str:
    return "__Host-bridge-admin" if settings.secure_cookies else "bridge-admin"


# --- the admin grant -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Grant:
    signed_in_at: float
    last_active: float


def _read_grant(request: Request, known: Services, session: Session, now: float) -> _Grant | None:
    """The live grant of ``session`` in this browser, or None (missing, forged, idle)."""
    raw = request.cookies.get(cookie_name(known.settings))
    if not raw or len(raw) > _MAX_GRANT:
        return None
    try:
        data: Any = json.loads(known.keys.decrypt_secret(b64url_decode(raw).decode("ascii")))
    except (SecretDecryptionError, ValueError, binascii.Error):
        return None
    if not isinstance(data, dict) or data.get("s") != session.id_hash:
        return None  # another session's (signed out, or someone else signed in since)
    signed_in, active = data.get("a"), data.get("t")
    if not isinstance(signed_in, int | float) or not isinstance(active, int | float):
        return None
    if now - active > IDLE_SECONDS:
        return None
    return _Grant(float(signed_in), float(active))


def _write_grant(
    response: Response, known: Services, session: Session, *, signed_in_at: float, now: float
) -> None:
    value = json.dumps({"s": session.id_hash, "a": signed_in_at, "t": now})
    settings = known.settings
    response.set_cookie(
        cookie_name(settings),
        b64url(known.keys.encrypt_secret(value).encode("ascii")),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


# --- sending the person through the sign-in page ------------------------------------


def safe_next(value: object) -> str:
    """Where to return after sign-in: an admin page of this bridge, never anywhere else."""
    if (
        isinstance(value, str)
        and (value == PREFIX or value.startswith(PREFIX + "/"))
        and "\\" not in value
        and all(32 < ord(c) < 127 for c in value)
    ):
        return value
    return PREFIX


def return_path(request: Request) -> str:
    """This page, to come back to: with its query for a GET; a POST comes back to the
    GET of its address, which shows the form (or the confirmation) again."""
    path = request.url.path
    if request.method == "GET" and request.url.query:
        path += "?" + request.url.query
    return safe_next(path)


async def send_to_sign_in(request: Request, session: Session | None, next_path: str) -> Response:
    """The sign-in page, then back to ``next_path``; with a session, the password is asked
    for again (the pending request wants a sign-in newer than the session's)."""
    known = services(request)
    min_auth_time = None
    if session is not None:
        min_auth_time = max(int(time.time()), session.auth_time + 1)
    pending = await known.sessions.create_pending(
        request,
        kind=KIND,
        registration="",
        params={"next": safe_next(next_path), "session": session.id_hash if session else None},
        min_auth_time=min_auth_time,
        login_hint=session.identity.username if session else None,
    )
    response = send_to_login(pending)
    response.headers.update(NO_STORE)
    return response


async def resume(request: Request) -> Response:
    """``GET /admin/continue?request=ID``: back from the sign-in page.

    The pending request is done once the browser holds a session that signed in
    after it was made and is not the one that asked (the password was entered:
    the sign-in page always starts a new session). The admin grant starts then.
    """
    known = services(request)
    pending = await known.sessions.load_pending(request.query_params.get("request"))
    if pending is None or pending.kind != KIND:
        raise BadRequest(
            "This sign-in link has expired or was already used. Open the administration "
            "again to sign in.",
            detail="unknown or expired admin pending request",
        )
    session = await known.sessions.current(request)
    if (
        session is None
        or session.auth_time < pending.created_at
        or session.id_hash == pending.params.get("session")
    ):
        return send_to_login(pending)
    await known.sessions.finish_pending(pending)
    if not is_admin(known.settings, session.identity.username):
        return forbidden(request, session)
    log.info("admin signed in: username=%r", session.identity.username)
    response = RedirectResponse(
        safe_next(pending.params.get("next")), status_code=303, headers=NO_STORE
    )
    now = clock()
    _write_grant(response, known, session, signed_in_at=now, now=now)
    return response


def forbidden(request: Request, session: Session) -> Response:
    """The 403 page of a signed-in person who is not an administrator (SECURITY F1)."""
    log.info("admin refused: username=%r is not in [admin] users", session.identity.username)
    return csrf.render_form(
        request,
        "admin/forbidden.html",
        {"title": "Administrators only", "identity": session.identity},
        status_code=403,
        headers=NO_STORE,
    )


# --- the guard -------------------------------------------------------------------------

AdminHandler = Callable[[Request, Admin], Awaitable[Response]]


def admin_page(handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that runs ``handler`` for an administrator with a live admin grant,
    and sends anyone else to sign in (or to the 403 page)."""

    async def endpoint(request: Request) -> Response:
        known = services(request)
        session = await known.sessions.current(request)
        if session is None:
            return await send_to_sign_in(request, None, return_path(request))
        if not is_admin(known.settings, session.identity.username):
            return forbidden(request, session)
        now = clock()
        grant = _read_grant(request, known, session, now)
        if grant is None:
            return await send_to_sign_in(request, session, return_path(request))
        response = await handler(request, Admin(session, grant.signed_in_at, now))
        # Every admin request counts as activity: the grant's idle clock restarts.
        _write_grant(response, known, session, signed_in_at=grant.signed_in_at, now=now)
        for key, value in NO_STORE.items():
            response.headers.setdefault(key, value)
        return response

    return endpoint


async def step_up(request: Request, admin: Admin, next_path: str) -> Response | None:
    """None when ``admin`` entered the password recently enough for a change of a secret
    or a deletion (SECURITY F5); else the way through the sign-in page and back."""
    if admin.recently_signed_in:
        return None
    return await send_to_sign_in(request, admin.session, next_path)


def render_page(
    request: Request,
    admin: Admin,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> Response:
    """An admin page: the CSRF token for its forms, the page's own policy (our script
    file for the copy buttons, forms only to ourselves) and no caching."""
    return csrf.render_form(
        request,
        template,
        {**context, "admin": admin},
        status_code=status_code,
        headers={**NO_STORE, "content-security-policy": page_csp(scripts=True)},
    )


__all__ = [
    "CONTINUE_PATH",
    "IDLE_SECONDS",
    "KIND",
    "PREFIX",
    "STEP_UP_SECONDS",
    "Admin",
    "admin_page",
    "clock",
    "forbidden",
    "is_admin",
    "render_page",
    "resume",
    "return_path",
    "safe_next",
    "send_to_sign_in",
    "step_up",
]
