"""The ``oidc`` profile: a standard OpenID Connect client, as a plugin of the catalogue.

It wraps the client options the OAuth server reads (:mod:`bridge.oauth.client`):
their schema, the claims a mapping may produce, and the endpoints an app's
administrator configures. The protocol itself (authorize, token, userinfo, ...)
is the core's (:mod:`bridge.routes.oidc`, :mod:`bridge.oauth`) and is served at
the issuer's root, so this profile mounts no routes of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.routing import BaseRoute

from bridge.oauth.client import (
    CONTINUE_PATH,
    DEFAULT_SCOPES,
    KIND,
    SCHEMA,
    SIGNING_ALGS,
    SUPPORTED_SCOPES,
    OidcOptions,
    claim_target,
    client_options,
    parse_options,
    valid_redirect_uri,
    valid_web_origin,
)
from bridge.plugin import Endpoint
from bridge.registry import Registration
from bridge.schema import OptionsSchema

NAME = KIND


@dataclass(frozen=True, slots=True)
class OidcProfile:
    """The ``oidc`` profile (registered as entry point ``oidc``)."""

    name: str = NAME
    display_name: str = "OpenID Connect"
    schema: OptionsSchema = SCHEMA
    continue_path: str | None = CONTINUE_PATH
    reserved_slugs: frozenset[str] = frozenset()

    def claim_target(self, target: str) -> str | None:
        return claim_target(target)

    def routes(self) -> Sequence[BaseRoute]:
        return ()  # the OIDC endpoints are the core's, at the issuer's root

    def endpoints(self, issuer: str, registration: Registration) -> Sequence[Endpoint]:
        return (
            Endpoint("Issuer", issuer),
            Endpoint("Discovery", f"{issuer}/.well-known/openid-configuration"),
            Endpoint("Authorization endpoint", f"{issuer}/authorize"),
            Endpoint("Token endpoint", f"{issuer}/token"),
            Endpoint("Userinfo endpoint", f"{issuer}/userinfo"),
            Endpoint("JWKS", f"{issuer}/.well-known/jwks.json"),
            Endpoint("End session endpoint", f"{issuer}/end_session"),
        )


PROFILE = OidcProfile()

__all__ = [
    "DEFAULT_SCOPES",
    "NAME",
    "PROFILE",
    "SIGNING_ALGS",
    "SUPPORTED_SCOPES",
    "OidcOptions",
    "OidcProfile",
    "client_options",
    "parse_options",
    "valid_redirect_uri",
    "valid_web_origin",
]
