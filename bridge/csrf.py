"""Double-submit CSRF tokens for every state-changing form of the bridge (SECURITY D1).

A page that shows a form calls :func:`issue` (or :func:`token`, then
:func:`set_cookie` once the page is rendered), which puts one random token in a
cookie and returns the same token for a hidden ``csrf_token`` field; the POST
handler calls :func:`verify`, which refuses the request unless both are present
and equal (constant-time compare). A token already in the browser's cookie is
reused, so several tabs of the sign-in page all stay valid. This module only
issues and checks tokens: it does not parse request bodies or render pages,
and it never logs a token.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bridge.errors import BadRequest
from bridge.services import services
from bridge.settings import Settings
from bridge.templating import render

FIELD = "csrf_token"
MESSAGE = "Your session expired or the form was sent twice. Please try again."
#: ``secrets.token_urlsafe(32)``: 43 characters of the URL-safe base64 alphabet.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def cookie_name(settings: Settings) -> str:
    """``__Host-`` prefixed when the issuer is https, so no subdomain can plant one."""
    return "__Host-bridge-csrf" if settings.secure_cookies else "bridge-csrf"


def _settings(request: Request) -> Settings:
    return services(request).settings


def _cookie_token(request: Request) -> str | None:
    token = request.cookies.get(cookie_name(_settings(request)))
    return token if token and _TOKEN.match(token) else None


def token(request: Request) -> str:
    """The token for this browser: the one in its cookie, or a new one."""
    return _cookie_token(request) or secrets.token_urlsafe(32)


def set_cookie(request: Request, response: Response, value: str) -> None:
    """Put ``value`` (from :func:`token`) in the CSRF cookie of ``response``."""
    settings = _settings(request)
    # Lax, not Strict: the sign-in page is usually reached by a redirect from
    # another site (the app), and a Strict cookie would not be sent on that
    # navigation, so every such visit would replace the token of other open tabs.
    # A cross-site POST still carries no cookie under Lax.
    response.set_cookie(
        cookie_name(settings),
        value,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


def issue(request: Request, response: Response) -> str:
    """:func:`token` and :func:`set_cookie` in one, for a response that already exists."""
    value = token(request)
    set_cookie(request, response, value)
    return value


def verify(request: Request, form: Mapping[str, object]) -> None:
    """Refuse (:class:`BadRequest`) unless the form's token equals the cookie's."""
    cookie = _cookie_token(request)
    sent = form.get(FIELD)
    if cookie is None or not isinstance(sent, str) or not _TOKEN.match(sent):
        raise BadRequest(MESSAGE, detail="csrf token missing")
    if not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise BadRequest(MESSAGE, detail="csrf token mismatch")


def render_form(request: Request, name: str, context: Mapping[str, Any], **kwargs: Any) -> Response:
    """Render a page holding a state-changing form: the token in the page and the cookie."""
    value = token(request)
    response = render(request, name, {**context, "csrf_token": value}, **kwargs)
    set_cookie(request, response, value)
    return response
