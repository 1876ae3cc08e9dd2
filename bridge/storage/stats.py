"""Stored sign-in statistics: how many sign-ins to each registration ended which way, per hour.

This module owns the ``sign_in_counts`` rows and the names of the outcomes
they count (:class:`Outcome`): one counter per (registration, outcome, hour).
A sign-in is counted in this process's memory first (a dict increment, no
database work on the sign-in's path); :meth:`StatsStore.flush_sign_ins` adds
what was counted to the rows, with one atomic upsert per counter, in one
transaction. The app flushes every few seconds and at shutdown, and every read
flushes this process's counts first, so a reader sees its own process's
sign-ins at once and the other processes' within their flush interval.
Nothing personal is stored: no username, iMIS ID or address. Which outcome a
sign-in had is the caller's decision (:mod:`bridge.stats`); how long counters
are kept is :data:`STATS_KEEP_SECONDS` (the purge is :mod:`bridge.storage.repo`'s).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from enum import StrEnum

from sqlalchemy import func
from sqlmodel import col, select

from bridge.storage.base import StoreBase
from bridge.storage.db import Database
from bridge.storage.models import SignInCountRow

#: Counters are per hour: a bucket is the Unix time its hour starts.
BUCKET_SECONDS = 3600
#: Counters older than this are purged (the statistics show the last 30 days).
STATS_KEEP_SECONDS = 31 * 24 * 3600
#: The registration of sign-ins on the bridge's own sign-in page (no app asked).
NO_REGISTRATION = "-"


class Outcome(StrEnum):
    """How one sign-in to a registration ended (the stored value)."""

    #: The person was let into the registration's app (a code, a JWT, an answer sent).
    SUCCESS = "success"
    WRONG_PASSWORD = "wrong_password"
    #: The registration's access rule (or the registration being disabled) refused them.
    ACCESS_RULE = "access_rule"
    NO_EMAIL = "no_email"
    SHARED_EMAIL = "shared_email"
    IMIS_UNAVAILABLE = "imis_unavailable"
    THROTTLED = "throttled"
    ACCOUNT_DISABLED = "account_disabled"
    ORGANIZATION = "organization"
    #: Refused for a reason the profile did not name.
    OTHER = "other"

    @property
    def label(self) -> str:
        """As a page says it: "wrong password", "iMIS unavailable"."""
        return _LABELS[self]


_LABELS = {
    Outcome.SUCCESS: "success",
    Outcome.WRONG_PASSWORD: "wrong password",
    Outcome.ACCESS_RULE: "access rule",
    Outcome.NO_EMAIL: "no email",
    Outcome.SHARED_EMAIL: "shared email",
    Outcome.IMIS_UNAVAILABLE: "iMIS unavailable",
    Outcome.THROTTLED: "throttled",
    Outcome.ACCOUNT_DISABLED: "account disabled",
    Outcome.ORGANIZATION: "organization account",
    Outcome.OTHER: "other refusal",
}


def bucket_of(now: int) -> int:
    """The start of the hour ``now`` falls in."""
    return now - now % BUCKET_SECONDS


class StatsStore(StoreBase):
    """Sign-in outcomes counted per registration and hour."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        #: Counted here, not yet in the database: (registration, outcome, bucket) -> n.
        #: Bounded by registrations x outcomes x hours between flushes.
        self._unflushed: Counter[tuple[str, str, int]] = Counter()
        self._unflushed_lock = threading.Lock()

    def count_sign_in(self, registration: str, outcome: Outcome, *, now: int) -> None:
        """Count one sign-in to ``registration`` that ended with ``outcome`` (in memory;
        :meth:`flush_sign_ins` writes it). Never touches the database, never raises."""
        key = (registration[:63], outcome.value, bucket_of(now))
        with self._unflushed_lock:
            self._unflushed[key] += 1

    def flush_sign_ins(self) -> int:
        """Add this process's counted sign-ins to the stored counters (one transaction);
        returns how many counters changed. On failure nothing counted is lost: it is
        kept for the next flush, and the error raised."""
        with self._unflushed_lock:
            taken, self._unflushed = self._unflushed, Counter()
        if not taken:
            return 0
        try:
            self._add_counts(taken)
        except BaseException:
            with self._unflushed_lock:
                self._unflushed.update(taken)
            raise
        return len(taken)

    def _add_counts(self, counts: Mapping[tuple[str, str, int], int]) -> None:
        with self._transaction() as s:
            for (registration, outcome, bucket), n in sorted(counts.items()):
                s.exec(
                    self._insert(SignInCountRow)
                    .values(registration=registration, outcome=outcome, bucket=bucket, count=n)
                    .on_conflict_do_update(
                        index_elements=[
                            col(SignInCountRow.registration),
                            col(SignInCountRow.outcome),
                            col(SignInCountRow.bucket),
                        ],
                        set_={"count": col(SignInCountRow.count) + n},
                    )
                )

    def sign_in_counts(
        self, *, registration: str | None, since: int, step: int = BUCKET_SECONDS
    ) -> list[tuple[str, int, int]]:
        """``(outcome, start, count)`` per ``step`` seconds from ``since`` on, oldest first.

        ``step`` is a multiple of an hour (3600: per hour; 86400: per UTC day), summed
        in the database. For one registration, or over all of them when it is None.
        """
        if step <= 0 or step % BUCKET_SECONDS:
            raise ValueError("step must be a positive multiple of an hour")
        self.flush_sign_ins()
        bucket = col(SignInCountRow.bucket)
        start = (bucket - bucket % step).label("start")
        total = func.sum(col(SignInCountRow.count))
        query = select(col(SignInCountRow.outcome), start, total).where(bucket >= bucket_of(since))
        if registration is not None:
            query = query.where(col(SignInCountRow.registration) == registration)
        query = query.group_by(col(SignInCountRow.outcome), start).order_by(
            start, col(SignInCountRow.outcome)
        )
        with self._statements() as s:
            return [(str(o), int(b), int(c)) for o, b, c in s.exec(query)]


__all__ = [
    "BUCKET_SECONDS",
    "NO_REGISTRATION",
    "STATS_KEEP_SECONDS",
    "Outcome",
    "StatsStore",
    "bucket_of",
]
