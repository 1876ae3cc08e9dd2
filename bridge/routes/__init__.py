"""The core's HTTP routes (health, metrics, OIDC, sign-in). Each module is thin: parse the request,
call one service, render. Profiles bring their own routes (mounted by :mod:`bridge.app`)."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from bridge.routes import health, login, metrics, oidc


def all_routes() -> list[BaseRoute]:
    static = StaticFiles(directory=Path(__file__).parent.parent / "static")
    return [
        *health.routes(),
        *metrics.routes(),
        *oidc.routes(),
        *login.routes(),
        Mount("/static", app=static, name="static"),
    ]
