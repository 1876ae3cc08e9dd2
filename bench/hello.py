"""S0, the ceiling: a hello-world Starlette app served by uvicorn with ``bridge serve``'s flags.

``python -m bench.hello --port N`` runs it as ``bridge serve`` runs the bridge
(``bridge/cli.py`` ``cmd_serve``): uvicorn's default loop and HTTP
implementations (uvloop and httptools when installed, as they are with
``uvicorn[standard]``), no access log, no server header, proxy headers on.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


app = Starlette(routes=[Route("/", hello), Route("/readyz", hello)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        proxy_headers=True,
        forwarded_allow_ips=None,
        server_header=False,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
