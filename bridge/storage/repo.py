"""The repository: every query the bridge runs against its tables, behind one :class:`Store`.

:class:`Store` composes the areas, each in its own module: registrations
(:mod:`~bridge.storage.registrations`), browser sessions and pending sign-in
requests (:mod:`~bridge.storage.sessions`), codes, grants and tokens
(:mod:`~bridge.storage.grants`), sign-in throttling (:mod:`~bridge.storage.throttle`),
sign-in statistics (:mod:`~bridge.storage.stats`), the audit trail
(:mod:`~bridge.storage.audit`) and admin API tokens
(:mod:`~bridge.storage.admin_tokens`); what they share (hashed
secrets, statement helpers, transactions) is :mod:`~bridge.storage.base`. This
module owns the housekeeping that spans them all: purging what nobody can use
any more. Methods are synchronous and short (one to three statements on the hot
paths, each atomic where it matters); async code calls them through
:meth:`Database.run`. The repository never renders, never speaks HTTP or OAuth
wire formats, never decides policy (lifetimes and limits are passed in) and
never reads settings.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, text
from sqlmodel import SQLModel, col, select

from bridge.storage.admin_tokens import AdminTokenStore
from bridge.storage.audit import AuditStore
from bridge.storage.base import Conflict, hash_token, new_secret
from bridge.storage.db import translate_unavailable
from bridge.storage.grants import (
    CODE_KEEP_SECONDS,
    TOKEN_KEEP_SECONDS,
    CodeRedemption,
    GrantStore,
    RefreshReused,
    RefreshRotation,
)
from bridge.storage.models import (
    AuthorizationCodeRow,
    BrowserSessionRow,
    GrantRow,
    LoginThrottleRow,
    PendingRequestRow,
    SignInCountRow,
    TokenRow,
)
from bridge.storage.registrations import RegistrationStore
from bridge.storage.sessions import SessionStore
from bridge.storage.stats import STATS_KEEP_SECONDS, StatsStore
from bridge.storage.throttle import THROTTLE_KEEP_SECONDS, ThrottleStore

#: Rows one purge statement deletes at most (each batch is its own transaction).
PURGE_BATCH = 1000
#: Any constant: the same in every bridge process (PostgreSQL advisory lock).
_PURGE_LOCK_ID = 0x1B41D6F


class Store(
    RegistrationStore,
    SessionStore,
    GrantStore,
    ThrottleStore,
    StatsStore,
    AuditStore,
    AdminTokenStore,
):
    """The bridge's stored state, as synchronous methods of one transaction each
    (or of a shared one, in a :meth:`unit_of_work`)."""

    # --- housekeeping -------------------------------------------------------------

    def _expired(
        self, now: int, session_idle_seconds: int | None
    ) -> list[tuple[str, type[SQLModel], Any, Any]]:
        """(kind, table, primary key, condition) of every row nobody can use any more.

        The audit trail is kept by design: it is the record of who did what and
        is never purged here (rotate it with the database's own tools).
        """
        session_dead = col(BrowserSessionRow.expires_at) <= now
        if session_idle_seconds is not None:
            session_dead = or_(
                session_dead, col(BrowserSessionRow.last_seen_at) <= now - session_idle_seconds
            )
        return [
            ("sessions", BrowserSessionRow, col(BrowserSessionRow.id_hash), session_dead),
            (
                "pending requests",
                PendingRequestRow,
                col(PendingRequestRow.id_hash),
                col(PendingRequestRow.expires_at) <= now,
            ),
            (
                "codes",
                AuthorizationCodeRow,
                col(AuthorizationCodeRow.code_hash),
                col(AuthorizationCodeRow.expires_at) <= now - CODE_KEEP_SECONDS,
            ),
            # A grant's expiry covers all its tokens (issue_tokens extends it), so
            # a revoked family goes as a whole once its last token has expired.
            (
                "tokens",
                TokenRow,
                col(TokenRow.token_hash),
                col(TokenRow.expires_at) <= now - TOKEN_KEEP_SECONDS,
            ),
            (
                "grants",
                GrantRow,
                col(GrantRow.id),
                col(GrantRow.expires_at) <= now - TOKEN_KEEP_SECONDS,
            ),
            (
                "throttle counters",
                LoginThrottleRow,
                col(LoginThrottleRow.key_hash),
                col(LoginThrottleRow.last_failure_at) <= now - THROTTLE_KEEP_SECONDS,
            ),
            (
                "sign-in counts",
                SignInCountRow,
                col(SignInCountRow.id),
                col(SignInCountRow.bucket) <= now - STATS_KEEP_SECONDS,
            ),
        ]

    def purge_expired(
        self,
        *,
        now: int,
        session_idle_seconds: int | None = None,
        batch_size: int = PURGE_BATCH,
    ) -> dict[str, int] | None:
        """Delete state nobody can use any more; returns how many rows went, per kind.

        Deletes in batches of ``batch_size`` rows, each its own transaction, so
        a large backlog never holds a lock for long and an interrupted purge
        has still done its part (running it again is always safe). Sessions
        idle for ``session_idle_seconds`` count as expired. On PostgreSQL one
        process purges at a time: while another holds the purge lock this
        returns None at once.
        """
        postgres = self.db.backend == "postgresql"
        counts: dict[str, int] = {}
        with translate_unavailable(), self.db.engine.connect() as conn:
            if postgres:
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:id)"), {"id": _PURGE_LOCK_ID}
                ).scalar()
                conn.commit()
                if not got:
                    return None
            try:
                for kind, model, key, condition in self._expired(now, session_idle_seconds):
                    victims = select(key).where(condition).limit(batch_size)
                    query = delete(model).where(key.in_(victims))
                    counts[kind] = 0
                    while True:
                        removed = int(conn.execute(query).rowcount)
                        conn.commit()
                        counts[kind] += removed
                        if removed < batch_size:
                            break
            finally:
                if postgres:
                    conn.rollback()
                    conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _PURGE_LOCK_ID})
                    conn.commit()
        return counts


__all__ = [
    "CodeRedemption",
    "Conflict",
    "RefreshReused",
    "RefreshRotation",
    "Store",
    "hash_token",
    "new_secret",
]
