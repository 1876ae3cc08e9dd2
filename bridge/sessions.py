"""Server-side browser sessions and pending sign-in requests.

The session cookie holds a random id only (``__Host-`` prefixed, Secure,
HttpOnly, SameSite=Lax when the issuer is https) and is a browser-session
cookie: no Max-Age or Expires, so it ends when the browser closes, while the
server enforces the session's lifetime and idle limit. The database keeps its hash,
the person's :class:`Identity` and ``auth_time``, so logout anywhere ends it
everywhere (SECURITY D4). One session serves every registration (single sign-on).

A *pending request* is a sign-in that waits for the person to enter their
password: the OIDC authorize step or a profile's sign-in stores its parameters
here, the login page carries the pending id, and after sign-in the flow
continues at the path its kind (the profile) gave (``continue_paths``). The
:class:`SessionManager` holds what it needs explicitly (settings, database,
store); this module does not render pages, know any protocol or any profile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge.addresses import address_key
from bridge.identity import Identity
from bridge.settings import Settings
from bridge.storage import Database, Store
from bridge.storage.models import BrowserSessionRow

PENDING_TTL_SECONDS = 30 * 60
LOGIN_PATH = "/login"


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
    #: Where the flow of this kind continues (the profile's ``continue_path``).
    continue_path: str

    @property
    def continue_url(self) -> str:
        return f"{self.continue_path}?{urlencode({'request': self.raw_id})}"

    @property
    def login_url(self) -> str:
        return f"{LOGIN_PATH}?{urlencode({'request': self.raw_id})}"

    def satisfied_by(self, session: Session | None) -> bool:
        if session is None:
            return False
        return self.min_auth_time is None or session.auth_time >= self.min_auth_time


class SessionManager:
    """Sessions and pending requests of every browser, for every registration."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: Store,
        *,
        continue_paths: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self._db = db
        self._store = store
        self._continue = dict(continue_paths)

    @property
    def cookie_name(self) -> str:
        return cookie_name(self.settings)

    async def current(self, request: Request) -> Session | None:
        """The live session of this browser, or None."""
        raw = request.cookies.get(self.cookie_name)
        if not raw or len(raw) > 128:
            return None
        idle = self.settings.sessions.idle_seconds
        row = await self._db.run(
            lambda: self._store.get_session(raw, now=int(time.time()), idle_seconds=idle)
        )
        if row is None:
            return None
        return Session(
            id_hash=row.id_hash,
            identity=Identity.from_json(row.identity_json),
            auth_time=row.auth_time,
            expires_at=row.expires_at,
        )

    async def start(self, request: Request, response: Response, identity: Identity) -> Session:
        """Sign ``identity`` in: replaces any session this browser had, sets the cookie."""
        settings = self.settings
        now = int(time.time())
        old = request.cookies.get(self.cookie_name)
        lifetime = settings.sessions.lifetime_seconds
        store = self._store

        def create() -> tuple[str, BrowserSessionRow | None]:
            auth_time = now
            if old and len(old) <= 128:
                ended = store.delete_session(old)
                if ended is not None:
                    # A new password sign-in is always later than the one it replaces,
                    # even within the same second (prompt=login asks for exactly that).
                    auth_time = max(now, ended.auth_time + 1)
            raw = store.create_session(
                imis_id=identity.imis_id,
                username=identity.username,
                identity_json=identity.to_json(),
                auth_time=auth_time,
                now=now,
                lifetime_seconds=lifetime,
            )
            return raw, store.get_session(raw, now=now, idle_seconds=lifetime)

        raw, row = await self._db.run(create)
        assert row is not None
        # No max_age/expires: the cookie dies with the browser (what the signed-out
        # page tells people on a shared computer); the lifetime is the server's to enforce.
        response.set_cookie(
            self.cookie_name,
            raw,
            path="/",
            secure=settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return Session(
            id_hash=row.id_hash,
            identity=identity,
            auth_time=row.auth_time,
            expires_at=now + lifetime,
        )

    async def end(self, request: Request, response: Response) -> Session | None:
        """Sign this browser out (server side and cookie); returns the ended session."""
        session = await self.current(request)
        await self.sign_out(request, response, session)
        return session

    async def sign_out(self, request: Request, response: Response, session: Session | None) -> None:
        """Like :meth:`end` for a caller that has already loaded ``session``."""
        raw = request.cookies.get(self.cookie_name)
        if raw and len(raw) <= 128:
            await self._db.run(self._store.delete_session, raw)
        if session is not None:
            # Single logout: the codes and tokens this session gave any app end with it
            # (offline_access grants are not tied to the session and survive).
            store = self._store
            await self._db.run(
                lambda: store.revoke_grants_of_session(session.id_hash, now=int(time.time()))
            )
        self.clear_cookie(response)

    def clear_cookie(self, response: Response) -> None:
        clear_session_cookie(response, self.settings)

    async def create_pending(
        self,
        request: Request,
        *,
        kind: str,
        registration: str,
        params: dict[str, Any],
        min_auth_time: int | None = None,
        login_hint: str | None = None,
    ) -> Pending:
        path = self._continue.get(kind)
        if path is None:
            raise ValueError(f"no profile continues sign-ins of kind {kind!r}")
        now = int(time.time())
        stored = {"p": params, "min_auth_time": min_auth_time, "login_hint": login_hint}
        client = address_key(request.client.host if request.client else None)
        limit = self.settings.login.pending_per_address
        store = self._store
        raw = await self._db.run(
            lambda: store.create_pending(
                kind=kind,
                registration=registration,
                params=stored,
                now=now,
                ttl_seconds=PENDING_TTL_SECONDS,
                # One address keeps only its newest requests (SECURITY D8): a person
                # with many tabs loses at worst the oldest, which says "start again".
                client=client,
                max_per_client=limit,
            )
        )
        return Pending(raw, kind, registration, params, now, min_auth_time, login_hint, path)

    async def load_pending(self, raw_id: str | None) -> Pending | None:
        """The pending request ``raw_id`` if it exists, has not expired, and a profile
        still continues its kind."""
        if not raw_id or len(raw_id) > 128:
            return None
        store = self._store
        row = await self._db.run(lambda: store.get_pending(raw_id, now=int(time.time())))
        if row is None or row.kind not in self._continue:
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
            continue_path=self._continue[row.kind],
        )

    async def finish_pending(self, pending: Pending) -> None:
        """A pending request is used once."""
        await self._db.run(self._store.delete_pending, pending.raw_id)


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


def send_to_login(pending: Pending) -> RedirectResponse:
    """Send the browser to the sign-in page for ``pending``."""
    return RedirectResponse(pending.login_url, status_code=303)
