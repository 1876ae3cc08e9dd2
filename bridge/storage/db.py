"""The database handle: one engine per process, sessions, schema state and upgrades.

This module owns how the bridge talks to its database: engine and pool settings
for SQLite (WAL, one writer at a time) and PostgreSQL (pre-pinged pool), the
transaction boundary (:meth:`Database.session`), running blocking database work
off the event loop (:meth:`Database.run`), translating "the database cannot
answer" into the single :class:`DatabaseUnavailable`, and comparing or upgrading
the schema with the Alembic revisions in :mod:`bridge.migrations`. It knows no
table and runs no query of the application: that is :mod:`bridge.storage.repo`.
Nothing connects at import time or on construction (which only creates a
SQLite file's folder). A SQLite file is created mode 0600 (it holds personal
data and token hashes), and SQLite gives its -wal and -shm files the same mode.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, TypeVarTuple

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlmodel import Session

from bridge.errors import BridgeError, ServiceUnavailable
from bridge.migrations import alembic_config, head_revisions, is_known_revision

logger = logging.getLogger(__name__)

SchemaState = Literal["current", "behind", "empty", "ahead"]
Backend = Literal["sqlite", "postgresql"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: Any constant: it only has to be the same in every bridge process.
_UPGRADE_LOCK_ID = 0x1B41D6E
#: Execution option carrying the SQLite ``BEGIN`` mode of a connection.
_SQLITE_BEGIN = "bridge_sqlite_begin"
#: That mode for statements that each commit by themselves (no BEGIN at all).
_NO_BEGIN = "AUTOCOMMIT"


@dataclass(frozen=True, slots=True)
class Link:
    """A pooled SQLite driver connection, with what prepared statements use of a Core
    :class:`~sqlalchemy.engine.Connection`: its dialect, the proxied driver
    connection, and invalidating it. Statements on it commit by themselves (the
    driver sends no BEGIN)."""

    dialect: Dialect
    connection: PoolProxiedConnection

    def invalidate(self, exception: BaseException | None = None) -> None:
        self.connection.invalidate(exception)


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached or cannot answer right now (retry later)."""

    def __init__(
        self, message: str | None = None, *, retry_after: int = 5, detail: str = ""
    ) -> None:
        super().__init__(message, retry_after=retry_after, detail=detail)


class SchemaBehind(BridgeError):
    """The database has no tables yet, or an older schema than this version expects."""

    title = (
        "the database schema is behind this version of imis-bridge: "
        "run `bridge db upgrade --config DIR`"
    )


class SchemaAhead(BridgeError):
    """The database was upgraded by a newer imis-bridge than this one."""

    title = (
        "the database schema is newer than this version of imis-bridge: "
        "upgrade imis-bridge before starting it"
    )


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means "the database cannot answer" rather than a bug or bad data."""
    if isinstance(error, exc.OperationalError | exc.InterfaceError | exc.TimeoutError):
        return True
    return isinstance(error, exc.DBAPIError) and error.connection_invalidated


@contextmanager
def translate_unavailable() -> Iterator[None]:
    """Re-raise database outages as :class:`DatabaseUnavailable`; let everything else through."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        if is_unavailable(error):
            raise DatabaseUnavailable(detail=_describe(error)) from error
        raise


def _describe(error: BaseException) -> str:
    # The first line of a DBAPI message names the cause ("connection refused",
    # "database is locked") without the SQL or its parameters.
    text = str(getattr(error, "orig", None) or error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


class Database:
    """One process's handle on the bridge database (SQLite file or PostgreSQL).

    Build it from a URL, call :meth:`ensure_schema` once at start, then use
    :meth:`session` from worker threads or :meth:`run` from async code, and
    :meth:`dispose` on shutdown. Safe to share between threads.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        connect_timeout: float = 5.0,
        pool_size: int = 10,
        max_overflow: int = 10,
        pool_timeout: float = 10.0,
        echo: bool = False,
    ) -> None:
        self.url = make_url(url)
        self._pool_capacity = pool_size
        # PostgreSQL: the threads that run() hands database work to (made on first use).
        self._workers: ThreadPoolExecutor | None = None
        self._workers_lock = threading.Lock()
        # SQLite: each thread's own driver connection for prepared statements (see
        # connect), and all of them, to close on dispose.
        self._own = threading.local()
        self._owned: list[PoolProxiedConnection] = []
        self._owned_lock = threading.Lock()
        backend = self.url.get_backend_name()
        if backend == "sqlite":
            self.backend: Backend = "sqlite"
            self._engine = _sqlite_engine(
                self.url,
                connect_timeout=connect_timeout,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                echo=echo,
            )
        elif backend == "postgresql":
            self.backend = "postgresql"
            self._engine = _postgresql_engine(
                self.url,
                connect_timeout=connect_timeout,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                echo=echo,
            )
        else:
            raise ValueError(
                f"unsupported database URL {self.url.render_as_string()!r}: "
                "use sqlite:///PATH or postgresql+psycopg://..."
            )
        # A Database dropped without dispose() still closes its pooled connections
        # (else they are left to the garbage collector, unclosed, in any order).
        weakref.finalize(self, self._engine.dispose)
        # Same pool; on SQLite, transactions from here start with a plain
        # (deferred) BEGIN so readers never queue behind the writer.
        self._read_engine = self._engine.execution_options(**{_SQLITE_BEGIN: "DEFERRED"})
        # No BEGIN/COMMIT around statements that are atomic on their own: on
        # PostgreSQL that saves two round trips, on SQLite two statements
        # (each statement then commits by itself, as in PostgreSQL's autocommit).
        self._autocommit_engine = (
            self._engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.backend == "postgresql"
            else self._engine.execution_options(**{_SQLITE_BEGIN: _NO_BEGIN})
        )

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string()!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    @property
    def engine(self) -> Engine:
        return self._engine

    # --- work ------------------------------------------------------------------

    @contextmanager
    def session(self, *, write: bool = True, autocommit: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.

        ``write=False`` is for blocks that only read (on SQLite they then do not
        take the write lock; a write in such a block must be the first statement
        after a commit). ``autocommit=True`` lets every statement commit on its
        own (no BEGIN, no COMMIT: two round trips saved on PostgreSQL, two
        statements on SQLite); use it only for one statement, or for a sequence
        where every prefix leaves a consistent state. Objects stay usable after
        the block (no expiry on commit). Outages raise :class:`DatabaseUnavailable`.
        """
        bind: Engine
        if autocommit:
            bind = self._autocommit_engine
        else:
            bind = self._engine if write else self._read_engine
        with translate_unavailable(), Session(bind, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def connect(self) -> Iterator[Connection | Link]:
        """A connection whose statements each commit by themselves (no BEGIN, no
        COMMIT), for the hot paths' prepared statements; the same rules as
        ``session(autocommit=True)``, without the ORM's per-call cost. On SQLite the
        pooled driver connection itself (a Core connection costs more than the
        statement); on PostgreSQL a Core connection in autocommit. Outages raise
        :class:`DatabaseUnavailable`.

        On SQLite each thread keeps one driver connection for this, out of the pool:
        the work is inline and never interleaves within a thread, and the pool's
        checkout and reset cost more than a lookup (a nested use takes a pooled one)."""
        with translate_unavailable():
            if self.backend == "sqlite":
                yield from self._thread_link()
                return
            with self._autocommit_engine.connect() as connection:
                yield connection
                connection.commit()

    def _thread_link(self) -> Iterator[Link]:
        link: Link | None = getattr(self._own, "link", None)
        if link is None or not link.connection.is_valid:
            pooled = self._engine.raw_connection()
            pooled.detach()  # this thread's for the life of the Database; closed by dispose
            with self._owned_lock:
                self._owned.append(pooled)
            link = self._own.link = Link(self._engine.dialect, pooled)
        if getattr(self._own, "busy", False):
            pooled = self._engine.raw_connection()  # nested: a pooled one for the inner block
            try:
                yield Link(self._engine.dialect, pooled)
            finally:
                pooled.close()
            return
        self._own.busy = True
        try:
            yield link
        finally:
            self._own.busy = False

    async def run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run the database work ``fn(*args)`` for async code.

        SQLite: on the calling thread. Its statements are local-file work of
        microseconds, and one process then never has two transactions under
        way, so it never waits on its own write lock; a hop to a worker thread
        would cost more than the work and make the threads fight for the GIL
        and the lock. Only another process's write (another worker, a CLI
        command) can make a write wait, for at most that transaction.
        PostgreSQL: in a worker thread (a round trip must not stall the event
        loop), at most as many at once as the pool keeps connections: no thread
        waits for one, and none is opened and closed again beyond the pool (a new
        PostgreSQL connection costs a server process; the overflow is left for a
        thread that needs a second one).
        A cancelled caller (the shutdown cancels the scheduled work) goes on only
        once its work ended, or knowing it never starts: a thread cannot be
        stopped, and work left running would overtake what the caller does next,
        such as disposing of the pool its connection goes back to.
        Outages, however ``fn`` reached the database, raise :class:`DatabaseUnavailable`.
        """
        with translate_unavailable():
            if self.backend == "sqlite":
                return fn(*args)
            context = contextvars.copy_context()  # the request's, e.g. its log fields

            def call() -> T:
                return context.run(fn, *args)

            job = self._threads().submit(call)
            try:
                return await asyncio.wrap_future(job)
            except asyncio.CancelledError:
                if not job.cancel():  # False: under way (or done), it cannot be stopped
                    await _ended(job)
                raise

    def _threads(self) -> ThreadPoolExecutor:
        workers = self._workers
        if workers is None:
            with self._workers_lock:
                if self._workers is None:
                    self._workers = ThreadPoolExecutor(
                        self._pool_capacity, thread_name_prefix="bridge-db"
                    )
                workers = self._workers
        return workers

    def ping(self) -> bool:
        """Whether the database answers a trivial query now (for ``/readyz``)."""
        try:
            with self._read_engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except exc.SQLAlchemyError as error:
            logger.info("database ping failed: %s", _describe(error))
            return False
        return True

    # --- schema ----------------------------------------------------------------

    def schema_state(self) -> SchemaState:
        """Compare the database's Alembic revision with this package's head.

        ``empty``: never migrated; ``behind``: an older revision of ours;
        ``ahead``: a revision this package does not know (a newer bridge
        migrated it); ``current``: up to date.
        """
        with translate_unavailable(), self._read_engine.connect() as connection:
            current = frozenset(MigrationContext.configure(connection).get_current_heads())
        if not current:
            return "empty"
        if current == head_revisions():
            return "current"
        if all(is_known_revision(revision) for revision in current):
            return "behind"
        return "ahead"

    def upgrade(self) -> None:
        """Migrate to the newest revision, in one transaction, one process at a time."""
        with translate_unavailable(), self._engine.begin() as connection:
            # SQLite: the transaction began IMMEDIATE, so it already holds the
            # write lock. PostgreSQL: serialize concurrent `db upgrade` runs.
            if self.backend == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_UPGRADE_LOCK_ID})")
            command.upgrade(alembic_config(connection), "head")

    def ensure_schema(self, auto_upgrade: bool | None = None) -> None:
        """Make sure the schema fits this version before serving, or refuse to start.

        ``auto_upgrade=None`` (default) upgrades SQLite by itself (it is the
        embedded, single-host store) and refuses a PostgreSQL that is behind,
        because upgrading a shared database is an operator's decision. ``True``
        or ``False`` force either behaviour. Raises :class:`SchemaBehind`,
        :class:`SchemaAhead` or :class:`DatabaseUnavailable`.
        """
        state = self.schema_state()
        if state == "current":
            return
        if state == "ahead":
            raise SchemaAhead
        if auto_upgrade is None:
            auto_upgrade = self.backend == "sqlite"
        if not auto_upgrade:
            raise SchemaBehind
        logger.info("upgrading the database schema (%s)", state)
        self.upgrade()

    def dispose(self) -> None:
        """Close every pooled connection (checked-out ones close when returned) and the
        threads' own SQLite connections. Work that :meth:`run` handed to a thread
        ends first, so that its connection is back in the pool before the pool closes
        (database work never waits for the event loop, so this cannot deadlock)."""
        with self._workers_lock:
            workers, self._workers = self._workers, None
        if workers is not None:
            workers.shutdown(wait=True)
        with self._owned_lock:
            owned, self._owned = self._owned, []
        for connection in owned:
            connection.close()
        self._own = threading.local()
        self._engine.dispose()


async def _ended(job: Future[Any]) -> None:
    """Wait for a thread's ``job`` to end, its outcome moot (the caller was cancelled);
    a second cancellation stops the wait."""
    ending = asyncio.wrap_future(job)
    ending.add_done_callback(_outcome_seen)
    await asyncio.wait((ending,))


def _outcome_seen(ending: asyncio.Future[Any]) -> None:
    if not ending.cancelled():
        ending.exception()  # retrieved: asyncio would log it as never retrieved


# --- engines -----------------------------------------------------------------


def _sqlite_engine(
    url: URL,
    *,
    connect_timeout: float,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float,
    echo: bool,
) -> Engine:
    if not url.database or url.database == ":memory:":
        raise ValueError("an in-memory SQLite database cannot be shared: use sqlite:///PATH")
    path = Path(url.database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    busy_ms = max(1, math.ceil(connect_timeout * 1000))
    engine = create_engine(
        url,
        echo=echo,
        # A local file does not drop connections: no pre-ping round trip.
        pool_pre_ping=False,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_args={"check_same_thread": False, "timeout": connect_timeout},
    )

    @event.listens_for(engine, "do_connect")
    def _create_private(*_args: Any) -> None:
        # Before sqlite3 would create the file with the process umask (often 0644).
        _create_private_file(path)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the sqlite3 module (which skips it before
        # SELECTs) so every transaction is real and its mode is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front, waiting up to busy_timeout;
        # a deferred transaction that reads and then writes would instead fail
        # at once with SQLITE_BUSY when another writer committed in between.
        mode = connection.get_execution_options().get(_SQLITE_BEGIN, "IMMEDIATE")
        if mode == _NO_BEGIN:
            return
        # Straight to the driver: through SQLAlchemy's execution a BEGIN cost 30 us.
        statement = f"BEGIN {mode}"
        try:
            connection.connection.driver_connection.execute(statement)  # type: ignore[union-attr]
        except sqlite3.Error as error:  # "database is locked" after busy_timeout: an outage
            raise exc.DBAPIError.instance(statement, None, error, sqlite3.Error) from error

    return engine


def _create_private_file(path: Path) -> None:
    """Create an empty ``path`` readable by its owner only, unless it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _postgresql_engine(
    url: URL,
    *,
    connect_timeout: float,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float,
    echo: bool,
) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        # libpq takes whole seconds.
        connect_args["connect_timeout"] = max(1, math.ceil(connect_timeout))
    if "application_name" not in url.query:
        connect_args["application_name"] = "imis-bridge"
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_recycle=1800,
        connect_args=connect_args,
    )
