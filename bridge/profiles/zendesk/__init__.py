"""The ``zendesk`` profile: Zendesk JWT remote login, as a plugin of the catalogue.

:class:`ZendeskProfile` is what the entry point ``zendesk`` names. Its parts:
:mod:`.protocol` (options schema, the JWT, ``return_to`` rules, error hints;
no HTTP) and :mod:`.routes` (the answers and pages, and the remote logout).
The sign-in itself (``/zendesk/{slug}`` and ``/zendesk/continue``) is the core's
shared flow (:func:`bridge.profiles.sign_in_routes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from bridge.access import SignedIn
from bridge.identity import Identity
from bridge.profiles import CONTINUE, Endpoint, continue_path, sign_in_path, sign_in_routes
from bridge.profiles.refusals import refused
from bridge.profiles.zendesk import routes as http
from bridge.profiles.zendesk.protocol import (
    FORBIDDEN_CLAIMS,
    JWT_HEADER,
    MAX_RETURN_TO,
    NAME,
    SCHEMA,
    ZendeskOptions,
    admin_remedy,
    claim_target,
    encode_jwt,
    error_hint,
    is_e164,
    jwt_claims,
    normalise_subdomain,
    safe_return_to,
    zendesk_origin,
)
from bridge.registry import Registration
from bridge.schema import OptionsSchema

#: Shown with the remote login URL (docs/zendesk.md, "Set up Zendesk").
REMOTE_LOGIN_NOTE = (
    "In Zendesk Admin Center: Account, Security, Single sign-on, JSON Web Token. "
    "Keep “Update of external IDs?” OFF: Zendesk then keeps each person's iMIS ID "
    "once set, so nobody can take over an account by getting its email address onto "
    "another iMIS record."
)
FALLBACK_NOTE = (
    "Bookmark both fallback links before turning single sign-on on: they work even "
    "when it is broken."
)


@dataclass(frozen=True, slots=True)
class ZendeskProfile:
    """The ``zendesk`` profile (registered as entry point ``zendesk``)."""

    name: str = NAME
    display_name: str = "Zendesk Profile"
    schema: OptionsSchema = SCHEMA
    reserved_slugs: frozenset[str] = frozenset({CONTINUE})
    not_found_message: str = http.NOT_FOUND
    expired_message: str = http.EXPIRED

    @property
    def continue_path(self) -> str:
        return continue_path(self.name)

    def claim_target(self, target: str) -> str | None:
        return claim_target(target)

    def routes(self) -> Sequence[BaseRoute]:
        return [*sign_in_routes(self), http.logout_route(self)]

    def endpoints(self, issuer: str, registration: Registration) -> Sequence[Endpoint]:
        login = f"{issuer}{sign_in_path(self.name, registration.slug)}"
        found = [
            Endpoint("Zendesk Endpoint (Remote login URL)", login, note=REMOTE_LOGIN_NOTE),
            Endpoint("Remote logout URL", f"{login}/logout"),
        ]
        if isinstance(registration.options, ZendeskOptions):
            # Zendesk's own ways in, which work even when single sign-on does not.
            zendesk = f"https://{registration.options.host}"
            found += [
                Endpoint(
                    "Fallback: Zendesk's own password form",
                    f"{zendesk}/access/normal",
                    note=FALLBACK_NOTE,
                ),
                Endpoint(
                    "Fallback: one-time sign-in link by email (Zendesk administrators)",
                    f"{zendesk}/access/sso_bypass",
                ),
            ]
        return found

    def read_request(self, request: Request, registration: Registration) -> dict[str, str | None]:
        return http.read_request(request, registration)

    async def without_session(
        self, request: Request, registration: Registration, params: Mapping[str, str | None]
    ) -> Response | None:
        return None  # Zendesk has no silent sign-in: the person signs in

    def refused(
        self, request: Request, registration: Registration, identity: Identity, message: str
    ) -> Response:
        return refused(request, registration, identity, message)

    async def answer(
        self,
        request: Request,
        registration: Registration,
        person: SignedIn,
        params: Mapping[str, str | None],
    ) -> Response:
        return await http.answer(request, registration, person, params)


PROFILE = ZendeskProfile()

__all__ = [
    "FORBIDDEN_CLAIMS",
    "JWT_HEADER",
    "MAX_RETURN_TO",
    "NAME",
    "PROFILE",
    "SCHEMA",
    "ZendeskOptions",
    "ZendeskProfile",
    "admin_remedy",
    "encode_jwt",
    "error_hint",
    "is_e164",
    "jwt_claims",
    "normalise_subdomain",
    "safe_return_to",
    "zendesk_origin",
]
