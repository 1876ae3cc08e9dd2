"""DiscourseConnect, the protocol: a registration's options and the signed payloads it trades.

Owns the Discourse keys of a registration (forum URL, connect secret, shared-email
rule, what a claim mapping may produce) as an options schema (:data:`SCHEMA`),
the check of the request Discourse signs
(:func:`verify_request`), the answer it receives (:func:`build_response`,
:func:`failed_response`) and the redirect that carries it back
(:func:`redirect_url`). It is protocol logic only: no HTTP objects, storage or
iMIS. It takes the claims OIDC userinfo releases (a plain mapping: ``sub``,
``name``, ``email``, the mapped claims), never an Identity, and it never lets a
mapping (or anything else) produce ``admin`` or ``moderator``, because signing
in must not grant Discourse staff powers (SECURITY.md E8).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from bridge.errors import BadRequest
from bridge.schema import OptionField, OptionsSchema, require_str
from bridge.settings import Problems, is_local_host, url_problem
from bridge.urls import origin_of

log = logging.getLogger("bridge.discourse")

NAME = "discourse"
DISPLAY_NAME = "Discourse Profile"

#: Discourse accepts 10 characters; we want 32. Anyone who sees one signed request
#: (a browser history, a proxy log) can guess the secret offline at GPU speed, and
#: the secret lets them sign in to the forum as any member: 32 random characters
#: (``openssl rand -hex 32`` gives 64) put that out of reach, 10 do not.
MIN_SECRET_LENGTH = 32
#: What Discourse itself refuses as an external_id (DiscourseConnect::BANNED_EXTERNAL_IDS).
BANNED_EXTERNAL_IDS = frozenset({"none", "nil", "blank", "null"})

#: Fields that grant staff powers: never configurable, never sent (E8).
FORBIDDEN_TARGETS = frozenset({"admin", "moderator"})
#: Fields the bridge computes itself, or switches that are not a person's data.
RESERVED_TARGETS = frozenset(
    {
        "nonce",
        "external_id",
        "email",
        "name",
        "require_activation",
        "return_sso_url",
        "failed",
        "prompt",
        "logout",
        "suppress_welcome_message",
        "avatar_force_update",
        "locale_force_update",
        "require_2fa",
        "confirmed_2fa",
        "no_2fa_methods",
    }
)
#: Comma-separated lists of group names (``groups`` is the full set when the forum
#: turns on ``discourse_connect_overrides_groups``).
GROUP_TARGETS = frozenset({"groups", "add_groups", "remove_groups"})
URL_TARGETS = frozenset({"avatar_url", "profile_background_url", "card_background_url"})
TEXT_TARGETS = frozenset({"username", "bio", "website", "location", "title", "locale"})
SIMPLE_TARGETS = GROUP_TARGETS | URL_TARGETS | TEXT_TARGETS
CUSTOM_PREFIX = "custom."

_FIELD_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")
#: Discourse checks the sso value against this alphabet (line breaks included:
#: Ruby's Base64.encode64 wraps every 60 characters).
_BASE64_AS_SENT = re.compile(r"[A-Za-z0-9+/=\r\n]+")
_HEX_SIG = re.compile(r"[0-9a-f]{64}")
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Bounds on what a forum may send: Discourse's own requests are about 150 characters.
MAX_SSO_LENGTH = 4096
MAX_NONCE_LENGTH = 256
MAX_RETURN_URL = 2048
_MAX_FIELDS = 32


# --- options ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiscourseOptions:
    """A Discourse registration's own settings; ``discourse_url`` is normalised.

    ``discourse_url`` is ``scheme://host[:port]`` plus the path of a forum served
    in a subfolder (``https://contoso.org/forum``), never with a trailing ``/``.
    """

    discourse_url: str
    refuse_shared_email: bool = True
    connect_secret: str = field(default="", repr=False)

    @property
    def origin(self) -> tuple[str, str, int]:
        """``(scheme, host, port)`` of the forum, default port filled in."""
        found = origin_of(self.discourse_url)
        if found is None:  # parse_options never builds such options
            raise ValueError("discourse_url is not an http(s) URL")
        return found

    @property
    def path(self) -> str:
        """The forum's path prefix: ``""`` at the root of its host."""
        return urlsplit(self.discourse_url).path

    @property
    def lookup_key(self) -> None:
        return None  # found by slug only

    def summary(self) -> dict[str, Any]:
        return {"connect_secret_set": bool(self.connect_secret)}

    def to_data(self) -> dict[str, Any]:
        """Settings without the secret (what the database and the admin see)."""
        return {
            "discourse_url": self.discourse_url,
            "refuse_shared_email": self.refuse_shared_email,
        }


def normalise_discourse_url(raw: str) -> tuple[str | None, str | None]:
    """``(url, None)`` or ``(None, reason)``: the forum's base URL as the bridge stores it."""
    text = raw.strip()
    reason = url_problem(text)
    if reason:
        return None, reason
    if not text.isascii():
        return None, "must be ASCII (write an international domain name in its xn-- form)"
    parts = urlsplit(text)
    host = parts.hostname or ""
    if parts.scheme == "http" and not is_local_host(host):
        return None, "must use https (http is allowed only for localhost)"
    if parts.query or parts.fragment or "?" in text or "#" in text:
        return None, "must be the forum's address only, without '?' or '#'"
    if "%" in parts.netloc:
        return None, "must not percent-encode the host"
    segments = [s for s in parts.path.split("/") if s]
    if "//" in parts.path.rstrip("/") or any(
        s in {".", ".."} or not _PATH_SEGMENT.match(s) for s in segments
    ):
        return None, "has an unusual path: give the forum's address, e.g. https://forum.example.org"
    default = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port is not None and parts.port != default else ""
    netloc = f"[{host}]" if ":" in host else host
    path = "".join(f"/{s}" for s in segments)
    return f"{parts.scheme}://{netloc}{port}{path}", None


def claim_target(target: str) -> str | None:
    """None when a ``[claims]`` mapping may produce ``target``, else the reason it may not."""
    head = target.split(".", 1)[0]
    if target in FORBIDDEN_TARGETS or head in FORBIDDEN_TARGETS:
        return f"{target!r} can never be mapped: signing in must not grant Discourse staff powers"
    if target in RESERVED_TARGETS:
        return f"{target!r} is a field the bridge computes itself"
    if target in SIMPLE_TARGETS:
        return None
    if target.startswith(CUSTOM_PREFIX):
        key = target[len(CUSTOM_PREFIX) :]
        return None if _FIELD_KEY.match(key) else "a custom field name is letters, digits and '_'"
    return (
        f"{target!r} is not a Discourse field the bridge can send "
        f"(use {', '.join(sorted(SIMPLE_TARGETS))} or custom.<field>)"
    )


def parse_options(
    data: Mapping[str, Any],
    problems: Problems,
    hash_secret: Callable[[str], str] | None = None,
) -> DiscourseOptions:
    """Validate the Discourse keys of a registration (``hash_secret`` is unused: the
    connect secret is kept encrypted, since the bridge signs with it)."""
    url = ""
    raw_url = require_str(data, "discourse_url", problems)
    if raw_url:
        normal, reason = normalise_discourse_url(raw_url)
        if reason:
            problems.add("discourse_url", f"{reason} (the forum's address)")
        url = normal or ""
    secret = data.get("connect_secret", "")
    if not isinstance(secret, str) or not secret:
        problems.add(
            "connect_secret",
            "is required (the forum's discourse_connect_secret, in Admin → Settings)",
        )
        secret = ""
    elif len(secret) < MIN_SECRET_LENGTH:
        problems.add(
            "connect_secret",
            f"is too short: at least {MIN_SECRET_LENGTH} characters "
            "(generate one with `openssl rand -hex 32` and paste it into both sides)",
        )
    elif secret != secret.strip() or _CONTROL.search(secret):
        problems.add(
            "connect_secret", "must not start or end with spaces or hold control characters"
        )
    refuse = data.get("refuse_shared_email", True)
    if not isinstance(refuse, bool):
        problems.add("refuse_shared_email", "must be true or false")
        refuse = True
    return DiscourseOptions(discourse_url=url, refuse_shared_email=refuse, connect_secret=secret)


# --- the request Discourse signs ---------------------------------------------------


class ConnectRefused(BadRequest):
    """A DiscourseConnect request the bridge will not answer with a signed payload (E7).

    ``reason`` is a short code for tests and logs; ``detail`` says more, for the
    log only. The person sees one plain message: nothing in it helps a forger.
    """

    title = "The forum's sign-in request cannot be used"

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(
            "The forum sent a sign-in request the bridge cannot accept. Go back to the "
            "forum and sign in again; if this keeps happening, tell the association.",
            detail=f"{reason}: {detail}",
        )


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A verified DiscourseConnect request: what the forum asked for."""

    nonce: str
    return_sso_url: str
    prompt: str | None = None
    #: Every field of the decoded payload, as sent.
    payload: Mapping[str, str] = field(default_factory=dict)

    @property
    def prompt_none(self) -> bool:
        """The forum asks for an answer without any page (``failed=true`` if nobody is in)."""
        return self.prompt == "none"


def sign(payload: str, secret: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``payload`` (the Base64 string as sent) with ``secret``."""
    return hmac.new(secret.encode("utf-8"), payload.encode("ascii"), hashlib.sha256).hexdigest()


def verify_request(sso: object, sig: object, options: DiscourseOptions) -> ConnectRequest:
    """Check ``sso``/``sig`` (the query values, URL-decoded) as the forum of ``options`` signs them.

    Raises :class:`ConnectRefused` for anything else (E7): a value outside the
    Base64 alphabet, a signature that is not 64 lowercase hex digits or does not
    match (compared in constant time, over the Base64 string exactly as sent),
    a payload that does not decode, no ``nonce``, or a ``return_sso_url`` off
    the registered forum.
    """
    if not isinstance(sso, str) or not sso:
        raise ConnectRefused("no_sso", "the request has no sso value")
    if len(sso) > MAX_SSO_LENGTH:
        raise ConnectRefused("too_long", f"sso is {len(sso)} characters")
    if not _BASE64_AS_SENT.fullmatch(sso):
        raise ConnectRefused(
            "not_base64", "sso holds characters outside the Base64 alphabet (A-Z a-z 0-9 + / =)"
        )
    if not isinstance(sig, str) or not _HEX_SIG.fullmatch(sig):
        raise ConnectRefused("bad_sig_format", "sig is not 64 lowercase hex digits")
    if not options.connect_secret:
        raise ConnectRefused("no_secret", "the registration has no connect secret")
    if not hmac.compare_digest(sign(sso, options.connect_secret), sig):
        raise ConnectRefused(
            "bad_signature", "sig does not match: the forum's discourse_connect_secret differs"
        )
    fields = _decode_payload(sso)
    nonce = fields.get("nonce", "")
    if not nonce:
        raise ConnectRefused("no_nonce", "the payload has no nonce")
    if len(nonce) > MAX_NONCE_LENGTH or _CONTROL.search(nonce):
        raise ConnectRefused("bad_nonce", "the nonce is too long or holds control characters")
    return_url = fields.get("return_sso_url", "")
    if not return_url:
        raise ConnectRefused("no_return_url", "the payload has no return_sso_url")
    problem = return_url_problem(return_url, options)
    if problem:
        raise ConnectRefused(
            "return_url", f"return_sso_url {return_url[:200]!r} is refused: {problem}"
        )
    return ConnectRequest(
        nonce=nonce, return_sso_url=return_url, prompt=fields.get("prompt"), payload=fields
    )


def _decode_payload(sso: str) -> dict[str, str]:
    """The fields of a Base64 payload whose signature already matched."""
    text = sso.replace("\r", "").replace("\n", "")
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if "=" in body or padding > 2 or (padding and len(text) % 4) or len(body) % 4 == 1:
        raise ConnectRefused("not_base64", "sso is not valid Base64 (misplaced '=' or length)")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        query = raw.decode("utf-8")
        pairs = parse_qsl(
            query, keep_blank_values=True, errors="strict", max_num_fields=_MAX_FIELDS
        )
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConnectRefused("bad_payload", f"the decoded payload is unreadable ({exc})") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise ConnectRefused("duplicate_field", f"the payload repeats {key!r}")
        fields[key] = value
    return fields


def return_url_problem(url: str, options: DiscourseOptions) -> str | None:
    """None when ``url`` is on the registered forum, else why not (an open redirect otherwise).

    On the forum means: absolute, the same scheme, host and port as
    ``discourse_url`` and under its path; no userinfo, backslash, control
    character, space, ``//`` path, dot segment or fragment, raw or percent-encoded.
    """
    if len(url) > MAX_RETURN_URL:
        return "too long"
    if not url.isascii():
        return "not ASCII"
    stages = [url]
    for _ in range(3):  # double and triple encoding are the usual disguises
        decoded = unquote(stages[-1])
        if decoded == stages[-1]:
            break
        stages.append(decoded)
    if any(_UNSAFE.search(stage) for stage in stages):
        return "control character, space or backslash"
    if "#" in url:
        return "fragment"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a URL"
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return "not an absolute http(s) URL"
    if "@" in parts.netloc:
        return "userinfo"
    if "%" in parts.netloc:
        return "percent-encoded host"
    host = parts.hostname or ""
    here = (parts.scheme, host, port or (443 if parts.scheme == "https" else 80))
    if here != options.origin:
        return f"{parts.scheme}://{parts.netloc} is not the forum {options.discourse_url}"
    path = parts.path
    for _ in range(4):  # the path as sent, then up to three decodings of it
        if path.startswith("//"):
            return "path starts with '//'"
        if any(s in {".", ".."} for s in path.split("/")):
            return "dot segment in the path"
        path = unquote(path)
    base = options.path
    if base and not (parts.path == base or parts.path.startswith(base + "/")):
        return f"path is not under the forum's {base}"
    return None


# --- the answer Discourse receives ---------------------------------------------------


def response_fields(
    claims: Mapping[str, Any], nonce: str, *, emails_verified: bool
) -> list[tuple[str, str]]:
    """The fields of the signed answer for the released ``claims``, in order.

    ``claims`` is what OIDC userinfo releases for the registration: ``sub`` (the
    iMIS ID), ``name``, ``email`` and the mapped claims, keyed by their Discourse
    target (``username``, ``groups``, ``custom.chapter``...). Raises
    :class:`ValueError` without a nonce, an external_id Discourse accepts or an
    email (callers refuse such a person with a page first). ``admin`` and
    ``moderator`` are never in the result, whatever ``claims`` holds (E8).
    """
    if not isinstance(nonce, str) or not nonce:
        raise ValueError("the answer needs the request's nonce")
    external_id = _text(claims.get("sub"))
    if external_id is None or external_id.lower() in BANNED_EXTERNAL_IDS:
        raise ValueError("the answer needs an external_id (the iMIS ID) Discourse accepts")
    email = _text(claims.get("email"))
    if email is None:
        raise ValueError("a Discourse answer needs the person's primary email")
    fields: list[tuple[str, str]] = [
        ("nonce", nonce),
        ("external_id", external_id),
        ("email", email),
    ]
    name = _text(claims.get("name"))
    if name is not None:
        fields.append(("name", name))
    for target in sorted(k for k in claims if isinstance(k, str)):
        if claim_target(target) is not None:
            continue  # sub/email/name above; anything else is not ours to send (E8)
        value = _convert(target, claims[target])
        if value is None:
            log.warning("claim %r of %s dropped: unusable value", target, external_id)
        else:
            fields.append((target, value))
    if not emails_verified:
        # Discourse then mails the person to confirm, and never links an
        # existing forum account by an email nobody has verified.
        fields.append(("require_activation", "true"))
    return [(k, v) for k, v in fields if k not in FORBIDDEN_TARGETS]


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def _convert(target: str, value: Any) -> str | None:
    if target in GROUP_TARGETS:
        items = value if isinstance(value, list | tuple) else [value]
        names: list[str] = []
        for item in items:
            text = _text(item)
            if text is None:
                return None
            names.extend(n.strip() for n in text.split(",") if n.strip())
        unique = list(dict.fromkeys(names))
        return ",".join(unique) if unique else None
    text = _text(value)
    if text is None:
        return None
    if target in URL_TARGETS:
        ok = url_problem(text, frozenset({"https"})) is None
        return text if ok else None
    if target == "website":
        return text if url_problem(text) is None else None
    if target == "locale":
        return text if _LOCALE.match(text) else None
    return text


def encode_payload(fields: list[tuple[str, str]]) -> str:
    """Strict Base64 (no line breaks) of the URL-encoded ``fields``."""
    return base64.b64encode(urlencode(fields).encode("utf-8")).decode("ascii")


def build_response(
    claims: Mapping[str, Any],
    nonce: str,
    options: DiscourseOptions,
    *,
    emails_verified: bool,
) -> tuple[str, str]:
    """``(sso, sig)`` answering a verified request for the person ``claims`` describes."""
    if not options.connect_secret:
        raise ValueError("the registration has no connect secret")
    sso = encode_payload(response_fields(claims, nonce, emails_verified=emails_verified))
    return sso, sign(sso, options.connect_secret)


def failed_response(nonce: str, options: DiscourseOptions) -> tuple[str, str]:
    """``(sso, sig)`` saying nobody is signed in (the answer to ``prompt=none``)."""
    if not isinstance(nonce, str) or not nonce:
        raise ValueError("the answer needs the request's nonce")
    if not options.connect_secret:
        raise ValueError("the registration has no connect secret")
    sso = encode_payload([("nonce", nonce), ("failed", "true")])
    return sso, sign(sso, options.connect_secret)


def redirect_url(return_sso_url: str, sso: str, sig: str) -> str:
    """``return_sso_url?sso=…&sig=…``, keeping any query the return URL already has."""
    query = urlencode({"sso": sso, "sig": sig})
    if "?" not in return_sso_url:
        return f"{return_sso_url}?{query}"
    if return_sso_url.endswith(("?", "&")):
        return f"{return_sso_url}{query}"
    return f"{return_sso_url}&{query}"


#: The keys of a ``discourse`` registration, in the order forms show them.
SCHEMA = OptionsSchema(
    fields=(
        OptionField(
            "discourse_url",
            "Forum URL",
            "The forum's address as its members reach it, e.g. https://forum.example.org "
            "(https only; a forum in a subfolder keeps its path, e.g. "
            "https://example.org/forum)",
            required=True,
        ),
        OptionField(
            "connect_secret",
            "Discourse Connect Secret",
            f"At least {MIN_SECRET_LENGTH} characters (make one with: openssl rand -hex 32); "
            "paste the same into the forum's “discourse connect secret” (Admin, Settings, "
            "Login). Kept encrypted, never shown again",
            required=True,
            kind="secret",
            secret="encrypt",
        ),
        OptionField(
            "refuse_shared_email",
            "Refuse shared emails",
            "Refuse a person whose primary email another iMIS person also has (default true)",
            kind="bool",
        ),
    ),
    parse=parse_options,
    claims_example='username = "username"\ngroups = "member_type"',
)
