"""A faithful fake of the iMIS REST API, as a Starlette app, for demo, development and tests.

This module owns the simulator: the demo people, the endpoints the bridge uses
(``POST /token``, ``GET /api/User``, ``GET /api/Party``, ``GET /api/Party/{id}``,
``GET /api/CsContact/{id}``) with iMIS's JSON shapes, bearer tokens that expire,
per-caller permissions (the ``RemoteService`` role reads everything, a person
only their own records), and fault injection plus counters under ``/_sim/``
(also reachable in Python through :func:`simulator_state`). It must stay a
look-alike of iMIS and nothing more: it knows nothing about the bridge, and it
is never used when ``[imis] base_url`` names a real iMIS. Its ``/_sim/`` admin
endpoints are unauthenticated, so it must only ever listen on loopback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import secrets
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

#: The demo people shipped with the package (``bridge demo``, ``bridge imis-simulator``).
DEFAULT_PEOPLE_FILE = Path(__file__).with_name("people.toml")

SERVICE_ROLE = "RemoteService"

_ASI = "Asi.Soa.Membership.DataContracts"
_CORE = "Asi.Soa.Core.DataContracts"
_CONTRACTS = "Asi.Contracts"
_WRONG_PASSWORD = "The user name or password is incorrect."
_DISABLED = "The user account is disabled."
_DENIED = "Authorization has been denied for this request."


# --- people -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimEmail:
    address: str
    type: str = "Other"
    primary: bool = False


@dataclass(frozen=True, slots=True)
class SimPhone:
    number: str
    type: str = "Other"
    primary: bool = False


@dataclass(frozen=True, slots=True)
class SimPerson:
    """One iMIS contact (a person or an organization), with or without credentials.

    ``email``/``phone`` are the primary ones; ``emails``/``phones`` are further
    entries rendered as they are (set ``primary``/``type`` to shape edge cases).
    ``properties`` are extra CsContact properties; dates become System.DateTime.
    """

    imis_id: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    kind: str = "person"
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    informal_name: str | None = None
    email: str | None = None
    emails: tuple[SimEmail, ...] = ()
    phone: str | None = None
    phones: tuple[SimPhone, ...] = ()
    organization_id: str | None = None
    organization_name: str | None = None
    title: str | None = None
    status_id: str = "A"
    status: str = "Active"
    member_type: str | None = None
    disabled: bool = False
    roles: tuple[str, ...] = ()
    properties: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def is_organization(self) -> bool:
        return self.kind == "organization"

    @property
    def can_sign_in(self) -> bool:
        return bool(self.username and self.password)

    @property
    def display_name(self) -> str:
        if self.full_name:
            return self.full_name
        return " ".join(p for p in (self.first_name, self.last_name) if p)


_PERSON_KEYS = {f.name for f in fields(SimPerson)} - {"imis_id"} | {"id"}


def load_people(path: str | Path) -> list[SimPerson]:
    """Read simulator people from a TOML (``[[person]]``) or JSON file.

    JSON may be a list of people or ``{"person": [...]}``. Raises ``ValueError``
    naming the file, entry and key for anything it cannot use.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data: Any = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from exc
    entries = data
    if isinstance(data, dict):
        entries = data.get("person", data.get("people"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of [[person]] entries")
    return [
        _person_from_mapping(entry, f"{path}: person {i + 1}") for i, entry in enumerate(entries)
    ]


def _person_from_mapping(entry: Any, where: str) -> SimPerson:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a table")
    unknown = sorted(set(entry) - _PERSON_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)}")
    if "id" not in entry:
        raise ValueError(f"{where}: id is required")
    values = dict(entry)
    values["imis_id"] = str(values.pop("id"))
    try:
        values["emails"] = tuple(SimEmail(**e) for e in values.get("emails", ()))
        values["phones"] = tuple(SimPhone(**p) for p in values.get("phones", ()))
    except TypeError as exc:
        raise ValueError(f"{where}: emails/phones: {exc}") from exc
    values["roles"] = tuple(values.get("roles", ()))
    if values.get("kind", "person") not in {"person", "organization"}:
        raise ValueError(f"{where}: kind must be 'person' or 'organization'")
    return SimPerson(**values)


def describe_people(people: Iterable[SimPerson]) -> str:
    """A table of who can sign in, with passwords and what each person exercises."""
    rows = [("username", "password", "iMIS ID", "what is special")]
    rows += [
        (p.username or "", p.password or "", p.imis_id, p.note) for p in people if p.can_sign_in
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3]
        for row in rows
    )


# --- faults and state ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, for requests whose path starts with one of ``paths`` (all if empty).

    ``latency_ms`` is added to every matching request. At most one error is
    injected per request, with probability ``error_rate``, at most ``count``
    times (None = no limit): ``timeout`` (hang ``timeout_seconds`` or until the
    client gives up), else ``status`` (with ``Retry-After: retry_after``), else
    ``malformed_json`` (200 with a truncated JSON body), else ``wrong_shape_json``
    (200 with a well-formed JSON object that is no answer iMIS gives: no token, no
    ``Items``, no party).
    """

    latency_ms: int = 0
    status: int | None = None
    retry_after: int | None = None
    timeout: bool = False
    timeout_seconds: float = 30.0
    malformed_json: bool = False
    wrong_shape_json: bool = False
    error_rate: float = 1.0
    paths: tuple[str, ...] = ()
    count: int | None = None

    @property
    def injects_error(self) -> bool:
        return (
            self.timeout or self.status is not None or self.malformed_json or self.wrong_shape_json
        )

    def matches(self, path: str) -> bool:
        return not self.paths or any(path.startswith(p) for p in self.paths)

    @classmethod
    def from_json(cls, data: Any) -> Faults:
        """Build from the ``POST /_sim/faults`` body; ``ValueError`` on bad input."""
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("paths"), str):
            values["paths"] = [values["paths"]]
        if "paths" in values:
            if not isinstance(values["paths"], list) or not all(
                isinstance(p, str) for p in values["paths"]
            ):
                raise ValueError("paths must be a list of path prefixes")
            values["paths"] = tuple(values["paths"])
        for name in ("latency_ms", "status", "retry_after", "count"):
            value = values.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be a whole number")
        for name in ("timeout", "malformed_json", "wrong_shape_json"):
            if not isinstance(values.get(name, False), bool):
                raise ValueError(f"{name} must be true or false")
        for name in ("timeout_seconds", "error_rate"):
            value = values.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
        return cls(**values)


@dataclass(slots=True)
class _Token:
    username: str
    expires_at: float


class SimulatorState:
    """The simulator's people, tokens, faults and counters; safe to poke from another thread."""

    def __init__(
        self,
        people: Sequence[SimPerson],
        *,
        latency_ms: int = 0,
        token_seconds: int = 1199,
        plain_lists: bool = False,
    ) -> None:
        self.people: dict[str, SimPerson] = {p.imis_id: p for p in people}
        self.users: dict[str, SimPerson] = {p.username.casefold(): p for p in people if p.username}
        #: Base latency of every iMIS request, in milliseconds.
        self.latency_ms = latency_ms
        #: Lifetime of new bearer tokens, in seconds.
        self.token_seconds = token_seconds
        #: Render collections as plain JSON lists, as some iMIS versions do.
        self.plain_lists = plain_lists
        self._initial = (latency_ms, token_seconds, plain_lists)
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._faults = Faults()
        self._fault_budget: int | None = None
        self._counts: Counter[str] = Counter()
        self._paths: Counter[str] = Counter()
        self._tokens_by_user: Counter[str] = Counter()

    def reset(self) -> None:
        """Back to how it started: no faults, no tokens, zero counters, initial options."""
        self.latency_ms, self.token_seconds, self.plain_lists = self._initial
        self.clear_faults()
        self.expire_tokens()
        self.reset_stats()

    # faults
    def set_faults(self, faults: Faults | None = None, **changes: Any) -> None:
        """Replace the current faults (``set_faults(status=503, count=2)``)."""
        new = replace(faults or Faults(), **changes)
        with self._lock:
            self._faults = new
            self._fault_budget = new.count

    def clear_faults(self) -> None:
        self.set_faults(Faults())

    @property
    def faults(self) -> Faults:
        return self._faults

    def take_error(self, path: str) -> Faults | None:
        with self._lock:
            faults = self._faults
            if not faults.injects_error or not faults.matches(path):
                return None
            if self._fault_budget is not None and self._fault_budget <= 0:
                return None
            if faults.error_rate < 1.0 and random.random() >= faults.error_rate:
                return None
            if self._fault_budget is not None:
                self._fault_budget -= 1
            self._counts["faults_injected"] += 1
            return faults

    # tokens
    def issue_token(self, username: str) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens = {k: v for k, v in self._tokens.items() if v.expires_at > now}
            self._tokens[token] = _Token(username, now + self.token_seconds)
        return token

    def caller(self, token: str) -> SimPerson | None:
        with self._lock:
            found = self._tokens.get(token)
        if found is None or found.expires_at <= time.monotonic():
            return None
        return self.users.get(found.username.casefold())

    def expire_tokens(self) -> None:
        """Make every bearer token issued so far invalid (as if they all expired)."""
        with self._lock:
            self._tokens.clear()

    def issued_tokens(self) -> list[str]:
        """Tokens currently valid (tests check none of them reaches a log)."""
        with self._lock:
            return list(self._tokens)

    # counters
    def count(self, name: str, path: str | None = None, user: str | None = None) -> None:
        with self._lock:
            self._counts[name] += 1
            if path is not None:
                self._paths[path] += 1
            if user is not None:
                self._tokens_by_user[user] += 1

    def stats(self) -> dict[str, Any]:
        """Counters: token_requests, tokens_issued, token_failures, api_requests,
        unauthorized, forbidden, faults_injected, paths{route: n}, tokens_by_user{name: n}."""
        with self._lock:
            out: dict[str, Any] = {
                name: self._counts[name]
                for name in (
                    "token_requests",
                    "tokens_issued",
                    "token_failures",
                    "api_requests",
                    "unauthorized",
                    "forbidden",
                    "faults_injected",
                )
            }
            out["paths"] = dict(self._paths)
            out["tokens_by_user"] = dict(self._tokens_by_user)
        return out

    def reset_stats(self) -> None:
        with self._lock:
            self._counts.clear()
            self._paths.clear()
            self._tokens_by_user.clear()


def simulator_state(app: Starlette) -> SimulatorState:
    """The live state of an app made by :func:`create_simulator`."""
    state = app.state.imis
    assert isinstance(state, SimulatorState)
    return state


# --- JSON shapes --------------------------------------------------------------


def _t(name: str, namespace: str = _ASI) -> str:
    return f"{namespace}.{name}, {_CONTRACTS}"


def _collection(type_name: str, values: list[Any], plain: bool) -> Any:
    if plain:
        return values
    return {"$type": type_name, "$values": values}


def _paged(
    items: list[dict[str, Any]], item_type: str, offset: int, limit: int, plain: bool
) -> dict[str, Any]:
    page = items[offset : offset + limit]
    has_next = offset + limit < len(items)
    return {
        "$type": f"{_CORE}.PagedResult`1[[{item_type}]], {_CONTRACTS}",
        "Items": _collection(
            f"System.Collections.Generic.List`1[[{item_type}]], mscorlib", page, plain
        ),
        "Offset": offset,
        "Limit": limit,
        "Count": len(page),
        "TotalCount": len(items),
        "HasNext": has_next,
        "NextOffset": offset + limit if has_next else 0,
    }


def _user_json(person: SimPerson, plain: bool) -> dict[str, Any]:
    roles = [
        {
            "$type": _t("RoleData"),
            "Role": {"$type": _t("RoleSummaryData"), "RoleKey": r, "Description": r},
        }
        for r in person.roles
    ]
    return {
        "$type": _t("UserData"),
        "Party": {
            "$type": _t("PartySummaryData"),
            "PartyId": person.imis_id,
            "Id": person.imis_id,
            "Name": person.display_name,
        },
        "UserId": person.imis_id,
        "UserName": person.username,
        "IsDisabled": person.disabled,
        "Roles": _collection(_t("RoleDataCollection"), roles, plain),
    }


def _party_json(person: SimPerson, plain: bool) -> dict[str, Any]:
    emails: list[dict[str, Any]] = []
    if person.email:
        emails.append(
            {
                "$type": _t("EmailData"),
                "Address": person.email,
                "EmailType": "_Primary",
                "IsPrimary": True,
            }
        )
    emails += [
        {
            "$type": _t("EmailData"),
            "Address": e.address,
            "EmailType": e.type,
            "IsPrimary": e.primary,
        }
        for e in person.emails
    ]
    phones: list[dict[str, Any]] = []
    if person.phone:
        phones.append(
            {
                "$type": _t("PhoneData"),
                "Number": person.phone,
                "PhoneType": "Mobile",
                "IsPrimary": True,
            }
        )
    phones += [
        {"$type": _t("PhoneData"), "Number": p.number, "PhoneType": p.type, "IsPrimary": p.primary}
        for p in person.phones
    ]
    data: dict[str, Any] = {
        "$type": _t("OrganizationData" if person.is_organization else "PersonData"),
        "PartyId": person.imis_id,
        "Id": person.imis_id,
        "Name": person.display_name,
        "Emails": _collection(_t("EmailDataCollection"), emails, plain),
        "Phones": _collection(_t("PhoneDataCollection"), phones, plain),
        "Status": {
            "$type": _t("PartyStatusData"),
            "PartyStatusId": person.status_id,
            "Name": person.status,
        },
        "UpdateInformation": {"$type": _t("EntityUpdateInformationData", _CORE)},
    }
    if person.is_organization:
        data["OrganizationName"] = person.display_name
        return data
    name: dict[str, Any] = {"$type": _t("PersonNameData")}
    for key, value in (
        ("FirstName", person.first_name),
        ("LastName", person.last_name),
        ("FullName", person.full_name),
        ("InformalName", person.informal_name),
    ):
        if value:
            name[key] = value
    data["PersonName"] = name
    if person.organization_id or person.organization_name:
        data["PrimaryOrganization"] = {
            "$type": _t("PrimaryOrganizationInformationData"),
            "OrganizationPartyId": person.organization_id,
            "Name": person.organization_name,
            "Title": person.title,
        }
    return data


def _property_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$type": "System.DateTime", "$value": value.replace(tzinfo=None).isoformat()}
    if isinstance(value, dt.date):
        return {"$type": "System.DateTime", "$value": f"{value.isoformat()}T00:00:00"}
    return value


def _cscontact_json(person: SimPerson, plain: bool) -> dict[str, Any]:
    props: dict[str, Any] = {
        "ID": person.imis_id,
        "FullName": person.display_name,
        "MemberType": person.member_type or "",
        "Status": person.status_id,
        "Company": person.organization_name or "",
        "CompanyID": person.organization_id or "",
        "Title": person.title or "",
        "IsCompany": person.is_organization,
    }
    props.update(person.properties)
    values = [
        {"$type": _t("GenericPropertyData", _CORE), "Name": k, "Value": _property_value(v)}
        for k, v in props.items()
    ]
    return {
        "$type": _t("GenericEntityData", _CORE),
        "EntityTypeName": "CsContact",
        "PrimaryParentEntityTypeName": "Party",
        "Identity": {
            "$type": _t("IdentityData", _CORE),
            "EntityTypeName": "CsContact",
            "IdentityElements": _collection(
                "System.Collections.ObjectModel.Collection`1[[System.String, mscorlib]], mscorlib",
                [person.imis_id],
                plain,
            ),
        },
        "Properties": _collection(_t("GenericPropertyDataCollection", _CORE), values, plain),
    }


# --- endpoints ----------------------------------------------------------------

Handler = Callable[[Request, SimulatorState], Awaitable[Response]]


def _message(status: int, text: str, **headers: str) -> JSONResponse:
    return JSONResponse({"Message": text}, status_code=status, headers=headers or None)


def _filter_value(raw: str | None) -> str | None:
    """iMIS filters are ``Name=value`` or ``Name=eq:value``; other operators are refused."""
    if raw is None:
        return None
    op, sep, rest = raw.partition(":")
    if sep and op.lower() == "eq":
        return rest
    if sep and op.lower() in {"ne", "gt", "ge", "lt", "le", "contains", "startswith", "between"}:
        raise ValueError(f"operator {op} is not supported by the simulator")
    return raw


def _query(request: Request, name: str) -> str | None:
    lowered = name.lower()
    for key, value in request.query_params.multi_items():
        if key.lower() == lowered:
            return value
    return None


def _paging(request: Request) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        raw = _query(request, name)
        return int(raw) if raw and raw.isdigit() else default

    return number("Offset", 0), max(1, min(number("Limit", 100), 500))


def _may_read(caller: SimPerson, party_id: str) -> bool:
    return SERVICE_ROLE in caller.roles or caller.imis_id == party_id


def _local_path(request: Request) -> str:
    """The path below where the simulator is mounted (``/token``, not ``/_demo/imis/token``)."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def _hang(request: Request, seconds: float) -> None:
    """Sleep like a stuck server, but stop early once the client has gone away."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.05)


def _wrap(
    state: SimulatorState, handler: Handler, *, api: bool
) -> Callable[[Request], Awaitable[Response]]:
    """Latency, faults, counters and (for ``/api``) bearer authentication around a handler."""

    async def endpoint(request: Request) -> Response:
        path = _local_path(request)
        route = request.scope.get("route")
        state.count("api_requests" if api else "token_requests", path=getattr(route, "path", path))
        faults = state.faults
        delay = state.latency_ms + (faults.latency_ms if faults.matches(path) else 0)
        if delay:
            await asyncio.sleep(delay / 1000)
        error = state.take_error(path)
        if error is not None:
            if error.timeout:
                await _hang(request, error.timeout_seconds)
                return Response(status_code=504)
            if error.status is not None:
                headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
                return Response(
                    "Service Unavailable",
                    status_code=error.status,
                    headers=headers,
                    media_type="text/plain",
                )
            if error.malformed_json:
                return Response(
                    '{"$type": "Asi.Soa.Core.DataContracts.Paged',
                    status_code=200,
                    media_type="application/json",
                )
            return JSONResponse({"Message": "not what was asked for", "Count": "many"})
        return await handler(request, state)

    return endpoint


async def _token(request: Request, state: SimulatorState) -> Response:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return JSONResponse({"error": "invalid_request"}, status_code=400, headers=headers)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    grant = form.get("grant_type", [""])[0]
    if grant != "password":
        state.count("token_failures")
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400, headers=headers)
    username = form.get("username", [""])[0]
    password = form.get("password", [""])[0]
    person = state.users.get(username.casefold())
    if (
        person is None
        or not person.password
        or not secrets.compare_digest(person.password.encode(), password.encode())
    ):
        state.count("token_failures")
        return JSONResponse(
            {"error": "invalid_grant", "error_description": _WRONG_PASSWORD},
            status_code=400,
            headers=headers,
        )
    if person.disabled:
        state.count("token_failures")
        return JSONResponse(
            {"error": "invalid_grant", "error_description": _DISABLED},
            status_code=400,
            headers=headers,
        )
    assert person.username is not None
    state.count("tokens_issued", user=person.username)
    issued = dt.datetime.now(dt.UTC)
    expires = issued + dt.timedelta(seconds=state.token_seconds)
    return JSONResponse(
        {
            "access_token": state.issue_token(person.username),
            "token_type": "bearer",
            "expires_in": state.token_seconds,
            "userName": person.username,
            ".issued": format_datetime(issued, usegmt=True),
            ".expires": format_datetime(expires, usegmt=True),
        },
        headers=headers,
    )


def _authenticated(
    handler: Callable[[Request, SimulatorState, SimPerson], Awaitable[Response]],
) -> Handler:
    async def check(request: Request, state: SimulatorState) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        caller = state.caller(token.strip()) if scheme.lower() == "bearer" else None
        if caller is None:
            state.count("unauthorized")
            return _message(401, _DENIED, **{"WWW-Authenticate": "Bearer"})
        return await handler(request, state, caller)

    return check


def _forbidden(state: SimulatorState) -> JSONResponse:
    state.count("forbidden")
    return _message(403, _DENIED)


async def _users(request: Request, state: SimulatorState, caller: SimPerson) -> Response:
    try:
        by_name = _filter_value(_query(request, "UserName"))
        by_id = _filter_value(_query(request, "UserId"))
    except ValueError as exc:
        return _message(400, str(exc))
    matches = [p for p in state.people.values() if p.username]
    if by_name is not None:
        matches = [p for p in matches if (p.username or "").casefold() == by_name.casefold()]
    if by_id is not None:
        matches = [p for p in matches if p.imis_id == by_id]
    if SERVICE_ROLE not in caller.roles:
        asks_for_self = (by_name is not None or by_id is not None) and all(
            p.imis_id == caller.imis_id for p in matches
        )
        if not asks_for_self or not matches:
            return _forbidden(state)
    offset, limit = _paging(request)
    items = [_user_json(p, state.plain_lists) for p in matches]
    return JSONResponse(_paged(items, _t("UserData"), offset, limit, state.plain_lists))


async def _party(request: Request, state: SimulatorState, caller: SimPerson) -> Response:
    party_id = request.path_params["party_id"]
    if not _may_read(caller, party_id):
        return _forbidden(state)
    person = state.people.get(party_id)
    if person is None:
        return _message(404, f"Party {party_id} was not found.")
    return JSONResponse(_party_json(person, state.plain_lists))


async def _parties(request: Request, state: SimulatorState, caller: SimPerson) -> Response:
    if SERVICE_ROLE not in caller.roles:
        return _forbidden(state)
    try:
        email = _filter_value(_query(request, "Email"))
    except ValueError as exc:
        return _message(400, str(exc))
    matches = list(state.people.values())
    if email is not None:
        wanted = email.strip().casefold()
        matches = [
            p
            for p in matches
            if wanted in {a.casefold() for a in [p.email or "", *(e.address for e in p.emails)]}
        ]
    offset, limit = _paging(request)
    items = [_party_json(p, state.plain_lists) for p in matches]
    return JSONResponse(_paged(items, _t("PartyData"), offset, limit, state.plain_lists))


async def _cscontact(request: Request, state: SimulatorState, caller: SimPerson) -> Response:
    party_id = request.path_params["party_id"]
    if not _may_read(caller, party_id):
        return _forbidden(state)
    person = state.people.get(party_id)
    if person is None:
        return _message(404, f"CsContact {party_id} was not found.")
    return JSONResponse(_cscontact_json(person, state.plain_lists))


# --- /_sim admin ---------------------------------------------------------------


def _admin_routes(state: SimulatorState) -> list[Route]:
    async def get_faults(request: Request) -> Response:
        faults = state.faults
        return JSONResponse({f.name: getattr(faults, f.name) for f in fields(faults)})

    async def set_faults(request: Request) -> Response:
        try:
            faults = Faults.from_json(json.loads(await request.body() or b"{}"))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        state.set_faults(faults)
        return await get_faults(request)

    async def clear_faults(request: Request) -> Response:
        state.clear_faults()
        return Response(status_code=204)

    async def get_stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def reset_stats(request: Request) -> Response:
        state.reset_stats()
        return Response(status_code=204)

    async def expire_tokens(request: Request) -> Response:
        state.expire_tokens()
        return Response(status_code=204)

    return [
        Route("/_sim/faults", get_faults, methods=["GET"]),
        Route("/_sim/faults", set_faults, methods=["POST"]),
        Route("/_sim/faults", clear_faults, methods=["DELETE"]),
        Route("/_sim/stats", get_stats, methods=["GET"]),
        Route("/_sim/stats", reset_stats, methods=["DELETE"]),
        Route("/_sim/expire-tokens", expire_tokens, methods=["POST"]),
    ]


def create_simulator(
    people: Sequence[SimPerson] | None = None,
    *,
    latency_ms: int = 0,
    token_seconds: int = 1199,
    plain_lists: bool = False,
    faults: Faults | None = None,
) -> Starlette:
    """A new simulator app; ``people`` defaults to the demo people.

    ``latency_ms`` delays every iMIS request; ``token_seconds`` is the bearer
    token lifetime; ``plain_lists`` renders collections as plain lists (older
    iMIS); ``faults`` starts with faults injected. All of these can be changed
    while it runs through :func:`simulator_state` or ``/_sim/``.
    """
    if people is None:
        people = load_people(DEFAULT_PEOPLE_FILE)
    state = SimulatorState(
        people, latency_ms=latency_ms, token_seconds=token_seconds, plain_lists=plain_lists
    )
    if faults is not None:
        state.set_faults(faults)
    routes = [
        Route("/token", _wrap(state, _token, api=False), methods=["POST"]),
        Route("/api/User", _wrap(state, _authenticated(_users), api=True), methods=["GET"]),
        Route("/api/Party", _wrap(state, _authenticated(_parties), api=True), methods=["GET"]),
        Route(
            "/api/Party/{party_id}",
            _wrap(state, _authenticated(_party), api=True),
            methods=["GET"],
        ),
        Route(
            "/api/CsContact/{party_id}",
            _wrap(state, _authenticated(_cscontact), api=True),
            methods=["GET"],
        ),
        *_admin_routes(state),
    ]
    app = Starlette(routes=routes)
    app.state.imis = state
    return app


def serve_simulator(port: int, people_file: str | None, latency_ms: int) -> int:
    """Run the simulator on 127.0.0.1:``port`` until interrupted; prints the people first."""
    import uvicorn

    try:
        people = load_people(people_file or DEFAULT_PEOPLE_FILE)
    except (OSError, ValueError) as exc:
        print(f"cannot read people: {exc}", file=sys.stderr)
        return 2
    app = create_simulator(people, latency_ms=latency_ms)
    print(f"iMIS simulator on http://127.0.0.1:{port} (latency {latency_ms} ms)")
    print(f"people from {people_file or DEFAULT_PEOPLE_FILE}:\n")
    print(describe_people(people))
    print('\nfaults: POST /_sim/faults {"status": 503, "count": 2}; counters: GET /_sim/stats')
    sys.stdout.flush()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    return 0
