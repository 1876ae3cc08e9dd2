"""A token exchange costs at most two database transactions, over real HTTP.

One for the client's stored registration (read before the client is
authenticated), one for the exchange itself: redeeming the code, creating its
grant and issuing the tokens commit together (SECURITY B1), and so do rotating
a refresh token and issuing its successors (B4). Counted with SQLAlchemy event
listeners on the bridge's engine: every BEGIN of a transaction, and every
statement run outside one (PostgreSQL autocommit, where each statement is a
transaction of its own). The worst case is measured: a client registered in the
database (file registrations need no query), a refresh that narrows the scope.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection

from tests.oauth.rp import Rp, new_browser
from tests.support.bridge import Harness, running_bridge

SECRET = "stored-portal-secret-0123456789abcdef"
CALLBACK = "https://stored.example.org/callback"
MAX_TRANSACTIONS = 2


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("token-transactions")
    # No scheduled purge: nothing but the request under test touches the database.
    with running_bridge(tmp, database_url, extra="purge_interval_seconds = 0\n") as harness:
        yield harness


@pytest.fixture(scope="module")
def portal(bridge: Harness, http: httpx.Client) -> Rp:
    """A confidential client stored in the database (its lookup is a query)."""
    bridge.services.registry.add(
        "stored-portal",
        {
            "name": "Stored Portal",
            "profile": "oidc",
            "client_id": "stored-portal",
            "client_secret": SECRET,
            "redirect_uris": [CALLBACK],
            "scopes": ["openid", "profile", "email", "offline_access"],
        },
        actor="test",
    )
    return Rp(bridge, http, "stored-portal", SECRET, CALLBACK)


class Transactions:
    """Database transactions begun on one engine while :meth:`counting` is active."""

    def __init__(self) -> None:
        self.begun: list[str] = []
        self._lock = threading.Lock()

    @staticmethod
    def _autocommit(conn: Connection) -> bool:
        return conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"

    def _on_begin(self, conn: Connection) -> None:
        if not self._autocommit(conn):
            with self._lock:
                self.begun.append("BEGIN")

    def _on_execute(self, conn: Connection, *args: Any) -> None:
        if self._autocommit(conn):  # a transaction of its own
            with self._lock:
                self.begun.append(" ".join(str(args[1]).split()[:2]))

    @contextmanager
    def counting(self, bridge: Harness) -> Iterator[Transactions]:
        engine = bridge.services.db.engine
        event.listen(engine, "begin", self._on_begin)
        event.listen(engine, "before_cursor_execute", self._on_execute)
        try:
            yield self
        finally:
            event.remove(engine, "begin", self._on_begin)
            event.remove(engine, "before_cursor_execute", self._on_execute)


def count(bridge: Harness, send: Any) -> tuple[httpx.Response, list[str]]:
    counter = Transactions()
    with counter.counting(bridge):
        response: httpx.Response = send()
    return response, counter.begun


def test_b1_a_code_exchange_takes_at_most_two_transactions(bridge: Harness, portal: Rp) -> None:
    with new_browser(bridge) as browser:
        authz = portal.sign_in(browser)
    response, begun = count(bridge, lambda: portal.redeem(authz))
    assert response.status_code == 200, response.text
    assert {"access_token", "refresh_token", "id_token"} <= set(response.json())
    assert len(begun) <= MAX_TRANSACTIONS, begun


def test_b4_a_refresh_takes_at_most_two_transactions(bridge: Harness, portal: Rp) -> None:
    with new_browser(bridge) as browser:
        token = portal.tokens(browser)
    response, begun = count(bridge, lambda: portal.refresh(token["refresh_token"]))
    assert response.status_code == 200, response.text
    assert len(begun) <= MAX_TRANSACTIONS, begun

    # Narrowing the scope adds a check before the rotation: still within the bound.
    successor = response.json()["refresh_token"]
    response, begun = count(bridge, lambda: portal.refresh(successor, scope="openid"))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "openid"
    assert len(begun) <= MAX_TRANSACTIONS, begun
