"""A change to a stored registration made at one bridge reaches another, over real HTTP.

Two bridges (two processes' worth of services: each its own registry and its own
memory of registrations) share one database, as several ``bridge serve``
processes do. A change made through bridge A takes effect at A at once and at
B within ``registry_cache_seconds`` (0.2 here), including for a client_id B
had already been asked about and answered "unknown".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import DatabaseFactory
from tests.support.bridge import Harness, running_bridge

CACHE_SECONDS = 0.2
#: Slack for a loaded test machine; still far below the 2 s default.
DEADLINE = CACHE_SECONDS + 1.5
FAST = f"registry_cache_seconds = {CACHE_SECONDS}"


@pytest.fixture(scope="module")
def shared_database_url(database_factory: DatabaseFactory) -> str:
    return database_factory.migrated_url()


@pytest.fixture(scope="module")
def bridge_a(
    tmp_path_factory: pytest.TempPathFactory, shared_database_url: str
) -> Iterator[Harness]:
    with running_bridge(tmp_path_factory.mktemp("a"), shared_database_url, extra=FAST) as h:
        yield h


@pytest.fixture(scope="module")
def bridge_b(
    tmp_path_factory: pytest.TempPathFactory, shared_database_url: str
) -> Iterator[Harness]:
    with running_bridge(tmp_path_factory.mktemp("b"), shared_database_url, extra=FAST) as h:
        yield h


def introspect(http: httpx.Client, bridge: Harness, client_id: str, secret: str) -> int:
    """The status of an introspection authenticated as ``client_id`` (200: it is a client
    with that secret; 401: it is not)."""
    response = http.post(
        f"{bridge.url}/introspect",
        data={"token": "x", "client_id": client_id, "client_secret": secret},
    )
    return response.status_code


def seconds_until(condition: Callable[[], bool]) -> float:
    """How long until ``condition()`` holds (polled); fails after :data:`DEADLINE`."""
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < DEADLINE, f"not seen within {DEADLINE} s"
        time.sleep(0.02)
    return time.monotonic() - start


def add_client(bridge: Harness, slug: str) -> str:
    """A new confidential OIDC client stored through ``bridge``; returns its secret."""
    changed = bridge.services.registrations.add(
        slug,
        {
            "name": "Portal",
            "profile": "oidc",
            "client_id": slug,
            "redirect_uris": ["https://portal.example.org/cb"],
        },
        actor="test",
    )
    assert changed.generated_secret is not None
    secret: str = changed.generated_secret
    return secret


def test_a_rotated_secret_stops_working_at_the_other_bridge_within_the_interval(
    bridge_a: Harness, bridge_b: Harness, http: httpx.Client
) -> None:
    old = add_client(bridge_a, "rotating")
    assert introspect(http, bridge_b, "rotating", old) == 200  # B now keeps it
    assert introspect(http, bridge_b, "rotating", old) == 200
    new = bridge_a.services.registrations.rotate_secret("rotating", actor="test").generated_secret
    assert new is not None
    # Where it was made: at once.
    assert introspect(http, bridge_a, "rotating", old) == 401
    assert introspect(http, bridge_a, "rotating", new) == 200
    # Elsewhere: within registry_cache_seconds.
    seconds_until(lambda: introspect(http, bridge_b, "rotating", old) == 401)
    assert introspect(http, bridge_b, "rotating", new) == 200


def test_a_client_unknown_at_the_other_bridge_becomes_known_within_the_interval(
    bridge_a: Harness, bridge_b: Harness, http: httpx.Client
) -> None:
    assert introspect(http, bridge_b, "latecomer", "any-secret-0123456789") == 401  # kept: none
    secret = add_client(bridge_a, "latecomer")
    seconds_until(lambda: introspect(http, bridge_b, "latecomer", secret) == 200)


def test_a_removed_or_disabled_client_stops_working_at_the_other_bridge(
    bridge_a: Harness, bridge_b: Harness, http: httpx.Client
) -> None:
    secret = add_client(bridge_a, "leaving")
    assert introspect(http, bridge_b, "leaving", secret) == 200
    bridge_a.services.registrations.remove("leaving", actor="test")
    seconds_until(lambda: introspect(http, bridge_b, "leaving", secret) == 401)
