"""``/metrics``: the Prometheus text format, for scrapers at the allowed addresses only.

Any other client, and every client when ``[metrics] enabled = false``, gets the
same 404 page as an unknown address: the route does not reveal that it exists.
The client address is the one uvicorn gives (the proxy's ``X-Forwarded-For``
only when it comes from ``--forwarded-allow-ips``), as for every per-address rule.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.metrics import CONTENT_TYPE
from bridge.services import services


async def metrics(request: Request) -> Response:
    known = services(request)
    if not known.settings.metrics.allows(request.client.host if request.client else None):
        raise HTTPException(404)
    counted = known.metrics
    # Multiprocess mode reads every worker's files: off the event loop.
    if counted.multiprocess_dir:
        body = await run_in_threadpool(counted.exposition)
    else:
        body = counted.exposition()
    return Response(body, media_type=CONTENT_TYPE, headers={"cache-control": "no-store"})


def routes() -> list[Route]:
    return [Route("/metrics", metrics, methods=["GET"])]
