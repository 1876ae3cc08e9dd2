"""Zendesk JWT remote login and remote logout: ``/zendesk/{slug}``, ``/zendesk/{slug}/logout``.

This module owns the HTTP side of a Zendesk registration: reading Zendesk's
query parameters, sending a person without a session to the sign-in page (a
pending request of kind ``zendesk``, continued at ``/zendesk/continue``),
refusing with a clear page (no primary email, a shared primary email, the
access rule), and answering with the auto-posting form that carries the JWT to
``{zendesk}/access/jwt`` — always built from the registration's subdomain,
never from ``return_to``. It also ends the session when Zendesk signs a person
out and explains the errors Zendesk reports. Token and ``return_to`` rules live
in :mod:`bridge.profiles.zendesk`; this module must not duplicate them, and it
never logs or renders the shared secret or a JWT.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bridge import csrf
from bridge.access import check_access, identity_for, imis_unavailable
from bridge.connectors import Unavailable
from bridge.errors import BadRequest, Forbidden, NotFound
from bridge.identity import Identity
from bridge.profiles.zendesk import (
    MAX_RETURN_TO,
    admin_remedy,
    build_jwt,
    error_hint,
    safe_return_to,
)
from bridge.registry import Registration
from bridge.sessions import (
    CONTINUE_PATHS,
    create_pending,
    current_session,
    finish_pending,
    load_pending,
    send_to_login,
    sign_out,
)
from bridge.settings import Settings, is_valid_slug
from bridge.templating import render
from bridge.web import registration as registration_named
from bridge.web import services as services_of

log = logging.getLogger("bridge.zendesk")

KIND = "zendesk"
NO_STORE = {"cache-control": "no-store"}
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
NO_EMAIL = (
    "Your iMIS account has no primary email address, and the help center needs one to "
    "know who you are. Please ask the association to add a primary email to your iMIS "
    "profile, then try again."
)


def _settings(request: Request) -> Settings:
    settings: Settings = services_of(request).settings
    return settings


async def _registration(request: Request, slug: str) -> Registration:
    """The Zendesk registration ``slug``; anything else is a 404 page."""
    registration: Registration | None = None
    if is_valid_slug(slug):
        services = services_of(request)
        registration = await registration_named(services, slug)
    if registration is None or registration.profile != KIND:
        raise NotFound(NOT_FOUND, detail=f"no zendesk registration {slug[:64]!r}")
    return registration


def _number(value: str | None) -> str | None:
    if value and len(value) <= _MAX_ID and value.isascii() and value.isdigit():
        return value
    return None


def _zendesk_params(request: Request, registration: Registration) -> dict[str, str | None]:
    """What Zendesk sent that we keep: a validated return_to, brand and locale ids."""
    query = request.query_params
    raw = query.get("return_to")
    return_to = safe_return_to(
        raw[: MAX_RETURN_TO + 1] if raw else None,
        registration.zendesk,
        _settings(request).zendesk_origin(registration.zendesk.subdomain),
    )
    return {
        "return_to": return_to,
        "brand_id": _number(query.get("brand_id")),
        "locale_id": _number(query.get("locale_id")),
    }


# --- handlers ---------------------------------------------------------------------


async def remote_login(request: Request) -> Response:
    """``GET /zendesk/{slug}``: Zendesk sends a person here to be signed in."""
    registration = await _registration(request, request.path_params["slug"])
    params = _zendesk_params(request, registration)
    session = await current_session(request)
    if session is None:
        pending = await create_pending(
            request, kind=KIND, registration=registration.slug, params=params
        )
        return await send_to_login(request, pending)
    return await _answer(request, registration, session.identity, params)


async def continue_after_login(request: Request) -> Response:
    """``GET /zendesk/continue?request=ID``: back from the sign-in page.

    It redirects to the remote login URL with what Zendesk sent, which answers
    from the new session: so the page with the JWT can always be reloaded (or
    reached with Back) and gets a fresh token instead of an expired request.
    """
    pending = await load_pending(request, request.query_params.get("request"))
    if pending is None or pending.kind != KIND:
        raise BadRequest(EXPIRED, detail="unknown or expired zendesk pending request")
    session = await current_session(request)
    if not pending.satisfied_by(session):
        return await send_to_login(request, pending)
    await finish_pending(request, pending)
    query = {k: v for k, v in pending.params.items() if isinstance(v, str) and v}
    target = remote_login_path(pending.registration)
    if query:
        target += "?" + urlencode(query)
    return RedirectResponse(target, status_code=303, headers=NO_STORE)


def remote_login_path(slug: str) -> str:
    return f"/zendesk/{slug}"


async def remote_logout(request: Request) -> Response:
    """``GET /zendesk/{slug}/logout``: Zendesk signed someone out, or reports an error."""
    registration = await _registration(request, request.path_params["slug"])
    query = request.query_params
    if query.get("kind") == "error":
        return _zendesk_error(request, registration, query.get("message") or "")
    settings = _settings(request)
    options = registration.zendesk
    return_to = safe_return_to(
        query.get("return_to"), options, settings.zendesk_origin(options.subdomain)
    )
    if return_to is not None and return_to.startswith("/"):
        return_to = settings.zendesk_origin(options.subdomain) + return_to
    session = await current_session(request)
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
        await sign_out(request, response, session)
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


async def _answer(
    request: Request,
    registration: Registration,
    identity: Identity,
    params: dict[str, Any],
) -> Response:
    """The auto-posting form with a fresh JWT, or a page saying why not."""
    services = services_of(request)
    settings = _settings(request)
    options = registration.zendesk
    try:
        identity = await identity_for(services, registration, identity)
        check_access(registration, identity)
    except Forbidden as exc:
        return _refused(request, registration, identity, exc.message)
    if not identity.email:
        log.info(
            "zendesk sign-in refused: registration=%s imis_id=%s has no primary email",
            registration.slug,
            identity.imis_id,
        )
        return _refused(request, registration, identity, NO_EMAIL, title="No email address")
    if options.refuse_shared_email:
        refusal = await _shared_email_refusal(request, registration, identity)
        if refusal is not None:
            return refusal

    token = build_jwt(
        identity,
        options,
        now=int(time.time()),
        jti=secrets.token_urlsafe(JTI_BYTES),
        mapping=registration.claims,
    )
    origin = settings.zendesk_origin(options.subdomain)
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
        headers={**NO_STORE, "content-security-policy": _post_csp(registration, origin)},
    )


async def _shared_email_refusal(
    request: Request, registration: Registration, identity: Identity
) -> Response | None:
    """Refuse a primary email that another iMIS person can sign in with (SECURITY E4)."""
    others = await services_of(request).users.others_sharing_email(identity)
    if isinstance(others, Unavailable):
        raise imis_unavailable(others)
    if not others:
        return None
    log.warning(
        "zendesk sign-in refused: registration=%s imis_id=%s shares primary email with "
        "imis_id=%s; give each person their own email in iMIS "
        "(or set refuse_shared_email = false)",
        registration.slug,
        identity.imis_id,
        ",".join(others),
    )
    ui = _settings(request).ui
    return _refused(
        request,
        registration,
        identity,
        f"Your email address {identity.email} is also the email address of another "
        f"person's iMIS account. {registration.name} identifies people by email, so it "
        "could mix up your account with theirs. Please ask "
        f"{ui.organization_name} to give each of you your own email address in iMIS.",
        title="Your email address is shared",
    )


def _refused(
    request: Request,
    registration: Registration,
    identity: Identity,
    message: str,
    *,
    title: str | None = None,
) -> Response:
    token = csrf.token(request)
    response = render(
        request,
        "zendesk_refused.html",
        {
            "title": title or f"You cannot use {registration.name}",
            "message": message,
            "registration": registration,
            "identity": identity,
            "csrf_token": token,
        },
        status_code=403,
        headers=NO_STORE,
    )
    csrf.set_cookie(request, response, token)
    return response


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
    zendesk = _settings(request).zendesk_origin(registration.zendesk.subdomain)
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


def _post_csp(registration: Registration, origin: str) -> str:
    """The default policy, plus our own script file and a form that may go to Zendesk.

    Zendesk answers the POST with a redirect (to return_to, or to the brand's own
    Zendesk subdomain), and browsers apply ``form-action`` to that redirect too,
    so every Zendesk subdomain and the brand hosts are listed as well.
    """
    parts = urlsplit(origin)
    sources = [f"{parts.scheme}://{parts.netloc}", "https://*.zendesk.com"]
    sources += [f"https://{host}" for host in registration.zendesk.brand_hosts]
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
        f"form-action {' '.join(dict.fromkeys(sources))}; frame-ancestors 'none'; base-uri 'none'"
    )


def routes() -> list[Route]:
    return [
        Route(CONTINUE_PATHS[KIND], continue_after_login, methods=["GET"]),
        Route("/zendesk/{slug}", remote_login, methods=["GET"]),
        Route("/zendesk/{slug}/logout", remote_logout, methods=["GET"]),
    ]
