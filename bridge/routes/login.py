"""The sign-in page (``GET/POST /login``) and the bridge's own sign-out (``POST /logout``).

This module owns what a member sees when signing in: the form (with the
association's name, the app being signed in to and plain-language errors), the
strict reading of its body, and the order of the checks on submit: CSRF
(:mod:`bridge.csrf`), throttling (:mod:`bridge.throttle`), then one call to the
user store, whose outcome decides the page. A success starts a server-side
session (:mod:`bridge.sessions`) and continues the pending request. It must not
enforce a registration's access rule or speak any protocol (the flows that
continue a pending request do both), and it never logs or re-renders a password.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bridge import csrf, stats, throttle
from bridge.connectors import (
    AccountDisabled,
    OrganizationAccount,
    Unavailable,
    WrongCredentials,
)
from bridge.errors import BadRequest, TooManyRequests
from bridge.identity import Identity
from bridge.middleware import page_csp
from bridge.oauth.client import client_options
from bridge.registry import Registration
from bridge.services import services as services_of
from bridge.sessions import LOGIN_PATH, Pending, Session
from bridge.templating import render
from bridge.web import FormError, read_pairs, single_values
from bridge.web import registration as registration_named

log = logging.getLogger("bridge.login")

MAX_USERNAME = 256
MAX_PASSWORD = 1024
#: A sign-in form has four fields; anything far beyond that is not our form.
NO_STORE = {"cache-control": "no-store"}

WRONG_CREDENTIALS = "The username or password is incorrect."
MISSING_CREDENTIALS = "Enter your username and password."
UNREADABLE = "The form could not be read. Please go back to the sign-in page and try again."
UNAVAILABLE = (
    "iMIS is unavailable right now, so we cannot check your password. "
    "Please try again in a few minutes."
)
ORGANIZATION = (
    "This is an organization's account; organizations cannot sign in. "
    "Sign in with your personal account."
)
EXPIRED_TITLE = "This sign-in link has expired"
EXPIRED = (
    "For your security, a sign-in page is only valid for a limited time. Go back to the "
    "app you were signing in to and start again from there."
)


def _disabled_message(request: Request) -> str:
    support = services_of(request).settings.ui.support_email
    contact = f"contact {support}" if support else "contact the association"
    return f"Your iMIS account is disabled, so it cannot be used to sign in. Please {contact}."


# --- reading input -------------------------------------------------------------


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body as one value per field; anything else is a 400."""
    try:
        return single_values(await read_pairs(request, allow_empty=True))
    except FormError as exc:
        raise BadRequest(UNREADABLE, detail=exc.reason) from None


def _single_query_param(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise BadRequest(UNREADABLE, detail=f"query parameter {name!r} sent twice")
    return values[0] if values else None


def _check_credentials_shape(username: str, password: str) -> None:
    if len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
        raise BadRequest("The username or password is too long.", detail="credentials too long")
    if any(ord(c) < 32 or ord(c) == 127 for c in username):
        raise BadRequest(
            "The username contains characters that are not allowed.",
            detail="control characters in username",
        )


# --- pages ---------------------------------------------------------------------


async def _pending_and_registration(
    request: Request, raw_id: str
) -> tuple[Pending, Registration | None] | None:
    """The pending request and its registration, or None when either is gone.

    A pending request for no registration (``""``: signing in to the bridge's own
    pages, such as the admin) has None for its registration.
    """
    services = services_of(request)
    pending = await services.sessions.load_pending(raw_id)
    if pending is None:
        return None
    if not pending.registration:
        return pending, None
    registration = await registration_named(services, pending.registration)
    if registration is None:
        return None
    return pending, registration


def _login_form(
    request: Request,
    found: tuple[Pending, Registration | None] | None,
    *,
    username: str = "",
    error: str | None = None,
    invalid: bool = False,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    pending, registration = found if found else (None, None)
    app_name = registration.name if registration else None
    csp = page_csp(_form_targets(pending, registration))
    return csrf.render_form(
        request,
        "login.html",
        {
            "title": f"Sign in to {app_name}" if app_name else "Sign in",
            "app_name": app_name,
            "pending_id": pending.raw_id if pending else None,
            "username": username,
            "error": error,
            "invalid": invalid,
        },
        status_code=status_code,
        headers={**NO_STORE, "content-security-policy": csp, **(headers or {})},
    )


def _form_targets(pending: Pending | None, registration: Registration | None) -> list[str]:
    """Where a successful submission may end outside the bridge (SECURITY D7).

    An OIDC request continues with a redirect to the client's redirect URI,
    and browsers check that redirect against the form's ``form-action``. The
    URI must still be registered; any other pending request ends on our pages.
    """
    uri = pending.params.get("redirect_uri") if pending else None
    options = client_options(registration)
    if not isinstance(uri, str) or options is None:
        return []
    return [uri] if uri in options.redirect_uris else []


def _expired(request: Request) -> Response:
    return render(
        request,
        "error.html",
        {"title": EXPIRED_TITLE, "message": EXPIRED},
        status_code=400,
        headers=NO_STORE,
    )


def _signed_in(
    request: Request, session: Session, *, error: str | None = None, status_code: int = 200
) -> Response:
    return csrf.render_form(
        request,
        "signed_in.html",
        {"title": "You are signed in", "identity": session.identity, "error": error},
        status_code=status_code,
        headers=NO_STORE,
    )


# --- handlers -------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    """``GET /login[?request=ID]``: the sign-in form, or who is signed in."""
    raw_id = _single_query_param(request, "request")
    session = await services_of(request).sessions.current(request)
    if raw_id is None:
        if session is not None:
            return _signed_in(request, session)
        return _login_form(request, None)
    found = await _pending_and_registration(request, raw_id)
    if found is None:
        return _expired(request)
    pending = found[0]
    if pending.satisfied_by(session):
        # Signed in meanwhile (another tab): nothing to ask.
        return RedirectResponse(pending.continue_url, status_code=303, headers=NO_STORE)
    prefill = pending.login_hint or (session.identity.username if session else "")
    return _login_form(request, found, username=prefill[:MAX_USERNAME])


async def login_submit(request: Request) -> Response:
    """``POST /login``: check the password once and continue, or say plainly why not."""
    form = await read_form(request)
    found = None
    raw_id = form.get("request")
    if raw_id:
        found = await _pending_and_registration(request, raw_id)
        if found is None:
            return _expired(request)
    username = form.get("username", "").strip()
    password = form.get("password", "")
    _check_credentials_shape(username, password)
    try:
        csrf.verify(request, form)
    except BadRequest as exc:
        log.info("sign-in refused: %s username=%r", exc.detail, username)
        return _login_form(request, found, username=username, error=exc.message, status_code=400)
    if not username or not password:
        return _login_form(
            request, found, username=username, error=MISSING_CREDENTIALS, status_code=400
        )
    try:
        await throttle.check(request, username)
    except TooManyRequests as exc:
        log.info(
            "%s: username=%r address=%s retry_after=%d",
            exc.detail,
            username,
            throttle.client_address(request),
            exc.retry_after,
        )
        registration = found[1] if found else None
        await stats.count(
            request,
            registration.slug if registration else stats.NO_REGISTRATION,
            stats.Outcome.THROTTLED,
        )
        return _login_form(
            request,
            found,
            username=username,
            error=exc.message,
            status_code=429,
            headers={"retry-after": str(exc.retry_after)},
        )

    pending, registration = found if found else (None, None)
    slug = registration.slug if registration else "-"
    properties = registration.imis_properties if registration else ()
    outcome = await services_of(request).users.authenticate(
        username, password, properties=properties
    )
    await stats.count_login(request, slug, outcome)

    if isinstance(outcome, Identity):
        log.info(
            "sign-in ok: username=%r imis_id=%s registration=%s",
            username,
            outcome.imis_id,
            slug,
        )
        await throttle.clear(request, username)
        target = pending.continue_url if pending else LOGIN_PATH
        response = RedirectResponse(target, status_code=303, headers=NO_STORE)
        await services_of(request).sessions.start(request, response, outcome)
        throttle.remember_device(request, response, username)
        return response
    if isinstance(outcome, WrongCredentials):
        log.info("sign-in failed: wrong credentials username=%r registration=%s", username, slug)
        await throttle.record_failure(request, username)
        return _login_form(
            request,
            found,
            username=username,
            error=WRONG_CREDENTIALS,
            invalid=True,
            status_code=401,
        )
    if isinstance(outcome, AccountDisabled):
        log.info("sign-in refused: account disabled username=%r registration=%s", username, slug)
        return _login_form(
            request, found, username=username, error=_disabled_message(request), status_code=403
        )
    if isinstance(outcome, OrganizationAccount):
        log.info(
            "sign-in refused: organization account username=%r imis_id=%s registration=%s",
            username,
            outcome.imis_id,
            slug,
        )
        return _login_form(request, found, error=ORGANIZATION, status_code=403)
    if isinstance(outcome, Unavailable):
        log.info(
            "sign-in not decided: iMIS unavailable (%s) username=%r registration=%s",
            outcome.detail or "no detail",
            username,
            slug,
        )
        return _login_form(
            request,
            found,
            username=username,
            error=UNAVAILABLE,
            status_code=503,
            headers={"retry-after": str(max(1, outcome.retry_after))},
        )
    raise AssertionError(f"unexpected sign-in outcome {type(outcome).__name__}")


async def logout(request: Request) -> Response:
    """``POST /logout``: end this browser's session here and in the database."""
    form = await read_form(request)
    try:
        csrf.verify(request, form)
    except BadRequest as exc:
        session = await services_of(request).sessions.current(request)
        if session is not None:
            return _signed_in(request, session, error=exc.message, status_code=400)
        raise
    response = render(request, "signed_out.html", {"title": "You are signed out"}, headers=NO_STORE)
    ended = await services_of(request).sessions.end(request, response)
    if ended is not None:
        log.info(
            "signed out: username=%r imis_id=%s", ended.identity.username, ended.identity.imis_id
        )
    return response


def routes() -> list[Route]:
    return [
        Route(LOGIN_PATH, login_page, methods=["GET"]),
        Route(LOGIN_PATH, login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
