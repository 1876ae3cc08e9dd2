"""Jinja2 page rendering with autoescaping and the association's UI settings.

One environment per process, loaded from the package's ``templates/`` and
compiled once. Every
page receives ``ui`` (organization name, logo, links) and ``issuer``; pages
never receive secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from bridge.services import NotStarted, services

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        # Compiled once: the package's templates do not change under a running process
        # (re-checking their files cost a stat per template per page).
        auto_reload=False,
    )


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    try:
        settings = services(request).settings
    except NotStarted:  # an error page of an app that never started: no UI settings
        settings = None
    page = (
        environment()
        .get_template(name)
        .render(
            ui=settings.ui if settings else None,
            issuer=settings.issuer if settings else "",
            **context,
        )
    )
    return HTMLResponse(page, status_code=status_code, headers=dict(headers or {}))
