"""An OpenID Connect client's registration options, as the OAuth server needs them.

Validates a registration's OIDC keys (client id, redirect URIs, scopes, signing
algorithm, the client secret, the web origins of a browser-based public client)
and declares them as an :class:`~bridge.schema.OptionsSchema`. The ``oidc``
profile (:mod:`bridge.profiles.oidc`) wraps this schema; the OAuth server and the
OIDC endpoints read a client's options through :func:`client_options`. The
claims a person releases are computed by :mod:`bridge.claims`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bridge.claims import RESERVED_CLAIMS
from bridge.registry import Registration, Registry
from bridge.schema import (
    OptionField,
    OptionsSchema,
    check_each,
    optional_str_list,
    require_str,
)
from bridge.settings import LOCAL_HOSTS, Problems, has_unsafe_url_chars, url_problem

SUPPORTED_SCOPES = ("openid", "profile", "email", "phone", "offline_access")
DEFAULT_SCOPES = ("openid", "profile", "email")
SIGNING_ALGS = ("RS256", "ES256")
#: The profile (and pending sign-in kind) of OIDC clients: the oidc plugin's name.
KIND = "oidc"
#: Where an OIDC sign-in waiting for the person continues (bridge.routes.oidc serves it).
CONTINUE_PATH = "/authorize/continue"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{1,200}$")
_CLAIM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class OidcOptions:
    client_id: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    id_token_signed_response_alg: str = "RS256"
    #: Hash of the client secret (bridge.keys.hash_secret); None for a public PKCE client.
    client_secret_hash: str | None = field(default=None, repr=False)
    #: Origins whose page scripts may call /token, /userinfo and /revoke (CORS);
    #: public clients only, each an exact ``scheme://host[:port]``.
    web_origins: tuple[str, ...] = ()

    @property
    def is_public(self) -> bool:
        return self.client_secret_hash is None

    @property
    def lookup_key(self) -> str:
        return self.client_id

    def summary(self) -> dict[str, Any]:
        return {"client_type": "public" if self.is_public else "confidential"}

    def to_data(self) -> dict[str, Any]:
        """Settings without the secret (what the database and the admin see)."""
        return {
            "client_id": self.client_id,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "scopes": list(self.scopes),
            "id_token_signed_response_alg": self.id_token_signed_response_alg,
            **({"web_origins": list(self.web_origins)} if self.web_origins else {}),
        }


def claim_target(target: str) -> str | None:
    """None when an OIDC registration's ``[claims]`` may produce ``target``, else why not."""
    if not _CLAIM_NAME.match(target):
        return "a claim name must be lowercase letters, digits and '_'"
    if target in RESERVED_CLAIMS:
        return f"{target!r} is a standard claim the bridge computes itself"
    return None


def valid_redirect_uri(uri: str) -> str | None:
    """None if ``uri`` may be registered as a redirect URI, else why not."""
    if "#" in uri:
        return "must not contain a fragment"
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "is not a URL"
    if parts.scheme in {"http", "https"}:
        reason = url_problem(uri)
        if reason:
            return reason
        if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
            return "must use https (http only for localhost)"
        return None
    # RFC 8252 §7.1: a native app's private-use scheme (reverse domain name).
    if "." in parts.scheme and parts.path and not has_unsafe_url_chars(uri):
        return None
    return "must be an absolute https URL"


def valid_web_origin(origin: str) -> str | None:
    """None if ``origin`` may be listed in ``web_origins``, else why not.

    Browsers send ``Origin`` as ``scheme://host[:port]`` (lowercase, no default
    port, no path), and CORS compares it exactly, so only that form is accepted.
    """
    if origin == "*" or "*" in origin:
        return "must be one exact origin, not a wildcard"
    reason = url_problem(origin)
    if reason:
        return reason
    parts = urlsplit(origin)
    if parts.username is not None or parts.password is not None:
        return "must not contain a user name or password"
    if parts.path or parts.query or parts.fragment or origin.endswith(("?", "#")):
        return "must be an origin only (scheme://host[:port]), without a path or a trailing '/'"
    host = parts.hostname or ""
    if parts.scheme == "http" and host not in LOCAL_HOSTS:
        return "must use https (http only for localhost)"
    default = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port is not None and parts.port != default else ""
    netloc = f"[{host}]" if ":" in host else host
    canonical = f"{parts.scheme}://{netloc}{port}"
    if origin != canonical:
        return f"must be written as the browser sends it: {canonical!r}"
    return None


def parse_options(
    data: Mapping[str, Any], problems: Problems, hash_secret: Callable[[str], str]
) -> OidcOptions:
    """Validate the OIDC keys of a registration; ``client_secret`` (plain) is hashed here."""
    client_id = require_str(data, "client_id", problems)
    if client_id and not _CLIENT_ID.match(client_id):
        problems.add("client_id", "may contain only letters, digits and . _ ~ -")
    redirect_uris = optional_str_list(data, "redirect_uris", problems)
    if "redirect_uris" not in data:
        problems.add("redirect_uris", "is required (where the app receives the sign-in)")
    elif not redirect_uris and not problems.has("redirect_uris"):
        problems.add("redirect_uris", "needs at least one URI")
    logout_uris = optional_str_list(data, "post_logout_redirect_uris", problems)
    for name, uris in (
        ("redirect_uris", redirect_uris),
        ("post_logout_redirect_uris", logout_uris),
    ):
        check_each(uris, _field(name), problems)
    scopes = optional_str_list(data, "scopes", problems) if "scopes" in data else DEFAULT_SCOPES
    scopes_readable = not problems.has("scopes")
    for scope in scopes:
        if scope not in SUPPORTED_SCOPES:
            problems.add(
                "scopes", f"unknown scope {scope!r} (known: {', '.join(SUPPORTED_SCOPES)})"
            )
    if scopes_readable and "openid" not in scopes:
        problems.add("scopes", "must include 'openid'")
    alg = data.get("id_token_signed_response_alg", "RS256")
    if not isinstance(alg, str) or alg not in SIGNING_ALGS:
        problems.add("id_token_signed_response_alg", f"must be one of {', '.join(SIGNING_ALGS)}")
    secret = data.get("client_secret")
    secret_hash = data.get("client_secret_hash")
    if secret is not None:
        if not isinstance(secret, str) or len(secret) < 16:
            problems.add(
                "client_secret", "must be at least 16 characters (omit it for a public client)"
            )
        else:
            secret_hash = hash_secret(secret)
    web_origins = optional_str_list(data, "web_origins", problems)
    check_each(web_origins, _field("web_origins"), problems)
    if web_origins and isinstance(secret_hash, str):
        problems.add(
            "web_origins",
            "is only for public clients (no client_secret): a page script cannot keep a secret",
        )
    return OidcOptions(
        client_id=client_id,
        redirect_uris=redirect_uris,
        post_logout_redirect_uris=logout_uris,
        scopes=tuple(dict.fromkeys(scopes)),
        id_token_signed_response_alg=alg if alg in SIGNING_ALGS else "RS256",
        client_secret_hash=secret_hash if isinstance(secret_hash, str) else None,
        web_origins=tuple(dict.fromkeys(web_origins)),
    )


#: The keys of an ``oidc`` registration, in the order forms show them.
SCHEMA = OptionsSchema(
    fields=(
        OptionField(
            "client_id",
            "Client ID",
            "What the app sends as client_id: letters, digits and . _ ~ -",
            required=True,
        ),
        OptionField(
            "client_secret",
            "Client secret",
            "At least 16 characters; omit it for a public client (a browser or native app "
            "using PKCE). Only its hash is kept.",
            kind="secret",
            secret="hash",
            attribute="client_secret_hash",
        ),
        OptionField(
            "redirect_uris",
            "Redirect URIs",
            "Where the app receives the sign-in: absolute https URLs (http only for localhost)",
            required=True,
            kind="list",
            validate=valid_redirect_uri,
        ),
        OptionField(
            "post_logout_redirect_uris",
            "Post-logout redirect URIs",
            "Where the app may send people after signing them out",
            kind="list",
            validate=valid_redirect_uri,
        ),
        OptionField(
            "scopes",
            "Scopes",
            f"Scopes the app may ask for, with openid (known: {', '.join(SUPPORTED_SCOPES)})",
            kind="list",
        ),
        OptionField(
            "id_token_signed_response_alg",
            "ID token signing algorithm",
            f"One of {', '.join(SIGNING_ALGS)} (default RS256)",
        ),
        OptionField(
            "web_origins",
            "Web origins",
            "Public clients only: origins whose page scripts may call /token, /userinfo and "
            "/revoke (CORS), each exactly scheme://host[:port]",
            kind="list",
            validate=valid_web_origin,
        ),
    ),
    parse=parse_options,
)


def _field(name: str) -> OptionField:
    spec = SCHEMA.field(name)
    assert spec is not None
    return spec


def client_options(registration: Registration | None) -> OidcOptions | None:
    """The OIDC client options of ``registration``; None if it is not an OAuth client."""
    if registration is None or not isinstance(registration.options, OidcOptions):
        return None
    return registration.options


def lists_web_origin(registry: Registry, origin: str) -> bool:
    """Whether any enabled public OIDC client lists ``origin`` in ``web_origins``."""

    def lists(reg: Registration) -> bool:
        options = client_options(reg)
        return reg.enabled and options is not None and origin in options.web_origins

    return registry.find_any(lists)
