"""Statements of the hot paths (:class:`bridge.storage.base.Prepared`), on SQLite and PostgreSQL:
values fixed in the statement are filled in, driver errors become SQLAlchemy's (an outage
is :class:`DatabaseUnavailable`), and a connection the server dropped is replaced."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sql
from sqlalchemy import bindparam, exc, text
from sqlalchemy.engine import make_url

from bridge.storage import Database, DatabaseUnavailable, Store
from bridge.storage.base import Prepared, hash_token, table_of
from bridge.storage.models import BrowserSessionRow
from bridge.storage.sessions import _LIVE_SESSION as LIVE_SESSION

SESSIONS = table_of(BrowserSessionRow)


def add_session(store: Store, username: str) -> str:
    now = int(time.time())
    return store.create_session(
        imis_id="1",
        username=username,
        identity_json="{}",
        auth_time=now,
        now=now,
        lifetime_seconds=3600,
    )


def test_values_fixed_in_the_statement_are_filled_in(db: Database) -> None:
    store = Store(db)
    for _ in range(3):
        add_session(store, "prepared-fixed")
    count_two = Prepared(
        sql.select(SESSIONS.c.id_hash)
        .where(SESSIONS.c.username == "prepared-fixed", SESSIONS.c.expires_at > bindparam("now"))
        .limit(2)
    )
    with db.connect() as connection:
        rows = count_two.run(connection, {"now": int(time.time())}).fetchall()
    assert len(rows) == 2


def test_several_rows_in_one_call(db: Database) -> None:
    insert = Prepared(sql.insert(SESSIONS))
    now = int(time.time())
    rows = [
        {
            "id_hash": f"prepared-many-{i}-{now}",
            "imis_id": "1",
            "username": "prepared-many",
            "identity_json": "{}",
            "auth_time": now,
            "created_at": now,
            "last_seen_at": now,
            "expires_at": now + 60,
        }
        for i in range(3)
    ]
    with db.connect() as connection:
        insert.run_many(connection, rows)
    counted = Prepared(sql.select(sql.func.count()).where(SESSIONS.c.username == bindparam("name")))
    with db.connect() as connection:
        assert counted.run(connection, {"name": "prepared-many"}).fetchone()[0] >= 3


def test_a_driver_error_is_sqlalchemys_and_an_outage_is_unavailable(db: Database) -> None:
    missing = Prepared(sql.select(sql.table("no_such_table", sql.column("x"))))
    # SQLite reports a missing table as an OperationalError, what a locked or unreadable
    # file gives too (an outage); PostgreSQL as a ProgrammingError (a bug, raised as such).
    expected = DatabaseUnavailable if db.backend == "sqlite" else exc.ProgrammingError
    with pytest.raises(expected), db.connect() as connection:
        missing.run(connection, {})


def run_on_a_killed_connection(db: Database, statement: Prepared, params: dict[str, Any]) -> None:
    with db.connect() as connection:
        own = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with Database(make_url(db.url)) as admin, admin.session() as s:
            s.connection().execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": own})
        statement.run(connection, params)


def test_a_connection_the_server_killed_is_invalidated_then_replaced(db: Database) -> None:
    """SECURITY G2: a dropped connection is an outage for the statement under way, and
    gone from the pool afterwards; the next statement works without a restart."""
    if db.backend != "postgresql":
        pytest.skip("PostgreSQL only: a SQLite file has no server to drop connections")
    small = Database(db.url, pool_size=1, max_overflow=0)
    store = Store(small)
    raw = add_session(store, "prepared-killed")
    params = {"digest": hash_token(raw), "now": int(time.time()), "idle_since": 0}
    try:
        with pytest.raises(DatabaseUnavailable) as raised:
            run_on_a_killed_connection(small, LIVE_SESSION, params)
        cause = raised.value.__cause__
        assert isinstance(cause, exc.DBAPIError)
        assert cause.connection_invalidated
        # The pool's one connection was the dead one: replaced, not handed out again.
        assert store.get_session(raw, now=int(time.time()), idle_seconds=3600) is not None
    finally:
        small.dispose()
