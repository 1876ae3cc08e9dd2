"""Stored registrations: the rows behind the registrations an admin adds or edits.

This module owns reading and writing the ``registrations`` table, telling which
of a slug or a client_id a duplicate collides with, and the generation counter
of ``registration_generation``: every write that changes a registration
increments it in the same transaction, so a process keeping registrations in
memory can tell with one primary-key read that they changed. What a
registration means (profiles, options, secrets) is :mod:`bridge.registry`'s.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bridge.storage.base import Conflict, StoreBase, delete_rows, update_rows
from bridge.storage.models import RegistrationGenerationRow, RegistrationRow

#: The one row of ``registration_generation``.
_GENERATION_ID = 1


def _client_id_taken(row: RegistrationRow) -> str:
    return f"client_id {row.client_id!r} is already used by another registration"


class RegistrationStore(StoreBase):
    """Stored registrations by slug and by client_id."""

    def list_registrations(self) -> list[RegistrationRow]:
        with self._statements() as s:
            return list(s.exec(select(RegistrationRow).order_by(col(RegistrationRow.slug))))

    def get_registration(self, slug: str) -> RegistrationRow | None:
        with self._statements() as s:
            return s.get(RegistrationRow, slug)

    def get_registration_by_client_id(self, client_id: str) -> RegistrationRow | None:
        query = select(RegistrationRow).where(col(RegistrationRow.client_id) == client_id)
        with self._statements() as s:
            return s.exec(query).first()

    def registrations_generation(self) -> int:
        """How many changes stored registrations have seen (it only grows)."""
        query = select(col(RegistrationGenerationRow.generation)).where(
            col(RegistrationGenerationRow.id) == _GENERATION_ID
        )
        with self._statements() as s:
            return s.exec(query).first() or 0

    def insert_registration(self, row: RegistrationRow) -> RegistrationRow:
        """Store a new registration; :class:`Conflict` if its slug or client_id is taken."""
        try:
            with self._transaction() as s:
                s.add(row)
                s.flush()
                self._count_change(s)
        except IntegrityError as error:
            raise Conflict(self._registration_conflict(row), detail=str(error.orig)) from error
        return row

    def update_registration(self, row: RegistrationRow) -> bool:
        """Overwrite the registration ``row.slug`` (all but created_at); False if there is none."""
        values = row.model_dump(exclude={"slug", "created_at"})
        query = (
            update_rows(RegistrationRow).where(col(RegistrationRow.slug) == row.slug).values(values)
        )
        try:
            with self._transaction() as s:
                return self._changed(s, s.exec(query).rowcount)
        except IntegrityError as error:
            raise Conflict(_client_id_taken(row), detail=str(error.orig)) from error

    def delete_registration(self, slug: str) -> bool:
        query = delete_rows(RegistrationRow).where(col(RegistrationRow.slug) == slug)
        with self._transaction() as s:
            return self._changed(s, s.exec(query).rowcount)

    def _changed(self, s: Session, rowcount: int) -> bool:
        """Whether one row changed; if so, counted in the same transaction."""
        if rowcount != 1:
            return False
        self._count_change(s)
        return True

    def _count_change(self, s: Session) -> None:
        """Increment the generation (creating its row if a database lacks it)."""
        query = (
            self._insert(RegistrationGenerationRow)
            .values(id=_GENERATION_ID, generation=1)
            .on_conflict_do_update(
                index_elements=[col(RegistrationGenerationRow.id)],
                set_={"generation": col(RegistrationGenerationRow.generation) + 1},
            )
        )
        s.exec(query)

    def _registration_conflict(self, row: RegistrationRow) -> str:
        if self.get_registration(row.slug) is not None:
            return f"a registration named {row.slug!r} already exists"
        return _client_id_taken(row)
