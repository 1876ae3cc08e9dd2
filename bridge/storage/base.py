"""What every area of the repository shares: secrets at rest, statement helpers, transactions.

This module owns how a stored secret is kept (only its SHA-256), the helpers
every query uses (UPDATE/DELETE without ORM synchronisation, INSERT with ON
CONFLICT in the database's dialect, clipped text, compact JSON; Core tables and
rows for the hot paths' statements, which are built once, with bound
parameters, and run without the ORM: building and ORM-executing a statement
cost several times the SQLite work it asks for), the
:class:`Conflict` error, and the transaction a method runs in: a short one of
its own, or, inside :meth:`StoreBase.unit_of_work` once :meth:`StoreBase.begin_unit`
was called, the one transaction the whole block shares (a token exchange).
It knows no table; the areas (:mod:`bridge.storage.sessions`, ``grants``,
``registrations``, ``throttle``, ``audit``) do.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ClauseElement,
    Connection,
    Delete,
    Dialect,
    Table,
    Update,
    delete,
    exc,
    inspect,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import ClassManager, configure_mappers
from sqlalchemy.sql.compiler import SQLCompiler
from sqlmodel import Session, SQLModel

from bridge.errors import BadRequest
from bridge.storage.db import Database, Link

M = TypeVar("M", bound=SQLModel)


class Conflict(BadRequest):
    """The change collides with what is stored (a duplicate, or a revoked grant)."""

    title = "This conflicts with existing data"


def hash_token(raw: str) -> str:
    """The stored form of a random secret: SHA-256, hex (the secrets are 256-bit random)."""
    return hashlib.sha256(raw.encode()).hexdigest()


def new_secret() -> tuple[str, str]:
    """A fresh random secret and its stored hash: ``(raw, hash)``."""
    raw = secrets.token_urlsafe(32)
    return raw, hash_token(raw)


class Prepared:
    """A statement of the hot paths: built once, compiled once per database dialect,
    and run straight on the driver's cursor of a Core connection.

    SQLAlchemy's Core execution of an already compiled statement (execution
    context, events, result wrapping) still costs several times the SQLite work
    it asks for; this runs the compiled SQL itself. Parameters are given by the
    names of the statement's bound parameters; values fixed in the statement
    (a literal ``"refresh"``, a LIMIT) are filled in. Only for statements whose
    parameters and columns need no type conversion (text and integers), no
    expanding IN. Driver errors become SQLAlchemy's, so outages are still
    :class:`~bridge.storage.db.DatabaseUnavailable`, and a connection the
    database dropped is invalidated as SQLAlchemy would.
    """

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _for(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            assert isinstance(compiled, SQLCompiler)
            fixed = {
                name: bind.value
                for name, bind in compiled.binds.items()
                if not bind.required and bind.callable is None
            }
            order = tuple(compiled.positiontup or ()) if compiled.positional else None
            found = self._compiled[dialect.name] = (compiled.string, order, fixed)
        return found

    def _values(
        self, order: tuple[str, ...] | None, fixed: dict[str, Any], params: Mapping[str, Any]
    ) -> Any:
        values = {**fixed, **params}
        return values if order is None else tuple(values[name] for name in order)

    def run(self, connection: Connection | Link, params: Mapping[str, Any]) -> Any:
        """Execute with ``params``; returns the driver's cursor (rows as tuples)."""
        text, order, fixed = self._for(connection.dialect)
        return self._on_cursor(
            connection, text, lambda c: c.execute(text, self._values(order, fixed, params))
        )

    def run_many(self, connection: Connection | Link, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row of parameters (an INSERT of several rows)."""
        text, order, fixed = self._for(connection.dialect)
        values = [self._values(order, fixed, row) for row in rows]
        self._on_cursor(connection, text, lambda c: c.executemany(text, values))

    def _on_cursor(
        self, connection: Connection | Link, text: str, work: Callable[[Any], Any]
    ) -> Any:
        dialect = connection.dialect
        proxied = connection.connection
        cursor = proxied.cursor()
        try:
            work(cursor)
        except dialect.loaded_dbapi.Error as error:
            cursor.close()
            gone = dialect.is_disconnect(error, proxied.dbapi_connection, cursor)
            if gone:
                connection.invalidate(error)
            raise exc.DBAPIError.instance(
                text, None, error, dialect.loaded_dbapi.Error, connection_invalidated=gone
            ) from error
        return cursor


_CONNECTION = "bridge_connection"


def connection_of(session: Session) -> Connection:
    """The connection of the session's transaction, for :class:`Prepared` statements
    (asked of the ORM once per transaction: each ask costs more than a lookup)."""
    found: Connection | None = session.info.get(_CONNECTION)
    if found is None or found.closed:
        found = session.info[_CONNECTION] = session.connection()
    return found


def table_of(model: type[SQLModel]) -> Table:
    """The Core table behind a model (for statements built once, at import)."""
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


def row_as(model: type[M], values: Sequence[Any]) -> M:
    """A model instance from the values of its table's columns, in the table's order
    (a row of ``SELECT table.*`` or ``RETURNING table.*``).

    Made as the ORM makes the instances it loads (no validation: the values come
    from the database), at a fifteenth of the cost of the model's constructor.
    """
    manager, keys = _instance_maker(model)
    instance = manager.new_instance()
    instance.__dict__.update(zip(keys, values, strict=True))
    return cast(M, instance)


@functools.cache
def _instance_maker(model: type[SQLModel]) -> tuple[ClassManager[Any], tuple[str, ...]]:
    configure_mappers()  # once: instruments every model's attributes
    manager: ClassManager[Any] = inspect(model).class_manager
    return manager, tuple(table_of(model).columns.keys())


def update_rows(model: type[M]) -> Update:
    """UPDATE ``model``. Rows are never kept in the session across statements: skip the
    ORM's in-memory synchronisation (and the extra SELECT it may emit)."""
    return update(model).execution_options(synchronize_session=False)


def delete_rows(model: type[M]) -> Delete:
    """DELETE from ``model``, without ORM synchronisation (see :func:`update_rows`)."""
    return delete(model).execution_options(synchronize_session=False)


def clip(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


def compact_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


@dataclass(slots=True)
class _Unit:
    db: Database
    session: Session
    begun: bool = False


#: The unit of work of the current thread (or task), if any.
_UNIT: ContextVar[_Unit | None] = ContextVar("bridge_storage_unit", default=None)


class StoreBase:
    """The database handle and the transaction every method of an area runs in."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- one transaction for a block of calls ----------------------------------

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """Let the store calls of this block share one transaction, from :meth:`begin_unit` on.

        Calls before :meth:`begin_unit` (say, looking up the client) run in
        their own short transactions, as outside the block; calls after it run
        in one transaction (on SQLite it takes the write lock at its first
        statement) that commits when the block ends, also when the caller turned
        an error into an answer, and rolls back if an exception leaves the
        block. A method's rows are flushed and forgotten as it returns, so each
        call sees the database, not a stale copy. For the token exchange: no
        method that catches a database error of its own (registrations) is
        called inside. Blocks do not nest.
        """
        if _UNIT.get() is not None:
            raise RuntimeError("units of work do not nest")
        with self.db.session() as session:
            token = _UNIT.set(_Unit(self.db, session))
            try:
                yield
            finally:
                _UNIT.reset(token)

    def begin_unit(self) -> None:
        """From here to the end of the enclosing :meth:`unit_of_work`, one transaction
        (no effect outside one)."""
        unit = _UNIT.get()
        if unit is not None and unit.db is self.db:
            unit.begun = True

    def _shared(self) -> Session | None:
        """The session of the unit of work under way, if this store's calls join it."""
        unit = _UNIT.get()
        if unit is None or not unit.begun or unit.db is not self.db:
            return None
        return unit.session

    @contextmanager
    def _joined(self, shared: Session) -> Iterator[Session]:
        try:
            yield shared
            shared.flush()
        finally:
            shared.expunge_all()

    @contextmanager
    def _statements(self) -> Iterator[Session]:
        """Statements that need no transaction around them: each one is atomic, or
        they run in an order in which each prefix is a consistent state (a grant is
        revoked before its tokens; a code is redeemed before it is looked up)."""
        shared = self._shared()
        if shared is not None:
            with self._joined(shared) as s:
                yield s
            return
        with self.db.session(autocommit=True) as s:
            yield s

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """One transaction (the unit's, inside a begun unit of work)."""
        shared = self._shared()
        if shared is not None:
            with self._joined(shared) as s:
                yield s
            return
        with self.db.session() as s:
            yield s

    @contextmanager
    def _core(self) -> Iterator[Connection | Link]:
        """A Core connection for :class:`Prepared` statements: inside a begun
        unit of work, the unit's (what the ORM pends is flushed first); else one whose
        statements each commit by themselves, as in :meth:`_statements`."""
        shared = self._shared()
        if shared is not None:
            with self._joined(shared) as s:
                s.flush()
                yield connection_of(s)
            return
        with self.db.connect() as connection:
            yield connection

    def _insert(self, model: type[M]) -> postgresql.Insert | sqlite.Insert:
        """INSERT with ON CONFLICT support, in this database's dialect."""
        if self.db.backend == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)


__all__ = [
    "Conflict",
    "StoreBase",
    "clip",
    "compact_json",
    "delete_rows",
    "hash_token",
    "new_secret",
    "update_rows",
]
