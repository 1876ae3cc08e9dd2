"""``bridge imis check``: tell an operator, in plain words, whether the iMIS settings work.

This module owns the diagnosis: it reaches the configured iMIS (or the
built-in simulator, handed in by the CLI as an ASGI app), signs the service
account in, checks it may read users (the RemoteService role), optionally
reads one person, and turns every failure (bad URL, DNS, refused connection,
TLS, rejected credentials, missing role) into one line saying what is wrong
and what to change. It only reads; it must never print a password or token,
and it is not used while serving requests.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
from collections.abc import Iterator
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
from starlette.types import ASGIApp

from bridge.connectors import (
    AccountDisabled,
    NotFound,
    OrganizationAccount,
    Unavailable,
    WrongCredentials,
)
from bridge.connectors.imis import SIMULATOR_BASE_URL, ImisUserStore, json_or_none
from bridge.identity import Identity
from bridge.settings import LOCAL_HOSTS, ImisSettings, is_http_url


class CheckLine(NamedTuple):
    """One finding: ``ok`` False means something must be fixed."""

    ok: bool
    text: str


async def check_imis(
    settings: ImisSettings,
    base_url: str | None = None,
    user: str | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    simulator: ASGIApp | None = None,
) -> list[CheckLine]:
    """Check the iMIS connection described by ``settings`` (``base_url`` overrides it).

    ``user``, when given, is an iMIS username to read with the service account.
    ``simulator`` is the built-in simulator's app, checked in-process when
    ``base_url`` is "simulator" (this module does not know where it lives).
    Stops at the first failure that makes later checks meaningless.
    """
    lines: list[CheckLine] = []
    url = (base_url or settings.base_url).rstrip("/")
    if url == "simulator" and transport is None:
        if simulator is None:
            lines.append(CheckLine(False, "base_url is 'simulator' but no simulator was given"))
            return lines
        transport = httpx.ASGITransport(app=simulator)
        lines.append(CheckLine(True, "base_url is 'simulator': checking the built-in simulator"))
    if url == "simulator":
        url = SIMULATOR_BASE_URL
    elif not _url_ok(url, lines):
        return lines

    timeout = httpx.Timeout(settings.timeout, connect=settings.connect_timeout)
    async with httpx.AsyncClient(
        base_url=url, timeout=timeout, transport=transport, follow_redirects=False
    ) as client:
        token = await _sign_in_service(client, settings, url, lines)
        if token is None:
            return lines
        if token and not await _can_read_users(client, token, settings, lines):
            return lines
    if user:
        await _check_user(settings, url, transport, user, lines)
    return lines


def run_check(
    settings: ImisSettings,
    user: str | None = None,
    base_url: str | None = None,
    *,
    simulator: ASGIApp | None = None,
) -> int:
    """Print the report of :func:`check_imis`; 0 when everything is fine, else 1."""
    lines = asyncio.run(check_imis(settings, base_url, user, simulator=simulator))
    for line in lines:
        print(f"{'ok  ' if line.ok else 'FAIL'}  {line.text}")
    failed = sum(1 for line in lines if not line.ok)
    print("iMIS check passed" if not failed else f"iMIS check failed ({failed} problem(s))")
    return 0 if not failed else 1


def _url_ok(url: str, lines: list[CheckLine]) -> bool:
    if not is_http_url(url):
        lines.append(CheckLine(False, f"base_url {url!r} is not an http(s) URL"))
        return False
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
        lines.append(
            CheckLine(
                False, f"base_url {url} uses http: passwords would cross the network in clear"
            )
        )
        return False
    if parts.path.rstrip("/").lower().endswith("/api"):
        lines.append(
            CheckLine(False, f"base_url {url} ends in /api: use the site root (…/token must exist)")
        )
        return False
    return True


async def _sign_in_service(
    client: httpx.AsyncClient, settings: ImisSettings, url: str, lines: list[CheckLine]
) -> str | None:
    """The service token; "" if there is no service account but iMIS answers; None on failure."""
    service = settings.service_username and settings.service_password
    username = settings.service_username if service else f"bridge-check-{secrets.token_hex(4)}"
    password = settings.service_password if service else secrets.token_urlsafe(16)
    try:
        response = await client.post(
            "/token",
            data={"grant_type": "password", "username": username or "", "password": password or ""},
        )
    except httpx.TransportError as exc:
        lines.append(CheckLine(False, describe_transport_error(exc, url, settings)))
        return None
    data = json_or_none(response)
    where = f"{url}/token"
    if response.status_code == 404:
        lines.append(
            CheckLine(False, f"{where} not found (404): base_url must be the iMIS site root")
        )
        return None
    if response.status_code >= 500:
        lines.append(CheckLine(False, f"{where} answered {response.status_code}: iMIS is failing"))
        return None
    if not isinstance(data, dict):
        lines.append(
            CheckLine(
                False,
                f"{where} answered {response.status_code} but not with JSON: is base_url iMIS?",
            )
        )
        return None
    if not service:
        if response.status_code == 400 and data.get("error") == "invalid_grant":
            lines.append(CheckLine(True, f"iMIS answers at {where}"))
            lines.append(
                CheckLine(
                    True,
                    "note: no service account configured; profiles are read with each person's "
                    "own token, and refresh/userinfo lookups will be unavailable",
                )
            )
            return ""
        lines.append(CheckLine(False, f"{where} answered {response.status_code} unlike iMIS"))
        return None
    if response.status_code == 400 and data.get("error") == "invalid_grant":
        reason = str(data.get("error_description") or "invalid_grant")[:200]
        lines.append(CheckLine(False, f"iMIS rejected the service account {username!r}: {reason}"))
        return None
    token = data.get("access_token")
    if response.status_code != 200 or not isinstance(token, str) or not token:
        lines.append(CheckLine(False, f"{where} answered {response.status_code} without a token"))
        return None
    lines.append(
        CheckLine(
            True,
            f"service account {username!r} signed in at {where} "
            f"(token valid {data.get('expires_in', '?')} s)",
        )
    )
    return token


async def _can_read_users(
    client: httpx.AsyncClient, token: str, settings: ImisSettings, lines: list[CheckLine]
) -> bool:
    name = settings.service_username
    try:
        response = await client.get(
            "/api/User", params={"Limit": "1"}, headers={"Authorization": f"Bearer {token}"}
        )
    except httpx.TransportError as exc:
        lines.append(
            CheckLine(False, describe_transport_error(exc, str(client.base_url), settings))
        )
        return False
    if response.status_code == 200 and isinstance(json_or_none(response), dict):
        lines.append(CheckLine(True, f"service account {name!r} may read iMIS users"))
        return True
    if response.status_code == 403:
        lines.append(
            CheckLine(
                False,
                f"service account {name!r} may not read other users (403 on /api/User): "
                "give it the RemoteService role in iMIS",
            )
        )
    elif response.status_code == 401:
        lines.append(CheckLine(False, "iMIS refused the service account's token (401)"))
    else:
        lines.append(CheckLine(False, f"GET /api/User answered {response.status_code}"))
    return False


async def _check_user(
    settings: ImisSettings,
    url: str,
    transport: httpx.AsyncBaseTransport | None,
    user: str,
    lines: list[CheckLine],
) -> None:
    if not (settings.service_username and settings.service_password):
        lines.append(
            CheckLine(False, "--user needs a service account: profiles cannot be read without one")
        )
        return
    async with ImisUserStore(settings, base_url=url, transport=transport) as store:
        found = await store.lookup_username(user)
        if isinstance(found, Identity):
            lines.append(CheckLine(True, f"user {user!r}: {_summary(found)}"))
            if found.email is None:
                lines.append(CheckLine(True, "note: no primary email; Zendesk will refuse them"))
            else:
                shared = await store.others_sharing_email(found)
                if isinstance(shared, tuple) and shared:
                    lines.append(
                        CheckLine(
                            True,
                            f"note: primary email also signs in iMIS ID(s) {', '.join(shared)}",
                        )
                    )
            return
    lines.append(CheckLine(False, f"user {user!r}: {_outcome_text(found)}"))


def _summary(identity: Identity) -> str:
    parts = [f"iMIS ID {identity.imis_id}", identity.display_name]
    parts.append(f"email {identity.email}" if identity.email else "no primary email")
    parts.append(f"phone {identity.phone}" if identity.phone else "no valid phone")
    if identity.organization_name:
        parts.append(f"organization {identity.organization_name}")
    if identity.status:
        parts.append(f"status {identity.status}")
    return ", ".join(parts)


def _outcome_text(outcome: object) -> str:
    if isinstance(outcome, NotFound):
        return "no such iMIS user"
    if isinstance(outcome, AccountDisabled):
        return f"account disabled ({outcome.detail})"
    if isinstance(outcome, OrganizationAccount):
        return f"iMIS ID {outcome.imis_id} is an organization record (cannot sign in)"
    if isinstance(outcome, Unavailable | WrongCredentials):
        return outcome.detail
    return repr(outcome)


def describe_transport_error(exc: httpx.TransportError, url: str, settings: ImisSettings) -> str:
    """What a failed connection means, from the exception chain (DNS, refused, TLS, timeout)."""
    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"TLS: the certificate of {host} is not trusted "
                f"({cause.verify_message or cause.reason})"
            )
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            return (
                f"TLS handshake with {host}:{port} failed ({cause.reason or cause}): "
                "does the server speak https on that port?"
            )
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve {host} (DNS): check the host name in base_url"
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return f"connection to {host}:{port} refused: nothing listens there"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connecting to {host}:{port} timed out after {settings.connect_timeout:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"{host} did not answer within {settings.timeout:g} s"
    return f"cannot talk to {host}:{port}: {type(exc).__name__}: {exc}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack += [current.__cause__, current.__context__]
        if isinstance(current, BaseExceptionGroup):
            stack += list(current.exceptions)
