"""The ``discourse`` profile: DiscourseConnect for Discourse forums, as a plugin of the catalogue.

:class:`DiscourseProfile` is what the entry point ``discourse`` names. Its parts:
:mod:`.protocol` (options schema, the signed request and answer, the
``return_sso_url`` rule; no HTTP) and :mod:`.routes` (the answers and pages, and
the logout URL). The sign-in itself (``/discourse/{slug}`` and
``/discourse/continue``) is the core's shared flow
(:func:`bridge.profiles.sign_in_routes`): this package adds no module outside itself.
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
from bridge.profiles.discourse import routes as http
from bridge.profiles.discourse.protocol import (
    BANNED_EXTERNAL_IDS,
    DISPLAY_NAME,
    FORBIDDEN_TARGETS,
    MIN_SECRET_LENGTH,
    NAME,
    SCHEMA,
    ConnectRefused,
    ConnectRequest,
    DiscourseOptions,
    build_response,
    claim_target,
    encode_payload,
    failed_response,
    normalise_discourse_url,
    parse_options,
    redirect_url,
    response_fields,
    return_url_problem,
    sign,
    verify_request,
)
from bridge.profiles.refusals import refused
from bridge.registry import Registration
from bridge.schema import OptionsSchema

#: Where each published address goes in Discourse (docs/discourse.md, steps 4 and 5).
CONNECT_NOTE = (
    "In Discourse: Admin, Settings, Login. Paste it into “discourse connect url”, the "
    "registration's secret into “discourse connect secret”, then turn on “enable "
    "discourse connect”."
)
LOGOUT_NOTE = (
    "In Discourse: Admin, Settings, search for “logout redirect”. Logging out of the forum "
    "then signs the person out of this bridge too."
)
FALLBACK_NOTE = (
    "Bookmark it before turning DiscourseConnect on: it works even when single sign-on is broken."
)


@dataclass(frozen=True, slots=True)
class DiscourseProfile:
    """The ``discourse`` profile (registered as entry point ``discourse``)."""

    name: str = NAME
    display_name: str = DISPLAY_NAME
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
        connect = f"{issuer}{sign_in_path(self.name, registration.slug)}"
        found = [
            Endpoint("Connect URL", connect, note=CONNECT_NOTE),
            Endpoint("Logout URL", f"{connect}/logout", note=LOGOUT_NOTE),
        ]
        if isinstance(registration.options, DiscourseOptions):
            # Discourse's own way in for its administrators, when single sign-on is broken.
            found.append(
                Endpoint(
                    "Fallback: sign-in link by email (Discourse administrators)",
                    f"{registration.options.discourse_url}/u/admin-login",
                    note=FALLBACK_NOTE,
                )
            )
        return found

    def read_request(self, request: Request, registration: Registration) -> dict[str, str | None]:
        return http.read_request(request, registration)

    async def without_session(
        self, request: Request, registration: Registration, params: Mapping[str, str | None]
    ) -> Response | None:
        return await http.without_session(request, registration, params)

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


PROFILE = DiscourseProfile()

__all__ = [
    "BANNED_EXTERNAL_IDS",
    "DISPLAY_NAME",
    "FORBIDDEN_TARGETS",
    "MIN_SECRET_LENGTH",
    "NAME",
    "PROFILE",
    "SCHEMA",
    "ConnectRefused",
    "ConnectRequest",
    "DiscourseOptions",
    "DiscourseProfile",
    "build_response",
    "claim_target",
    "encode_payload",
    "failed_response",
    "normalise_discourse_url",
    "parse_options",
    "redirect_url",
    "response_fields",
    "return_url_problem",
    "sign",
    "verify_request",
]
