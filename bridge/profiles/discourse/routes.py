"""DiscourseConnect, the HTTP side: the discourse profile's answers, refusals and logout.

The core runs the sign-in (``/discourse/{slug}``, continued at
``/discourse/continue``, see :func:`bridge.profiles.sign_in_routes`); this module
supplies what is Discourse's in it: reading the signed request
(:func:`read_request`, which refuses anything :func:`.protocol.verify_request`
refuses, and logs why), the silent ``failed=true`` for ``prompt=none`` without a
session, the refusal pages (the access rule, no primary email, a shared primary
email) and the answer itself, a 302 to the verified ``return_sso_url`` with the
signed payload. It also serves ``/discourse/{slug}/logout`` (the forum's
``logout_redirect``), which ends the bridge session. Payload rules live in
:mod:`.protocol`; this module never logs or renders the connect secret or a
signed payload.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bridge.access import SignedIn
from bridge.profiles import NO_STORE, Profile, registration_of
from bridge.profiles.discourse.protocol import (
    ConnectRefused,
    DiscourseOptions,
    build_response,
    failed_response,
    redirect_url,
    verify_request,
)
from bridge.profiles.refusals import email_refusal, refused
from bridge.registry import Registration
from bridge.services import services as services_of
from bridge.templating import render

log = logging.getLogger("bridge.discourse")

NOT_FOUND = (
    "There is no Discourse sign-in at this address. A forum administrator should check "
    "the discourse connect url in the forum's settings."
)
EXPIRED = (
    "For your security, a sign-in is only valid for a limited time. Go back to the forum "
    "and log in again from there."
)
UNUSABLE_ID = (
    "Your iMIS account cannot be used to sign in to the forum. Please let the association know."
)


def options_of(registration: Registration) -> DiscourseOptions:
    """The Discourse options of ``registration`` (found through the discourse profile)."""
    if not isinstance(registration.options, DiscourseOptions):
        raise TypeError(f"registration {registration.slug} is not a Discourse registration")
    return registration.options


def read_request(request: Request, registration: Registration) -> dict[str, str | None]:
    """The forum's signed request, verified (SECURITY E7): ``sso`` and ``sig`` as sent (so
    the request still verifies after the sign-in page), ``nonce``, ``return_sso_url``
    and ``prompt``. A request that fails any check is refused with one plain 400 page;
    the reason goes to the log."""
    query = request.query_params
    sso, sig = query.get("sso"), query.get("sig")
    try:
        connect = verify_request(sso, sig, options_of(registration))
    except ConnectRefused as exc:
        log.warning("discourse request refused: registration=%s %s", registration.slug, exc.detail)
        raise
    return {
        "sso": sso,
        "sig": sig,
        "nonce": connect.nonce,
        "return_sso_url": connect.return_sso_url,
        "prompt": connect.prompt,
    }


def _to_forum(params: Mapping[str, str | None], sso: str, sig: str) -> Response:
    """The 302 that carries a signed payload to the verified ``return_sso_url``."""
    return_url = params["return_sso_url"]
    if not return_url:  # read_request never keeps a request without one
        raise ValueError("no return_sso_url")
    return RedirectResponse(redirect_url(return_url, sso, sig), status_code=302, headers=NO_STORE)


async def without_session(
    request: Request, registration: Registration, params: Mapping[str, str | None]
) -> Response | None:
    """``prompt=none`` and nobody signed in: ``failed=true`` at once, no page."""
    if params.get("prompt") != "none":
        return None
    sso, sig = failed_response(params["nonce"] or "", options_of(registration))
    log.info("discourse prompt=none: registration=%s nobody signed in", registration.slug)
    return _to_forum(params, sso, sig)


async def answer(
    request: Request,
    registration: Registration,
    person: SignedIn,
    params: Mapping[str, str | None],
) -> Response:
    """The signed payload for the forum (a 302 to ``return_sso_url``), or a page saying why not.

    The core has checked the access rule and released ``person.claims``; the payload
    is their translation (:func:`.protocol.build_response`).
    """
    options = options_of(registration)
    identity = person.identity
    refusal = await email_refusal(
        request,
        registration,
        identity,
        profile="discourse",
        app="the forum",
        refuse_shared=options.refuse_shared_email,
    )
    if refusal is not None:
        return refusal
    emails_verified = services_of(request).settings.imis.emails_verified
    try:
        sso, sig = build_response(
            person.claims, params["nonce"] or "", options, emails_verified=emails_verified
        )
    except ValueError as exc:  # an iMIS ID Discourse would refuse as external_id
        log.warning(
            "discourse sign-in refused: registration=%s imis_id=%s: %s",
            registration.slug,
            identity.imis_id,
            exc,
        )
        return refused(request, registration, identity, UNUSABLE_ID)
    log.info("discourse sign-in: registration=%s imis_id=%s", registration.slug, identity.imis_id)
    return _to_forum(params, sso, sig)


# --- logout ------------------------------------------------------------------------------


def logout_route(profile: Profile) -> Route:
    """``GET /{slug}/logout`` (under ``/discourse``): the forum's ``logout_redirect``."""

    async def logout(request: Request) -> Response:
        registration = await registration_of(request, profile, request.path_params["slug"])
        return await forum_logout(request, registration)

    return Route("/{slug}/logout", logout, methods=["GET"])


async def forum_logout(request: Request, registration: Registration) -> Response:
    """The person logged out of the forum: end the bridge session, say so.

    Discourse names nobody in its redirect, so whoever is signed in to the bridge
    on this browser is signed out (a page elsewhere can only sign a person out).
    """
    sessions = services_of(request).sessions
    session = await sessions.current(request)
    response = render(
        request,
        "discourse_signed_out.html",
        {
            "title": "You are signed out",
            "registration": registration,
            "forum_url": options_of(registration).discourse_url,
            "ended": session is not None,
        },
        headers=NO_STORE,
    )
    await sessions.sign_out(request, response, session)  # a stale cookie goes too
    if session is not None:
        log.info(
            "discourse logout: registration=%s imis_id=%s session ended",
            registration.slug,
            session.identity.imis_id,
        )
    return response
