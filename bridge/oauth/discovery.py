"""The OpenID Provider metadata (``/.well-known/openid-configuration``), as data.

One place says which endpoints the bridge has and what they support: the
discovery route (:mod:`bridge.routes.oidc`) serves this document, and the
admin's Endpoint Info lists the issuer and every endpoint from it. No HTTP here.
"""

from __future__ import annotations

from typing import Any

from bridge.claims import SCOPE_CLAIMS
from bridge.oauth.client import SIGNING_ALGS, SUPPORTED_SCOPES

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks.json"


def metadata(issuer: str) -> dict[str, Any]:
    """The discovery document of the provider at ``issuer``."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}{JWKS_PATH}",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "end_session_endpoint": f"{issuer}/end_session",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(SIGNING_ALGS),
        "scopes_supported": list(SUPPORTED_SCOPES),
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "amr",
            "azp",
            *[c for claims in SCOPE_CLAIMS.values() for c in claims],
        ],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        # Only what /authorize honours: "consent" and "select_account" are
        # accepted but change nothing (apps are approved by the association,
        # and a browser holds one session), so they are not advertised.
        "prompt_values_supported": ["none", "login"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": False,
    }


def endpoints(issuer: str) -> list[tuple[str, str]]:
    """``(metadata key, URL)`` of every endpoint the document names, in its order."""
    return [
        (key, value)
        for key, value in metadata(issuer).items()
        if key.endswith(("_endpoint", "_uri")) and isinstance(value, str)
    ]
