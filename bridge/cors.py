"""CORS for the endpoints a browser-based app calls from its own page script.

Discovery and the JWKS are public documents: any origin may read them
(``Access-Control-Allow-Origin: *``, see :data:`PUBLIC`). ``/token``,
``/userinfo`` and ``/revoke`` answer only the exact origins that a public OIDC
client lists in ``web_origins``: a response names the request's ``Origin``
when the client the request is for lists it (:func:`answer`), and a preflight,
which names no client, is answered for an origin that some enabled
registration lists (:func:`preflight`). Tokens are bearer tokens sent in
headers, never cookies, so no response allows credentials. This module only
adds headers; the endpoints decide everything else.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response

from bridge.oauth.client import client_options, lists_web_origin
from bridge.registry import Registration
from bridge.services import services as services_of

#: Headers of a response any origin may read.
PUBLIC = {"access-control-allow-origin": "*"}
#: Request headers a page script may send: a bearer token, a form's content type.
ALLOWED_HEADERS = "Authorization, Content-Type"
#: How long a browser may reuse a preflight answer.
MAX_AGE_SECONDS = 600
#: Origins are at most this long (a browser's Origin header for a sane host).
_MAX_ORIGIN = 512


def _origin(request: Request) -> str | None:
    origin = request.headers.get("origin")
    if not origin or len(origin) > _MAX_ORIGIN or origin == "null":
        return None
    return origin


def _vary(response: Response) -> None:
    vary = response.headers.get("vary")
    if vary is None:
        response.headers["vary"] = "Origin"
    elif "origin" not in vary.lower():
        response.headers["vary"] = f"{vary}, Origin"


async def _listed_anywhere(request: Request, origin: str) -> bool:
    services = services_of(request)
    return bool(await services.db.run(lists_web_origin, services.registry, origin))


def _lists(registration: Registration, origin: str) -> bool:
    options = client_options(registration)
    return registration.enabled and options is not None and origin in options.web_origins


async def answer(
    request: Request, response: Response, registration: Registration | None, *, known: bool
) -> Response:
    """Add CORS headers to ``response`` if its request's origin may read it.

    ``known`` says whether the request named its client: then only that
    client's ``registration`` (None: unknown or not a browser client) decides.
    A request that names no client (an unreadable body, an unknown token) may
    be read by any listed origin, so a page script can see the error.
    """
    _vary(response)
    origin = _origin(request)
    if origin is None:
        return response
    if known:
        allowed = registration is not None and _lists(registration, origin)
    else:
        allowed = await _listed_anywhere(request, origin)
    if allowed:
        response.headers["access-control-allow-origin"] = origin
        response.headers["access-control-expose-headers"] = "WWW-Authenticate"
    return response


async def preflight(request: Request, methods: Sequence[str]) -> Response:
    """``OPTIONS``: the CORS preflight of an endpoint that takes ``methods``."""
    allow = ", ".join(["OPTIONS", *methods])
    origin = _origin(request)
    asked = request.headers.get("access-control-request-method")
    if "origin" not in request.headers or asked is None:  # not a CORS preflight
        return Response(status_code=204, headers={"allow": allow})
    if origin is None or asked not in methods or not await _listed_anywhere(request, origin):
        response = Response(
            "This origin may not call this endpoint (see web_origins).",
            status_code=403,
            media_type="text/plain",
            headers={"allow": allow},
        )
        _vary(response)
        return response
    response = Response(
        status_code=204,
        headers={
            "allow": allow,
            "access-control-allow-origin": origin,
            "access-control-allow-methods": ", ".join(methods),
            "access-control-allow-headers": ALLOWED_HEADERS,
            "access-control-max-age": str(MAX_AGE_SECONDS),
        },
    )
    _vary(response)
    return response
