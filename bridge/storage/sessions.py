"""Stored browser sessions and pending sign-in requests.

This module owns the rows behind a signed-in browser (found by the hash of
its cookie, marked seen at most once a minute, ended on sign-out) and behind
an authorization request parked while the person signs in (found by the hash
of its id; each client address keeps only its newest few, SECURITY D8).
Lifetimes and limits are passed in; cookies and pages are
:mod:`bridge.sessions`'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sql
from sqlalchemy import bindparam, update
from sqlmodel import col, select

from bridge.storage.base import (
    Prepared,
    StoreBase,
    compact_json,
    delete_rows,
    hash_token,
    new_secret,
    row_as,
    table_of,
)
from bridge.storage.models import BrowserSessionRow, PendingRequestRow

#: A session's last_seen_at is written at most this often (reads stay reads).
SESSION_TOUCH_SECONDS = 60

# Every browser request with a session cookie runs these: built once.
_SESSIONS = table_of(BrowserSessionRow)
_LIVE_SESSION = Prepared(
    sql.select(_SESSIONS).where(
        _SESSIONS.c.id_hash == bindparam("digest"),
        _SESSIONS.c.expires_at > bindparam("now"),
        _SESSIONS.c.last_seen_at > bindparam("idle_since"),
    )
)
_INSERT_SESSION = Prepared(sql.insert(_SESSIONS))
_TOUCH_SESSION = Prepared(
    update(_SESSIONS)
    .where(_SESSIONS.c.id_hash == bindparam("digest"), _SESSIONS.c.last_seen_at < bindparam("now"))
    .values(last_seen_at=bindparam("now"))
)


class SessionStore(StoreBase):
    """Browser sessions and the sign-in requests waiting for one."""

    # --- browser sessions --------------------------------------------------------

    def create_session(
        self,
        *,
        imis_id: str,
        username: str,
        identity_json: str,
        auth_time: int,
        now: int,
        lifetime_seconds: int,
    ) -> str:
        """Start a session; returns the raw id for the cookie (only its hash is stored)."""
        raw, digest = new_secret()
        row = {
            "id_hash": digest,
            "imis_id": imis_id,
            "username": username,
            "identity_json": identity_json,
            "auth_time": auth_time,
            "created_at": now,
            "last_seen_at": now,
            "expires_at": now + lifetime_seconds,
        }
        with self._core() as connection:
            _INSERT_SESSION.run(connection, row)
        return raw

    def get_session(self, raw_id: str, *, now: int, idle_seconds: int) -> BrowserSessionRow | None:
        """The live session of a cookie, or None if unknown, expired or idle too long.

        Marks the session seen, at most once per :data:`SESSION_TOUCH_SECONDS`.
        """
        digest = hash_token(raw_id)
        with self._core() as connection:
            found = _LIVE_SESSION.run(
                connection, {"digest": digest, "now": now, "idle_since": now - idle_seconds}
            ).fetchone()
            if found is None:
                return None
            row = row_as(BrowserSessionRow, found)
            if now - row.last_seen_at < SESSION_TOUCH_SECONDS:
                return row
            _TOUCH_SESSION.run(connection, {"digest": digest, "now": now})
        row.last_seen_at = now
        return row

    def delete_session(self, raw_id: str) -> BrowserSessionRow | None:
        """End a session; returns what it was (to revoke its grants), None if there was none."""
        query = (
            delete_rows(BrowserSessionRow)
            .where(col(BrowserSessionRow.id_hash) == hash_token(raw_id))
            .returning(BrowserSessionRow)
        )
        with self._statements() as s:
            row: BrowserSessionRow | None = s.exec(query).scalars().first()
            return row

    # --- pending authorization requests -----------------------------------------

    def create_pending(
        self,
        *,
        kind: str,
        registration: str,
        params: Mapping[str, Any],
        now: int,
        ttl_seconds: int,
        client: str | None = None,
        max_per_client: int | None = None,
    ) -> str:
        """Park a request while the person signs in; returns its raw id.

        ``client`` (an address, stored hashed) started it. With ``max_per_client``,
        that client keeps only its newest requests, this one included: older
        ones are dropped (SECURITY D8). Ties within one second are broken
        arbitrarily, but the new request is never the one dropped.
        """
        raw, digest = new_secret()
        client_hash = None if client is None else hash_token(f"pending-client:{client}")
        row = PendingRequestRow(
            id_hash=digest,
            kind=kind,
            registration=registration,
            params_json=compact_json(params),
            created_at=now,
            expires_at=now + ttl_seconds,
            client_hash=client_hash,
        )
        with self._statements() as s:
            s.add(row)
        if client_hash is not None and max_per_client is not None:
            self._trim_pending(client_hash, keep=digest, limit=max(1, max_per_client))
        return raw

    def _trim_pending(self, client_hash: str, *, keep: str, limit: int) -> None:
        others = (
            col(PendingRequestRow.client_hash) == client_hash,
            col(PendingRequestRow.id_hash) != keep,
        )
        newest = (
            select(col(PendingRequestRow.id_hash))
            .where(*others)
            .order_by(col(PendingRequestRow.created_at).desc(), col(PendingRequestRow.id_hash))
            .limit(limit - 1)
        )
        # Concurrent requests from one address may each keep a few more; the
        # next request trims again, so the bound holds within a handful.
        query = delete_rows(PendingRequestRow).where(
            *others, col(PendingRequestRow.id_hash).not_in(newest)
        )
        with self._statements() as s:
            s.exec(query)

    def get_pending(self, raw_id: str, *, now: int) -> PendingRequestRow | None:
        query = select(PendingRequestRow).where(
            col(PendingRequestRow.id_hash) == hash_token(raw_id),
            col(PendingRequestRow.expires_at) > now,
        )
        with self._statements() as s:
            return s.exec(query).first()

    def delete_pending(self, raw_id: str) -> None:
        query = delete_rows(PendingRequestRow).where(
            col(PendingRequestRow.id_hash) == hash_token(raw_id)
        )
        with self._statements() as s:
            s.exec(query)
