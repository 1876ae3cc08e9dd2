"""The ``oidc`` profile: settings of a standard OpenID Connect client and its claims.

Validates a registration's OIDC keys (client id, redirect URIs, scopes, signing
algorithm, the web origins of a browser-based public client) and computes the
claims a person's :class:`Identity` yields for a set of granted scopes. It does
not run the protocol: :mod:`bridge.oauth` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bridge.identity import Identity
from bridge.profiles import optional_str_list, parse_claims, require_str
from bridge.settings import LOCAL_HOSTS, Problems, has_unsafe_url_chars, url_problem

NAME = "oidc"
KEYS = frozenset(
    {
        "client_id",
        "client_secret",
        "redirect_uris",
        "post_logout_redirect_uris",
        "scopes",
        "id_token_signed_response_alg",
        "web_origins",
    }
)
SUPPORTED_SCOPES = ("openid", "profile", "email", "phone", "offline_access")
DEFAULT_SCOPES = ("openid", "profile", "email")
SIGNING_ALGS = ("RS256", "ES256")
SCOPE_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "profile": ("name", "given_name", "family_name"),
    "email": ("email", "email_verified"),
    "phone": ("phone_number",),
}
#: Claims a mapping may not produce: protocol claims and standard ones we compute.
RESERVED_CLAIMS = frozenset(
    {
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "auth_time",
        "nonce",
        "at_hash",
        "c_hash",
        "acr",
        "amr",
        "azp",
        "sid",
        "scope",
        "client_id",
    }
    | {c for claims in SCOPE_CLAIMS.values() for c in claims}
)
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


def _claim_target(target: str) -> str | None:
    if not _CLAIM_NAME.match(target):
        return "a claim name must be lowercase letters, digits and '_'"
    if target in RESERVED_CLAIMS:
        return f"{target!r} is a standard claim the bridge computes itself"
    return None


def parse_claim_mapping(value: Any, problems: Problems) -> dict[str, str]:
    return parse_claims(value, problems, allowed=_claim_target)


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


def parse_options(data: Mapping[str, Any], problems: Problems, *, hash_secret: Any) -> OidcOptions:
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
    for key, uris in (("redirect_uris", redirect_uris), ("post_logout_redirect_uris", logout_uris)):
        for i, uri in enumerate(uris):
            reason = valid_redirect_uri(uri)
            if reason:
                problems.add(f"{key}[{i}]", f"{uri!r} {reason}")
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
    for i, origin in enumerate(web_origins):
        reason = valid_web_origin(origin)
        if reason:
            problems.add(f"web_origins[{i}]", f"{origin!r} {reason}")
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


def claims_for(
    identity: Identity,
    scopes: Iterable[str],
    mapping: Mapping[str, str],
    *,
    emails_verified: bool,
) -> dict[str, Any]:
    """The user claims (beyond ``sub``) that ``scopes`` release for ``identity``."""
    granted = set(scopes)
    claims: dict[str, Any] = {}
    if "profile" in granted:
        claims["name"] = identity.display_name
        if identity.first_name:
            claims["given_name"] = identity.first_name
        if identity.last_name:
            claims["family_name"] = identity.last_name
        for target, source in mapping.items():
            value = identity.field(source)
            if value is not None:
                claims[target] = value
    if "email" in granted and identity.email:
        claims["email"] = identity.email
        claims["email_verified"] = emails_verified
    if "phone" in granted and identity.phone:
        claims["phone_number"] = identity.phone
    return claims
