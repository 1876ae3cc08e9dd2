"""Fixtures shared by every test folder: the anyio backend and the bridge database.

The database is a SQLite file under pytest's tmp dir, or — when
``BRIDGE_TEST_DATABASE_URL`` names a PostgreSQL database — a schema of its own
(``t_<random>``, reached through ``?options=-csearch_path=...``) that is created
for this run and dropped at its end, so concurrent runs never meet.

- ``database_url`` (session): a migrated database, shared by the whole run; use
  unique names/ids in tests instead of expecting empty tables.
- ``empty_database_url`` (per test): a database with no tables at all.
- ``db`` / ``store`` (per test): a :class:`Database` / :class:`Store` on
  ``database_url``, disposed after the test.

It also registers :class:`tests.support.leaks.LeakCheck`: the run fails if any
log line holds a secret.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from bridge.storage import Database, Store
from tests.support.leaks import LeakCheck

POSTGRES_ENV = "BRIDGE_TEST_DATABASE_URL"


def pytest_configure(config: pytest.Config) -> None:
    # Every log line of the run is checked for secrets at its end (SECURITY D6).
    config.pluginmanager.register(LeakCheck(), "bridge-leak-check")


class DatabaseFactory:
    """Hands out new, empty databases of the backend under test and removes them later."""

    def __init__(self, tmp_root: Path, postgres_url: str | None) -> None:
        self._tmp_root = tmp_root
        self._postgres_url = postgres_url
        self._schemas: list[str] = []

    @property
    def backend(self) -> str:
        return "postgresql" if self._postgres_url else "sqlite"

    @property
    def backends(self) -> list[str]:
        """Every backend this run can reach: SQLite always, PostgreSQL when configured."""
        return ["sqlite", "postgresql"] if self._postgres_url else ["sqlite"]

    def new_url(self, backend: str | None = None) -> str:
        if (backend or self.backend) == "sqlite":
            folder = self._tmp_root / f"db-{secrets.token_hex(4)}"
            return f"sqlite:///{folder / 'bridge.db'}"
        schema = f"t_{secrets.token_hex(6)}"
        self._admin(f"CREATE SCHEMA {schema}")
        self._schemas.append(schema)
        url = make_url(self._postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def migrated_url(self, backend: str | None = None) -> str:
        """A new database with the current schema (what a started bridge expects)."""
        url = self.new_url(backend)
        with Database(url) as database:
            database.upgrade()
        return url

    def close(self) -> None:
        for schema in self._schemas:
            self._admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self._schemas.clear()

    def _admin(self, sql: str) -> None:
        assert self._postgres_url
        engine = create_engine(self._postgres_url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql(sql)
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"), os.environ.get(POSTGRES_ENV))
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def database_url(database_factory: DatabaseFactory) -> str:
    return database_factory.migrated_url()


@pytest.fixture
def empty_database_url(database_factory: DatabaseFactory) -> str:
    return database_factory.new_url()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    with Database(database_url) as database:
        yield database


@pytest.fixture
def store(db: Database) -> Store:
    return Store(db)
