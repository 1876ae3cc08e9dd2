"""The database handle: schema state and upgrades, transactions, outages and recovery."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

import bridge.storage.db as db_module
from bridge.errors import ServiceUnavailable
from bridge.migrations import alembic_config
from bridge.storage import (
    Database,
    DatabaseUnavailable,
    SchemaAhead,
    SchemaBehind,
    Store,
)
from tests.storage.tcp_proxy import TcpProxy

CLOSED_PORT_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"


@pytest.fixture
def empty_db(empty_database_url: str) -> Iterator[Database]:
    with Database(empty_database_url) as database:
        yield database


@pytest.fixture
def unreachable_db() -> Iterator[Database]:
    with Database(CLOSED_PORT_URL, connect_timeout=1) as database:
        yield database


# --- schema --------------------------------------------------------------------


def test_new_database_is_empty_then_current_after_upgrade(empty_db: Database) -> None:
    assert empty_db.schema_state() == "empty"
    empty_db.upgrade()
    assert empty_db.schema_state() == "current"
    empty_db.upgrade()  # a second upgrade is a no-op
    assert empty_db.schema_state() == "current"


def test_migrated_schema_matches_the_models_exactly(db: Database) -> None:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_default_ensure_schema_upgrades_sqlite_and_refuses_postgresql(empty_db: Database) -> None:
    if empty_db.backend == "sqlite":
        empty_db.ensure_schema()
        assert empty_db.schema_state() == "current"
    else:
        with pytest.raises(SchemaBehind, match=r"run `bridge db upgrade --config DIR`"):
            empty_db.ensure_schema()
        assert empty_db.schema_state() == "empty"


def test_schema_behind_names_the_upgrade_command(empty_db: Database) -> None:
    with pytest.raises(SchemaBehind) as raised:
        empty_db.ensure_schema(auto_upgrade=False)
    assert str(raised.value) == (
        "the database schema is behind this version of imis-bridge: "
        "run `bridge db upgrade --config DIR`"
    )


def test_ensure_schema_can_be_told_to_upgrade(empty_db: Database) -> None:
    empty_db.ensure_schema(auto_upgrade=True)
    assert empty_db.schema_state() == "current"
    empty_db.ensure_schema(auto_upgrade=False)  # current: nothing to refuse


def test_older_revision_is_behind(empty_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_db.upgrade()
    # Pretend this package shipped a newer revision after the stored one.
    monkeypatch.setattr(db_module, "head_revisions", lambda: frozenset({"9999"}))
    assert empty_db.schema_state() == "behind"
    with pytest.raises(SchemaBehind):
        empty_db.ensure_schema(auto_upgrade=False)


def test_revision_from_a_newer_bridge_is_ahead_and_refused(empty_db: Database) -> None:
    empty_db.upgrade()
    with empty_db.session() as s:
        s.connection().execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    assert empty_db.schema_state() == "ahead"
    with pytest.raises(SchemaAhead, match="newer"):
        empty_db.ensure_schema(auto_upgrade=True)


def migrate(database: Database, action: str, revision: str) -> None:
    """Upgrade or downgrade ``database`` to ``revision`` (as ``Database.upgrade`` does, to head)."""
    with database.engine.begin() as connection:
        getattr(command, action)(alembic_config(connection), revision)


def table_names(database: Database) -> set[str]:
    with database.engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def test_0006_adds_the_registration_generation_and_downgrades(empty_db: Database) -> None:
    migrate(empty_db, "upgrade", "0005")
    with empty_db.session() as s:  # a registration stored before the upgrade
        s.connection().execute(
            text(
                "INSERT INTO registrations (slug, name, profile, options_json, "
                "created_at, updated_at) VALUES ('old', 'Old', 'oidc', '{}', 1, 1)"
            )
        )
    assert "registration_generation" not in table_names(empty_db)
    migrate(empty_db, "upgrade", "0006")
    store = Store(empty_db)
    assert store.registrations_generation() == 0
    assert store.delete_registration("old")
    assert store.registrations_generation() == 1
    migrate(empty_db, "downgrade", "0005")
    assert "registration_generation" not in table_names(empty_db)
    assert empty_db.schema_state() == "behind"
    empty_db.upgrade()
    assert store.registrations_generation() == 0


def test_0007_adds_the_key_vault_and_downgrades(empty_db: Database) -> None:
    migrate(empty_db, "upgrade", "0006")
    assert not {"key_vault", "key_vault_state", "key_vault_peers"} & table_names(empty_db)
    migrate(empty_db, "upgrade", "0007")
    assert {"key_vault", "key_vault_state", "key_vault_peers"} <= table_names(empty_db)
    with empty_db.session() as s:
        generation = s.connection().execute(text("SELECT generation FROM key_vault_state"))
        assert generation.scalar_one() == 0
    migrate(empty_db, "downgrade", "0006")
    assert not {"key_vault", "key_vault_state", "key_vault_peers"} & table_names(empty_db)


def test_parallel_upgrades_of_one_database_all_succeed(empty_database_url: str) -> None:
    databases = [Database(empty_database_url) for _ in range(4)]
    errors: list[BaseException] = []

    def upgrade(database: Database) -> None:
        try:
            database.upgrade()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=upgrade, args=(d,)) for d in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert databases[0].schema_state() == "current"
    finally:
        for database in databases:
            database.dispose()


# --- construction ---------------------------------------------------------------


def test_sqlite_file_gets_its_folder_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bridge.db"
    with Database(f"sqlite:///{path}") as database:
        assert path.parent.is_dir()
        with database.engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
    assert pragma == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": 5000,
        "synchronous": 1,
    }


def test_sqlite_file_and_its_wal_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    """It holds names, emails, phones and token hashes: 0600, like the keys."""
    import os
    import stat

    path = tmp_path / "bridge.db"
    old_umask = os.umask(0o022)  # the usual umask, which made the file 0644
    try:
        with Database(f"sqlite:///{path}") as database:
            database.upgrade()
            with database.engine.begin() as connection:  # a write: the WAL has content
                connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            files = [path, path.with_name("bridge.db-wal"), path.with_name("bridge.db-shm")]
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    finally:
        os.umask(old_umask)
    assert modes == dict.fromkeys(modes, 0o600)


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    import stat

    path = tmp_path / "bridge.db"
    path.touch(mode=0o640)
    path.chmod(0o640)  # the operator's choice (a backup group, say)
    with Database(f"sqlite:///{path}") as database:
        database.upgrade()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://u@h/db"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite:///"):
        Database(url)


def test_repr_hides_the_password() -> None:
    database = Database("postgresql+psycopg://bridge:s3cret@db.example/bridge")
    try:
        assert "s3cret" not in repr(database)
    finally:
        database.dispose()


# --- transactions and threads ------------------------------------------------------


def test_session_commits_on_success_and_rolls_back_on_error(db: Database) -> None:
    store = Store(db)
    key = f"rollback-{time.monotonic_ns()}"

    class Boom(Exception):
        pass

    def insert_then_fail() -> None:
        with db.session() as s:
            s.connection().execute(
                text("INSERT INTO login_throttle VALUES (:k, 1, 0)"), {"k": "rolled-back-" + key}
            )
            raise Boom

    with pytest.raises(Boom):
        insert_then_fail()
    with db.session() as s:
        s.connection().execute(text("INSERT INTO login_throttle VALUES (:k, 7, 0)"), {"k": key})
    with db.session(write=False) as s:
        rows = s.connection().execute(
            text("SELECT key_hash, failures FROM login_throttle WHERE key_hash LIKE :k"),
            {"k": f"%{key}"},
        )
        assert list(rows) == [(key, 7)]
    assert store.get_registration("nothing") is None


@pytest.mark.anyio
async def test_run_keeps_sqlite_on_the_loop_and_postgresql_off_it(db: Database) -> None:
    """SQLite's microsecond statements run inline (no thread hop, no lock fight between
    threads); a PostgreSQL round trip must not stall the event loop."""
    store = Store(db)
    loop_thread = threading.get_ident()
    worker = await db.run(threading.get_ident)
    assert (worker == loop_thread) is (db.backend == "sqlite")
    assert await db.run(store.failures_of, "nobody") is None
    assert await db.run(store.get_registration, "missing") is None
    assert await db.run(db.ping) is True


# --- outages --------------------------------------------------------------------------


def test_unreachable_database_fails_fast_as_one_error_type(unreachable_db: Database) -> None:
    store = Store(unreachable_db)
    started = time.monotonic()
    assert unreachable_db.ping() is False
    with pytest.raises(DatabaseUnavailable) as raised:
        store.get_registration("x")
    assert isinstance(raised.value, ServiceUnavailable)
    assert raised.value.status_code == 503
    assert "refused" in raised.value.detail
    with pytest.raises(DatabaseUnavailable):
        unreachable_db.schema_state()
    with pytest.raises(DatabaseUnavailable):
        unreachable_db.ensure_schema()
    assert time.monotonic() - started < 3


@pytest.mark.anyio
async def test_run_translates_outages(unreachable_db: Database) -> None:
    store = Store(unreachable_db)
    with pytest.raises(DatabaseUnavailable):
        await unreachable_db.run(partial(store.redeem_code, "code", now=0))

    def raw_engine_use() -> None:
        with unreachable_db.engine.connect():
            pass

    with pytest.raises(DatabaseUnavailable):
        await unreachable_db.run(raw_engine_use)


def test_database_coming_back_is_used_again_without_restart(
    database_url: str, storage_backend: str
) -> None:
    if storage_backend != "postgresql":
        pytest.skip("needs a database reached over the network: runs on the PostgreSQL backend")
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    try:
        with Database(url.set(host="127.0.0.1", port=proxy.port), connect_timeout=1) as database:
            store = Store(database)
            assert store.get_registration("missing") is None  # pool now holds a live connection

            proxy.stop()
            with pytest.raises(DatabaseUnavailable):
                store.get_registration("missing")
            assert database.ping() is False

            proxy.start()
            assert store.get_registration("missing") is None
            assert database.ping() is True
    finally:
        proxy.stop()


def test_connections_killed_by_the_server_are_replaced_silently(db: Database) -> None:
    if db.backend != "postgresql":
        pytest.skip("PostgreSQL only: a SQLite file has no server to drop connections")
    store = Store(db)
    assert store.get_registration("missing") is None
    with db.session(write=False) as s:
        own = s.connection().execute(text("SELECT pg_backend_pid()")).scalar_one()
    with Database(make_url(db.url)) as admin, admin.session() as s:
        s.connection().execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": own})
    assert store.get_registration("missing") is None


@pytest.mark.anyio
async def test_postgresql_runs_at_most_pool_size_threads_at_once(db: Database) -> None:
    """No thread waits for a pooled connection, and none is opened beyond the pool's kept
    ones (the overflow would be closed and opened again: a server process each time)."""
    if db.backend != "postgresql":
        pytest.skip("SQLite runs inline")
    small = Database(db.url, pool_size=2, max_overflow=1)
    running = 0
    most = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with guard:
            running -= 1

    try:
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(small.run, work)
    finally:
        small.dispose()
    assert most == 2


class SlowWork:
    """Database work of 0.3 s in a thread: the test learns when it started and ended."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.started, self.ended = threading.Event(), threading.Event()

    def __call__(self) -> None:
        with self.db.engine.connect() as connection:
            self.started.set()
            connection.execute(text("SELECT pg_sleep(0.3)"))
        self.ended.set()

    async def under_way(self) -> asyncio.Future[None]:
        """Its caller, once the work runs in its thread."""
        caller = asyncio.ensure_future(self.db.run(self))
        assert await anyio.to_thread.run_sync(self.started.wait, 5)
        return caller


@pytest.mark.anyio
async def test_cancelled_work_ends_before_its_caller_goes_on(db: Database) -> None:
    """A caller cancelled while its work runs in a thread goes on only once the work
    ended. The shutdown cancels a scheduled purge and then disposes of the pool: a
    purge abandoned in its thread gave its connection back to a pool already gone,
    and psycopg found it deleted while still open (a CI run failed on it)."""
    if db.backend != "postgresql":
        pytest.skip("SQLite runs inline: there is no thread to abandon")
    work = SlowWork(db)
    caller = await work.under_way()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert work.ended.is_set()
    assert db.engine.pool.checkedout() == 0


@pytest.mark.anyio
async def test_dispose_waits_for_the_work_under_way(db: Database) -> None:
    """Work handed to a thread ends before the pool closes: its connection comes back
    to the pool being disposed of, not to one already gone (then left open)."""
    if db.backend != "postgresql":
        pytest.skip("SQLite runs inline: there is no thread to wait for")
    own = Database(db.url)
    work = SlowWork(own)
    caller = await work.under_way()
    own.dispose()
    assert work.ended.is_set()
    await caller
    assert own.engine.pool.checkedout() == 0
