"""Server-side browser sessions and pending sign-in requests.

The session cookie holds a random id only (``__Host-`` prefixed, Secure,
HttpOnly, SameSite=Lax when the issuer is https) and is a browser-session
cookie: no Max-Age or Expires, so it ends when the browser closes, while the
server enforces the session's lifetime and idle limit. The database keeps its hash,
the person's :class:`Identity` and ``auth_time``, so logout anywhere ends it
everywhere (SECURITY D4). One session serves every registration (single sign-on).

A *pending request* is a sign-in that waits for the person to enter their
password: the OIDC authorize step or a Zendesk remote login stores its
parameters here, the login page carries the pending id, and after sign-in the
flow continues at the URL of its kind. This module does not render pages or
know any protocol.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge.identity import Identity
from bridge.settings import Settings

PENDING_TTL_SECONDS = 30 * 60
LOGIN_PATH = "/login"
#: Where a pending request of each kind continues once the person has signed in.
CONTINUE_PATHS = {"oidc": "/authorize/continue", "zendesk": "/zendesk/continue"}


def cookie_name(settings: Settings) -> str:
    return "__Host-bridge-session" if settings.secure_cookies else "bridge-session"


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: str
    identity: Identity
    auth_time: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class Pending:
    """A sign-in waiting for the person; ``raw_id`` is what URLs and forms carry."""

    raw_id: str
    kind: str
    registration: str
    params: dict[str, Any]
    created_at: int
    #: The session must have been authenticated at or after this time (prompt=login, max_age).
    min_auth_time: int | None
    login_hint: str | None

    @property
    def continue_url(self) -> str:
        return f"{CONTINUE_PATHS[self.kind]}?{urlencode({'request': self.raw_id})}"

    @property
    def login_url(self) -> str:
        return f"{LOGIN_PATH}?{urlencode({'request': self.raw_id})}"

    def satisfied_by(self, session: Session | None) -> bool:
        if session is None:
            return False
        return self.min_auth_time is None or session.auth_time >= self.min_auth_time


def _services(request: Request) -> Any:
    return request.app.state.services


async def current_session(request: Request) -> Session | None:
    """The live session of this browser, or None."""
    services = _services(request)
    raw = request.cookies.get(cookie_name(services.settings))
    if not raw or len(raw) > 128:
        return None
    row = await services.db.run(
        lambda: services.store.get_session(
            raw, now=int(time.time()), idle_seconds=services.settings.sessions.idle_seconds
        )
    )
    if row is None:
        return None
    return Session(
        id_hash=row.id_hash,
        identity=Identity.from_json(row.identity_json),
        auth_time=row.auth_time,
        expires_at=row.expires_at,
    )


async def start_session(request: Request, response: Response, identity: Identity) -> Session:
    """Sign ``identity`` in: replaces any session this browser had, sets the cookie."""
    services = _services(request)
    settings: Settings = services.settings
    now = int(time.time())
    old = request.cookies.get(cookie_name(settings))
    lifetime = settings.sessions.lifetime_seconds

    def create() -> tuple[str, Any]:
        if old and len(old) <= 128:
            services.store.delete_session(old)
        raw = services.store.create_session(
            imis_id=identity.imis_id,
            username=identity.username,
            identity_json=identity.to_json(),
            auth_time=now,
            now=now,
            lifetime_seconds=lifetime,
        )
        return raw, services.store.get_session(raw, now=now, idle_seconds=lifetime)

    raw, row = await services.db.run(create)
    # No max_age/expires: the cookie dies with the browser (what the signed-out
    # page tells people on a shared computer); the lifetime is the server's to enforce.
    response.set_cookie(
        cookie_name(settings),
        raw,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )
    return Session(id_hash=row.id_hash, identity=identity, auth_time=now, expires_at=now + lifetime)


async def end_session(request: Request, response: Response) -> Session | None:
    """Sign this browser out (server side and cookie); returns the ended session."""
    session = await current_session(request)
    await sign_out(request, response, session)
    return session


async def sign_out(request: Request, response: Response, session: Session | None) -> None:
    """Like :func:`end_session` for a caller that has already loaded ``session``."""
    services = _services(request)
    raw = request.cookies.get(cookie_name(services.settings))
    if raw and len(raw) <= 128:
        await services.db.run(services.store.delete_session, raw)
    if session is not None:
        # Single logout: the codes and tokens this session gave any app end with it
        # (offline_access grants are not tied to the session and survive).
        await services.db.run(
            lambda: services.store.revoke_grants_of_session(session.id_hash, now=int(time.time()))
        )
    clear_session_cookie(response, services.settings)


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


async def create_pending(
    request: Request,
    *,
    kind: str,
    registration: str,
    params: dict[str, Any],
    min_auth_time: int | None = None,
    login_hint: str | None = None,
) -> Pending:
    services = _services(request)
    now = int(time.time())
    stored = {"p": params, "min_auth_time": min_auth_time, "login_hint": login_hint}
    raw = await services.db.run(
        lambda: services.store.create_pending(
            kind=kind,
            registration=registration,
            params=stored,
            now=now,
            ttl_seconds=PENDING_TTL_SECONDS,
            # One address keeps only its newest requests (SECURITY D8): a person
            # with many tabs loses at worst the oldest, which says "start again".
            client=request.client.host if request.client else None,
            max_per_client=services.settings.login.pending_per_address,
        )
    )
    return Pending(raw, kind, registration, params, now, min_auth_time, login_hint)


async def load_pending(request: Request, raw_id: str | None) -> Pending | None:
    """The pending request ``raw_id`` if it exists and has not expired."""
    if not raw_id or len(raw_id) > 128:
        return None
    services = _services(request)
    row = await services.db.run(lambda: services.store.get_pending(raw_id, now=int(time.time())))
    if row is None:
        return None
    stored = json.loads(row.params_json)
    return Pending(
        raw_id=raw_id,
        kind=row.kind,
        registration=row.registration,
        params=stored["p"],
        created_at=row.created_at,
        min_auth_time=stored.get("min_auth_time"),
        login_hint=stored.get("login_hint"),
    )


async def finish_pending(request: Request, pending: Pending) -> None:
    """A pending request is used once."""
    services = _services(request)
    await services.db.run(services.store.delete_pending, pending.raw_id)


async def send_to_login(request: Request, pending: Pending) -> RedirectResponse:
    """Send the browser to the sign-in page for ``pending``."""
    return RedirectResponse(pending.login_url, status_code=303)
