"""The key vault in the database: the blobs of the key store, shared by every process.

This module owns the ``key_vault``, ``key_vault_state`` and ``key_vault_peers``
tables: reading every blob in one statement, writing under one lock across
processes (the state row's, taken first), the generation that tells a process
the keys changed, and the acknowledgements of serving processes. It satisfies
:class:`bridge.keys.vault.Vault` for opaque bytes; the key store wraps it in a
:class:`~bridge.keys.vault.SealedVault`, so what it stores is already encrypted
and it never sees a key. Outages raise
:class:`~bridge.storage.db.DatabaseUnavailable`.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Final

from sqlmodel import Session, col, select

from bridge.storage.base import StoreBase, delete_rows, update_rows
from bridge.storage.models import KeyVaultPeerRow, KeyVaultRow, KeyVaultStateRow

__all__ = ["DatabaseVault"]

#: The one row of ``key_vault_state``.
_STATE_ID: Final = 1
#: A process silent this long is forgotten (it crashed without signing off).
_FORGET_SILENT_SECONDS: Final = 24 * 3600


class _Writer:
    """The vault inside the locked transaction: reads see its own writes."""

    __slots__ = ("_changed", "_session")

    def __init__(self, session: Session) -> None:
        self._session = session
        self._changed = False

    def read(self, name: str) -> bytes | None:
        row = self._session.get(KeyVaultRow, name)
        return None if row is None else bytes(row.sealed)

    def write(self, name: str, data: bytes) -> None:
        now = int(time.time())
        row = self._session.get(KeyVaultRow, name)
        if row is None:
            self._session.add(KeyVaultRow(name=name, sealed=data, updated_at=now))
        else:
            row.sealed, row.updated_at = data, now
        self._session.flush()
        self._changed = True

    def delete(self, name: str) -> None:
        query = delete_rows(KeyVaultRow).where(col(KeyVaultRow.name) == name)
        if self._session.exec(query).rowcount:
            self._changed = True

    def names(self) -> list[str]:
        return list(
            self._session.exec(select(col(KeyVaultRow.name)).order_by(col(KeyVaultRow.name)))
        )


class DatabaseVault(StoreBase):
    """Key material in the bridge's database (``key_store = "database"``).

    Reading the stamp is one primary-key read: housekeeping polls it (see
    :data:`bridge.keys.KEYS_POLL_SECONDS`) rather than every request.
    """

    where = "database"
    cheap_stamp = False

    def prepare(self) -> None:
        """The tables come with the schema (``bridge db upgrade``); nothing to create."""

    @contextmanager
    def locked(self) -> Iterator[_Writer]:
        with self.db.session() as s:
            self._lock(s)
            writer = _Writer(s)
            yield writer
            if writer._changed:
                s.exec(
                    update_rows(KeyVaultStateRow)
                    .where(col(KeyVaultStateRow.id) == _STATE_ID)
                    .values(generation=col(KeyVaultStateRow.generation) + 1)
                )

    def _lock(self, s: Session) -> None:
        """The state row's lock (PostgreSQL; SQLite's write transaction is the lock, and
        it has no FOR UPDATE), creating the row if a database lacks it."""
        row = col(KeyVaultStateRow.id)
        s.exec(
            self._insert(KeyVaultStateRow)
            .values(id=_STATE_ID, generation=0)
            .on_conflict_do_nothing(index_elements=[row])
        )
        s.exec(
            select(col(KeyVaultStateRow.generation)).where(row == _STATE_ID).with_for_update()
        ).first()

    def load(self) -> tuple[Hashable, dict[str, bytes]]:
        with self.db.session(write=False) as s:
            stamp = self._generation(s)
            rows = s.exec(select(col(KeyVaultRow.name), col(KeyVaultRow.sealed))).all()
        return stamp, {name: bytes(sealed) for name, sealed in rows}

    def stamp(self) -> Hashable:
        with self.db.session(write=False) as s:
            return self._generation(s)

    @staticmethod
    def _generation(s: Session) -> int:
        query = select(col(KeyVaultStateRow.generation)).where(
            col(KeyVaultStateRow.id) == _STATE_ID
        )
        return s.exec(query).first() or 0

    def acknowledge(self, instance: str, kids: Iterable[str], now: datetime) -> None:
        """Record ``instance``'s kids; rows of processes silent for a day (crashed, never
        signed off) go at the same time, so the table holds only recent processes."""
        listed = " ".join(sorted(kids))
        at = int(now.timestamp())
        stale = col(KeyVaultPeerRow.seen_at) < at - _FORGET_SILENT_SECONDS
        upsert = (
            self._insert(KeyVaultPeerRow)
            .values(instance=instance, kids=listed, seen_at=at)
            .on_conflict_do_update(
                index_elements=[col(KeyVaultPeerRow.instance)],
                set_={"kids": listed, "seen_at": at},
            )
        )
        with self.db.session() as s:
            s.exec(delete_rows(KeyVaultPeerRow).where(stale))
            s.exec(upsert)

    def peers(self, since: datetime) -> dict[str, frozenset[str]]:
        query = select(KeyVaultPeerRow).where(
            col(KeyVaultPeerRow.seen_at) >= int(since.timestamp())
        )
        with self.db.session(write=False) as s:
            return {row.instance: frozenset(row.kids.split()) for row in s.exec(query)}

    def forget(self, instance: str) -> None:
        """A serving process stopping: it no longer holds back a rotation."""
        query = delete_rows(KeyVaultPeerRow).where(col(KeyVaultPeerRow.instance) == instance)
        with self.db.session() as s:
            s.exec(query)
