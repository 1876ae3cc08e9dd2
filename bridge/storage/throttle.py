"""Stored sign-in throttling counters.

This module owns the ``login_throttle`` rows: failed sign-ins counted per key
(a username, an address, ...; stored hashed) within a window, atomically, and
cleared after a success. How many failures lock out, and for how long, is
:mod:`bridge.throttle`'s policy.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import case, func
from sqlmodel import col, select

from bridge.storage.base import StoreBase, delete_rows, hash_token
from bridge.storage.models import LoginThrottleRow

#: Throttle counters older than this start again from zero and are purged.
THROTTLE_KEEP_SECONDS = 24 * 3600


def _throttle_hashes(keys: Iterable[str]) -> list[str]:
    # Sorted: concurrent multi-row upserts then lock rows in one order (no deadlock).
    return sorted({hash_token(key) for key in keys})


class ThrottleStore(StoreBase):
    """Failed sign-ins per key."""

    def throttle_state(self, keys: list[str], *, now: int, window_seconds: int) -> int:
        """The most failures any of ``keys`` (username, address, ...) had within the window."""
        hashes = _throttle_hashes(keys)
        if not hashes:
            return 0
        query = select(func.max(col(LoginThrottleRow.failures))).where(
            col(LoginThrottleRow.key_hash).in_(hashes),
            col(LoginThrottleRow.last_failure_at) > now - window_seconds,
        )
        with self._statements() as s:
            worst = s.exec(query).one()
        return int(worst or 0)

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
        query = delete_rows(LoginThrottleRow).where(col(LoginThrottleRow.key_hash).in_(hashes))
        with self._statements() as s:
            s.exec(query)
