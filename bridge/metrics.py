"""Prometheus metrics: what the process counts and times, and the text a scrape reads.

This module owns the metric names, their help text and labels, and how they are
exposed: from the process's own registry, or, when ``PROMETHEUS_MULTIPROC_DIR``
is set (``bridge serve --workers N`` sets it), from every worker's files
aggregated by prometheus_client's ``MultiProcessCollector``. One :class:`Metrics`
is built per app (:func:`bridge.app.create_app`) and handed to the parts that
count: the sign-in statistics, the OAuth server, the iMIS connector and the HTTP
middleware (:class:`HttpMetricsMiddleware`). Counting must stay cheap (an
in-memory add, no database work, no I/O beyond multiprocess mode's mmap) and
must never raise into a request. It decides nothing about who may scrape: that
is the ``/metrics`` route's.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Set by prometheus_client's convention; ``bridge serve --workers N`` sets it.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The Content-Type of the Prometheus text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Label of a request no route matched.
NO_ROUTE = "-"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_IMIS_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Pool(Protocol):
    def checkedout(self) -> int: ...

    def size(self) -> int: ...


class Metrics:
    """The process's metrics, in a registry of their own (several apps in one process,
    as in the tests, never mix their counts).

    ``multiprocess_dir``: the directory of ``PROMETHEUS_MULTIPROC_DIR``, when set;
    the scrape then reads every worker's files there.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir or None
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.sign_ins = Counter(
            "bridge_sign_ins",
            "Sign-ins by registration (slug, '-' for the bridge's own page) and outcome.",
            ("registration", "outcome"),
            registry=registry,
        )
        self.tokens_issued = Counter(
            "bridge_tokens_issued",
            "Token responses issued at the token endpoint, by grant type.",
            ("grant_type",),
            registry=registry,
        )
        self.imis_duration = Histogram(
            "bridge_imis_request_duration_seconds",
            "Time of one HTTP request to iMIS, by operation (token, user, party, cscontact).",
            ("operation",),
            buckets=_IMIS_BUCKETS,
            registry=registry,
        )
        self.imis_errors = Counter(
            "bridge_imis_errors",
            "iMIS requests that failed, by operation and kind "
            "(timeout, connect, transport, throttled, 5xx, refused, status, bad_answer).",
            ("operation", "kind"),
            registry=registry,
        )
        self.http_duration = Histogram(
            "bridge_http_request_duration_seconds",
            "Time to answer one HTTP request, by route template ('-' when none matched), "
            "method and status class.",
            ("route", "method", "status"),
            registry=registry,
        )
        self.pool_checked_out = Gauge(
            "bridge_db_pool_checked_out",
            "Database connections checked out of the pool (summed over live workers).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "bridge_db_pool_size",
            "Connections the database pool keeps (summed over live workers).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._pool: _Pool | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Metrics:
        """Multiprocess when ``PROMETHEUS_MULTIPROC_DIR`` is set (prometheus_client reads
        the same variable to choose where values live)."""
        env = os.environ if env is None else env
        return cls(env.get(MULTIPROC_ENV))

    # --- counting ------------------------------------------------------------------

    def sign_in(self, registration: str, outcome: str) -> None:
        self.sign_ins.labels(registration, outcome).inc()

    def token_issued(self, grant_type: str) -> None:
        self.tokens_issued.labels(grant_type).inc()

    def imis_request(self, operation: str, seconds: float) -> None:
        self.imis_duration.labels(operation).observe(seconds)

    def imis_error(self, operation: str, kind: str) -> None:
        self.imis_errors.labels(operation, kind).inc()

    # --- the database pool -------------------------------------------------------------

    def watch_pool(self, pool: Any) -> None:
        """Report ``pool`` (an SQLAlchemy pool) at every scrape. In multiprocess mode
        the scraping worker cannot read the others' pools, so each worker also writes
        its numbers on every checkout and check-in (a write to its own mmap file)."""
        if not (
            callable(getattr(pool, "checkedout", None)) and callable(getattr(pool, "size", None))
        ):
            return
        self._pool = pool
        self._read_pool()
        if self.multiprocess_dir:
            from sqlalchemy import event

            event.listen(pool, "checkout", lambda *_: self._read_pool())
            event.listen(pool, "checkin", lambda *_: self._read_pool())

    def _read_pool(self) -> None:
        pool = self._pool
        if pool is not None:
            self.pool_checked_out.set(max(0, pool.checkedout()))
            self.pool_size.set(pool.size())

    # --- exposition --------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format: this process's registry, or every worker's files."""
        self._read_pool()
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    def close(self) -> None:
        """The worker is stopping: its live gauges no longer count."""
        if self.multiprocess_dir:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


def clear_multiprocess_dir(path: Path) -> None:
    """Empty ``path`` of an earlier run's metric files (counts restart with the server)."""
    for entry in path.glob("*.db"):
        entry.unlink(missing_ok=True)


def remove_multiprocess_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- HTTP ------------------------------------------------------------------------------


def route_templates(routes: Iterable[BaseRoute], prefix: str = "") -> dict[int, str]:
    """Every route (mounted ones included), by ``id`` (routes compare by value and are
    not hashable), mapped to its full path template."""
    found: dict[int, str] = {}
    for route in routes:
        path = prefix + str(getattr(route, "path", ""))
        found[id(route)] = path or "/"
        if isinstance(route, Mount) and route.routes:
            found.update(route_templates(route.routes, path))
    return found


class HttpMetricsMiddleware:
    """Times every HTTP request by route template, method and status class.

    Pure ASGI: one clock read on each side and a cached histogram child per
    (route, method, status class); Starlette names the matched route in
    ``scope["route"]`` (the innermost one under a mount).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, templates: Mapping[int, str]) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = dict(templates)
        self._children: dict[tuple[int, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        method = scope["method"]
        key = (id(route), method, status // 100)
        child = self._children.get(key)
        if child is None:
            child = self._child(route, method, status)
            self._children[key] = child
        child.observe(seconds)

    def _child(self, route: object, method: str, status: int) -> Histogram:
        template = NO_ROUTE
        if isinstance(route, BaseRoute):
            template = self.templates.get(id(route)) or str(getattr(route, "path", "")) or NO_ROUTE
        index = status // 100 - 1
        status_class = _STATUS_CLASSES[index] if 0 <= index < len(_STATUS_CLASSES) else "other"
        label_method = method if method in _METHODS else "other"
        return self.metrics.http_duration.labels(template, label_method, status_class)
