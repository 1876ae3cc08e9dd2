"""HTTP routes. Each module is thin: parse the request, call one service, render."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from bridge.routes import health, login, oidc, zendesk


def all_routes() -> list[BaseRoute]:
    static = StaticFiles(directory=Path(__file__).parent.parent / "static")
    return [
        *health.routes(),
        *oidc.routes(),
        *login.routes(),
        *zendesk.routes(),
        Mount("/static", app=static, name="static"),
    ]
