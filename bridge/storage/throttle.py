"""Stored sign-in throttling counters.

This module owns the ``login_throttle`` rows: failed sign-ins counted per key
(a username, an address, ...; stored hashed) within a window, atomically, and
cleared after a success. How many failures lock out, and for how long, is
:mod:`bridge.throttle`'s policy.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sql
from sqlalchemy import bindparam, case
from sqlmodel import col

from bridge.storage.base import Prepared, StoreBase, hash_token, table_of
from bridge.storage.models import LoginThrottleRow

#: Throttle counters older than this start again from zero and are purged.
THROTTLE_KEEP_SECONDS = 24 * 3600


def _throttle_hashes(keys: Iterable[str]) -> list[str]:
    # Sorted: concurrent multi-row upserts then lock rows in one order (no deadlock).
    return sorted({hash_token(key) for key in keys})


_THROTTLE = table_of(LoginThrottleRow)
# Every sign-in reads a few keys' counters and clears two: built once.
_FAILURES_OF = Prepared(
    sql.select(_THROTTLE.c.failures, _THROTTLE.c.last_failure_at).where(
        _THROTTLE.c.key_hash == bindparam("digest")
    )
)
_CLEAR = Prepared(sql.delete(_THROTTLE).where(_THROTTLE.c.key_hash == bindparam("digest")))


class ThrottleStore(StoreBase):
    """Failed sign-ins per key."""

    def failures_of(self, key: str) -> tuple[int, int] | None:
        """``(failures, last failure time)`` counted against ``key``, None if none are."""
        with self._core() as connection:
            found = _FAILURES_OF.run(connection, {"digest": hash_token(key)}).fetchone()
        return None if found is None else (int(found[0]), int(found[1]))

    def record_failure(
        self, keys: list[str], *, now: int, window_seconds: int = THROTTLE_KEEP_SECONDS
    ) -> None:
        """Count one failed sign-in against every key, atomically (one upsert).

        A key whose last failure is older than ``window_seconds`` starts again at 1.
        """
        hashes = _throttle_hashes(keys)
        if not hashes:
            return
        failures = col(LoginThrottleRow.failures)
        last = col(LoginThrottleRow.last_failure_at)
        query = (
            self._insert(LoginThrottleRow)
            .values([{"key_hash": h, "failures": 1, "last_failure_at": now} for h in hashes])
            .on_conflict_do_update(
                index_elements=[col(LoginThrottleRow.key_hash)],
                set_={
                    "failures": case((last > now - window_seconds, failures + 1), else_=1),
                    "last_failure_at": now,
                },
            )
        )
        with self._statements() as s:
            s.exec(query)

    def clear_failures(self, keys: list[str]) -> None:
        hashes = _throttle_hashes(keys)
        if not hashes:
            return
        with self._core() as connection:
            for digest in hashes:  # each one atomic: no transaction needed
                _CLEAR.run(connection, {"digest": digest})
