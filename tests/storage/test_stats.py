"""Conformance of the sign-in counters (:mod:`bridge.storage.stats`) on SQLite and PostgreSQL.

Counted in memory, then one row per (registration, outcome, hour), added to by
an upsert that loses no count when many processes flush at once; a failed flush
keeps its counts; read back summed per (outcome, hour); purged after 31 days;
and nothing personal stored.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from bridge.stats import sign_in_stats
from bridge.storage import Database, DatabaseUnavailable, Store
from bridge.storage.models import SignInCountRow
from bridge.storage.stats import STATS_KEEP_SECONDS, Outcome, bucket_of

HOUR = 3600
DAY = 24 * HOUR
NOW = 1_700_000_000 - 1_700_000_000 % DAY + 15 * HOUR + 20 * 60  # 15:20 UTC


def slug() -> str:
    return f"stats-{secrets.token_hex(4)}"


@pytest.fixture
def fresh_store(empty_database_url: str) -> Iterator[Store]:
    """A store on a database of its own, for tests that count every row."""
    with Database(empty_database_url) as database:
        database.upgrade()
        yield Store(database)


def rows_of(store: Store, registration: str) -> list[SignInCountRow]:
    store.flush_sign_ins()
    with store.db.session(write=False) as s:
        query = select(SignInCountRow).where(SignInCountRow.registration == registration)  # type: ignore[arg-type]
        return list(s.scalars(query))


def test_a_counter_is_one_row_per_registration_outcome_and_hour(store: Store) -> None:
    app = slug()
    for _ in range(3):
        store.count_sign_in(app, Outcome.SUCCESS, now=NOW)
    store.count_sign_in(app, Outcome.SUCCESS, now=NOW + 30 * 60)  # 15:50: the same hour
    store.count_sign_in(app, Outcome.SUCCESS, now=NOW + HOUR)  # 16:20: the next
    store.count_sign_in(app, Outcome.WRONG_PASSWORD, now=NOW)
    rows = sorted((r.outcome, r.bucket, r.count) for r in rows_of(store, app))
    assert rows == [
        ("success", bucket_of(NOW), 4),
        ("success", bucket_of(NOW) + HOUR, 1),
        ("wrong_password", bucket_of(NOW), 1),
    ]
    assert bucket_of(NOW) % HOUR == 0
    assert bucket_of(NOW) <= NOW < bucket_of(NOW) + HOUR


def test_counts_are_read_back_per_registration_or_summed_over_all(fresh_store: Store) -> None:
    store = fresh_store
    store.count_sign_in("portal", Outcome.SUCCESS, now=NOW)
    store.count_sign_in("portal", Outcome.SUCCESS, now=NOW)
    store.count_sign_in("desk", Outcome.SUCCESS, now=NOW)
    store.count_sign_in("desk", Outcome.NO_EMAIL, now=NOW - 2 * HOUR)
    store.count_sign_in("desk", Outcome.NO_EMAIL, now=NOW - 40 * DAY)  # before ``since``
    hour = bucket_of(NOW)
    assert store.sign_in_counts(registration="portal", since=NOW - DAY) == [("success", hour, 2)]
    assert store.sign_in_counts(registration=None, since=NOW - DAY) == [
        ("no_email", hour - 2 * HOUR, 1),
        ("success", hour, 3),
    ]
    assert store.sign_in_counts(registration="nobody", since=NOW - DAY) == []
    # Summed per UTC day in the database.
    midnight = NOW - NOW % DAY
    assert store.sign_in_counts(registration="desk", since=NOW - 50 * DAY, step=DAY) == [
        ("no_email", midnight - 40 * DAY, 1),
        ("no_email", midnight, 1),
        ("success", midnight, 1),
    ]
    with pytest.raises(ValueError, match="multiple of an hour"):
        store.sign_in_counts(registration=None, since=NOW, step=600)


def test_parallel_flushes_lose_no_count(store: Store) -> None:
    """Many processes (a Store each) count the same counter and flush at once: the
    upsert is atomic; threads counting in one process lose nothing either."""
    app = slug()
    processes, threads, each = 4, 4, 25
    stores = [Store(store.db) for _ in range(processes)]

    def work(one: Store) -> None:
        for _ in range(each):
            one.count_sign_in(app, Outcome.SUCCESS, now=NOW)
        one.flush_sign_ins()

    with ThreadPoolExecutor(max_workers=processes * threads) as pool:
        jobs = [pool.submit(work, one) for one in stores for _ in range(threads)]
        for future in jobs:
            future.result()
    [row] = rows_of(store, app)
    assert row.count == processes * threads * each


def test_counting_needs_no_database_and_a_failed_flush_loses_nothing(store: Store) -> None:
    app = slug()
    down = Store(Database("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1"))
    down.count_sign_in(app, Outcome.SUCCESS, now=NOW)  # no database work: cannot fail
    down.count_sign_in(app, Outcome.SUCCESS, now=NOW)
    with pytest.raises(DatabaseUnavailable):
        down.flush_sign_ins()
    # What could not be written is kept: the same counts reach a working database later.
    down.db = store.db
    assert down.flush_sign_ins() == 1
    assert down.flush_sign_ins() == 0  # written once, not twice
    assert [r.count for r in rows_of(store, app)] == [2]


def test_a_long_slug_is_clipped_not_refused(store: Store) -> None:
    long = slug() + "x" * 100
    store.count_sign_in(long, Outcome.OTHER, now=NOW)
    assert [r.count for r in rows_of(store, long[:63])] == [1]


def test_purge_removes_counters_older_than_31_days(fresh_store: Store) -> None:
    store = fresh_store
    store.count_sign_in("portal", Outcome.SUCCESS, now=NOW - STATS_KEEP_SECONDS - HOUR)
    store.count_sign_in("portal", Outcome.WRONG_PASSWORD, now=NOW - 30 * DAY)
    store.count_sign_in("portal", Outcome.SUCCESS, now=NOW)
    store.flush_sign_ins()
    counts = store.purge_expired(now=NOW)
    assert counts is not None
    assert counts["sign-in counts"] == 1
    assert sorted(r.outcome for r in rows_of(store, "portal")) == ["success", "wrong_password"]
    again = store.purge_expired(now=NOW)
    assert again is not None
    assert again["sign-in counts"] == 0


def test_sign_in_stats_reads_the_last_24_hours_and_30_days(fresh_store: Store) -> None:
    store = fresh_store
    store.count_sign_in("desk", Outcome.SUCCESS, now=NOW)
    store.count_sign_in("desk", Outcome.SUCCESS, now=NOW - 23 * HOUR)  # first hour shown
    store.count_sign_in("desk", Outcome.ACCESS_RULE, now=NOW - 24 * HOUR)  # a day ago: days only
    store.count_sign_in("desk", Outcome.THROTTLED, now=NOW - 29 * DAY)  # first day shown
    store.count_sign_in("desk", Outcome.SHARED_EMAIL, now=NOW - 30 * DAY)  # too old for both
    store.count_sign_in("portal", Outcome.SUCCESS, now=NOW)

    stats = sign_in_stats(store, "desk", NOW)
    assert stats.registration == "desk"
    assert len(stats.hours.buckets) == 24
    assert stats.hours.buckets[-1].start == bucket_of(NOW)
    assert stats.hours.buckets[0].start == bucket_of(NOW) - 23 * HOUR
    assert stats.hours.buckets[0][Outcome.SUCCESS] == 1
    assert stats.hours.totals[Outcome.SUCCESS] == 2
    assert stats.hours.totals[Outcome.ACCESS_RULE] == 0
    assert Outcome.THROTTLED not in stats.hours.totals  # an extra reason, shown when it occurred
    assert (stats.hours.successes, stats.hours.refusals) == (2, 0)

    assert len(stats.days.buckets) == 30
    assert stats.days.buckets[-1].start == NOW - NOW % DAY
    assert stats.days.buckets[-1][Outcome.SUCCESS] == 1
    assert stats.days.buckets[-2][Outcome.SUCCESS] == 1  # yesterday 16:00
    assert stats.days.buckets[-2][Outcome.ACCESS_RULE] == 1
    assert stats.days.buckets[0][Outcome.THROTTLED] == 1
    assert stats.days.totals == {
        Outcome.SUCCESS: 2,
        Outcome.WRONG_PASSWORD: 0,
        Outcome.ACCESS_RULE: 1,
        Outcome.NO_EMAIL: 0,
        Outcome.SHARED_EMAIL: 0,
        Outcome.IMIS_UNAVAILABLE: 0,
        Outcome.THROTTLED: 1,
    }
    everyone = sign_in_stats(store, None, NOW)
    assert everyone.hours.totals[Outcome.SUCCESS] == 3
    data = everyone.as_dict()
    assert data["hours"]["totals"]["success"] == 3
    assert len(data["days"]["buckets"]) == 30


def test_an_outcome_this_version_does_not_know_is_skipped(fresh_store: Store) -> None:
    store = fresh_store
    with store.db.session() as s:
        s.add(SignInCountRow(registration="desk", outcome="future", bucket=bucket_of(NOW), count=5))
    store.count_sign_in("desk", Outcome.SUCCESS, now=NOW)
    stats = sign_in_stats(store, "desk", NOW)
    assert stats.hours.totals[Outcome.SUCCESS] == 1
    assert sum(stats.hours.totals.values()) == 1


def test_nothing_personal_is_stored_in_a_counter() -> None:
    """The table holds a slug, an outcome, an hour and a number: no username, ID or address."""
    columns = set(SignInCountRow.__table__.columns.keys())  # type: ignore[attr-defined]
    assert columns == {"id", "registration", "outcome", "bucket", "count"}
