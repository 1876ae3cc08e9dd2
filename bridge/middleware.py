"""Cross-cutting HTTP behaviour: security headers, body limits and error pages.

Every response gets the security headers (SECURITY D5); a page whose form
ends in a redirect to a registered address gets a policy naming exactly that
address's origin in ``form-action`` (:func:`page_csp`, SECURITY D7); request bodies are
capped before anyone parses them; every :class:`~bridge.errors.BridgeError` and
every unexpected exception becomes one clear page or JSON document with the
right status, never a stack trace. Every request gets a request id and one
access line (:class:`RequestLogMiddleware`). Route handlers stay free of this plumbing.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.errors import BridgeError, InvalidRegistration, PayloadTooLarge, RetryLater
from bridge.logs import OUTCOME_KEY, REGISTRATION_KEY, request_id
from bridge.metrics import route_templates
from bridge.settings import is_valid_slug
from bridge.templating import render

log = logging.getLogger("bridge.http")
access_log = logging.getLogger("bridge.access")

MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


def page_csp(form_targets: Iterable[str] = (), *, scripts: bool = False) -> str:
    """The pages' policy; ``form-action`` also allows the origin of each of ``form_targets``.

    ``scripts``: the page may run script files of our own origin (``script-src
    'self'``, never inline code), as the admin's copy buttons do.

    Browsers apply ``form-action`` to every redirect that follows a form
    submission, so a sign-in form that ends at the app's redirect URI must
    allow that URI's origin. Only exact origins are added (never a bare scheme
    such as ``https:``, never a wildcard); a target without one is left out.
    """
    sources = ["'self'", *(s for s in map(form_action_source, form_targets) if s)]
    script = "script-src 'self'; " if scripts else ""
    return (
        f"default-src 'none'; {script}style-src 'self'; img-src 'self' https: data:; "
        f"form-action {' '.join(dict.fromkeys(sources))}; frame-ancestors 'none'; base-uri 'none'"
    )


def form_action_source(url: str) -> str | None:
    """The CSP source matching exactly the origin of ``url``, or None.

    ``https://app.example.org:8443/cb`` gives ``https://app.example.org:8443``.
    A native app's private-use scheme (RFC 8252 §7.1, ``org.example.app:/cb``)
    has no host, so its source is the scheme itself: that scheme is the app's
    own reverse domain name, validated as such at registration. ``http:`` and
    ``https:`` alone are never returned, and neither is an IPv6 literal (CSP
    host sources cannot express one).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        host = parts.hostname
        if (
            not host
            or ":" in host
            or not all(c.isascii() and (c.isalnum() or c in ".-") for c in host)
        ):
            return None
        return f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    if "." in scheme and all(c.isascii() and (c.isalnum() or c in ".+-") for c in scheme):
        return f"{scheme}:"
    return None


DEFAULT_CSP = page_csp().encode()


class SecurityHeadersMiddleware:
    """Adds security headers, refuses oversized bodies and headers with 413/431.

    Under ``json_paths`` (an API's prefixes) those refusals are JSON
    ``{"error", "message"}``, as the API answers every other one.
    """

    def __init__(self, app: ASGIApp, json_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.json_paths = json_paths

    def _refusal(self, scope: Scope, status: int, code: str, text: str) -> Response:
        if str(scope.get("path", "")).startswith(self.json_paths):
            return JSONResponse(
                {"error": code, "message": text},
                status_code=status,
                headers={"cache-control": "no-store"},
            )
        return _plain(status, text)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(k) + len(v) for k, v in scope["headers"])
        if header_bytes > MAX_HEADER_BYTES:
            refusal = self._refusal(scope, 431, "headers_too_large", "Request headers too large")
            await refusal(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
                refusal = self._refusal(scope, 413, "payload_too_large", "Request body too large")
                await refusal(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise PayloadTooLarge()
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", DEFAULT_CSP))
                if scope.get("scheme") == "https":
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, limited_receive, send_with_headers)


#: A request id a client (or a proxy in front) may choose; any other is replaced.
_GOOD_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
#: Probes' paths: their access lines are DEBUG, or they would flood the log.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


class RequestLogMiddleware:
    """Gives each request an id and logs one ``bridge.access`` line when it is answered.

    The id is the request's ``X-Request-ID`` when it is a short token, else a new
    random one; it is in :data:`bridge.logs.request_id` while the request is
    answered (so every record logged meanwhile carries it) and in the response's
    ``X-Request-ID``. The line names the method, the matched route's template
    (never the raw path, never a query string, header or body), the status, the
    duration, the registration and the sign-in outcome when a handler noted them
    (:func:`bridge.logs.note_registration`, :func:`~bridge.logs.note_outcome`),
    else the route's ``slug`` path parameter if it is a well-formed slug.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: dict[int, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if _GOOD_REQUEST_ID.fullmatch(value):
                    rid = value.decode("ascii")
                break
        rid = rid or secrets.token_hex(8)
        token = request_id.set(rid)
        header = (b"x-request-id", rid.encode("ascii"))
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # The id stays set: the handler of unexpected errors, outside this
            # middleware, logs the exception in this same task, with this id.
            self._log(scope, logging.INFO, status, start)
            raise
        probe = scope["path"] in PROBE_PATHS
        self._log(scope, logging.DEBUG if probe else logging.INFO, status, start)
        request_id.reset(token)

    def _log(self, scope: Scope, level: int, status: int, start: float) -> None:
        if not access_log.isEnabledFor(level):
            return
        duration_ms = round((time.perf_counter() - start) * 1000, 1)
        route = self._template(scope)
        registration = scope.get(REGISTRATION_KEY)
        if registration is None:
            # A slug from the path is the client's text: only a well-formed one is logged.
            slug = scope.get("path_params", {}).get("slug")
            registration = slug if isinstance(slug, str) and is_valid_slug(slug) else None
        outcome = scope.get(OUTCOME_KEY)
        method = scope["method"]
        # Built directly (no caller look-up, no ``extra`` checks): this runs on every request.
        record = logging.LogRecord(
            "bridge.access",
            level,
            __file__,
            0,
            "%s %s %d %.1fms",
            (method, route, status, duration_ms),
            None,
        )
        record.method = method
        record.route = route
        record.status = status
        record.duration_ms = duration_ms
        if registration:
            record.registration = registration
        if outcome:
            record.outcome = outcome
        access_log.handle(record)

    def _template(self, scope: Scope) -> str:
        """The matched route's path template with its mounts' prefixes, or ``-``."""
        route = scope.get("route")
        if route is None or (isinstance(route, Mount) and route.routes):
            return "-"  # no route, or a mount whose routes none matched
        if self._templates is None:
            app = scope.get("app")
            self._templates = route_templates(getattr(app, "routes", ()))
        found = self._templates.get(id(route))
        return found if found is not None else str(getattr(route, "path", "-"))


def _plain(status: int, text: str) -> Response:
    return Response(text, status_code=status, media_type="text/plain")


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


#: Set in the scope of a request to an OAuth 2 client endpoint (token, revocation,
#: introspection, userinfo): its "try again later" is then OAuth JSON, as every other
#: answer there is (RFC 6749 §5.2, RFC 6750 §3), whatever media type it asked for.
OAUTH_CLIENT_ENDPOINT = "bridge.oauth_client_endpoint"
#: CORS of that "try again later" for a page script: which origins may read an
#: endpoint's answers is in a registration, and the database that holds it cannot
#: answer. The body holds nothing of anyone's (no credentials are allowed), so any
#: origin may read it; without this a page script saw a network error, not a 503.
UNAVAILABLE_CORS = {
    "access-control-allow-origin": "*",
    "access-control-expose-headers": "Retry-After",
}


def error_response(request: Request, exc: BridgeError) -> Response:
    headers: dict[str, str] = {"cache-control": "no-store"}
    if isinstance(exc, RetryLater):
        headers["retry-after"] = str(exc.retry_after)
        if request.scope.get(OAUTH_CLIENT_ENDPOINT):
            headers["pragma"] = "no-cache"
            if "origin" in request.headers:
                headers.update(UNAVAILABLE_CORS)
            return JSONResponse(
                {"error": "temporarily_unavailable", "error_description": exc.message},
                status_code=exc.status_code,
                headers=headers,
            )
    if wants_json(request):
        return JSONResponse(
            {"error": exc.title, "message": exc.message},
            status_code=exc.status_code,
            headers=headers,
        )
    return render(
        request,
        "error.html",
        {
            "title": exc.title,
            "message": exc.message,
            "retry_after": headers.get("retry-after"),
            "status": exc.status_code,
        },
        status_code=exc.status_code,
        headers=headers,
    )


#: What a person sees when the registration they are using cannot be read.
UNUSABLE_REGISTRATION = (
    "Sign-in for this application is not set up correctly. The problem is on our side, "
    "not yours: please let the association know."
)


async def _bridge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BridgeError)
    if isinstance(exc, InvalidRegistration):
        # No route writes a registration, so on a request this is a stored one that
        # cannot be read (a hand-edited row, a secret the keyring cannot decrypt). Its
        # reason names an administrator's command: that goes to the log, not to a member.
        exc = BridgeError(
            UNUSABLE_REGISTRATION, detail=f"a stored registration cannot be used: {exc.message}"
        )
    if exc.status_code >= 500:
        log.warning(
            "%s %s -> %d: %s",
            request.method,
            request.url.path,
            exc.status_code,
            exc.detail or exc.message,
        )
    return error_response(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    err = BridgeError(exc.detail if isinstance(exc.detail, str) else None)
    err.status_code = exc.status_code
    titles = {404: "Page not found", 405: "Method not allowed"}
    err.title = titles.get(exc.status_code, "Bad request")
    if exc.status_code == 404:
        err.message = "There is no page at this address."
    elif exc.status_code == 405:
        err.message = err.title
    return error_response(request, err)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(request, BridgeError())


def error_handlers() -> Mapping[Any, Any]:
    return {BridgeError: _bridge_error, HTTPException: _http_error, Exception: _unexpected}
