"""Zendesk JWT remote login and remote logout, the HTTP side: the zendesk profile's answers.

The core runs the sign-in (``/zendesk/{slug}``, continued at ``/zendesk/continue``,
see :func:`bridge.profiles.sign_in_routes`); this module supplies what is
Zendesk's in it: reading Zendesk's query parameters (:func:`read_request`),
refusing with a clear page (the access rule, no primary email, a shared primary
email), and answering with the auto-posting form that carries the JWT to
``{zendesk}/access/jwt`` — always built from the registration's subdomain,
never from ``return_to``. It also serves ``/zendesk/{slug}/logout``: it ends the
session when Zendesk signs a person out and explains the errors Zendesk
reports. Token and ``return_to`` rules live in :mod:`.protocol`; this module
must not duplicate them, and it never logs or renders the shared secret or a JWT.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bridge.access import SignedIn
from bridge.identity import Identity
from bridge.profiles import NO_STORE, Profile, registration_of
from bridge.profiles.refusals import email_refusal
from bridge.profiles.zendesk.protocol import (
    MAX_RETURN_TO,
    ZendeskOptions,
    admin_remedy,
    encode_jwt,
    error_hint,
    safe_return_to,
    zendesk_origin,
)
from bridge.registry import Registration
from bridge.services import services as services_of
from bridge.settings import Settings
from bridge.templating import render

log = logging.getLogger("bridge.zendesk")

#: Bytes of randomness in each jti (SECURITY E1 asks for at least 128 bits).
JTI_BYTES = 24
#: Zendesk's brand and locale ids are numbers; anything else is not passed on.
_MAX_ID = 20
MAX_ERROR_MESSAGE = 500

NOT_FOUND = (
    "There is no Zendesk sign-in at this address. An administrator should check the "
    "remote login URL in Zendesk's single sign-on settings."
)
EXPIRED = (
    "For your security, a sign-in is only valid for a limited time. Go back to the help "
    "center and start again from there."
)


def _settings(request: Request) -> Settings:
    return services_of(request).settings


def options_of(registration: Registration) -> ZendeskOptions:
    """The Zendesk options of ``registration`` (found through the zendesk profile)."""
    if not isinstance(registration.options, ZendeskOptions):
        raise TypeError(f"registration {registration.slug} is not a Zendesk registration")
    return registration.options


def _number(value: str | None) -> str | None:
    if value and len(value) <= _MAX_ID and value.isascii() and value.isdigit():
        return value
    return None


def read_request(request: Request, registration: Registration) -> dict[str, str | None]:
    """What Zendesk sent that we keep: a validated return_to, brand and locale ids."""
    query = request.query_params
    raw = query.get("return_to")
    options = options_of(registration)
    return_to = safe_return_to(
        raw[: MAX_RETURN_TO + 1] if raw else None,
        options,
        zendesk_origin(_settings(request), options),
    )
    return {
        "return_to": return_to,
        "brand_id": _number(query.get("brand_id")),
        "locale_id": _number(query.get("locale_id")),
    }


# --- handlers ---------------------------------------------------------------------


def logout_route(profile: Profile) -> Route:
    """``GET /{slug}/logout`` (under ``/zendesk``)."""

    async def logout(request: Request) -> Response:
        registration = await registration_of(request, profile, request.path_params["slug"])
        return await remote_logout(request, registration)

    return Route("/{slug}/logout", logout, methods=["GET"])


async def remote_logout(request: Request, registration: Registration) -> Response:
    """``GET /zendesk/{slug}/logout``: Zendesk signed someone out, or reports an error."""
    query = request.query_params
    if query.get("kind") == "error":
        return _zendesk_error(request, registration, query.get("message") or "")
    options = options_of(registration)
    origin = zendesk_origin(_settings(request), options)
    return_to = safe_return_to(query.get("return_to"), options, origin)
    if return_to is not None and return_to.startswith("/"):
        return_to = origin + return_to
    sessions = services_of(request).sessions
    session = await sessions.current(request)
    ending = session is not None and _same_person(
        session.identity, query.get("external_id"), query.get("email")
    )
    response: Response
    if return_to is not None:
        response = RedirectResponse(return_to, status_code=303, headers=NO_STORE)
    else:
        response = render(
            request,
            "zendesk_signed_out.html",
            {"title": "You are signed out", "registration": registration, "ended": ending},
            headers=NO_STORE,
        )
    if session is None:
        return response
    if ending:
        await sessions.sign_out(request, response, session)
    log.info(
        "zendesk remote logout: registration=%s imis_id=%s session %s",
        registration.slug,
        session.identity.imis_id,
        "ended" if ending else "kept (Zendesk named another person)",
    )
    return response


def _same_person(identity: Identity, external_id: str | None, email: str | None) -> bool:
    """Whether Zendesk's logout names this session's person (external_id wins over email)."""
    if external_id:
        return external_id == identity.imis_id
    if email and identity.email:
        return email.strip().casefold() == identity.email.strip().casefold()
    return False


# --- answers ---------------------------------------------------------------------------


async def answer(
    request: Request,
    registration: Registration,
    person: SignedIn,
    params: Mapping[str, str | None],
) -> Response:
    """The auto-posting form with a fresh JWT, or a page saying why not.

    The core has checked the access rule and released ``person.claims``; the JWT
    is their translation (:func:`.protocol.jwt_claims`).
    """
    options = options_of(registration)
    identity = person.identity
    refusal = await email_refusal(
        request,
        registration,
        identity,
        profile="zendesk",
        app="the help center",
        refuse_shared=options.refuse_shared_email,
    )
    if refusal is not None:
        return refusal

    token = encode_jwt(
        person.claims,
        options,
        registration.claims,
        now=int(time.time()),
        jti=secrets.token_urlsafe(JTI_BYTES),
    )
    origin = zendesk_origin(_settings(request), options)
    log.info(
        "zendesk sign-in: registration=%s imis_id=%s brand_id=%s",
        registration.slug,
        identity.imis_id,
        params.get("brand_id") or "-",
    )
    return render(
        request,
        "zendesk_post.html",
        {
            "title": f"Signing you in to {registration.name}",
            "registration": registration,
            "action": f"{origin}/access/jwt",
            "jwt": token,
            "return_to": params.get("return_to"),
        },
        headers={**NO_STORE, "content-security-policy": _post_csp(options, origin)},
    )


def _zendesk_error(request: Request, registration: Registration, message: str) -> Response:
    message = "".join(c if c.isprintable() else " " for c in message[:MAX_ERROR_MESSAGE])
    remedy = admin_remedy(message, registration.slug)
    log.warning(
        "zendesk reported an error: registration=%s message=%r%s",
        registration.slug,
        message,
        f" remedy: {remedy}" if remedy else "",
    )
    # https://{subdomain}.zendesk.com, unless the server-only override (demo, tests) is set.
    zendesk = zendesk_origin(_settings(request), options_of(registration))
    return render(
        request,
        "zendesk_error.html",
        {
            "title": "Zendesk could not sign you in",
            "registration": registration,
            "message": message,
            "hint": error_hint(message),
            "normal_url": f"{zendesk}/access/normal",
            "bypass_url": f"{zendesk}/access/sso_bypass",
        },
        headers=NO_STORE,
    )


def _post_csp(options: ZendeskOptions, origin: str) -> str:
    """The default policy, plus our own script file and a form that may go to Zendesk.

    Zendesk answers the POST with a redirect (to return_to, or to the brand's own
    Zendesk subdomain), and browsers apply ``form-action`` to that redirect too,
    so every Zendesk subdomain and the brand hosts are listed as well.
    """
    parts = urlsplit(origin)
    sources = [f"{parts.scheme}://{parts.netloc}", "https://*.zendesk.com"]
    sources += [f"https://{host}" for host in options.brand_hosts]
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
        f"form-action {' '.join(dict.fromkeys(sources))}; frame-ancestors 'none'; base-uri 'none'"
    )
