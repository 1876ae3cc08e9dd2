"""Alembic environment: migrates the connection that the caller passes in.

Run only through :meth:`bridge.storage.db.Database.upgrade` (or ``bridge db
upgrade``), which opens the transaction, takes the upgrade lock and puts the
connection into ``config.attributes``. This file never builds an engine, reads
a URL or an ini file, and has no offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import bridge.storage.models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through bridge.storage.Database.upgrade()")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
