"""The bridge's persistent state: tables, the database handle and the repository.

This package owns everything that must survive a request (sessions, pending
requests, codes, grants, tokens, throttle counters, sign-in statistics, audit
trail, stored registrations, admin API tokens), on SQLite or PostgreSQL. It
exposes :class:`Database` (engine, transactions, schema) and :class:`Store` (the
queries, composed of one class per area: registrations, sessions, grants,
throttle, stats, audit, admin API tokens); it never renders pages, speaks HTTP
or reads settings, and opens no connection at import time.
"""

from __future__ import annotations

from bridge.storage.db import (
    Database,
    DatabaseUnavailable,
    SchemaAhead,
    SchemaBehind,
    SchemaState,
)
from bridge.storage.repo import (
    CodeRedemption,
    Conflict,
    RefreshReused,
    RefreshRotation,
    Store,
    hash_token,
    new_secret,
)

__all__ = [
    "CodeRedemption",
    "Conflict",
    "Database",
    "DatabaseUnavailable",
    "RefreshReused",
    "RefreshRotation",
    "SchemaAhead",
    "SchemaBehind",
    "SchemaState",
    "Store",
    "hash_token",
    "new_secret",
]
