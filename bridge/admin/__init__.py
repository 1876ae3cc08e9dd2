"""The admin: the web pages under ``/admin`` and the JSON API under ``/admin/api`` (:mod:`.api`).

:func:`routes` is what the app mounts; :func:`continue_paths` is where an admin
sign-in continues (the app gives it to the session manager with the profiles').
Who gets in is :mod:`bridge.admin.auth`; the pages are :mod:`bridge.admin.pages`,
their registration form :mod:`bridge.admin.forms`. The admin sits beside the
core's routes and the profiles: it knows none of them by name, and changes
registrations only through :mod:`bridge.manage`.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from bridge.admin import api, pages
from bridge.admin.auth import CONTINUE_PATH, KIND


def routes() -> list[BaseRoute]:
    """Every route under ``/admin``: the JSON API first (its mount is more specific)."""
    return [*api.routes(), *pages.routes()]


def continue_paths() -> dict[str, str]:
    """Pending-request kind -> where it continues: the admin's own sign-in."""
    return {KIND: CONTINUE_PATH}


__all__ = ["continue_paths", "routes"]
