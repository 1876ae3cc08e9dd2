"""The admin JSON API under ``/admin/api``: registrations, profiles, audit trail, signing keys.

Every request but the OpenAPI document's (:mod:`bridge.admin.openapi`, public:
it describes the code, not the installation's data) carries an admin API token
as ``Authorization: Bearer bat_…`` (``bridge admin token create``); without a
valid one, whatever the path or method, the answer is 401 with
``WWW-Authenticate: Bearer`` (SECURITY F4). Changes go through the one
registration service (:class:`bridge.manage.Registrations`, as the CLI and the
pages do), which validates them with the registration's profile and audits them
as ``api:<token name>`` from the client's address (F3). A stored secret is
never in an answer; a secret the bridge generates is, once (F2).

Bodies are strict: ``application/json`` in UTF-8, one object, no duplicate
key, no NaN, no NUL character or lone surrogate, at most 8 levels deep, at
most the app's body limit. Every refusal is JSON ``{"error", "message"}`` with
400, 401, 404, 405, 409, 413 or 415 (503 when the database cannot answer),
never a page and never a 500. This module parses and answers; the work is the
services'.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, NoReturn

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from bridge.admin.openapi import (
    AUDIT_MAX_LIMIT,
    AUDIT_MAX_OFFSET,
    PREFIX,
    common_options,
    document,
    profile_data,
)
from bridge.errors import (
    BridgeError,
    InvalidRegistration,
    NotFound,
    PayloadTooLarge,
    RetryLater,
)
from bridge.manage import Changed, ChangeRefused
from bridge.registry import Registration
from bridge.services import Services, services
from bridge.settings import Problem, is_valid_slug
from bridge.stats import NO_REGISTRATION, sign_in_stats
from bridge.storage import Conflict
from bridge.storage.audit import event_data

__all__ = ["PREFIX", "routes"]

log = logging.getLogger("bridge.admin.api")

#: What an admin API token looks like (``bat_`` + 32 random bytes, base64url).
_TOKEN_FORM = re.compile(r"^bat_[A-Za-z0-9_-]{43}$")
#: How deep a body's objects and arrays may nest.
MAX_DEPTH = 8
_NO_STORE = {"cache-control": "no-store"}
_CHALLENGE = 'Bearer realm="imis-bridge admin API"'


# --- answers ----------------------------------------------------------------------------


class ApiError(Exception):
    """A refusal, answered as ``{"error": code, "message": ...}`` with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> Response:
        return _json(
            {"error": self.code, "message": self.message, **self.extra},
            status=self.status,
            headers=self.headers,
        )


def _json(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers={**_NO_STORE, **(headers or {})})


def _refuse(message: str, code: str = "invalid_request") -> NoReturn:
    raise ApiError(400, code, message)


def _from_bridge_error(exc: BridgeError) -> ApiError:
    """The API's answer to a refusal of the services."""
    if isinstance(exc, InvalidRegistration):
        problems = [{"key": key, "reason": reason} for key, reason in exc.problems]
        return ApiError(400, "invalid_registration", exc.message, problems=problems)
    if isinstance(exc, ChangeRefused):
        return ApiError(400, "change_refused", exc.message, reason=exc.reason)
    if isinstance(exc, Conflict):
        return ApiError(409, "conflict", exc.message)
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", exc.message)
    if isinstance(exc, PayloadTooLarge):
        return ApiError(413, "payload_too_large", "the body is too large")
    if isinstance(exc, RetryLater):
        log.warning("admin API: %s", exc.detail or exc.message)
        return ApiError(
            exc.status_code,
            "unavailable",
            exc.message,
            headers={"retry-after": str(exc.retry_after)},
        )
    if exc.status_code == 400:
        return ApiError(400, "invalid_request", exc.message)
    log.error("admin API: %s (%s)", exc.message, exc.detail)
    return ApiError(500, "server_error", "something went wrong")


# --- who is asking ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """The token a request came with, as the audit trail names it."""

    actor: str
    ip: str | None


async def authenticate(request: Request, known: Services) -> Caller:
    """The caller of a request with a valid admin API token; 401 otherwise (SECURITY F4)."""
    header = request.headers.get("authorization")
    if header is None:
        raise ApiError(
            401,
            "unauthorized",
            "an admin API token is required: Authorization: Bearer bat_… "
            "(bridge admin token create --name NAME)",
            headers={"www-authenticate": _CHALLENGE},
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    row = None
    if scheme.lower() == "bearer" and _TOKEN_FORM.match(token):
        row = await known.db.run(partial(known.store.find_admin_token, token, now=int(time.time())))
    if row is None:
        raise ApiError(
            401,
            "invalid_token",
            "the admin API token is unknown or revoked",
            headers={"www-authenticate": f'{_CHALLENGE}, error="invalid_token"'},
        )
    return Caller(actor=f"api:{row.name}", ip=request.client.host if request.client else None)


# --- reading requests ---------------------------------------------------------------------


def _check_value(value: Any, depth: int = 0) -> None:
    """Refuse what no store can keep (NUL, lone surrogates) and nesting past MAX_DEPTH."""
    if depth > MAX_DEPTH:
        _refuse(f"the body nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)


def _check_text(text: str) -> None:
    if "\x00" in text:
        _refuse("a text holds a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _refuse("a text holds a lone surrogate (\\ud800-\\udfff): it is not Unicode text")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            _refuse(f"the key {key[:40]!r} is given twice")
        found[key] = value
    return found


def _no_constant(name: str) -> NoReturn:
    _refuse(f"{name} is not a JSON number")


async def read_object(request: Request, *, required: bool) -> dict[str, Any] | None:
    """The request's JSON object; None for an empty body that is not ``required``."""
    try:
        raw = await request.body()
    except PayloadTooLarge:
        raise ApiError(413, "payload_too_large", "the body is too large") from None
    if not raw:
        if required:
            _refuse("the body must be a JSON object (Content-Type: application/json)")
        return None
    media, _, params = request.headers.get("content-type", "").partition(";")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if params else "utf-8"
    if media.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", "the body must be application/json, in UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _refuse("the body is not valid UTF-8")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "too deep or too long"
        _refuse(f"the body is not valid JSON: {reason}")
    if not isinstance(value, dict):
        _refuse("the body must be a JSON object")
    _check_value(value)
    return value


def _query(request: Request, names: frozenset[str]) -> dict[str, str]:
    """The query parameters, each at most once and each one of ``names``."""
    found: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in names:
            shown = ", ".join(sorted(names)) or "none"
            _refuse(f"unknown query parameter {key[:40]!r} (known: {shown})")
        if key in found:
            _refuse(f"the query parameter {key!r} is given twice")
        if "\x00" in value:
            _refuse(f"the query parameter {key!r} holds a NUL character")
        found[key] = value
    return found


def _number(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and low <= int(text) <= high):
        _refuse(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _slug(request: Request) -> str:
    slug: str = request.path_params["slug"]
    if not is_valid_slug(slug):
        raise ApiError(404, "not_found", "there is no registration at this address")
    return slug


# --- answers' bodies ------------------------------------------------------------------------


def registration_data(known: Services, reg: Registration) -> dict[str, Any]:
    """A registration as the API shows it: never a secret, and its published endpoints."""
    data = reg.to_data()
    profile = known.profiles.get(reg.profile)
    found = profile.endpoints(known.settings.issuer, reg) if profile is not None else ()
    data["endpoints"] = [{"label": e.label, "url": e.url} for e in found]
    return data


def _result(known: Services, changed: Changed, *, status: int = 200) -> Response:
    body: dict[str, Any] = {"registration": registration_data(known, changed.registration)}
    headers: dict[str, str] = {}
    if changed.generated_secret is not None:
        body["generated_secret"] = changed.generated_secret
        spec = known.registrations.secret_field(changed.registration.profile)
        if spec is not None:
            body["secret_field"] = spec.name
    if status == 201:
        headers["location"] = f"{PREFIX}/registrations/{changed.registration.slug}"
    return _json(body, status=status, headers=headers)


async def _writable(known: Services, slug: str) -> None:
    """404 for no registration, 409 for one from a (read-only) file."""
    target = await known.db.run(known.registrations.target, slug)
    if target is None:
        raise ApiError(404, "not_found", f"no registration {slug!r}")
    if target.read_only:
        raise ApiError(
            409, "read_only", f"{slug!r} is defined in {target.file}; files are read-only"
        )


# --- handlers -------------------------------------------------------------------------------

Handler = Callable[[Request, Services, Caller], Awaitable[Response]]
_NONE: frozenset[str] = frozenset()


async def list_registrations(request: Request, known: Services, caller: Caller) -> Response:
    _query(request, _NONE)
    unreadable: list[Problem] = []
    regs = await known.db.run(partial(known.registry.all, unreadable=unreadable))
    return _json(
        {
            "registrations": [registration_data(known, r) for r in regs],
            "unreadable": [str(p) for p in unreadable],
        }
    )


async def add_registration(request: Request, known: Services, caller: Caller) -> Response:
    _query(request, _NONE)
    body = await read_object(request, required=True)
    assert body is not None
    slug = body.pop("slug", None)
    public = body.pop("public", False)
    problems: list[tuple[str, str]] = []
    if not isinstance(slug, str) or not slug:
        problems.append(("slug", "is required (a string)"))
    profile = body.get("profile")
    if not isinstance(profile, str) or profile not in known.profiles:
        problems.append(("profile", f"must be one of {', '.join(known.profiles)}"))
    if not isinstance(public, bool):
        problems.append(("public", "must be true or false"))
    if problems:
        raise _from_bridge_error(InvalidRegistration(problems))
    assert isinstance(slug, str)
    if known.profiles.is_valid_slug(slug):  # (the registry names what is wrong with others)
        existing = await known.db.run(known.registrations.target, slug)
        if existing is not None:
            where = f" in {existing.file}" if existing.read_only else ""
            raise ApiError(409, "conflict", f"a registration {slug!r} already exists{where}")
    changed = await known.db.run(
        partial(
            known.registrations.add, slug, body, actor=caller.actor, ip=caller.ip, public=public
        )
    )
    return _result(known, changed, status=201)


async def get_registration(request: Request, known: Services, caller: Caller) -> Response:
    _query(request, _NONE)
    slug = _slug(request)
    try:
        reg = await known.db.run(known.registry.get, slug)
    except InvalidRegistration as exc:
        raise ApiError(409, "unreadable_registration", exc.message) from exc
    if reg is None:
        raise ApiError(404, "not_found", f"no registration {slug!r}")
    return _json({"registration": registration_data(known, reg)})


async def edit_registration(request: Request, known: Services, caller: Caller) -> Response:
    _query(request, _NONE)
    slug = _slug(request)
    body = await read_object(request, required=True)
    assert body is not None
    for fixed in ("slug", "profile"):
        if fixed in body:
            _refuse(f"the {fixed} of a registration cannot change; add a new one")
    await _writable(known, slug)
    changed = await known.db.run(
        partial(known.registrations.edit, slug, body, actor=caller.actor, ip=caller.ip)
    )
    return _result(known, changed)


async def remove_registration(request: Request, known: Services, caller: Caller) -> Response:
    _query(request, _NONE)
    slug = _slug(request)
    await _writable(known, slug)
    await known.db.run(partial(known.registrations.remove, slug, actor=caller.actor, ip=caller.ip))
    return Response(status_code=204, headers=_NO_STORE)


async def rotate_secret(request: Request, known: Services, caller: Caller) -> Response:
    _query(request, _NONE)
    slug = _slug(request)
    body = await read_object(request, required=False) or {}
    unknown = sorted(set(body) - {"secret"})
    if unknown:
        _refuse(f"unknown field {unknown[0][:40]!r} (known: secret)")
    secret = body.get("secret")
    if secret is not None and not (isinstance(secret, str) and secret.strip()):
        _refuse("secret must be a non-empty string")
    await _writable(known, slug)
    changed = await known.db.run(
        partial(
            known.registrations.rotate_secret,
            slug,
            actor=caller.actor,
            ip=caller.ip,
            secret=secret,
        )
    )
    return _result(known, changed)


def _set_enabled(enabled: bool) -> Handler:
    async def handler(request: Request, known: Services, caller: Caller) -> Response:
        _query(request, _NONE)
        slug = _slug(request)
        await _writable(known, slug)
        changed = await known.db.run(
            partial(
                known.registrations.set_enabled, slug, enabled, actor=caller.actor, ip=caller.ip
            )
        )
        return _result(known, changed)

    return handler


async def list_profiles(request: Request, known: Services, caller: Caller) -> Response:
    _query(request, _NONE)
    return _json(
        {
            "profiles": [profile_data(p) for p in known.profiles.values()],
            "common_options": common_options(),
        }
    )


_AUDIT_PARAMS = frozenset({"actor", "action", "target", "limit", "offset"})


async def list_audit(request: Request, known: Services, caller: Caller) -> Response:
    params = _query(request, _AUDIT_PARAMS)
    limit = _number(params, "limit", 100, 1, AUDIT_MAX_LIMIT)
    offset = _number(params, "offset", 0, 0, AUDIT_MAX_OFFSET)
    events = await known.db.run(
        partial(
            known.store.list_audit,
            limit=limit,
            offset=offset,
            actor=params.get("actor"),
            action=params.get("action"),
            target=params.get("target"),
        )
    )
    return _json(
        {
            "events": [event_data(e) for e in events],
            "limit": limit,
            "offset": offset,
        }
    )


async def list_keys(request: Request, known: Services, caller: Caller) -> Response:
    """The signing keys' state and dates (never a key), and the keyring's ids."""
    _query(request, _NONE)
    known.keys.reload_if_cheap()  # a folder's rotation by the CLI shows at once
    now = datetime.now(UTC)
    ids = known.keys.keyring_ids()
    return _json(
        {
            "keys": [{**i.to_json(), "in_jwks": i.published(now)} for i in known.keys.list_keys()],
            "keyring": {"ids": ids, "encrypts": ids[-1]},
        }
    )


_STATS_PARAMS = frozenset({"registration"})


async def sign_in_statistics(request: Request, known: Services, caller: Caller) -> Response:
    """Sign-ins per outcome, the last 24 hours by hour and 30 days by day: for one
    registration (``-``: the bridge's own sign-in page) or, without one, for all."""
    slug = _query(request, _STATS_PARAMS).get("registration")
    if slug is not None and slug != NO_REGISTRATION and not is_valid_slug(slug):
        _refuse("registration must be a registration's slug, or - for the sign-in page")
    now = int(time.time())
    found = await known.db.run(partial(sign_in_stats, known.store, slug, now))
    return _json(found.as_dict())


async def openapi(request: Request, known: Services, caller: Caller | None) -> Response:
    return _json(document(known.profiles, known.settings.issuer))


async def not_found(request: Request, known: Services, caller: Caller) -> Response:
    raise ApiError(404, "not_found", "there is nothing at this address of the admin API")


# --- routing ----------------------------------------------------------------------------------


class Resource:
    """One address of the API: authenticates, then dispatches by method (405 JSON with
    ``Allow`` for another one), and answers every refusal as JSON."""

    def __init__(self, handlers: Mapping[str, Callable[..., Awaitable[Response]]]) -> None:
        self._handlers = dict(handlers)
        self._public = False

    @classmethod
    def public(cls, handlers: Mapping[str, Callable[..., Awaitable[Response]]]) -> Resource:
        """A resource that needs no token (the OpenAPI document)."""
        resource = cls(handlers)
        resource._public = True
        return resource

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._respond(request)
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        try:
            known = services(request)
            caller = None if self._public else await authenticate(request, known)
            method = "GET" if request.method == "HEAD" else request.method
            handler = self._handlers.get(method) or self._handlers.get("*")
            if handler is None:
                allowed = [*self._handlers, *(["HEAD"] if "GET" in self._handlers else [])]
                raise ApiError(
                    405,
                    "method_not_allowed",
                    f"{request.method[:20]} is not allowed here",
                    headers={"allow": ", ".join(allowed)},
                )
            return await handler(request, known, caller)
        except ApiError as exc:
            return exc.response()
        except BridgeError as exc:
            return _from_bridge_error(exc).response()
        except Exception:
            log.exception("admin API: unexpected error on %s %s", request.method, request.url.path)
            return ApiError(500, "server_error", "something went wrong").response()


def routes() -> list[BaseRoute]:
    """The API's routes, mounted at :data:`PREFIX` (mount them before ``/admin``'s pages)."""
    slug = "/registrations/{slug}"
    return [
        Mount(
            PREFIX,
            routes=[
                Route("/openapi.json", Resource.public({"GET": openapi})),
                Route(
                    "/registrations",
                    Resource({"GET": list_registrations, "POST": add_registration}),
                ),
                Route(
                    slug,
                    Resource(
                        {
                            "GET": get_registration,
                            "PATCH": edit_registration,
                            "DELETE": remove_registration,
                        }
                    ),
                ),
                Route(f"{slug}/rotate-secret", Resource({"POST": rotate_secret})),
                Route(f"{slug}/enable", Resource({"POST": _set_enabled(True)})),
                Route(f"{slug}/disable", Resource({"POST": _set_enabled(False)})),
                Route("/profiles", Resource({"GET": list_profiles})),
                Route("/audit", Resource({"GET": list_audit})),
                Route("/keys", Resource({"GET": list_keys})),
                Route("/stats", Resource({"GET": sign_in_statistics})),
                # Anything else: 401 without a token, then a JSON 404 (never a page).
                Route("/{rest:path}", Resource({"*": not_found})),
            ],
        )
    ]
