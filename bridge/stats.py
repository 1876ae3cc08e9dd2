"""Sign-in statistics: counting how each sign-in to a registration ended, and reading them back.

This module owns *when* a sign-in outcome is counted and the one way it is
counted (:func:`count`: in the process's memory, written to the database in
batches by :func:`~bridge.housekeeping.flush_counts_periodically`, so counting costs a
sign-in no database work and can never break it). The points where an outcome is
decided call it: the sign-in page (:func:`count_login`, and the throttle), and
the two flows that let a person into an app, wrapped in :func:`counted` (the
OIDC authorization and the profiles' shared flow), which counts the answer as a
success, or as the refusal its maker :func:`note`-d, or as iMIS unavailable.

It also reads the counters back as :class:`Stats` (:func:`sign_in_stats`): the
last 24 hours by hour and the last 30 days by (UTC) day, with totals per
outcome. Nothing personal is counted: a registration's slug, an outcome, an hour.
Drawing them is :mod:`bridge.charts`'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bridge.access import IMISUnavailable
from bridge.connectors import AccountDisabled, OrganizationAccount, Unavailable, WrongCredentials
from bridge.logs import note_outcome, note_registration
from bridge.services import services
from bridge.storage import Store
from bridge.storage.stats import BUCKET_SECONDS, NO_REGISTRATION, Outcome

log = logging.getLogger("bridge.stats")

#: The outcomes every statistic shows, even at zero; the others only when they occurred.
MAIN_OUTCOMES = (
    Outcome.SUCCESS,
    Outcome.WRONG_PASSWORD,
    Outcome.ACCESS_RULE,
    Outcome.NO_EMAIL,
    Outcome.SHARED_EMAIL,
    Outcome.IMIS_UNAVAILABLE,
)
DAY_SECONDS = 24 * 3600
HOURS_SHOWN = 24
DAYS_SHOWN = 30

#: Where :func:`note` keeps a refusal's reason, in the request's scope.
_NOTED = "bridge.sign_in_outcome"

_LOGIN_REFUSALS: Mapping[type, Outcome] = {
    WrongCredentials: Outcome.WRONG_PASSWORD,
    AccountDisabled: Outcome.ACCOUNT_DISABLED,
    OrganizationAccount: Outcome.ORGANIZATION,
    Unavailable: Outcome.IMIS_UNAVAILABLE,
}


# --- counting ------------------------------------------------------------------------


async def count(request: Request, registration: str, outcome: Outcome) -> None:
    """Count one sign-in to ``registration`` (a slug, or ``"-"``) that ended with ``outcome``.

    Never raises: a sign-in goes on whether or not it could be counted.
    """
    note_outcome(request.scope, outcome.value)
    if registration != NO_REGISTRATION:
        note_registration(request.scope, registration)
    known = services(request)
    known.metrics.sign_in(registration, outcome.value)
    try:
        known.store.count_sign_in(registration, outcome, now=int(time.time()))
    except Exception:
        log.warning(
            "sign-in not counted: registration=%s outcome=%s",
            registration,
            outcome.value,
            exc_info=True,
        )


async def count_login(request: Request, registration: str | None, outcome: object) -> None:
    """Count what the sign-in page's password check refused (a success is counted later,
    when the app lets the person in). ``registration`` is the pending request's, if any."""
    refusal = _LOGIN_REFUSALS.get(type(outcome))
    if refusal is not None:
        await count(request, registration or NO_REGISTRATION, refusal)


def note(request: Request, outcome: Outcome) -> None:
    """Say why the answer being made refuses the person (for :func:`counted`)."""
    request.scope[_NOTED] = outcome


def outcome_of(request: Request, response: Response) -> Outcome:
    """What the answer of a sign-in flow means: the noted refusal, else a success unless
    the answer is an error (a refusal nobody named: :attr:`Outcome.OTHER`)."""
    noted = request.scope.pop(_NOTED, None)
    if isinstance(noted, Outcome):
        return noted
    return Outcome.SUCCESS if response.status_code < 400 else Outcome.OTHER


async def counted(request: Request, registration: str, answer: Awaitable[Response]) -> Response:
    """Await the answer that lets a person into ``registration``'s app (or refuses them),
    and count how it ended. iMIS failing meanwhile is counted, then raised as before."""
    try:
        response = await answer
    except IMISUnavailable:
        request.scope.pop(_NOTED, None)
        await count(request, registration, Outcome.IMIS_UNAVAILABLE)
        raise
    await count(request, registration, outcome_of(request, response))
    return response


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """One hour or one day: how many sign-ins ended with each outcome."""

    start: int
    counts: Mapping[Outcome, int]

    def __getitem__(self, outcome: Outcome) -> int:
        return self.counts.get(outcome, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class Series:
    """Equal buckets, oldest first: the last 24 hours by hour, or 30 days by day."""

    title: str
    #: 3600 (hours) or 86400 (days); buckets start at whole UTC hours or days.
    step_seconds: int
    buckets: tuple[Bucket, ...]

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        """The outcomes shown: the main ones always, the others when they occurred."""
        seen = {o for b in self.buckets for o, n in b.counts.items() if n}
        return tuple(o for o in Outcome if o in MAIN_OUTCOMES or o in seen)

    @property
    def totals(self) -> dict[Outcome, int]:
        """Sign-ins per outcome over the whole series (every shown outcome, zeros included)."""
        return {o: sum(b[o] for b in self.buckets) for o in self.outcomes}

    @property
    def successes(self) -> int:
        return self.totals[Outcome.SUCCESS]

    @property
    def refusals(self) -> int:
        return sum(n for o, n in self.totals.items() if o is not Outcome.SUCCESS)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"title", "step_seconds", "totals", "buckets": [{"start", ...}]}``."""
        shown = self.outcomes
        return {
            "title": self.title,
            "step_seconds": self.step_seconds,
            "totals": {o.value: n for o, n in self.totals.items()},
            "buckets": [
                {"start": b.start, "counts": {o.value: b[o] for o in shown}} for b in self.buckets
            ],
        }


@dataclass(frozen=True, slots=True)
class Stats:
    """Sign-ins to one registration (or to all, ``registration`` None) up to ``now``."""

    registration: str | None
    now: int
    #: The last 24 hours, by hour (the current hour last).
    hours: Series
    #: The last 30 days, by UTC day (today last).
    days: Series

    def as_dict(self) -> dict[str, Any]:
        return {
            "registration": self.registration,
            "now": self.now,
            "hours": self.hours.as_dict(),
            "days": self.days.as_dict(),
        }


def _series(
    title: str, step: int, first: int, n: int, rows: list[tuple[Outcome, int, int]]
) -> Series:
    counts: list[dict[Outcome, int]] = [{} for _ in range(n)]
    for outcome, bucket, number in rows:
        index = (bucket - first) // step
        if 0 <= index < n:
            counts[index][outcome] = counts[index].get(outcome, 0) + number
    buckets = tuple(Bucket(first + i * step, counts[i]) for i in range(n))
    return Series(title=title, step_seconds=step, buckets=buckets)


def sign_in_stats(store: Store, registration: str | None, now: int) -> Stats:
    """Sign-ins to ``registration`` (a slug, ``"-"`` for the bridge's own sign-in page,
    or None for all together) in the last 24 hours and 30 days. Blocking: two queries."""
    first_hour = now - now % BUCKET_SECONDS - (HOURS_SHOWN - 1) * BUCKET_SECONDS
    first_day = now - now % DAY_SECONDS - (DAYS_SHOWN - 1) * DAY_SECONDS

    def series(title: str, step: int, first: int, n: int) -> Series:
        found = store.sign_in_counts(registration=registration, since=first, step=step)
        return _series(title, step, first, n, _known(found))

    return Stats(
        registration=registration,
        now=now,
        hours=series("Last 24 hours", BUCKET_SECONDS, first_hour, HOURS_SHOWN),
        days=series("Last 30 days", DAY_SECONDS, first_day, DAYS_SHOWN),
    )


def _known(rows: list[tuple[str, int, int]]) -> list[tuple[Outcome, int, int]]:
    """The rows whose outcome this version knows (a newer bridge may count others)."""
    known = {o.value: o for o in Outcome}
    return [(known[o], start, n) for o, start, n in rows if o in known]


__all__ = [
    "MAIN_OUTCOMES",
    "NO_REGISTRATION",
    "Bucket",
    "Outcome",
    "Series",
    "Stats",
    "count",
    "count_login",
    "counted",
    "note",
    "outcome_of",
    "sign_in_stats",
]
