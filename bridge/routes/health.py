"""``/healthz`` (the process answers) and ``/readyz`` (database and keys usable)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.services import services


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})


async def readyz(request: Request) -> Response:
    known = services(request)
    database = await known.db.run(known.db.ping)
    keys = bool(known.keys.jwks()["keys"]) and known.keys.problem is None
    ready = database and keys
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "database": database, "keys": keys},
        status_code=200 if ready else 503,
        headers={"cache-control": "no-store", **({} if ready else {"retry-after": "5"})},
    )


def routes() -> list[Route]:
    return [Route("/healthz", healthz), Route("/readyz", readyz)]
