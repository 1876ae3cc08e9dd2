"""The process's services, typed, and the one way a request reaches them.

:class:`Services` holds everything a request handler may use, built once per
process, eagerly, by the app's lifespan (:func:`bridge.app.open_services`):
settings, database, store, key store, registry, user store, the session manager,
the OAuth server, the catalogue of installed profiles, the registration
changes (:mod:`bridge.manage`) and the Prometheus metrics. Each part is given
the other parts it needs explicitly; none holds the whole. Handlers, pages and
profiles call :func:`services` with their request. This module builds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from bridge.connectors import UserStore
from bridge.keys import KeyStore
from bridge.manage import Registrations
from bridge.metrics import Metrics
from bridge.oauth.server import OAuthServer
from bridge.plugin import ProfileCatalog
from bridge.registry import Registry
from bridge.sessions import SessionManager
from bridge.settings import Settings
from bridge.storage import Database, Store


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request handler may use; one instance per process."""

    settings: Settings
    db: Database
    store: Store
    keys: KeyStore
    registry: Registry
    users: UserStore
    sessions: SessionManager
    oauth: OAuthServer
    profiles: ProfileCatalog
    #: Changes to registrations (validated, audited): the CLI, admin pages and API.
    registrations: Registrations
    #: The process's Prometheus metrics (``/metrics``).
    metrics: Metrics = field(default_factory=Metrics)


class NotStarted(RuntimeError):
    """A request reached a handler of an app whose lifespan did not start the services."""


def services(request: Request) -> Services:
    """The process's services: the app's state, or (for a mounted sub-app, such as a
    demo page) the lifespan state every request carries."""
    found: Services | None = getattr(request.app.state, "services", None)
    if found is None:
        found = request.scope.get("state", {}).get("services")
    if found is None:
        raise NotStarted("the bridge's services are not started (run the app's lifespan)")
    return found
