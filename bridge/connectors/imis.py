"""The iMIS REST connector: :class:`ImisUserStore`, the bridge's only way to ask iMIS anything.

This module owns talking to iMIS as described in ``imis-rest.md``: the password
grant at ``/token``, reading ``/api/User``, ``/api/Party`` and ``/api/CsContact``,
the service-account token (cached, renewed once on a 401), retries with backoff
for idempotent reads, and turning iMIS's JSON into an :class:`Identity`. Every
call ends in one outcome of :mod:`bridge.connectors`; "iMIS is down" is never
reported as "wrong password". It must not know about OAuth, sessions or the
bridge's HTTP responses, must never retry the password grant, must keep no
password or person's token beyond the call, and must never log passwords,
tokens or response bodies (status and timing only).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from bridge.connectors import (
    AccountDisabled,
    LookupOutcome,
    NotFound,
    OrganizationAccount,
    SignInOutcome,
    Unavailable,
    WrongCredentials,
)
from bridge.connectors.phone import to_e164
from bridge.identity import Identity
from bridge.logs import request_id
from bridge.metrics import Metrics
from bridge.settings import ImisSettings

log = logging.getLogger("bridge.imis")

#: Base URL used when ``base_url`` is "simulator" and the simulator is reached through a transport.
SIMULATOR_BASE_URL = "http://imis-simulator"
#: Statuses worth retrying a read on (overload and gateway trouble).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Retry-After told to people when iMIS gave none.
DEFAULT_RETRY_AFTER = 10
#: Longest wait before a retry inside one call; a longer Retry-After ends the call instead.
MAX_RETRY_WAIT = 3.0
#: Connections to iMIS: 16 pools of 64, so ~1,000 concurrent sign-ins never queue on each
#: other. Several small pools rather than one big one because httpcore scans every connection
#: of a pool on each request (quadratic in pool size): one pool of 1,000 costs milliseconds of
#: CPU per request under load, small pools keep that scan short.
POOL_SHARDS = 16
POOL_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=30)
#: After iMIS rejects the service account, stop asking for this long (avoids locking it out).
SERVICE_REFUSAL_BACKOFF = 30
_MAX_PAGES = 10
_SHARED_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class _Reply:
    """A non-retryable answer from iMIS: its status and, for 2xx, the parsed JSON."""

    status: int
    data: Any = None


@dataclass(frozen=True, slots=True)
class _Grant:
    token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class _ServiceToken:
    value: str
    renew_at: float


@dataclass(frozen=True, slots=True)
class _UserRecord:
    imis_id: str
    username: str
    disabled: bool


class ImisUserStore:
    """A :class:`~bridge.connectors.UserStore` backed by the iMIS REST API.

    ``base_url`` overrides ``settings.base_url`` (e.g. where the app mounted
    the simulator); ``transport`` replaces the network (``httpx.ASGITransport``
    for an in-process simulator); ``metrics`` receives each request's time and each
    failure's kind (a registry of its own unless given). Each store owns its
    connection pools (see ``POOL_SHARDS``): make one per process and call
    :meth:`aclose` when done.
    """

    #: First retry delay in seconds; doubles per retry, with jitter.
    backoff_base: float = 0.2

    def __init__(
        self,
        settings: ImisSettings,
        *,
        base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = Metrics() if metrics is None else metrics
        url = base_url or settings.base_url
        if url == "simulator":
            if transport is None:
                raise ValueError(
                    "[imis] base_url is 'simulator': pass the simulator's base_url or a transport"
                )
            url = SIMULATOR_BASE_URL
        self._settings = settings
        self._clients = [
            httpx.AsyncClient(
                base_url=url.rstrip("/"),
                timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
                limits=POOL_LIMITS,
                transport=transport,
                verify=_tls_context(),
                headers={"Accept": "application/json", "User-Agent": "imis-bridge"},
                follow_redirects=False,
                event_hooks={"request": [_forward_request_id]},
            )
            for _ in range(1 if transport is not None else POOL_SHARDS)
        ]
        self._turn = 0
        self._service = (
            (settings.service_username, settings.service_password)
            if settings.service_username and settings.service_password
            else None
        )
        self._token: _ServiceToken | None = None
        self._token_lock = asyncio.Lock()
        self._token_failure: tuple[float, Unavailable] | None = None
        self._service_refused_until = 0.0
        self._shared: dict[str, tuple[float, dict[str, bool]]] = {}

    @property
    def base_url(self) -> str:
        return str(self._clients[0].base_url).rstrip("/")

    @property
    def _client(self) -> httpx.AsyncClient:
        """The next pool, in turn."""
        self._turn = (self._turn + 1) % len(self._clients)
        return self._clients[self._turn]

    async def __aenter__(self) -> ImisUserStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    # --- the UserStore protocol -------------------------------------------------

    async def authenticate(
        self, username: str, password: str, *, properties: Sequence[str] = ()
    ) -> SignInOutcome:
        """Check the password by iMIS's password grant, then read the profile."""
        started = time.perf_counter()
        if not username.strip() or not password:
            return WrongCredentials(detail="empty username or password")
        grant = await self._password_grant(username.strip(), password)
        if not isinstance(grant, _Grant):
            return grant
        person_token = grant.token
        user = await self._find_user({"UserName": username.strip()}, person_token)
        if isinstance(user, Unavailable):
            return user
        if user is None:
            return self._unavailable("iMIS accepted the password but has no User record for it")
        if user.disabled:
            log.info("iMIS user %s is disabled", user.imis_id)
            return AccountDisabled(detail="the iMIS user is disabled (IsDisabled)")
        profile = await self._profile(user.imis_id, user.username, properties, person_token)
        if isinstance(profile, NotFound):
            return self._unavailable(f"iMIS has a User but no Party for {user.imis_id}")
        log.debug(
            "iMIS sign-in read in %d ms: %s",
            _ms(started),
            type(profile).__name__,
        )
        return profile

    async def lookup(self, imis_id: str, *, properties: Sequence[str] = ()) -> LookupOutcome:
        """Read a profile by iMIS ID with the service account (no password involved)."""
        if self._service is None:
            return self._needs_service_account("reading a profile without a password")
        async with asyncio.TaskGroup() as group:
            user_task = group.create_task(self._find_user({"UserId": imis_id}, None))
            profile_task = group.create_task(self._profile(imis_id, "", properties, None))
        user, profile = user_task.result(), profile_task.result()
        if isinstance(user, Unavailable):
            return user
        if not isinstance(profile, Identity):
            return profile
        if user is None:
            return AccountDisabled(detail="the iMIS contact has no User (sign-in) record")
        if user.disabled:
            return AccountDisabled(detail="the iMIS user is disabled (IsDisabled)")
        return replace(profile, username=user.username)

    async def lookup_username(
        self, username: str, *, properties: Sequence[str] = ()
    ) -> LookupOutcome:
        """Read a profile by iMIS username with the service account (``bridge imis check``).

        An unknown username is ``NotFound`` carrying the username.
        """
        if self._service is None:
            return self._needs_service_account("reading a profile without a password")
        user = await self._find_user({"UserName": username.strip()}, None)
        if isinstance(user, Unavailable):
            return user
        if user is None:
            return NotFound(username)
        profile = await self._profile(user.imis_id, user.username, properties, None)
        if isinstance(profile, Identity) and user.disabled:
            return AccountDisabled(detail="the iMIS user is disabled (IsDisabled)")
        return profile

    async def others_sharing_email(self, identity: Identity) -> tuple[str, ...] | Unavailable:
        """iMIS IDs of other parties with ``identity``'s primary email that can sign in.

        Answers are cached per email for ``shared_email_cache_seconds``.
        """
        if not identity.email:
            return ()
        if self._service is None:
            return self._needs_service_account("checking whether an email is shared")
        key = identity.email.strip().casefold()
        now = time.monotonic()
        cached = self._shared.get(key)
        if cached is not None and cached[0] > now and identity.imis_id in cached[1]:
            can_sign_in = cached[1]
        else:
            found = await self._parties_that_sign_in(identity.email.strip(), identity.imis_id)
            if isinstance(found, Unavailable):
                return found
            can_sign_in = found
            self._remember_shared(key, can_sign_in, now)
        return tuple(i for i, ok in can_sign_in.items() if ok and i != identity.imis_id)

    # --- HTTP -----------------------------------------------------------------

    async def _password_grant(
        self, username: str, password: str
    ) -> _Grant | WrongCredentials | Unavailable:
        """POST /token once (never retried: a repeat could count twice toward a lockout)."""
        started = time.perf_counter()
        what = "POST /token"
        try:
            response = await self._client.post(
                "/token",
                data={"grant_type": "password", "username": username, "password": password},
            )
        except httpx.TransportError as exc:  # timeouts included
            return self._transport_failure(what, exc, started)
        _log_status(what, response.status_code, started)
        self._metrics.imis_request("token", time.perf_counter() - started)
        if response.status_code == 200:
            data = json_or_none(response)
            token = data.get("access_token") if isinstance(data, dict) else None
            if not isinstance(token, str) or not token:
                self._metrics.imis_error("token", "bad_answer")
                return self._unavailable(f"iMIS sent an unusable answer to {what}")
            expires_in = data.get("expires_in")
            # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
            if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
                expires_in = int(expires_in)
            if isinstance(expires_in, bool) or not isinstance(expires_in, int):
                expires_in = 300
            return _Grant(token, expires_in)
        if response.status_code == 400:
            data = json_or_none(response)
            if isinstance(data, dict) and data.get("error") == "invalid_grant":
                description = _clean(data.get("error_description")) or "invalid_grant"
                log.info("iMIS refused the password grant: %s", description)
                return WrongCredentials(detail=description)
        return self._status_failure(what, response)

    async def _get(
        self, path: str, token: str, params: Mapping[str, str] | None
    ) -> _Reply | Unavailable:
        """GET with retries on 429/502/503/504 and connection errors; JSON parsed for 2xx."""
        what = f"GET {path}"
        attempts = 1 + max(0, self._settings.retries)
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            try:
                response = await self._client.get(
                    path, params=params, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TimeoutException as exc:
                failure = self._transport_failure(what, exc, started, attempt, attempts)
                # A read that timed out may still be running in iMIS: don't pile on.
                if not isinstance(exc, httpx.ConnectTimeout):
                    return failure
                wait = self._backoff(attempt)
            except httpx.TransportError as exc:
                failure = self._transport_failure(what, exc, started, attempt, attempts)
                wait = self._backoff(attempt)
            else:
                status = response.status_code
                _log_status(what, status, started, attempt, attempts)
                self._metrics.imis_request(_operation(what), time.perf_counter() - started)
                if status in RETRY_STATUSES:
                    failure = self._status_failure(what, response)
                    retry_after = _retry_after(response)
                    if retry_after is not None and retry_after > MAX_RETRY_WAIT:
                        return failure
                    wait = self._backoff(attempt) if retry_after is None else retry_after
                elif status >= 500:
                    return self._status_failure(what, response)
                elif 200 <= status < 300:
                    try:
                        return _Reply(status, response.json())
                    except ValueError:
                        log.warning(
                            "iMIS %s: malformed JSON (%d bytes)", what, len(response.content)
                        )
                        self._metrics.imis_error(_operation(what), "bad_answer")
                        return self._unavailable(f"iMIS sent malformed JSON to {what}")
                else:
                    return _Reply(status)
            if attempt == attempts:
                return failure
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        delay = min(MAX_RETRY_WAIT, self.backoff_base * 2.0 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)

    async def _read(
        self, path: str, params: Mapping[str, str] | None, person_token: str | None
    ) -> _Reply | Unavailable:
        """GET with the service token (renewed once on a 401) or else the person's token."""
        if self._service is None:
            if person_token is None:
                return self._needs_service_account(f"GET {path}")
            return await self._get(path, person_token, params)
        token = await self._service_token()
        if isinstance(token, Unavailable):
            return token
        reply = await self._get(path, token, params)
        if isinstance(reply, _Reply) and reply.status == 401:
            log.info("iMIS refused the service token on GET %s; renewing it once", path)
            token = await self._service_token(stale=token)
            if isinstance(token, Unavailable):
                return token
            reply = await self._get(path, token, params)
        return reply

    async def _service_token(self, *, stale: str | None = None) -> str | Unavailable:
        """The cached service token, fetched by one caller while the others wait."""
        current = self._token
        if current is not None and current.value != stale and time.monotonic() < current.renew_at:
            return current.value
        waited_from = time.monotonic()
        async with self._token_lock:
            current = self._token
            if (
                current is not None
                and current.value != stale
                and time.monotonic() < current.renew_at
            ):
                return current.value
            # A fetch that failed while we waited answers for us too: no stampede on a down iMIS.
            if self._token_failure is not None and self._token_failure[0] >= waited_from:
                return self._token_failure[1]
            result = await self._fetch_service_token()
            if isinstance(result, Unavailable):
                self._token_failure = (time.monotonic(), result)
                return result
            self._token_failure = None
            return result

    async def _fetch_service_token(self) -> str | Unavailable:
        assert self._service is not None
        now = time.monotonic()
        if now < self._service_refused_until:
            return Unavailable(
                retry_after=max(1, int(self._service_refused_until - now)),
                detail="iMIS recently rejected the service account credentials",
            )
        self._token = None
        grant = await self._password_grant(*self._service)
        if isinstance(grant, WrongCredentials):
            log.error("iMIS rejected the service account credentials: %s", grant.detail)
            self._service_refused_until = time.monotonic() + SERVICE_REFUSAL_BACKOFF
            return Unavailable(
                retry_after=SERVICE_REFUSAL_BACKOFF,
                detail=f"iMIS rejected the service account credentials: {grant.detail}",
            )
        if isinstance(grant, Unavailable):
            return grant
        margin = min(60.0, grant.expires_in * 0.1)
        self._token = _ServiceToken(grant.token, time.monotonic() + grant.expires_in - margin)
        log.info("iMIS service token fetched (valid %d s)", grant.expires_in)
        return grant.token

    # --- reading records ---------------------------------------------------------

    async def _find_user(
        self, params: Mapping[str, str], person_token: str | None
    ) -> _UserRecord | Unavailable | None:
        reply = await self._read("/api/User", params, person_token)
        if isinstance(reply, Unavailable):
            return reply
        if reply.status != 200 or not isinstance(reply.data, dict):
            return self._unexpected(reply, "GET /api/User")
        users = [u for u in _values(reply.data.get("Items")) if isinstance(u, dict)]
        wanted = params.get("UserName", "").casefold()
        if wanted:
            users.sort(key=lambda u: _text(u.get("UserName")).casefold() != wanted)
        if not users:
            return None
        user = users[0]
        party = _object(user.get("Party"))
        imis_id = _text(user.get("UserId")) or _text(party.get("PartyId")) or _text(party.get("Id"))
        if not imis_id:
            return self._unavailable("iMIS sent a User record without UserId")
        return _UserRecord(
            imis_id=imis_id,
            username=_text(user.get("UserName")) or params.get("UserName", ""),
            disabled=_truthy(user.get("IsDisabled")),
        )

    async def _profile(
        self,
        imis_id: str,
        username: str,
        properties: Sequence[str],
        person_token: str | None,
    ) -> Identity | OrganizationAccount | NotFound | Unavailable:
        """Party (and CsContact when properties are asked for) of one iMIS ID."""
        party_path = f"/api/Party/{quote(imis_id, safe='')}"
        contact_path = f"/api/CsContact/{quote(imis_id, safe='')}"
        async with asyncio.TaskGroup() as group:
            party_task = group.create_task(self._read(party_path, None, person_token))
            contact_task = (
                group.create_task(self._read(contact_path, None, person_token))
                if properties
                else None
            )
        party = party_task.result()
        if isinstance(party, Unavailable):
            return party
        if party.status == 404:
            return NotFound(imis_id)
        if party.status != 200 or not _names_a_party(party.data):
            return self._unexpected(party, f"GET {party_path}")
        parsed = identity_from_party(
            party.data, username=username, region=self._settings.phone_region, imis_id=imis_id
        )
        if isinstance(parsed, OrganizationAccount) or contact_task is None:
            return parsed
        contact = contact_task.result()
        if isinstance(contact, Unavailable):
            return contact
        if contact.status == 404:
            return parsed
        if contact.status != 200 or not _has_properties(contact.data):
            return self._unexpected(contact, f"GET {contact_path}")
        return with_properties(parsed, contact_properties(contact.data), properties)

    async def _parties_that_sign_in(self, email: str, own_id: str) -> dict[str, bool] | Unavailable:
        """Every party with this email, mapped to whether it has an enabled User record."""
        party_ids: list[str] = []
        offset = 0
        for _ in range(_MAX_PAGES):
            params = {"Email": f"eq:{email}"}
            if offset:
                params["Offset"] = str(offset)
            reply = await self._read("/api/Party", params, None)
            if isinstance(reply, Unavailable):
                return reply
            if reply.status != 200 or not isinstance(reply.data, dict):
                return self._unexpected(reply, "GET /api/Party")
            for item in _values(reply.data.get("Items")):
                if isinstance(item, dict):
                    party_id = _text(item.get("PartyId")) or _text(item.get("Id"))
                    if party_id and party_id not in party_ids:
                        party_ids.append(party_id)
            next_offset = reply.data.get("NextOffset")
            if not _truthy(reply.data.get("HasNext")) or not isinstance(next_offset, int):
                break
            offset = next_offset
        others = [i for i in party_ids if i != own_id]
        limit = asyncio.Semaphore(8)

        async def check(party_id: str) -> _UserRecord | Unavailable | None:
            async with limit:
                return await self._find_user({"UserId": party_id}, None)

        async with asyncio.TaskGroup() as group:
            tasks = {i: group.create_task(check(i)) for i in others}
        answer = {own_id: True}
        for party_id, task in tasks.items():
            user = task.result()
            if isinstance(user, Unavailable):
                return user
            answer[party_id] = user is not None and not user.disabled
        return answer

    def _remember_shared(self, key: str, answer: dict[str, bool], now: float) -> None:
        ttl = self._settings.shared_email_cache_seconds
        if ttl <= 0:
            return
        if len(self._shared) >= _SHARED_CACHE_MAX:
            self._shared = {k: v for k, v in self._shared.items() if v[0] > now}
            while len(self._shared) >= _SHARED_CACHE_MAX:
                del self._shared[next(iter(self._shared))]
        self._shared[key] = (now + ttl, answer)

    # --- outcomes --------------------------------------------------------------

    def _unavailable(self, detail: str, retry_after: int = DEFAULT_RETRY_AFTER) -> Unavailable:
        log.warning("%s", detail)
        return Unavailable(retry_after=retry_after, detail=detail)

    def _needs_service_account(self, what: str) -> Unavailable:
        return self._unavailable(
            f"{what} needs an iMIS service account ([imis] service_username/service_password)",
            retry_after=60,
        )

    def _status_failure(self, what: str, response: httpx.Response) -> Unavailable:
        status = response.status_code
        kind = "throttled" if status == 429 else "5xx" if status >= 500 else "status"
        self._metrics.imis_error(_operation(what), kind)
        retry_after = _retry_after(response)
        seconds = (
            DEFAULT_RETRY_AFTER if retry_after is None else max(1, min(int(retry_after), 3600))
        )
        return Unavailable(
            retry_after=seconds, detail=f"iMIS answered {response.status_code} to {what}"
        )

    def _transport_failure(
        self,
        what: str,
        exc: httpx.TransportError,
        started: float,
        attempt: int = 1,
        attempts: int = 1,
    ) -> Unavailable:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        operation = _operation(what)
        self._metrics.imis_request(operation, time.perf_counter() - started)
        self._metrics.imis_error(operation, _failure_kind(exc))
        log.warning(
            "iMIS %s %s after %d ms: %s (attempt %d/%d)",
            what,
            kind,
            _ms(started),
            type(exc).__name__,
            attempt,
            attempts,
        )
        return Unavailable(
            retry_after=DEFAULT_RETRY_AFTER, detail=f"iMIS {what} {kind}: {type(exc).__name__}"
        )

    def _unexpected(self, reply: _Reply, what: str) -> Unavailable:
        refused = reply.status in (401, 403)
        bad = 200 <= reply.status < 300
        self._metrics.imis_error(
            _operation(what), "refused" if refused else "bad_answer" if bad else "status"
        )
        if reply.status == 401:
            detail = f"iMIS refused the token on {what} (401)"
        elif reply.status == 403 and self._service is not None:
            detail = (
                f"iMIS forbade {what} (403): does the service account have the RemoteService role?"
            )
        elif reply.status == 403:
            detail = f"iMIS forbade {what} (403) to the person's own token"
        elif 200 <= reply.status < 300:
            detail = f"iMIS sent an unusable answer to {what}"
        else:
            detail = f"iMIS answered {reply.status} to {what}"
        return self._unavailable(detail)


# --- iMIS JSON -> Identity (pure functions) -------------------------------------


def identity_from_party(
    data: Mapping[str, Any], *, username: str, region: str, imis_id: str = ""
) -> Identity | OrganizationAccount:
    """Turn a ``/api/Party/{id}`` answer into an Identity (or refuse an organization)."""
    party_id = _text(data.get("PartyId")) or _text(data.get("Id")) or imis_id
    if _is_organization(data):
        return OrganizationAccount(party_id)
    name = _object(data.get("PersonName"))
    first = _text(name.get("FirstName")) or None
    last = _text(name.get("LastName")) or None
    full = (
        _text(name.get("FullName"))
        or " ".join(p for p in (first, last) if p)
        or _text(data.get("Name"))
    )
    org = _object(data.get("PrimaryOrganization"))
    status = data.get("Status")
    if isinstance(status, dict):
        status_name, status_id = _text(status.get("Name")), _text(status.get("PartyStatusId"))
    else:
        status_name, status_id = "", _text(status)
    return Identity(
        imis_id=party_id,
        username=username,
        full_name=full,
        first_name=first,
        last_name=last,
        email=primary_email(data.get("Emails")),
        phone=primary_phone(data.get("Phones"), region),
        organization_name=_text(org.get("Name")) or None,
        organization_id=_text(org.get("OrganizationPartyId")) or None,
        status=status_name or None,
        status_id=status_id or None,
    )


def primary_email(emails: Any) -> str | None:
    """The ``IsPrimary`` address, else the ``_Primary`` typed one; None if neither is usable."""
    entries = [e for e in _values(emails) if isinstance(e, dict)]
    chosen = next((e for e in entries if _truthy(e.get("IsPrimary"))), None)
    if chosen is None:
        chosen = next((e for e in entries if _text(e.get("EmailType")) == "_Primary"), None)
    address = _text(chosen.get("Address")) if chosen else ""
    return address if "@" in address else None


def primary_phone(phones: Any, region: str) -> str | None:
    """The ``IsPrimary`` number as E.164; None when there is none or it is not valid."""
    entries = [p for p in _values(phones) if isinstance(p, dict)]
    chosen = next((p for p in entries if _truthy(p.get("IsPrimary"))), None)
    return to_e164(_text(chosen.get("Number")), region) if chosen else None


def contact_properties(data: Mapping[str, Any]) -> dict[str, str]:
    """``Properties`` of a CsContact answer as name -> string ($type/$value unwrapped)."""
    out: dict[str, str] = {}
    for prop in _values(data.get("Properties")):
        if not isinstance(prop, dict):
            continue
        name = _text(prop.get("Name"))
        value = _scalar(prop.get("Value"))
        if name and value is not None:
            out[name] = value
    return out


def with_properties(
    identity: Identity, available: Mapping[str, str], requested: Sequence[str]
) -> Identity:
    """``identity`` plus the requested contact properties; ``MemberType`` also fills member_type."""
    folded = {k.casefold(): v for k, v in available.items()}
    chosen: dict[str, str] = dict(identity.properties)
    for name in requested:
        value = available.get(name, folded.get(name.casefold()))
        if value is not None:
            chosen[name] = value
    member_type = identity.member_type
    if any(n.casefold() == "membertype" for n in requested):
        member_type = folded.get("membertype") or member_type
    return replace(identity, properties=chosen, member_type=member_type or None)


def _is_organization(data: Mapping[str, Any]) -> bool:
    kind = _text(data.get("$type"))
    if kind:
        return "OrganizationData" in kind
    return "OrganizationName" in data and "PersonName" not in data


def _names_a_party(data: Any) -> bool:
    """Whether a ``/api/Party/{id}`` answer is one: an object with its ``PartyId`` or ``Id``
    (an object without either is not a party, and must not become an empty profile)."""
    return isinstance(data, dict) and bool(_text(data.get("PartyId")) or _text(data.get("Id")))


def _has_properties(data: Any) -> bool:
    """Whether a ``/api/CsContact/{id}`` answer is one: an object with a ``Properties``
    collection (without it, every property asked for would silently be missing)."""
    if not isinstance(data, dict):
        return False
    properties = data.get("Properties")
    if isinstance(properties, dict):
        properties = properties.get("$values")
    return isinstance(properties, list)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _values(value: Any) -> list[Any]:
    """A collection either as ``{"$values": [...]}`` or as a plain list."""
    if isinstance(value, dict):
        value = value.get("$values")
    return list(value) if isinstance(value, list) else []


def _scalar(value: Any) -> str | None:
    if isinstance(value, dict):
        if "$value" not in value:
            return None
        value = value["$value"]
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def json_or_none(response: httpx.Response) -> Any:
    """The response's JSON, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def _clean(value: Any) -> str:
    """A short single-line text from iMIS, safe to put in a log line."""
    return " ".join(_text(value).split())[:200]


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    if raw.isascii() and raw.isdigit():  # not "²" (Latin-1 in a header), which float() refuses
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every pool: building one reads the CA bundle (tens of ms)."""
    return httpx.create_ssl_context()


def _operation(what: str) -> str:
    """The metrics' name of a request: ``GET /api/Party/123`` is ``party``,
    ``POST /token`` is ``token`` (never the full URL: one series per kind)."""
    path = what.split(" ", 1)[-1].strip("/").split("/")
    name = path[1] if path[0] == "api" and len(path) > 1 else path[0]
    return name.casefold() or "-"


def _failure_kind(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "transport"


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _log_status(
    what: str, status: int, started: float, attempt: int = 1, attempts: int = 1
) -> None:
    level = logging.DEBUG if status < 400 else logging.INFO
    log.log(
        level,
        "iMIS %s -> %d in %d ms (attempt %d/%d)",
        what,
        status,
        _ms(started),
        attempt,
        attempts,
    )


async def _forward_request_id(request: httpx.Request) -> None:
    """iMIS calls made while answering a request carry its id (X-Request-ID), so the
    two logs can be matched."""
    rid = request_id.get()
    if rid:
        request.headers["X-Request-ID"] = rid
