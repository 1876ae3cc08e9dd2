"""The claims a signed-in person releases to a registration: computed in one place.

OIDC userinfo and ID tokens, and every other profile (Zendesk's JWT, a plugin's
answer), receive the same claims: ``sub`` (the iMIS id), the standard claims of
the granted scopes, and the registration's own ``[claims]`` mapping (target ->
iMIS field) under the ``profile`` scope. A profile only translates them into its
own format. A mapping never replaces a standard or protocol claim. This module
knows no profile and no HTTP; the access rule is checked before it is called
(:mod:`bridge.access`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.identity import Identity

#: The standard claims each user scope releases.
SCOPE_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "profile": ("name", "given_name", "family_name"),
    "email": ("email", "email_verified"),
    "phone": ("phone_number",),
}
#: Every scope that releases user claims: what a profile other than OIDC receives.
USER_SCOPES = ("openid", "profile", "email", "phone")
#: Claims a mapping may not produce: protocol claims and the standard ones computed here.
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
            if target in RESERVED_CLAIMS:  # refused when the mapping was read; never trusted here
                continue
            value = identity.field(source)
            if value is not None:
                claims[target] = value
    if "email" in granted and identity.email:
        claims["email"] = identity.email
        claims["email_verified"] = emails_verified
    if "phone" in granted and identity.phone:
        claims["phone_number"] = identity.phone
    return claims


def userinfo(
    identity: Identity,
    scopes: Iterable[str],
    mapping: Mapping[str, str],
    *,
    emails_verified: bool,
) -> dict[str, Any]:
    """What ``/userinfo`` answers: ``sub`` and :func:`claims_for`."""
    return {
        "sub": identity.imis_id,
        **claims_for(identity, scopes, mapping, emails_verified=emails_verified),
    }
