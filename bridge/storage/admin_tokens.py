"""Stored admin API tokens: created, found by their hash, listed and revoked.

This module owns the ``admin_tokens`` rows (SECURITY F4). A token is 256
random bits behind a ``bat_`` prefix (so secret scanners can tell one); only
its SHA-256 is stored, and a request's token is found by that hash. Finding
a token marks it used, at most once a minute. A revoked token is never found
again but keeps its row. Who may create one, and the audit trail of doing so,
are the caller's (``bridge admin token``).
"""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from bridge.storage.base import Conflict, StoreBase, hash_token, update_rows
from bridge.storage.models import AdminTokenRow

#: What every admin API token starts with.
ADMIN_TOKEN_PREFIX = "bat_"
#: A token's last_used_at is written at most this often (reads stay reads).
ADMIN_TOKEN_TOUCH_SECONDS = 60


def new_admin_token() -> str:
    """A fresh admin API token: ``bat_`` and 256 random bits, URL-safe."""
    return ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)


class AdminTokenStore(StoreBase):
    """Admin API tokens by hash, id or name."""

    def create_admin_token(
        self, name: str, *, created_by: str, now: int
    ) -> tuple[str, AdminTokenRow]:
        """A new token named ``name``: the raw token (shown once) and its row.

        :class:`Conflict` if a token not revoked already has that name.
        """
        raw = new_admin_token()
        row = AdminTokenRow(
            name=name, token_hash=hash_token(raw), created_at=now, created_by=created_by
        )
        try:
            with self._statements() as s:
                s.add(row)
                s.flush()
                s.refresh(row)
                s.expunge(row)
        except IntegrityError as error:
            raise Conflict(
                f"an admin token named {name!r} exists: revoke it first or choose another name",
                detail=str(error.orig),
            ) from error
        return raw, row

    def list_admin_tokens(self) -> list[AdminTokenRow]:
        """Every token, revoked ones too, oldest first."""
        with self._statements() as s:
            return list(s.exec(select(AdminTokenRow).order_by(col(AdminTokenRow.id))))

    def find_admin_token(self, raw: str, *, now: int) -> AdminTokenRow | None:
        """The token ``raw`` if it exists and is not revoked; marks it used (at most once a
        minute)."""
        digest = hash_token(raw)
        query = select(AdminTokenRow).where(
            col(AdminTokenRow.token_hash) == digest, col(AdminTokenRow.revoked_at).is_(None)
        )
        with self._statements() as s:
            row = s.exec(query).first()
            if row is None or (
                row.last_used_at is not None and now - row.last_used_at < ADMIN_TOKEN_TOUCH_SECONDS
            ):
                return row
            if self.db.backend == "sqlite":
                # End the read first: on SQLite a write after a read in one deferred
                # transaction fails instead of waiting (see get_session).
                s.commit()
            s.exec(
                update_rows(AdminTokenRow)
                .where(col(AdminTokenRow.id) == row.id)
                .values(last_used_at=now)
            )
            s.expunge(row)
        row.last_used_at = now
        return row

    def revoke_admin_token(self, id_or_name: str, *, now: int) -> AdminTokenRow | None:
        """Revoke the token not yet revoked whose id (digits) or name is ``id_or_name``;
        returns it, or None if there is none."""
        if id_or_name.isascii() and id_or_name.isdigit():
            if len(id_or_name) > 18:  # no such id (and none the column could hold)
                return None
            where = col(AdminTokenRow.id) == int(id_or_name)
        else:
            where = col(AdminTokenRow.name) == id_or_name
        query = (
            update_rows(AdminTokenRow)
            .where(where, col(AdminTokenRow.revoked_at).is_(None))
            .values(revoked_at=now)
            .returning(AdminTokenRow)
        )
        with self._statements() as s:
            row: AdminTokenRow | None = s.exec(query).scalars().first()
            return row
