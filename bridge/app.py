"""Wiring: ``create_app(settings)`` builds the Starlette app from explicit parts.

This module only assembles: it finds the installed profiles (entry points),
opens the database and the key store and builds the typed
:class:`~bridge.services.Services` when the app starts (lifespan), chooses the
user store, mounts the core routes, the admin's (pages and JSON API under
``/admin``) and each profile's under ``/{profile}``, the cross-cutting
middleware (security headers, body limits, error pages), and runs the scheduled
purge and the writing of sign-in counts (:mod:`bridge.housekeeping`) while the
app lives. It holds no protocol logic and nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount

from bridge import admin
from bridge.admin import api as admin_api
from bridge.connectors import UserStore
from bridge.demo.mounts import demo_routes
from bridge.housekeeping import (
    COUNTS_FLUSH_SECONDS,
    flush_counts,
    flush_counts_periodically,
    forget_instance,
    instance_name,
    purge_periodically,
    watch_keys_periodically,
)
from bridge.keys import (
    KEYS_POLL_SECONDS,
    Kek,
    KeyStore,
    SealedVault,
    Vault,
    hash_secret,
    vault_of,
)
from bridge.manage import Registrations
from bridge.metrics import HttpMetricsMiddleware, Metrics, route_templates
from bridge.middleware import RequestLogMiddleware, SecurityHeadersMiddleware, error_handlers
from bridge.oauth.server import OAuthServer
from bridge.plugin import ProfileCatalog, load_profiles
from bridge.registry import Registry, load_file_registrations
from bridge.routes import all_routes
from bridge.services import Services
from bridge.sessions import SessionManager
from bridge.settings import ConfigurationError, Problem, Settings, load_settings
from bridge.storage import Database, Store
from bridge.storage.key_vault import DatabaseVault

log = logging.getLogger("bridge")


def key_vault(settings: Settings, db: Database) -> Vault:
    """Where the keys live: ``keys_dir``, or the database sealed with the KEK."""
    if settings.key_store == "database":
        if settings.kek is None:  # load_settings refuses this; a hand-built Settings may not
            raise ConfigurationError(
                [Problem("bridge.toml", "key_store", '"database" needs a key-encryption key')]
            )
        previous = [Kek(settings.kek_previous)] if settings.kek_previous else []
        return SealedVault(DatabaseVault(db), Kek(settings.kek), previous)
    return vault_of(settings.keys_dir)


def build_registry(
    settings: Settings, store: Store, keys: KeyStore, profiles: ProfileCatalog | None = None
) -> Registry:
    """File registrations (validated) layered over the stored ones; raises on any problem."""
    profiles = load_profiles() if profiles is None else profiles
    sink: list[Problem] = []
    files = load_file_registrations(
        settings.registrations, sink, profiles=profiles, hash_secret=hash_secret
    )
    if sink:
        raise ConfigurationError(sink)
    registry = Registry(
        files,
        store,
        profiles=profiles,
        hash_secret=hash_secret,
        encrypt=keys.encrypt_secret,
        decrypt=keys.decrypt_secret,
        cache_seconds=settings.registry_cache_seconds,
    )
    clashes = registry.conflicts()
    if clashes:
        raise ConfigurationError(clashes)
    return registry


def open_services(
    settings: Settings,
    *,
    users: UserStore | None = None,
    imis_base_url: str | None = None,
    auto_upgrade: bool | None = None,
    profiles: ProfileCatalog | None = None,
    metrics: Metrics | None = None,
) -> Services:
    """Open database, keys, registry and user store for ``settings`` (touches disk), and
    build every service from them. ``profiles``: the installed ones unless given;
    ``metrics``: a registry of their own unless given."""
    from bridge.connectors.imis import ImisUserStore

    profiles = load_profiles() if profiles is None else profiles
    metrics = Metrics() if metrics is None else metrics
    db = Database(settings.database_url)
    try:
        db.ensure_schema(
            auto_upgrade=auto_upgrade
        )  # None: SQLite upgrades itself; PostgreSQL refuses
        store = Store(db)
        keys = KeyStore.load_or_create(key_vault(settings, db))
        registry = build_registry(settings, store, keys, profiles)
    except BaseException:
        db.dispose()  # a refused start must not leave pooled connections behind
        raise
    if users is None:
        base = imis_base_url
        if base is None and settings.demo and settings.imis.uses_simulator:
            base = f"{settings.issuer}/_demo/imis"
        users = ImisUserStore(settings.imis, base_url=base, metrics=metrics)
    return Services(
        settings=settings,
        db=db,
        store=store,
        keys=keys,
        registry=registry,
        users=users,
        sessions=SessionManager(
            settings,
            db,
            store,
            continue_paths={**profiles.continue_paths(), **admin.continue_paths()},
        ),
        oauth=OAuthServer(
            settings=settings, store=store, registry=registry, keys=keys, metrics=metrics
        ),
        profiles=profiles,
        registrations=Registrations(registry, store, profiles),
        metrics=metrics,
    )


def profile_routes(profiles: ProfileCatalog) -> list[BaseRoute]:
    """Each profile's routes, mounted under ``/{name}``."""
    return [
        Mount(f"/{profile.name}", routes=list(found))
        for profile in profiles.values()
        if (found := profile.routes())
    ]


def create_app(
    settings: Settings,
    *,
    users: UserStore | None = None,
    imis_base_url: str | None = None,
    extra_routes: list[BaseRoute] | None = None,
    on_startup: Callable[[Services], None] | None = None,
) -> Starlette:
    """The bridge as an ASGI app. ``users`` replaces the iMIS connector (tests, other sources).

    The ``/_demo/*`` pages, the iMIS simulator among them, are mounted only for
    ``settings.demo``, which only ``bridge demo`` can set (``bridge serve`` refuses it).
    """
    profiles = load_profiles()
    # Matched in order: the sign-in paths (core, then the profiles') before the admin's
    # two dozen routes, which people rarely reach.
    routes: list[BaseRoute] = [
        *all_routes(),
        *profile_routes(profiles),
        *admin.routes(),
        *(extra_routes or []),
    ]
    if settings.demo:
        simulated = settings.imis.uses_simulator and imis_base_url is None and users is None
        routes.extend(demo_routes(with_simulator=simulated))
    # Per app, read once: `bridge serve --workers N` sets it before the workers start.
    metrics = Metrics.from_environment()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        services = open_services(
            settings, users=users, imis_base_url=imis_base_url, profiles=profiles, metrics=metrics
        )
        metrics.watch_pool(services.db.engine.pool)
        app.state.services = services
        if on_startup is not None:
            on_startup(services)
        log.info("imis-bridge ready at %s", settings.issuer)
        counting = asyncio.create_task(
            flush_counts_periodically(services, COUNTS_FLUSH_SECONDS), name="sign-in counts"
        )
        purging = watching = None
        if settings.purge_interval_seconds > 0:
            purging = asyncio.create_task(
                purge_periodically(services, settings.purge_interval_seconds), name="purge"
            )
        instance = instance_name()
        if not services.keys.cheap_reload:
            watching = asyncio.create_task(
                watch_keys_periodically(services, instance, KEYS_POLL_SECONDS), name="keys"
            )
        try:
            # Also as lifespan state, so mounted sub-apps (demo pages) reach it as request.state.
            yield {"services": services}
        finally:
            for task in (watching, purging, counting):
                if task is not None:
                    task.cancel()  # a purge under way finishes its batch first
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await flush_counts(services)
            if watching is not None:
                await forget_instance(services, instance)
            await services.users.aclose()
            services.db.dispose()
            metrics.close()

    return Starlette(
        routes=routes,
        middleware=[
            # Outermost, so its time includes the headers' and the error pages' work.
            Middleware(HttpMetricsMiddleware, metrics=metrics, templates=route_templates(routes)),
            Middleware(RequestLogMiddleware),
            Middleware(SecurityHeadersMiddleware, json_paths=(admin_api.PREFIX,)),
        ],
        exception_handlers=error_handlers(),
        lifespan=lifespan,
    )


def create_app_from_env() -> Starlette:
    """uvicorn factory for ``bridge serve --workers N``: reads ``BRIDGE_CONFIG_DIR``.

    Each worker process calls it; uvicorn has already applied ``bridge serve``'s
    logging configuration there (its ``log_config``).
    """
    return create_app(load_settings(os.environ.get("BRIDGE_CONFIG_DIR", "config")))
