"""OpenID Connect HTTP endpoints: discovery, JWKS, authorize, token, userinfo, revocation,
introspection and RP-initiated logout.

Thin: each handler reads the request, calls :mod:`bridge.oauth` (the token side
runs in a worker thread because Authlib is synchronous) and renders the result;
:mod:`bridge.cors` adds the CORS headers a browser-based client needs.
Errors the client cannot be trusted with (unknown client, unregistered
redirect URI) are shown on our page; the others go back to the client.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bridge import cors, csrf, sessions, stats
from bridge.access import check_access, identity_for
from bridge.claims import claims_for
from bridge.errors import BadRequest, BridgeError, Forbidden, NotFound
from bridge.identity import Identity
from bridge.keys import InvalidToken
from bridge.logs import note_registration
from bridge.middleware import OAUTH_CLIENT_ENDPOINT, page_csp
from bridge.oauth.authorize import (
    AuthorizationRequest,
    RedirectError,
    ShowError,
    has_control_chars,
    redirect_with,
    validate,
)
from bridge.oauth.client import CONTINUE_PATH, KIND, client_options
from bridge.oauth.codes import mint_code
from bridge.oauth.discovery import DISCOVERY_PATH, JWKS_PATH, metadata
from bridge.oauth.server import oauth_request
from bridge.registry import Registration
from bridge.services import services as services_of
from bridge.templating import render
from bridge.web import FormError, is_form, read_pairs, registration_of_client, single_values
from bridge.web import registration as registration_named

log = logging.getLogger("bridge.oidc")

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


# --- discovery ------------------------------------------------------------------------


async def discovery(request: Request) -> Response:
    return JSONResponse(
        metadata(services_of(request).settings.issuer),
        headers={"cache-control": "public, max-age=300", **cors.PUBLIC},
    )


async def jwks(request: Request) -> Response:
    keys = services_of(request).keys
    keys.reload_if_cheap()
    return JSONResponse(
        keys.jwks(), headers={"cache-control": "public, max-age=300", **cors.PUBLIC}
    )


# --- authorize --------------------------------------------------------------------------


async def _params(request: Request) -> list[tuple[str, str]]:
    """The authorization request's parameters: the query for GET, the form for POST."""
    if request.method != "POST":
        return list(request.query_params.multi_items())
    try:
        return await read_pairs(request)
    except FormError as exc:
        raise BadRequest(f"The sign-in request cannot be read: {exc.reason}.") from None


def _error_redirect(issuer: str, err: RedirectError) -> RedirectResponse:
    url = redirect_with(
        err.redirect_uri,
        {
            "error": err.error,
            "error_description": err.description,
            "state": err.state,
            "iss": issuer,
        },
    )
    return RedirectResponse(url, status_code=303, headers=NO_STORE)


def _show(request: Request, message: str, status: int = 400) -> Response:
    return render(
        request,
        "error.html",
        {
            "title": "This sign-in request cannot be handled",
            "message": message,
            "hint": "Nothing was sent anywhere. If you came here from an application's "
            "sign-in button, please tell that application's administrator.",
        },
        status_code=status,
        headers=NO_STORE,
    )


def _needs_login(areq: AuthorizationRequest, session: sessions.Session | None, now: int) -> bool:
    if session is None or areq.prompt == "login" or areq.max_age == 0:
        # max_age=0 is prompt=login (OIDC Core §3.1.2.1), even within auth_time's second.
        return True
    return areq.max_age is not None and now - session.auth_time > areq.max_age


def _min_auth_time(
    areq: AuthorizationRequest, session: sessions.Session | None, now: int
) -> int | None:
    """How fresh the sign-in must be when login is forced (prompt=login, max_age).

    Later than the current session's auth_time too: auth_time counts whole
    seconds, and a session from this very second must not pass for a new sign-in.
    """
    if session is None or (areq.prompt != "login" and areq.max_age is None):
        return None
    return max(now, session.auth_time + 1)


async def authorize(request: Request) -> Response:
    services = services_of(request)
    issuer = services.settings.issuer
    try:
        pairs = await _params(request)
        registration, areq = await services.db.run(validate, pairs, services.registry.by_client_id)
        note_registration(request.scope, registration.slug)
    except ShowError as err:
        return _show(request, err.message)
    except RedirectError as err:
        return _error_redirect(issuer, err)
    now = int(time.time())
    session = await services.sessions.current(request)
    if _needs_login(areq, session, now):
        if areq.prompt == "none":
            return _error_redirect(
                issuer,
                RedirectError(
                    "login_required", "the person must sign in", areq.redirect_uri, areq.state
                ),
            )
        pending = await services.sessions.create_pending(
            request,
            kind=KIND,
            registration=registration.slug,
            params=areq.to_params(),
            min_auth_time=_min_auth_time(areq, session, now),
            login_hint=areq.login_hint,
        )
        return sessions.send_to_login(pending)
    assert session is not None
    return await stats.counted(
        request, registration.slug, _complete(request, registration, areq, session)
    )


async def authorize_continue(request: Request) -> Response:
    services = services_of(request)
    pending = await services.sessions.load_pending(request.query_params.get("request"))
    if pending is None or pending.kind != KIND:
        raise BadRequest(
            "This sign-in link has expired or was already used. Go back to the application "
            "and start again."
        )
    session = await services.sessions.current(request)
    if not pending.satisfied_by(session):
        return sessions.send_to_login(pending)
    assert session is not None
    registration = await registration_named(services, pending.registration)
    if registration is None or client_options(registration) is None:
        raise NotFound("This application is no longer registered.")
    areq = AuthorizationRequest.from_params(pending.params)
    response = await stats.counted(
        request, registration.slug, _complete(request, registration, areq, session)
    )
    await services.sessions.finish_pending(pending)
    return response


async def _complete(
    request: Request,
    registration: Registration,
    areq: AuthorizationRequest,
    session: sessions.Session,
) -> Response:
    """The person is signed in: check access, issue a code, send it to the client.

    Its caller counts the outcome (:func:`bridge.stats.counted`)."""
    services = services_of(request)
    settings = services.settings
    try:
        identity = await identity_for(services.users, registration, session.identity)
        check_access(registration, identity)
    except Forbidden as err:
        stats.note(request, stats.Outcome.ACCESS_RULE)
        if areq.prompt == "none":
            return _error_redirect(
                settings.issuer,
                RedirectError(
                    "access_denied",
                    "the person may not use this application",
                    areq.redirect_uri,
                    areq.state,
                ),
            )
        return render(
            request,
            "error.html",
            {"title": f"You cannot use {registration.name}", "message": err.message},
            status_code=403,
            headers=NO_STORE,
        )
    code = await services.db.run(
        lambda: mint_code(
            services.store,
            areq,
            identity=identity,
            session_hash=session.id_hash,
            auth_time=session.auth_time,
            now=int(time.time()),
            code_seconds=settings.tokens.code_seconds,
        )
    )
    log.info("code issued: client=%s imis_id=%s", areq.client_id, identity.imis_id)
    url = redirect_with(
        areq.redirect_uri, {"code": code, "state": areq.state, "iss": settings.issuer}
    )
    return RedirectResponse(url, status_code=303, headers=NO_STORE)


# --- token side ---------------------------------------------------------------------


async def _form(request: Request) -> list[tuple[str, str]]:
    """The urlencoded body; a JSON body, bad UTF-8 or a repeated parameter is invalid_request."""
    try:
        pairs = await read_pairs(request)
        single_values(pairs)
    except FormError as exc:
        raise _OAuthError("invalid_request", exc.reason) from None
    return pairs


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        self.error = error
        self.description = description
        self.status = status


def _oauth_error(err: _OAuthError) -> JSONResponse:
    return JSONResponse(
        {"error": err.error, "error_description": err.description},
        status_code=err.status,
        headers=NO_STORE,
    )


async def _run_endpoint(request: Request, name: str | None) -> Response:
    """Run the token endpoint (``name=None``) or a named Authlib endpoint in a thread."""
    services = services_of(request)
    try:
        form = await _form(request)
    except _OAuthError as err:
        return _oauth_error(err)
    uri = f"{services.settings.issuer}{request.url.path}"
    oreq = oauth_request(request.method, uri, request.headers, form)
    server = services.oauth
    if name is None:
        status, body, headers = await services.db.run(server.token_response, oreq)
    else:
        status, body, headers = await services.db.run(server.endpoint_response, name, oreq)
    return JSONResponse(body, status_code=status, headers=dict(headers))


async def _browser_endpoint(request: Request, name: str | None) -> Response:
    """/token or /revoke, with CORS for the client the request names.

    A public client names itself with ``client_id`` in the body and nothing
    else; a request with an Authorization header is a confidential client's,
    which never has web origins.
    """
    response = await _run_endpoint(request, name)
    if "authorization" in request.headers:
        return await cors.answer(request, response, None, known=True)
    try:
        client_id = dict(await _form(request)).get("client_id")  # the body is read once, cached
    except _OAuthError:
        client_id = None
    if not client_id or len(client_id) > 200 or has_control_chars(client_id):
        return await cors.answer(request, response, None, known=False)
    registration = await registration_of_client(services_of(request), client_id)
    if registration is not None:
        note_registration(request.scope, registration.slug)
    return await cors.answer(request, response, registration, known=True)


Endpoint = Callable[[Request], Awaitable[Response]]


def _json_when_unavailable(handler: Endpoint) -> Endpoint:
    """A client endpoint whose 503 (the database cannot answer) is JSON, as its every
    other answer is: a client asks for no media type, and would otherwise get the page
    a browser gets (the error handler answers; see :data:`OAUTH_CLIENT_ENDPOINT`)."""

    async def endpoint(request: Request) -> Response:
        request.scope[OAUTH_CLIENT_ENDPOINT] = True
        return await handler(request)

    return endpoint


@_json_when_unavailable
async def token(request: Request) -> Response:
    return await _browser_endpoint(request, None)


@_json_when_unavailable
async def revoke(request: Request) -> Response:
    return await _browser_endpoint(request, "revocation")


@_json_when_unavailable
async def introspect(request: Request) -> Response:
    return await _run_endpoint(request, "introspection")


def _header_text(text: str) -> str:
    """``text`` as RFC 6750 §3 allows an ``error_description`` in ``WWW-Authenticate``:
    printable ASCII but ``"`` and ``\\`` (a description may quote the client's own field
    names, which are any Unicode); every other character becomes ``?``."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)


def _bearer_error(error: str, description: str, status: int = 401) -> Response:
    header = f'Bearer error="{error}", error_description="{_header_text(description)}"'
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"www-authenticate": header, **NO_STORE},
    )


async def _bearer_token(request: Request) -> str | None:
    """The access token of a userinfo request, or None if it carries none.

    RFC 6750 §2.1 (``Authorization: Bearer``) or, for a POST, §2.2 (``access_token``
    in a form body). Both at once is invalid_request (§2: only one method).
    The query string (§2.3) is not read: it ends up in logs.
    """
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    in_header = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    in_body: str | None = None
    if request.method == "POST" and is_form(request):
        form = dict(await _form(request))
        in_body = form.get("access_token") or None
    if in_header is not None and in_body is not None:
        raise _OAuthError("invalid_request", "the access token was sent in two ways")
    return in_header if in_header is not None else in_body


@_json_when_unavailable
async def userinfo(request: Request) -> Response:
    """``/userinfo``, with CORS for the client the access token was issued to."""
    response, registration, known = await _userinfo(request)
    return await cors.answer(request, response, registration, known=known)


async def _userinfo(request: Request) -> tuple[Response, Registration | None, bool]:
    """The response, the token's client and whether the request named one (see cors)."""
    services = services_of(request)
    try:
        raw = await _bearer_token(request)
    except _OAuthError as err:
        return _bearer_error(err.error, err.description, 400), None, False
    if raw is None:
        # RFC 6750 §3.1: a request without any token gets a challenge, no error code.
        challenge = JSONResponse(
            {"error_description": "an access token is required"},
            status_code=401,
            headers={"www-authenticate": "Bearer", **NO_STORE},
        )
        return challenge, None, False
    if len(raw) > 512:
        return _bearer_error("invalid_token", "the access token is not valid"), None, False
    found = await services.db.run(
        lambda: services.store.active_token(raw, now=int(time.time()), kind="access")
    )
    if found is None:
        return _bearer_error("invalid_token", "the access token is not valid"), None, False
    row, grant = found
    registration = await registration_of_client(services, row.client_id)
    scopes = row.scope.split()
    if "openid" not in scopes:
        insufficient = _bearer_error(
            "insufficient_scope", "the token was not issued with openid", 403
        )
        return insufficient, registration, True
    if registration is None:
        gone = _bearer_error("invalid_token", "the client of this token no longer exists")
        return gone, None, False
    identity = Identity.from_json(grant.identity_json)
    claims = {"sub": identity.imis_id}
    claims.update(
        claims_for(
            identity,
            scopes,
            registration.claims,
            emails_verified=services.settings.imis.emails_verified,
        )
    )
    return JSONResponse(claims, headers=NO_STORE), registration, True


# --- RP-initiated logout ------------------------------------------------------------------


async def end_session(request: Request) -> Response:
    """OpenID Connect RP-Initiated Logout 1.0."""
    services = services_of(request)
    if request.method == "POST":
        form = dict(await _params(request))
        csrf.verify(request, form)
        params = form
        confirmed = form.get("confirm") == "yes"
    else:
        params = dict(request.query_params)
        confirmed = False
    hint = params.get("id_token_hint")
    client_id = params.get("client_id")
    post_logout = params.get("post_logout_redirect_uri")
    state = params.get("state")
    hint_claims: dict[str, Any] | None = None
    if hint:
        # Another process may have rotated the keys of a folder and signed the hint with
        # the new one since this process last looked (two stat calls when nothing
        # changed). Keys in the database sign only once every process publishes them.
        services.keys.reload_if_cheap()
        try:
            hint_claims = services.keys.verify_jwt(
                hint,
                audience=client_id or _unverified_aud(hint),
                issuer=services.settings.issuer,
                # RP-Initiated Logout §4: an expired ID token is still a hint while
                # the session it came from may be alive; none outlives this.
                leeway=services.settings.sessions.lifetime_seconds,
            )
        except InvalidToken as exc:
            raise BadRequest("The logout request carried an ID token that is not valid.") from exc
        client_id = client_id or str(hint_claims["aud"])
    registration = None
    if client_id and (len(client_id) > 200 or has_control_chars(client_id)):
        raise BadRequest("The application asking to sign you out is not registered.")
    if client_id:
        registration = await registration_of_client(services, client_id)
        if registration is None:
            raise BadRequest("The application asking to sign you out is not registered.")
        note_registration(request.scope, registration.slug)
    if post_logout:
        if registration is None:
            raise BadRequest("post_logout_redirect_uri needs client_id or id_token_hint.")
        options = client_options(registration)
        if options is None or post_logout not in options.post_logout_redirect_uris:
            raise BadRequest("The address to return to after sign-out is not registered.")
    session = await services.sessions.current(request)
    same_person = (
        session is not None
        and hint_claims is not None
        and hint_claims.get("sub") == session.identity.imis_id
    )
    if session is not None and not same_person and not confirmed:
        return csrf.render_form(
            request,
            "logout_confirm.html",
            {
                "title": "Sign out?",
                "app_name": registration.name if registration else None,
                "person": session.identity.display_name,
                "params": {
                    k: v
                    for k, v in params.items()
                    if k in ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")
                },
            },
            # The confirmation ends in a redirect to the (registered) post-logout URI.
            headers={**NO_STORE, "content-security-policy": page_csp([post_logout or ""])},
        )
    if post_logout:
        response: Response = RedirectResponse(
            redirect_with(post_logout, {"state": state}), status_code=303, headers=NO_STORE
        )
    else:
        response = render(request, "signed_out.html", {"title": "Signed out"}, headers=NO_STORE)
    await services.sessions.sign_out(request, response, session)
    if session is not None:
        log.info("signed out: imis_id=%s client=%s", session.identity.imis_id, client_id or "-")
    return response


def _unverified_aud(token: str) -> str:
    import jwt

    try:
        aud = jwt.decode(token, options={"verify_signature": False}).get("aud")
    except jwt.InvalidTokenError:
        return secrets.token_hex(8)  # matches nothing: verification then fails
    if isinstance(aud, list):
        return str(aud[0]) if aud else ""
    return str(aud or "")


def _preflights(paths: dict[str, list[str]]) -> list[Route]:
    def handler(methods: list[str]) -> Any:
        async def options(request: Request) -> Response:
            return await cors.preflight(request, methods)

        return options

    return [Route(path, handler(methods), methods=["OPTIONS"]) for path, methods in paths.items()]


def routes() -> list[Route]:
    return [
        Route(DISCOVERY_PATH, discovery),
        Route(JWKS_PATH, jwks),
        Route("/authorize", authorize, methods=["GET", "POST"]),
        Route(CONTINUE_PATH, authorize_continue),
        Route("/token", token, methods=["POST"]),
        Route("/userinfo", userinfo, methods=["GET", "POST"]),
        Route("/revoke", revoke, methods=["POST"]),
        *_preflights({"/token": ["POST"], "/userinfo": ["GET", "POST"], "/revoke": ["POST"]}),
        Route("/introspect", introspect, methods=["POST"]),
        Route("/end_session", end_session, methods=["GET", "POST"]),
    ]


__all__ = ["BridgeError", "routes"]
