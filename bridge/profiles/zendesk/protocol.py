"""Zendesk JWT remote login, the protocol: a registration's options and what Zendesk receives.

Owns the Zendesk keys of a registration (subdomain, shared secret, brand hosts,
what a claim mapping may produce) as an options schema, where a Zendesk lives
(:func:`zendesk_origin`, the one place it is computed), the JWT Zendesk receives
(:func:`encode_jwt`: a translation of the claims OIDC userinfo releases), the
check that keeps ``return_to`` on Zendesk (:func:`safe_return_to`) and the
plain-language hint for an error Zendesk reports (:func:`error_hint`). It is
protocol logic only: it never touches HTTP objects, storage or iMIS, and it never
lets a mapping (or anything else) produce ``role`` or ``custom_role_id``, because
signing in must not grant Zendesk privileges.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from bridge.keys.encoding import b64url
from bridge.schema import OptionField, OptionsSchema, optional_str_list, require_str
from bridge.settings import Problems, Settings
from bridge.urls import origin_of

log = logging.getLogger("bridge.zendesk")

NAME = "zendesk"
FORBIDDEN_CLAIMS = frozenset({"role", "custom_role_id"})
SIMPLE_TARGETS = frozenset(
    {
        "organization",
        "organization_id",
        "organizations",
        "tags",
        "locale",
        "locale_id",
        "remote_photo_url",
    }
)
#: Bytes; RFC 7518 §3.2 wants an HS256 key at least as long as the hash (Zendesk's are longer).
MIN_SECRET_LENGTH = 32
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_FIELD_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
#: The JWT header Zendesk documents, byte for byte (PyJWT would sort it otherwise).
JWT_HEADER = {"typ": "JWT", "alg": "HS256"}
# A compact JWS (RFC 7515 §7.1) with HS256 (RFC 7518 §3.2), built here: a fixed header,
# one HMAC; PyJWT's general encoder cost three times as much on every remote login.
_JWT_HEADER_B64 = b64url(json.dumps(JWT_HEADER, separators=(",", ":")).encode())
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
#: Longest return_to passed on; Zendesk's own URLs are far shorter.
MAX_RETURN_TO = 2048
#: Characters never allowed in return_to, raw or percent-decoded: controls, space, backslash.
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True, slots=True)
class ZendeskOptions:
    subdomain: str
    brand_hosts: tuple[str, ...] = ()
    refuse_shared_email: bool = True
    shared_secret: str = field(default="", repr=False)

    @property
    def host(self) -> str:
        return f"{self.subdomain}.zendesk.com"

    @property
    def lookup_key(self) -> None:
        return None  # found by slug only

    def summary(self) -> dict[str, Any]:
        return {"shared_secret_set": bool(self.shared_secret)}

    def to_data(self) -> dict[str, Any]:
        """Settings without the secret (what the database and the admin see)."""
        return {
            "subdomain": self.subdomain,
            "brand_hosts": list(self.brand_hosts),
            "refuse_shared_email": self.refuse_shared_email,
        }


def normalise_subdomain(raw: str) -> tuple[str | None, str | None]:
    """``(subdomain, None)`` or ``(None, reason)`` for ``contoso``/``contoso.zendesk.com``/URL."""
    text = raw.strip().lower()
    if "://" in text:
        try:
            text = urlsplit(text).hostname or ""
        except ValueError:
            return None, "is not a valid Zendesk subdomain"
    text = text.strip("/")
    if text.endswith(".zendesk.com"):
        text = text[: -len(".zendesk.com")]
    if "." in text:
        return None, (
            f"{raw!r} looks like a custom domain, not a Zendesk subdomain: give the "
            "subdomain (e.g. 'contoso' for contoso.zendesk.com) and put the custom "
            "domain in brand_hosts"
        )
    if not _LABEL.match(text):
        return None, f"{raw!r} is not a valid Zendesk subdomain (letters, digits and '-')"
    return text, None


def _normalise_host(raw: str) -> str | None:
    host = raw.strip().lower().rstrip(".")
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return None
    return host


def zendesk_origin(settings: Settings, options: ZendeskOptions) -> str:
    """Where the Zendesk of ``options`` lives: ``https://{subdomain}.zendesk.com``, unless
    the server-only ``zendesk_base_url`` (demo and tests) says otherwise."""
    if settings.zendesk_base_url:
        return settings.zendesk_base_url.replace("{subdomain}", options.subdomain).rstrip("/")
    return f"https://{options.host}"


def claim_target(target: str) -> str | None:
    """None when a Zendesk registration's ``[claims]`` may produce ``target``, else why not."""
    if target in FORBIDDEN_CLAIMS or target.split(".", 1)[0] in FORBIDDEN_CLAIMS:
        return f"{target!r} can never be mapped: signing in must not grant Zendesk privileges"
    if target in SIMPLE_TARGETS:
        return None
    if target.startswith("user_fields."):
        key = target[len("user_fields.") :]
        return None if _FIELD_KEY.match(key) else "a user field key is letters, digits and '_'"
    return (
        f"{target!r} is not a Zendesk attribute the bridge can send "
        f"(use {', '.join(sorted(SIMPLE_TARGETS))} or user_fields.<key>)"
    )


def parse_options(
    data: Mapping[str, Any], problems: Problems, hash_secret: Callable[[str], str]
) -> ZendeskOptions:
    """Validate the Zendesk keys of a registration."""
    subdomain = ""
    raw_subdomain = require_str(data, "subdomain", problems)
    if raw_subdomain:
        normal, reason = normalise_subdomain(raw_subdomain)
        if reason:
            problems.add("subdomain", reason)
        subdomain = normal or ""
    secret = data.get("shared_secret", "")
    if not isinstance(secret, str) or not secret:
        problems.add("shared_secret", "is required (Zendesk Admin Center → Single sign-on → JWT)")
        secret = ""
    elif len(secret.encode("utf-8")) < MIN_SECRET_LENGTH:
        problems.add(
            "shared_secret",
            f"is too short to be a Zendesk shared secret (at least {MIN_SECRET_LENGTH} characters)",
        )
    hosts = []
    for i, raw in enumerate(optional_str_list(data, "brand_hosts", problems)):
        host = _normalise_host(raw)
        if host is None:
            problems.add(f"brand_hosts[{i}]", f"{raw!r} is not a host name (no scheme or path)")
        else:
            hosts.append(host)
    refuse = data.get("refuse_shared_email", True)
    if not isinstance(refuse, bool):
        problems.add("refuse_shared_email", "must be true or false")
        refuse = True
    return ZendeskOptions(
        subdomain=subdomain,
        brand_hosts=tuple(dict.fromkeys(hosts)),
        refuse_shared_email=refuse,
        shared_secret=secret,
    )


# --- the JWT ------------------------------------------------------------------


def is_e164(phone: str) -> bool:
    return bool(_E164.match(phone))


def jwt_claims(
    claims: Mapping[str, Any], mapping: Mapping[str, str], *, now: int, jti: str
) -> dict[str, Any]:
    """What Zendesk receives, translated from the ``claims`` OIDC userinfo releases
    (:func:`bridge.claims.userinfo`) for a registration whose ``[claims]`` is ``mapping``.

    Raises :class:`ValueError` when the person has no primary email (callers
    refuse such a person with a page before getting here) or ``jti`` is too short.
    """
    email = claims.get("email")
    if not email:
        raise ValueError("a Zendesk JWT needs the person's primary email")
    if len(jti) < 22:
        raise ValueError("jti must carry at least 128 random bits")
    subject = str(claims["sub"])
    out: dict[str, Any] = {
        "iat": int(now),
        "jti": jti,
        "email": email,
        "name": claims["name"],
        "external_id": subject,
    }
    phone = claims.get("phone_number")
    if phone:
        if is_e164(phone):
            out["phone"] = phone
        else:  # Zendesk refuses the whole sign-in over a malformed phone: leave it out
            log.warning("phone of %s is not E.164; not sent to Zendesk", subject)
    user_fields: dict[str, str] = {}
    for target in mapping:
        if claim_target(target) is not None:  # refused at config time; never trust it here
            log.warning("claim %r dropped: not a claim the bridge may send to Zendesk", target)
            continue
        value = claims.get(target)
        if not isinstance(value, str) or not value.strip():
            continue
        value = value.strip()
        if target.startswith("user_fields."):
            user_fields[target[len("user_fields.") :]] = value
            continue
        converted = _convert_claim(target, value)
        if converted is None:
            log.warning("claim %r of %s dropped: unusable value", target, subject)
        else:
            out[target] = converted
    if user_fields:
        out["user_fields"] = user_fields
    for forbidden in FORBIDDEN_CLAIMS:
        out.pop(forbidden, None)
    return out


def _convert_claim(target: str, value: str) -> Any:
    if target == "tags":
        return [t for t in re.split(r"[\s,]+", value) if t]
    if target == "organizations":
        return [o.strip() for o in value.split(",") if o.strip()]
    if target == "locale_id":
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        return int(value) if value.isascii() and value.isdigit() else None
    if target == "remote_photo_url":
        try:
            parts = urlsplit(value)
        except ValueError:
            return None
        return value if parts.scheme == "https" and parts.hostname else None
    return value


def encode_jwt(
    claims: Mapping[str, Any],
    options: ZendeskOptions,
    mapping: Mapping[str, str],
    *,
    now: int,
    jti: str,
) -> str:
    """The HS256 JWT for Zendesk's ``/access/jwt`` (see :func:`jwt_claims`), signed with
    the registration's shared secret."""
    if not options.shared_secret:
        raise ValueError("the registration has no shared secret")
    payload = json.dumps(jwt_claims(claims, mapping, now=now, jti=jti), separators=(",", ":"))
    signing_input = f"{_JWT_HEADER_B64}.{b64url(payload.encode())}"
    mac = hmac.new(options.shared_secret.encode(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64url(mac.digest())}"


# --- return_to ------------------------------------------------------------------


def allowed_origins(
    options: ZendeskOptions, origin: str | None = None
) -> set[tuple[str, str, int]]:
    """Origins return_to may point at: the Zendesk host, brand hosts, and the server override."""
    allowed = {("https", options.host, 443), *(("https", h, 443) for h in options.brand_hosts)}
    override = origin_of(origin) if origin else None
    if override is not None:
        allowed.add(override)
    return allowed


def safe_return_to(value: str | None, options: ZendeskOptions, origin: str | None) -> str | None:
    """``value`` when it is safe to hand Zendesk as ``return_to``, else None (and a log line).

    Safe means a relative path starting with a single ``/``, or an absolute
    https URL whose host is exactly ``{subdomain}.zendesk.com`` or a configured
    brand host (``origin``, the server-only override used by the demo and tests,
    counts as the Zendesk host). Anything with userinfo, backslashes, control
    characters or a percent-encoded version of those tricks is dropped.
    """
    if not value:
        return None
    reason = _return_to_problem(value, allowed_origins(options, origin))
    if reason is None:
        return value
    log.warning("return_to dropped for %s (%s): %r", options.subdomain, reason, value[:200])
    return None


def _return_to_problem(value: str, allowed: set[tuple[str, str, int]]) -> str | None:
    if len(value) > MAX_RETURN_TO:
        return "too long"
    stages = [value]
    for _ in range(3):  # double and triple encoding are the usual disguises
        decoded = unquote(stages[-1])
        if decoded == stages[-1]:
            break
        stages.append(decoded)
    for stage in stages:
        if _UNSAFE.search(stage):
            return "control character, space or backslash"
        if stage.startswith(("//", "/\\")):
            return "protocol-relative"
    if not value.isascii():
        return "not ASCII"
    if value.startswith("/"):
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "not a URL"
    if not parts.scheme:
        return "not an absolute URL nor a path starting with '/'"
    if parts.scheme not in {"http", "https"}:
        return f"scheme {parts.scheme!r}"
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        return "userinfo"
    host = parts.hostname or ""
    if (parts.scheme, host, port or (443 if parts.scheme == "https" else 80)) not in allowed:
        return f"host {host!r} is not this Zendesk"
    if "%" in parts.netloc:
        return "percent-encoded host"
    return None


# --- errors Zendesk reports -------------------------------------------------------

#: (words in Zendesk's message, what probably happened in a member's words, what
#: an administrator does about it, for the log: ``{slug}`` is the registration).
#: Commands for administrators never go on a member's page.
_HINTS: tuple[tuple[tuple[str, ...], str, str | None], ...] = (
    (
        ("signature",),
        "The shared secret no longer matches: someone probably pressed Reset in Zendesk. "
        "An administrator must paste the new secret into the bridge.",
        "paste Zendesk's new shared secret with "
        "`bridge registrations rotate-secret {slug} --secret-stdin`",
    ),
    (
        ("expired", "iat", "clock", "time"),
        "Zendesk thinks the sign-in token is too old or from the future: the clock of the "
        "bridge server is probably wrong. An administrator should check that it uses NTP.",
        "check that the bridge server's clock is synchronised (NTP)",
    ),
    (
        ("jti", "already", "replay", "used"),
        "This sign-in token was already used. Go back to the help center and sign in again.",
        None,
    ),
    (
        ("phone",),
        "Zendesk refused the phone number from iMIS. An administrator can correct it in iMIS.",
        "correct the person's phone number in iMIS",
    ),
    (
        ("email",),
        "Zendesk refused the email address from iMIS. An administrator can correct it in iMIS.",
        "correct the person's email address in iMIS",
    ),
)


def _hint_for(message: str) -> tuple[str, str | None] | None:
    text = message.lower()
    for words, hint, remedy in _HINTS:
        if any(re.search(rf"\b{re.escape(w)}", text) for w in words):
            return hint, remedy
    return None


def error_hint(message: str) -> str | None:
    """What probably went wrong, in plain words, for an error message Zendesk sent back."""
    found = _hint_for(message)
    return found[0] if found else None


def admin_remedy(message: str, slug: str) -> str | None:
    """What an administrator should do about that error (for the log, never a page)."""
    found = _hint_for(message)
    return found[1].format(slug=slug) if found and found[1] else None


#: The keys of a ``zendesk`` registration, in the order forms show them.
SCHEMA = OptionsSchema(
    fields=(
        OptionField(
            "subdomain",
            "Zendesk Subdomain",
            "contoso for contoso.zendesk.com (its URL is accepted too). A Zendesk on a custom "
            "domain (support.contoso.org) still has its zendesk.com subdomain: give that "
            "here, and the custom domain under brand hosts",
            required=True,
        ),
        OptionField(
            "shared_secret",
            "Zendesk JWT Shared Secret",
            "From Zendesk Admin Center, Single sign-on, JSON Web Token (shown there once); "
            "kept encrypted, never shown again",
            required=True,
            kind="secret",
            secret="encrypt",
        ),
        OptionField(
            "brand_hosts",
            "Brand hosts",
            "Host names of the Help Centers of other brands (return_to may point there)",
            kind="list",
        ),
        OptionField(
            "refuse_shared_email",
            "Refuse shared emails",
            "Refuse a person whose primary email another iMIS person also has (default true)",
            kind="bool",
        ),
    ),
    parse=parse_options,
)
