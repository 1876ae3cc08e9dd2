"""Validation of an OpenID Connect authorization request (the ``/authorize`` step).

Framework-neutral: takes the request's parameters as ordered pairs and either
returns a validated :class:`AuthorizationRequest` or raises one of two errors.
:class:`ShowError` is shown on our own page because the client or its
redirect URI cannot be trusted (SECURITY A1, A2); :class:`RedirectError` is
sent back to the client's registered redirect URI with ``state`` and ``iss``
(RFC 6749 §4.1.2.1, RFC 9207). PKCE S256 is required for every client (A3);
scopes the registration does not allow are dropped (A6).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bridge.oauth.client import client_options
from bridge.registry import Registration

_CHALLENGE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
#: No OAuth parameter may hold a control character (RFC 6749 Appendix A: VSCHAR and
#: friends); refusing them early also keeps NUL away from PostgreSQL text columns.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_PARAM = 2048
PROMPTS = frozenset({"none", "login", "consent", "select_account"})


class ShowError(Exception):
    """An error shown to the person on our page; never redirected anywhere."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class RedirectError(Exception):
    """An OAuth error returned to the client's redirect URI."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None) -> None:
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state
        super().__init__(f"{error}: {description}")


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    prompt: str | None
    max_age: int | None
    login_hint: str | None

    def to_params(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, data: dict[str, Any]) -> AuthorizationRequest:
        return cls(**data)


def has_control_chars(value: str) -> bool:
    return _CONTROL.search(value) is not None


def redirect_with(redirect_uri: str, params: dict[str, str | None]) -> str:
    """``redirect_uri`` with ``params`` added to its query (existing query kept)."""
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend((k, v) for k, v in params.items() if v is not None)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def validate(
    pairs: Sequence[tuple[str, str]],
    find_client: Callable[[str], Registration | None],
) -> tuple[Registration, AuthorizationRequest]:
    """Validate an authorization request; see the module docstring for the errors."""
    params: dict[str, str] = {}
    repeated: set[str] = set()
    for key, value in pairs:
        if key in params:
            repeated.add(key)
        params[key] = value
    client_id = params.get("client_id", "")
    if (
        not client_id
        or "client_id" in repeated
        or len(client_id) > 200
        or has_control_chars(client_id)
    ):
        raise ShowError("The application did not say who it is (client_id is missing or invalid).")
    registration = find_client(client_id)
    options = client_options(registration)
    if registration is None or options is None or not registration.enabled:
        raise ShowError("This application is not registered with the sign-in service.")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri or "redirect_uri" in repeated:
        raise ShowError(f"{registration.name} did not send a redirect_uri.")
    if redirect_uri not in options.redirect_uris:
        raise ShowError(
            f"{registration.name} asked to return to an address that is not registered for it."
        )
    state = params.get("state") if "state" not in repeated else None

    def fail(error: str, description: str) -> RedirectError:
        return RedirectError(error, description, redirect_uri, state)

    if repeated:
        raise fail("invalid_request", f"repeated parameter(s): {', '.join(sorted(repeated))}")
    if any(len(v) > _MAX_PARAM for v in params.values()):
        raise fail("invalid_request", "a parameter is too long")
    if any(has_control_chars(v) for v in params.values()):
        raise fail("invalid_request", "a parameter contains a control character")
    if "request" in params or "request_uri" in params:
        raise fail("request_not_supported", "request objects are not supported")
    response_type = params.get("response_type")
    if not response_type:
        raise ShowError(f"{registration.name} sent a sign-in request without a response_type.")
    if response_type != "code":
        raise fail("unsupported_response_type", "only response_type=code is supported")
    response_mode = params.get("response_mode")
    if response_mode not in (None, "query"):
        raise fail("invalid_request", "only response_mode=query is supported")

    requested = params.get("scope", "").split()
    if "openid" not in requested:
        raise fail("invalid_scope", "the openid scope is required")
    allowed = [s for s in dict.fromkeys(requested) if s in options.scopes]

    challenge = params.get("code_challenge", "")
    method = params.get("code_challenge_method", "")
    if not challenge:
        raise fail("invalid_request", "code_challenge is required (PKCE with S256)")
    if method != "S256":
        raise fail("invalid_request", "code_challenge_method must be S256")
    if not _CHALLENGE.match(challenge):
        raise fail("invalid_request", "code_challenge is malformed")

    prompt_values = params.get("prompt", "").split()
    if any(p not in PROMPTS for p in prompt_values):
        raise fail("invalid_request", "unknown prompt value")
    if "none" in prompt_values and len(prompt_values) > 1:
        raise fail("invalid_request", "prompt=none cannot be combined with other values")
    prompt = "none" if "none" in prompt_values else "login" if "login" in prompt_values else None

    max_age: int | None = None
    if "max_age" in params:
        raw_max_age = params["max_age"]
        # ASCII digits only: str.isdigit() also takes "²" (int() refuses it) and "٣".
        if not (raw_max_age.isascii() and raw_max_age.isdigit()) or len(raw_max_age) > 10:
            raise fail("invalid_request", "max_age must be a whole number of seconds")
        max_age = int(raw_max_age)

    login_hint = params.get("login_hint") or None
    if login_hint is not None:
        login_hint = login_hint[:256]
    return registration, AuthorizationRequest(
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope=" ".join(allowed),
        state=state,
        nonce=params.get("nonce") or None,
        code_challenge=challenge,
        code_challenge_method=method,
        prompt=prompt,
        max_age=max_age,
        login_hint=login_hint,
    )
