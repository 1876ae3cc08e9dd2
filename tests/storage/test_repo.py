"""Conformance suite of :class:`bridge.storage.Store`, run on whichever backend the fixtures give.

Every behaviour the OAuth and login code relies on is pinned here once; SQLite
(default) and PostgreSQL (``BRIDGE_TEST_DATABASE_URL``) must both pass it.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import select, text
from sqlmodel import SQLModel

from bridge.storage import Conflict, Database, RefreshReused, Store, hash_token, repo
from bridge.storage.models import GrantRow, RegistrationRow

T = TypeVar("T")
NOW = 1_700_000_000


def throttle_state(store: Store, keys: list[str], *, now: int, window_seconds: int) -> int:
    """The most failures any of ``keys`` had within the window (what the policy reads)."""
    found = [store.failures_of(key) for key in keys]
    return max([n for n, last in filter(None, found) if last > now - window_seconds] or [0])


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def parallel(n: int, fn: Callable[[], T]) -> list[T]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(fn) for _ in range(n)]
        return [future.result() for future in futures]


@pytest.fixture
def fresh_store(empty_database_url: str) -> Iterator[Store]:
    """A store on a database of its own, for tests that count every row."""
    with Database(empty_database_url) as database:
        database.upgrade()
        yield Store(database)


def stored_grant(store: Store, grant_id: str) -> GrantRow | None:
    """The grant row as stored (read directly: no production code reads a grant by id)."""
    with store.db.session(write=False) as s:
        return s.get(GrantRow, grant_id)


def all_stored_text(db: Database) -> str:
    with db.engine.connect() as connection:
        return "\n".join(
            repr(tuple(row))
            for table in SQLModel.metadata.sorted_tables
            for row in connection.execute(select(table))
        )


# --- registrations -------------------------------------------------------------


def registration(slug: str | None = None, client_id: str | None = None) -> RegistrationRow:
    slug = slug or unique("app")
    return RegistrationRow(
        slug=slug,
        name=f"App {slug}",
        profile="oidc",
        client_id=client_id if client_id is not None else unique("client"),
        options_json='{"redirect_uris": ["https://rp.example/cb"]}',
        secret_hash="hashed",
        created_at=NOW,
        updated_at=NOW,
        updated_by="manager",
    )


def test_registration_round_trip(store: Store) -> None:
    row = registration()
    store.insert_registration(row)

    assert store.get_registration(row.slug) == row
    assert store.get_registration_by_client_id(row.client_id or "") == row
    assert row.slug in [r.slug for r in store.list_registrations()]

    changed = registration(row.slug, client_id=unique("client"))
    changed.name = "Renamed"
    assert store.update_registration(changed) is True
    stored = store.get_registration(row.slug)
    assert stored is not None
    assert (stored.name, stored.client_id) == ("Renamed", changed.client_id)
    assert store.get_registration_by_client_id(row.client_id or "") is None

    assert store.delete_registration(row.slug) is True
    assert store.get_registration(row.slug) is None
    assert store.delete_registration(row.slug) is False


def test_registrations_are_listed_by_slug(store: Store) -> None:
    prefix = unique("order")
    for suffix in ("c", "a", "b"):
        store.insert_registration(registration(f"{prefix}-{suffix}"))
    slugs = [r.slug for r in store.list_registrations() if r.slug.startswith(prefix)]
    assert slugs == [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]


def test_duplicate_slug_is_a_conflict_naming_the_slug(store: Store) -> None:
    row = registration()
    store.insert_registration(row)
    with pytest.raises(Conflict, match=row.slug):
        store.insert_registration(registration(row.slug))


def test_duplicate_client_id_is_a_conflict_naming_the_client_id(store: Store) -> None:
    row = registration()
    store.insert_registration(row)
    with pytest.raises(Conflict, match="client_id"):
        store.insert_registration(registration(client_id=row.client_id))
    other = registration()
    store.insert_registration(other)
    other.client_id = row.client_id
    with pytest.raises(Conflict, match="client_id"):
        store.update_registration(other)


def test_registrations_without_client_id_do_not_collide(store: Store) -> None:
    first, second = registration(), registration()
    first.client_id = second.client_id = None
    store.insert_registration(first)
    store.insert_registration(second)


def test_updating_a_missing_registration_changes_nothing(store: Store) -> None:
    row = registration()
    assert store.update_registration(row) is False
    assert store.get_registration(row.slug) is None


def test_every_registration_change_counts_one_generation(fresh_store: Store) -> None:
    store = fresh_store
    assert store.registrations_generation() == 0
    row = registration()
    store.insert_registration(row)
    assert store.registrations_generation() == 1
    row.name = "Renamed"
    assert store.update_registration(row) is True
    assert store.registrations_generation() == 2
    assert store.delete_registration(row.slug) is True
    assert store.registrations_generation() == 3


def test_writes_that_change_nothing_count_no_generation(fresh_store: Store) -> None:
    store = fresh_store
    row = registration()
    store.insert_registration(row)
    before = store.registrations_generation()
    assert store.update_registration(registration()) is False
    assert store.delete_registration(unique("nobody")) is False
    with pytest.raises(Conflict):
        store.insert_registration(registration(row.slug))
    other = registration()
    store.insert_registration(other)
    other.client_id = row.client_id
    with pytest.raises(Conflict):
        store.update_registration(other)
    assert store.registrations_generation() == before + 1  # the insert of other


def test_the_generation_is_counted_in_the_transaction_of_the_write(store: Store) -> None:
    before = store.registrations_generation()
    row = registration()

    def insert_then_fail() -> None:
        with store.unit_of_work():
            store.begin_unit()
            store.insert_registration(row)
            raise RuntimeError("the write is rolled back")

    with pytest.raises(RuntimeError):
        insert_then_fail()
    assert store.get_registration(row.slug) is None
    assert store.registrations_generation() == before


def test_a_missing_generation_row_reads_as_zero_and_is_created_by_a_write(
    fresh_store: Store,
) -> None:
    store = fresh_store
    with store.db.session() as s:
        s.connection().execute(text("DELETE FROM registration_generation"))
    assert store.registrations_generation() == 0
    store.insert_registration(registration())
    assert store.registrations_generation() == 1


# --- browser sessions -------------------------------------------------------------


def new_session(store: Store, *, imis_id: str = "1001", lifetime: int = 3600) -> str:
    return store.create_session(
        imis_id=imis_id,
        username="jdoe",
        identity_json='{"sub": "1001"}',
        auth_time=NOW,
        now=NOW,
        lifetime_seconds=lifetime,
    )


def test_session_is_found_by_its_raw_id_and_stored_hashed(store: Store) -> None:
    raw = new_session(store)
    row = store.get_session(raw, now=NOW + 1, idle_seconds=600)
    assert row is not None
    assert row.id_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert (row.imis_id, row.username, row.auth_time) == ("1001", "jdoe", NOW)
    assert store.get_session(unique("nope"), now=NOW + 1, idle_seconds=600) is None


def test_session_expires_after_its_lifetime(store: Store) -> None:
    raw = new_session(store, lifetime=100)
    assert store.get_session(raw, now=NOW + 59, idle_seconds=1000) is not None
    assert store.get_session(raw, now=NOW + 100, idle_seconds=1000) is None


def test_idle_session_ends_and_activity_keeps_it_alive(store: Store) -> None:
    raw = new_session(store)
    assert store.get_session(raw, now=NOW + 600, idle_seconds=600) is None

    raw = new_session(store)
    # Seen at +300 (recorded), then still alive at +800 though +800 > idle from start.
    seen = store.get_session(raw, now=NOW + 300, idle_seconds=600)
    assert seen is not None
    assert seen.last_seen_at == NOW + 300
    assert store.get_session(raw, now=NOW + 800, idle_seconds=600) is not None


def test_session_is_marked_seen_at_most_once_a_minute(store: Store) -> None:
    raw = new_session(store)
    first = store.get_session(raw, now=NOW + 30, idle_seconds=600)
    assert first is not None
    assert first.last_seen_at == NOW  # not written: less than a minute
    # Idle counts from the last *recorded* visit: NOW, so +600 is idle.
    assert store.get_session(raw, now=NOW + 600, idle_seconds=600) is None


def test_deleting_a_session_returns_it_once(store: Store) -> None:
    raw = new_session(store)
    gone = store.delete_session(raw)
    assert gone is not None
    assert gone.id_hash == hash_token(raw)
    assert store.delete_session(raw) is None
    assert store.get_session(raw, now=NOW, idle_seconds=600) is None


# --- pending requests ----------------------------------------------------------------


def test_pending_request_round_trip_and_expiry(store: Store) -> None:
    params = {"client_id": "portal", "scope": "openid", "state": "xyz"}
    raw = store.create_pending(
        kind="oidc", registration="portal", params=params, now=NOW, ttl_seconds=600
    )
    row = store.get_pending(raw, now=NOW + 599)
    assert row is not None
    assert (row.kind, row.registration, row.id_hash) == ("oidc", "portal", hash_token(raw))
    assert '"state":"xyz"' in row.params_json
    assert store.get_pending(raw, now=NOW + 600) is None

    store.delete_pending(raw)
    assert store.get_pending(raw, now=NOW) is None
    store.delete_pending(raw)  # deleting twice is fine


# --- authorization codes ---------------------------------------------------------------


def new_code(
    store: Store, *, grant_id: str | None = None, session_hash: str | None = None, ttl: int = 60
) -> str:
    return store.create_code(
        grant_id=grant_id or unique("grant"),
        client_id="portal",
        redirect_uri="https://rp.example/cb",
        scope="openid profile",
        nonce="n-0S6_WzA2Mj",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        code_challenge_method="S256",
        session_hash=session_hash,
        imis_id="1001",
        identity_json='{"sub": "1001"}',
        auth_time=NOW,
        now=NOW,
        ttl_seconds=ttl,
    )


def test_code_is_redeemed_once_then_reported_as_replayed(store: Store) -> None:
    raw = new_code(store, grant_id="g-redeem")
    first = store.redeem_code(raw, now=NOW + 1)
    assert first.status == "ok"
    assert first.row is not None
    assert (first.row.grant_id, first.row.redeemed_at) == ("g-redeem", NOW + 1)
    assert first.row.nonce == "n-0S6_WzA2Mj"

    again = store.redeem_code(raw, now=NOW + 2)
    assert again.status == "replayed"
    assert again.row is not None
    assert again.row.grant_id == "g-redeem"


def test_unknown_and_expired_codes_are_invalid(store: Store) -> None:
    assert store.redeem_code(unique("nope"), now=NOW).status == "invalid"
    raw = new_code(store, ttl=60)
    expired = store.redeem_code(raw, now=NOW + 60)
    assert (expired.status, expired.row) == ("invalid", None)


def test_parallel_redemptions_have_exactly_one_winner(store: Store) -> None:
    raw = new_code(store)
    outcomes = parallel(20, lambda: store.redeem_code(raw, now=NOW + 1).status)
    assert outcomes.count("ok") == 1
    assert outcomes.count("replayed") == 19


# --- grants and tokens ------------------------------------------------------------------


def new_grant(
    store: Store,
    *,
    client_id: str = "portal",
    session_hash: str | None = None,
    ttl: int = 3600,
    grant_id: str | None = None,
) -> str:
    grant_id = grant_id or unique("grant")
    store.create_grant(
        grant_id=grant_id,
        client_id=client_id,
        imis_id="1001",
        scope="openid offline_access",
        session_hash=session_hash,
        identity_json='{"sub": "1001"}',
        auth_time=NOW,
        now=NOW,
        ttl_seconds=ttl,
    )
    return grant_id


def issue(
    store: Store, grant_id: str, *, client_id: str = "portal", now: int = NOW
) -> tuple[str, str]:
    access, refresh = store.issue_tokens(
        grant_id=grant_id,
        client_id=client_id,
        scope="openid offline_access",
        now=now,
        access_ttl=600,
        refresh_ttl=86400,
    )
    assert refresh is not None
    return access, refresh


def test_grant_round_trip(store: Store) -> None:
    grant_id = new_grant(store, session_hash="sess-h")
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert (grant.client_id, grant.session_hash, grant.expires_at) == (
        "portal",
        "sess-h",
        NOW + 3600,
    )
    assert grant.revoked_at is None
    assert stored_grant(store, unique("nope")) is None


def test_issued_tokens_are_active_with_their_grant(store: Store) -> None:
    grant_id = new_grant(store)
    access, refresh = issue(store, grant_id)

    found = store.active_token(access, now=NOW + 1)
    assert found is not None
    token, grant = found
    assert (token.kind, token.client_id, token.expires_at) == ("access", "portal", NOW + 600)
    assert token.token_hash == hash_token(access)
    assert grant.id == grant_id

    assert store.active_token(access, now=NOW + 1, kind="refresh") is None
    refresh_found = store.active_token(refresh, now=NOW + 1, kind="refresh")
    assert refresh_found is not None
    assert refresh_found[0].kind == "refresh"
    assert store.active_token(access, now=NOW + 600) is None
    assert store.active_token(unique("nope"), now=NOW) is None


def test_access_only_issue_has_no_refresh_token(store: Store) -> None:
    grant_id = new_grant(store)
    access, refresh = store.issue_tokens(
        grant_id=grant_id,
        client_id="portal",
        scope="openid",
        now=NOW,
        access_ttl=60,
        refresh_ttl=None,
    )
    assert refresh is None
    assert store.active_token(access, now=NOW) is not None


def test_issuing_extends_the_grant_to_cover_its_tokens(store: Store) -> None:
    grant_id = new_grant(store, ttl=60)
    issue(store, grant_id)
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert grant.expires_at == NOW + 86400


def test_tokens_are_refused_for_an_unknown_or_foreign_grant(store: Store) -> None:
    grant_id = new_grant(store)
    with pytest.raises(Conflict):
        issue(store, grant_id, client_id="someone-else")
    with pytest.raises(Conflict):
        issue(store, unique("nope"))


def test_tokens_minted_for_a_revoked_grant_are_never_active(store: Store) -> None:
    # A replay's revocation may land between an exchange's grant and its tokens.
    grant_id = new_grant(store)
    store.revoke_grant_for_replay(grant_id, now=NOW)
    access, refresh = issue(store, grant_id, now=NOW + 1)
    assert store.active_token(access, now=NOW + 1) is None
    assert store.active_token(refresh, now=NOW + 1) is None
    rotation = store.rotate_refresh(refresh, client_id="portal", now=NOW + 2, grace_seconds=5)
    assert rotation.status == "invalid"


def test_refresh_rotation_retires_the_old_token(store: Store) -> None:
    grant_id = new_grant(store)
    _, refresh = issue(store, grant_id)

    rotation = store.rotate_refresh(refresh, client_id="portal", now=NOW + 10, grace_seconds=5)
    assert rotation.status == "ok"
    assert rotation.token is not None
    assert rotation.grant is not None
    assert (rotation.token.rotated_at, rotation.grant.id) == (NOW + 10, grant_id)
    assert store.active_token(refresh, now=NOW + 10) is None

    new_access, new_refresh = issue(store, grant_id, now=NOW + 10)
    assert store.active_token(new_access, now=NOW + 11) is not None
    assert (
        store.rotate_refresh(new_refresh, client_id="portal", now=NOW + 20, grace_seconds=5).status
        == "ok"
    )


def test_refresh_retry_within_grace_gets_ok_again_without_revocation(store: Store) -> None:
    grant_id = new_grant(store)
    _, refresh = issue(store, grant_id)
    assert (
        store.rotate_refresh(refresh, client_id="portal", now=NOW + 10, grace_seconds=5).status
        == "ok"
    )
    first_access, _ = issue(store, grant_id, now=NOW + 10)

    retry = store.rotate_refresh(refresh, client_id="portal", now=NOW + 15, grace_seconds=5)
    assert retry.status == "ok"
    assert retry.grant is not None
    assert retry.grant.id == grant_id
    assert store.active_token(first_access, now=NOW + 15) is not None


def test_refresh_reuse_after_grace_revokes_the_whole_family(store: Store) -> None:
    grant_id = new_grant(store)
    _, refresh = issue(store, grant_id)
    assert (
        store.rotate_refresh(refresh, client_id="portal", now=NOW + 10, grace_seconds=5).status
        == "ok"
    )
    new_access, new_refresh = issue(store, grant_id, now=NOW + 10)

    reuse = store.rotate_refresh(refresh, client_id="portal", now=NOW + 16, grace_seconds=5)
    assert reuse.status == "reused"

    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert grant.revoked_at == NOW + 16
    assert store.active_token(new_access, now=NOW + 17) is None
    assert store.active_token(new_refresh, now=NOW + 17) is None
    assert (
        store.rotate_refresh(new_refresh, client_id="portal", now=NOW + 17, grace_seconds=5).status
        == "invalid"
    )


def test_refresh_by_another_client_is_invalid_and_harmless(store: Store) -> None:
    grant_id = new_grant(store)
    _, refresh = issue(store, grant_id)
    assert (
        store.rotate_refresh(refresh, client_id="thief", now=NOW + 1, grace_seconds=5).status
        == "invalid"
    )
    assert store.active_token(refresh, now=NOW + 1) is not None
    assert (
        store.rotate_refresh(refresh, client_id="portal", now=NOW + 2, grace_seconds=5).status
        == "ok"
    )


def test_refresh_with_access_expired_or_unknown_token_is_invalid(store: Store) -> None:
    grant_id = new_grant(store)
    access, refresh = issue(store, grant_id)
    assert (
        store.rotate_refresh(access, client_id="portal", now=NOW, grace_seconds=5).status
        == "invalid"
    )
    assert (
        store.rotate_refresh(unique("x"), client_id="portal", now=NOW, grace_seconds=5).status
        == "invalid"
    )
    expired = store.rotate_refresh(refresh, client_id="portal", now=NOW + 86400, grace_seconds=5)
    assert expired.status == "invalid"


def test_parallel_refreshes_of_one_token_all_succeed_within_grace(store: Store) -> None:
    grant_id = new_grant(store)
    _, refresh = issue(store, grant_id)
    outcomes = parallel(
        10, lambda: store.rotate_refresh(refresh, client_id="portal", now=NOW + 1, grace_seconds=5)
    )
    assert {o.status for o in outcomes} == {"ok"}
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert grant.revoked_at is None


def successor_pair(
    store: Store, grant_id: str, parent_hash: str, *, now: int
) -> tuple[str, str | None]:
    """Issue the pair replacing the refresh token ``parent_hash``, as the token endpoint does."""
    return store.issue_tokens(
        grant_id=grant_id,
        client_id="portal",
        scope="openid offline_access",
        now=now,
        access_ttl=600,
        refresh_ttl=86400,
        parent_hash=parent_hash,
    )


def exchange(
    store: Store, refresh: str, *, now: int, grace: int, grant_id: str | None = None
) -> tuple[str, str] | str:
    """One refresh as the token endpoint does it: rotate, then issue the successor pair.

    Returns the new ``(access, refresh)``, or the outcome that refused it
    ("reused", "invalid", or "reused-at-issue" when issuing found the family forked)."""
    rotation = store.rotate_refresh(refresh, client_id="portal", now=now, grace_seconds=grace)
    if rotation.status != "ok":
        return rotation.status
    assert rotation.token is not None
    assert rotation.grant is not None
    assert grant_id is None or rotation.grant.id == grant_id
    try:
        access, new_refresh = successor_pair(
            store, rotation.grant.id, rotation.token.token_hash, now=now
        )
    except RefreshReused:
        return "reused-at-issue"
    assert new_refresh is not None
    return access, new_refresh


def live(store: Store, *raws: str, now: int) -> list[str]:
    return [raw for raw in raws if store.active_token(raw, now=now) is not None]


def test_b4_second_exchange_within_grace_revokes_the_first_successor(store: Store) -> None:
    """B4: a retry inside the grace window leaves one live successor, the newest."""
    grant_id = new_grant(store)
    _, refresh = issue(store, grant_id)
    first = exchange(store, refresh, now=NOW + 10, grace=5, grant_id=grant_id)
    second = exchange(store, refresh, now=NOW + 12, grace=5, grant_id=grant_id)
    assert isinstance(first, tuple)
    assert isinstance(second, tuple)

    assert live(store, *first, *second, now=NOW + 13) == list(second)
    # The first successor is refused without harming the family (it was never used).
    assert exchange(store, first[1], now=NOW + 13, grace=5) == "invalid"
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert grant.revoked_at is None
    assert isinstance(exchange(store, second[1], now=NOW + 14, grace=5), tuple)


def test_b4_retry_after_the_successor_was_used_revokes_the_family(store: Store) -> None:
    """B4: within the window, but the client already used the successor: that is a reuse."""
    grant_id = new_grant(store)
    _, refresh = issue(store, grant_id)
    first = exchange(store, refresh, now=NOW + 10, grace=5)
    assert isinstance(first, tuple)
    third = exchange(store, first[1], now=NOW + 11, grace=5)
    assert isinstance(third, tuple)

    assert exchange(store, refresh, now=NOW + 12, grace=5) == "reused"
    assert live(store, *first, *third, now=NOW + 12) == []
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert grant.revoked_at == NOW + 12


def test_b4_issuing_after_a_successor_was_used_revokes_the_family(store: Store) -> None:
    """B4: two exchanges of one token race; the winner's successor is used before the
    other's tokens are issued. Issuing then finds the fork and revokes the family."""
    grant_id = new_grant(store)
    _, refresh = issue(store, grant_id)
    winner = store.rotate_refresh(refresh, client_id="portal", now=NOW + 10, grace_seconds=5)
    late = store.rotate_refresh(refresh, client_id="portal", now=NOW + 10, grace_seconds=5)
    assert (winner.status, late.status) == ("ok", "ok")
    assert winner.token is not None
    assert late.token is not None
    parent = winner.token.token_hash
    access, successor = successor_pair(store, grant_id, parent, now=NOW + 10)
    assert successor is not None
    used = exchange(store, successor, now=NOW + 11, grace=5)
    assert isinstance(used, tuple)

    with pytest.raises(RefreshReused):
        successor_pair(store, grant_id, late.token.token_hash, now=NOW + 11)
    assert live(store, access, successor, *used, now=NOW + 12) == []
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert grant.revoked_at == NOW + 11


def test_b4_parallel_exchanges_without_grace_one_wins_then_the_family_is_revoked(
    store: Store,
) -> None:
    """B4 with grace 0 (the default): of 10 parallel refreshes one is exchanged, the
    other nine are reuses, and reuse revokes the family, the winner's tokens too."""
    grant_id = new_grant(store)
    _, refresh = issue(store, grant_id)
    outcomes = parallel(10, lambda: exchange(store, refresh, now=NOW + 1, grace=0))
    issued = [o for o in outcomes if isinstance(o, tuple)]
    assert len(issued) == 1
    refused = [o for o in outcomes if isinstance(o, str)]
    # The first reuse revokes the grant; later ones find it revoked already.
    assert "reused" in refused
    assert set(refused) <= {"reused", "invalid"}
    assert live(store, refresh, *issued[0], now=NOW + 2) == []
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert grant.revoked_at is not None


def test_b4_parallel_exchanges_within_grace_leave_exactly_one_live_chain(store: Store) -> None:
    """B4 with a grace window: 10 parallel refreshes all get tokens, but only the pair
    issued last stays live (each issue revokes the ones before it, in any process)."""
    grant_id = new_grant(store)
    _, refresh = issue(store, grant_id)
    outcomes = parallel(10, lambda: exchange(store, refresh, now=NOW + 1, grace=5))
    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    pairs = [o for o in outcomes if isinstance(o, tuple)]
    alive = [pair for pair in pairs if live(store, *pair, now=NOW + 2)]
    assert len(alive) == 1
    assert live(store, *alive[0], now=NOW + 2) == list(alive[0])
    dead = [raw for pair in pairs if pair is not alive[0] for raw in pair]
    assert live(store, *dead, now=NOW + 2) == []
    assert isinstance(exchange(store, alive[0][1], now=NOW + 3, grace=5), tuple)
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert grant.revoked_at is None


def test_refresh_pair_may_have_a_narrower_access_token(store: Store) -> None:
    """RFC 6749 §6: the access token of a refresh may be narrowed; the refresh token
    keeps its scope. One call, so both share one parent."""
    grant_id = new_grant(store)
    access, refresh = store.issue_tokens(
        grant_id=grant_id,
        client_id="portal",
        scope="openid",
        refresh_scope="openid offline_access",
        now=NOW,
        access_ttl=600,
        refresh_ttl=86400,
    )
    assert refresh is not None
    found_access = store.active_token(access, now=NOW)
    found_refresh = store.active_token(refresh, now=NOW)
    assert found_access is not None
    assert found_refresh is not None
    assert (found_access[0].scope, found_refresh[0].scope) == ("openid", "openid offline_access")


def test_revoking_an_access_token_revokes_only_it(store: Store) -> None:
    grant_id = new_grant(store)
    access, refresh = issue(store, grant_id)
    assert store.revoke_token(access, client_id="portal", now=NOW + 1) is True
    assert store.active_token(access, now=NOW + 1) is None
    assert store.active_token(refresh, now=NOW + 1) is not None
    assert store.revoke_token(access, client_id="portal", now=NOW + 2) is True  # idempotent


def test_revoking_a_refresh_token_revokes_its_grant(store: Store) -> None:
    grant_id = new_grant(store)
    access, refresh = issue(store, grant_id)
    assert store.revoke_token(refresh, client_id="portal", now=NOW + 1) is True
    assert store.active_token(access, now=NOW + 1) is None
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert grant.revoked_at == NOW + 1


def test_another_clients_token_is_not_revoked(store: Store) -> None:
    grant_id = new_grant(store)
    access, refresh = issue(store, grant_id)
    assert store.revoke_token(refresh, client_id="other", now=NOW + 1) is False
    assert store.revoke_token(access, client_id="other", now=NOW + 1) is False
    assert store.active_token(access, now=NOW + 1) is not None
    assert store.revoke_token(unique("nope"), client_id="portal", now=NOW) is False


def test_revoking_a_grant_ends_all_its_tokens(store: Store) -> None:
    grant_id = new_grant(store)
    first = issue(store, grant_id)
    second = issue(store, grant_id)
    other_access, _ = issue(store, new_grant(store))
    # Through one refresh token of it (RFC 7009), as the bridge revokes a grant.
    assert store.revoke_token(first[1], client_id="portal", now=NOW + 5) is True
    assert all(store.active_token(raw, now=NOW + 6) is None for raw in (*first, *second))
    assert store.active_token(other_access, now=NOW + 6) is not None
    assert store.revoke_token(unique("nope"), client_id="portal", now=NOW) is False


def test_a_replay_revokes_the_grant_even_before_it_is_created(store: Store) -> None:
    # A replayed code is reported before the first redemption recorded its grant.
    raw = new_code(store, grant_id=unique("grant"))
    winner = store.redeem_code(raw, now=NOW + 1)
    replay = store.redeem_code(raw, now=NOW + 1)
    assert winner.row is not None
    assert replay.row is not None
    store.revoke_grant_for_replay(replay.row.grant_id, now=NOW + 1)
    with pytest.raises(Conflict):
        store.create_grant(
            grant_id=winner.row.grant_id,
            client_id="portal",
            imis_id="1001",
            scope="openid",
            session_hash=None,
            identity_json="{}",
            auth_time=NOW,
            now=NOW + 1,
            ttl_seconds=3600,
        )
    with pytest.raises(Conflict):
        issue(store, winner.row.grant_id, now=NOW + 1)  # no grant for this client


def test_a_replay_after_the_exchange_revokes_the_issued_tokens(store: Store) -> None:
    grant_id = new_grant(store)
    access, refresh = issue(store, grant_id)
    store.revoke_grant_for_replay(grant_id, now=NOW + 2)
    assert store.active_token(access, now=NOW + 3) is None
    assert store.active_token(refresh, now=NOW + 3) is None
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert (grant.client_id, grant.revoked_at) == ("portal", NOW + 2)


def test_creating_a_grant_twice_is_a_conflict(store: Store) -> None:
    grant_id = new_grant(store)
    grant = stored_grant(store, grant_id)
    assert grant is not None
    with pytest.raises(Conflict):
        store.create_grant(
            grant_id=grant_id,
            client_id="portal",
            imis_id="1001",
            scope="openid",
            session_hash=None,
            identity_json="{}",
            auth_time=NOW,
            now=NOW,
            ttl_seconds=60,
        )


def test_signing_out_revokes_the_sessions_grants(store: Store) -> None:
    session_hash = hash_token(unique("session"))
    grants = [new_grant(store, session_hash=session_hash) for _ in range(2)]
    tokens = [issue(store, grant_id) for grant_id in grants]
    elsewhere = issue(store, new_grant(store, session_hash=hash_token(unique("session"))))

    assert store.revoke_grants_of_session(session_hash, now=NOW + 5) == 2
    assert all(store.active_token(raw, now=NOW + 6) is None for pair in tokens for raw in pair)
    assert store.active_token(elsewhere[0], now=NOW + 6) is not None
    assert store.revoke_grants_of_session(session_hash, now=NOW + 7) == 0


# --- a token exchange in one transaction (unit of work) ---------------------------------


class Boom(Exception):
    pass


def exchange_code(store: Store, raw_code: str, now: int = NOW + 1) -> tuple[str, str]:
    """What the token endpoint does with a code, in the store's terms."""
    store.begin_unit()
    redeemed = store.redeem_code(raw_code, now=now)
    assert redeemed.status == "ok"
    assert redeemed.row is not None
    return issue(store, new_grant(store, grant_id=redeemed.row.grant_id), now=now)


def test_b1_a_unit_of_work_commits_redemption_grant_and_tokens_together(store: Store) -> None:
    raw = new_code(store)
    issued: list[str] = []

    def fail_after_issuing() -> None:
        with store.unit_of_work():
            access, _ = exchange_code(store, raw)
            assert store.active_token(access, now=NOW + 1) is not None  # seen inside the unit
            issued.append(access)
            raise Boom

    with pytest.raises(Boom):
        fail_after_issuing()
    assert store.active_token(issued[0], now=NOW + 1) is None
    assert store.redeem_code(raw, now=NOW + 2).status == "ok"  # the code was not used up


def test_calls_before_begin_unit_run_in_their_own_transactions(store: Store) -> None:
    key = unique("user")

    def fail_after_counting_twice() -> None:
        with store.unit_of_work():
            store.record_failure([key], now=NOW)
            store.begin_unit()
            store.record_failure([key], now=NOW)
            raise Boom

    with pytest.raises(Boom):
        fail_after_counting_twice()
    assert throttle_state(store, [key], now=NOW, window_seconds=60) == 1


def test_b1_a_replay_waits_for_the_exchange_and_then_revokes_its_tokens(store: Store) -> None:
    raw = new_code(store)
    inside, release = threading.Event(), threading.Event()

    def exchanger() -> tuple[str, str]:
        with store.unit_of_work():
            tokens = exchange_code(store, raw)
            inside.set()
            assert release.wait(10)
        return tokens

    def replay() -> str:
        result = store.redeem_code(raw, now=NOW + 1)
        if result.row is not None:
            store.revoke_grant_for_replay(result.row.grant_id, now=NOW + 1)
        return result.status

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(exchanger)
        assert inside.wait(10)
        second = pool.submit(replay)
        time.sleep(0.3)
        # The code's row (PostgreSQL) or the write lock (SQLite) is held until commit.
        assert not second.done()
        release.set()
        access, refresh = first.result(timeout=10)
        assert second.result(timeout=10) == "replayed"
    assert store.active_token(access, now=NOW + 2) is None
    assert store.active_token(refresh, now=NOW + 2) is None


def test_b4_refreshes_of_one_family_in_units_of_work_take_turns(store: Store) -> None:
    """B4 with one transaction per exchange: a retry of the parent while its successor is
    being exchanged waits for that exchange (the family is locked first, no deadlock),
    then finds the successor used and revokes the family."""
    grant_id = new_grant(store)
    _, parent = issue(store, grant_id)
    first = exchange(store, parent, now=NOW + 10, grace=60, grant_id=grant_id)
    assert isinstance(first, tuple)
    successor = first[1]
    rotated, release = threading.Event(), threading.Event()

    def use_successor() -> str:
        with store.unit_of_work():
            store.begin_unit()
            rotation = store.rotate_refresh(
                successor, client_id="portal", now=NOW + 11, grace_seconds=60
            )
            rotated.set()
            assert release.wait(10)
            assert rotation.token is not None
            successor_pair(store, grant_id, rotation.token.token_hash, now=NOW + 11)
        return rotation.status

    def retry_parent() -> tuple[str, str] | str:
        with store.unit_of_work():
            store.begin_unit()
            return exchange(store, parent, now=NOW + 11, grace=60, grant_id=grant_id)

    with ThreadPoolExecutor(max_workers=2) as pool:
        using = pool.submit(use_successor)
        assert rotated.wait(10)
        retrying = pool.submit(retry_parent)
        time.sleep(0.3)
        release.set()
        assert using.result(timeout=15) == "ok"
        assert retrying.result(timeout=15) == "reused"
    grant = stored_grant(store, grant_id)
    assert grant is not None
    assert grant.revoked_at == NOW + 11


# --- throttling -------------------------------------------------------------------------


def test_failures_are_counted_per_key_and_the_worst_key_counts(store: Store) -> None:
    user, address = unique("user"), unique("ip")
    assert throttle_state(store, [user, address], now=NOW, window_seconds=900) == 0
    for _ in range(3):
        store.record_failure([user, address], now=NOW)
    store.record_failure([user], now=NOW + 1)
    assert throttle_state(store, [user], now=NOW + 2, window_seconds=900) == 4
    assert throttle_state(store, [address], now=NOW + 2, window_seconds=900) == 3
    assert throttle_state(store, [address, user], now=NOW + 2, window_seconds=900) == 4
    assert throttle_state(store, [], now=NOW, window_seconds=900) == 0


def test_failures_outside_the_window_do_not_count(store: Store) -> None:
    user = unique("user")
    store.record_failure([user], now=NOW)
    assert throttle_state(store, [user], now=NOW + 899, window_seconds=900) == 1
    assert throttle_state(store, [user], now=NOW + 900, window_seconds=900) == 0
    # A failure after a quiet spell starts counting again.
    store.record_failure([user], now=NOW + 2000, window_seconds=900)
    assert throttle_state(store, [user], now=NOW + 2000, window_seconds=900) == 1


def test_clearing_failures_resets_the_keys(store: Store) -> None:
    user, address = unique("user"), unique("ip")
    store.record_failure([user, address], now=NOW)
    store.clear_failures([user])
    assert throttle_state(store, [user], now=NOW, window_seconds=900) == 0
    assert throttle_state(store, [address], now=NOW, window_seconds=900) == 1
    store.clear_failures([])


def test_parallel_failures_are_all_counted(store: Store) -> None:
    user, address = unique("user"), unique("ip")
    parallel(20, lambda: store.record_failure([address, user, user], now=NOW))
    assert throttle_state(store, [user], now=NOW, window_seconds=900) == 20
    assert throttle_state(store, [address], now=NOW, window_seconds=900) == 20


# --- audit ------------------------------------------------------------------------------


def test_audit_events_are_listed_newest_first(fresh_store: Store) -> None:
    for i in range(5):
        fresh_store.audit(
            actor="manager",
            action="registration.update",
            target=f"app-{i}",
            detail={"changed": ["name"], "i": i},
            ip="192.0.2.1",
            now=NOW + i,
        )
    events = fresh_store.list_audit(limit=2, offset=1)
    assert [e.target for e in events] == ["app-3", "app-2"]
    assert events[0].detail_json == '{"changed":["name"],"i":3}'
    assert (events[0].actor, events[0].ip, events[0].at) == ("manager", "192.0.2.1", NOW + 3)


def test_audit_events_are_filtered_by_actor_action_and_target(fresh_store: Store) -> None:
    for i, (actor, action, target) in enumerate(
        [
            ("admin:manager", "registration.add", "app-a"),
            ("admin:manager", "registration.edit", "app-a"),
            ("cli:root", "registration.edit", "app-b"),
            ("admin:manager", "registration.remove", "app-b"),
        ]
    ):
        fresh_store.audit(actor=actor, action=action, target=target, now=NOW + i)

    def targets(**filters: str) -> list[tuple[str, str]]:
        return [(e.action, e.target) for e in fresh_store.list_audit(**filters)]

    assert targets(actor="cli:root") == [("registration.edit", "app-b")]
    assert targets(action="registration.edit") == [
        ("registration.edit", "app-b"),
        ("registration.edit", "app-a"),
    ]
    assert targets(actor="admin:manager", target="app-b") == [("registration.remove", "app-b")]
    assert targets(target="nobody") == []
    assert len(fresh_store.list_audit(actor="", action="", target="")) == 4  # empty: no filter


def test_audit_clips_overlong_values_instead_of_failing(store: Store) -> None:
    store.audit(
        actor="x" * 500, action="login.failed", target="t" * 500, detail={}, ip=None, now=NOW
    )
    event = next(e for e in store.list_audit(limit=1000) if e.actor.startswith("x" * 200))
    assert (len(event.actor), len(event.target)) == (200, 200)


# --- secrets at rest and housekeeping ------------------------------------------------------


def test_no_raw_secret_is_ever_stored(fresh_store: Store) -> None:
    store = fresh_store
    session = new_session(store)
    pending = store.create_pending(
        kind="zendesk", registration="desk", params={}, now=NOW, ttl_seconds=60
    )
    code = new_code(store)
    access, refresh = issue(store, new_grant(store))
    throttle_key = unique("user:jdoe")
    store.record_failure([throttle_key], now=NOW)

    dump = all_stored_text(store.db)
    for raw in (session, pending, code, access, refresh, throttle_key):
        assert raw not in dump
        if raw is not throttle_key:
            assert hash_token(raw) in dump


def count_rows(db: Database) -> dict[str, int]:
    with db.engine.connect() as connection:
        return {
            table.name: len(connection.execute(select(table)).all())
            for table in SQLModel.metadata.sorted_tables
        }


def test_d8_purge_removes_only_what_nobody_can_use(fresh_store: Store) -> None:
    store = fresh_store
    day = 24 * 3600
    live_session = new_session(store, lifetime=10 * day)
    new_session(store, lifetime=10)
    store.create_pending(kind="oidc", registration="a", params={}, now=NOW, ttl_seconds=10)
    live_pending = store.create_pending(
        kind="oidc", registration="a", params={}, now=NOW, ttl_seconds=10 * day
    )
    old_code = new_code(store, ttl=10)
    live_grant = new_grant(store, ttl=10 * day)
    old_grant = new_grant(store, ttl=10)
    store.issue_tokens(
        grant_id=old_grant, client_id="portal", scope="s", now=NOW, access_ttl=10, refresh_ttl=None
    )
    live_access, _ = issue(store, live_grant)
    store.record_failure([unique("user")], now=NOW)
    store.audit(actor="manager", action="registration.add", target="a", now=NOW)

    nothing = dict.fromkeys(
        [
            "sessions",
            "pending requests",
            "codes",
            "tokens",
            "grants",
            "throttle counters",
            "sign-in counts",
        ],
        0,
    )
    assert store.purge_expired(now=NOW + 100) == {
        **nothing,
        "sessions": 1,
        "pending requests": 1,
    }
    assert store.redeem_code(old_code, now=NOW + 100).status == "invalid"
    # A day later, the expired code, token, grant and throttle row go too.
    later = NOW + 10 + day
    assert store.purge_expired(now=later) == {
        **nothing,
        "codes": 1,
        "tokens": 1,
        "grants": 1,
        "throttle counters": 1,
    }
    assert store.get_session(live_session, now=later, idle_seconds=2 * day) is not None
    assert store.get_pending(live_pending, now=later) is not None
    assert stored_grant(store, live_grant) is not None
    assert stored_grant(store, old_grant) is None
    assert store.active_token(live_access, now=NOW + 500) is not None
    assert store.purge_expired(now=later) == nothing  # idempotent
    assert count_rows(store.db)["audit_events"] == 1  # the audit trail is kept by design


def test_d8_purge_ends_idle_sessions_and_revoked_families_once_expired(fresh_store: Store) -> None:
    store = fresh_store
    day = 24 * 3600
    idle = new_session(store, lifetime=10 * day)
    active = new_session(store, lifetime=10 * day)
    assert store.get_session(active, now=NOW + 3000, idle_seconds=3600) is not None  # seen
    revoked = new_grant(store, ttl=60)
    _, refresh = issue(store, revoked)  # refresh lives a day: the family's expiry follows
    assert store.revoke_token(refresh, client_id="portal", now=NOW + 1)
    counts = store.purge_expired(now=NOW + 4000, session_idle_seconds=3600)
    assert counts is not None
    assert counts["sessions"] == 1
    assert store.get_session(idle, now=NOW + 3000, idle_seconds=10 * day) is None
    assert store.get_session(active, now=NOW + 3000, idle_seconds=3600) is not None
    # Revoked but not yet expired: kept, so its tokens are still known as revoked.
    assert stored_grant(store, revoked) is not None

    counts = store.purge_expired(now=NOW + 3 * day, session_idle_seconds=3600)
    assert counts is not None
    assert (counts["grants"], counts["tokens"]) == (1, 2)
    assert stored_grant(store, revoked) is None


def test_d8_purge_works_in_batches_until_done(fresh_store: Store) -> None:
    store = fresh_store
    for _ in range(7):
        store.create_pending(kind="oidc", registration="a", params={}, now=NOW, ttl_seconds=1)
    counts = store.purge_expired(now=NOW + 10, batch_size=3)
    assert counts is not None
    assert counts["pending requests"] == 7
    assert count_rows(store.db)["pending_requests"] == 0


def test_d8_only_one_process_purges_at_a_time_on_postgresql(fresh_store: Store) -> None:
    store = fresh_store
    if store.db.backend != "postgresql":
        pytest.skip("SQLite is one host: its writers queue on the file lock")
    store.create_pending(kind="oidc", registration="a", params={}, now=NOW, ttl_seconds=1)
    with store.db.engine.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(:id)"), {"id": repo._PURGE_LOCK_ID})
        assert store.purge_expired(now=NOW + 10) is None
        other.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": repo._PURGE_LOCK_ID})
    counts = store.purge_expired(now=NOW + 10)
    assert counts is not None
    assert counts["pending requests"] == 1


def test_d8_one_client_keeps_only_its_newest_pending_requests(store: Store) -> None:
    me, neighbour = unique("198.51.100.7"), unique("198.51.100.8")
    theirs = store.create_pending(
        kind="oidc", registration="a", params={}, now=NOW, ttl_seconds=600, client=neighbour
    )
    mine = [
        store.create_pending(
            kind="oidc",
            registration="a",
            params={},
            now=NOW + i // 2,  # two per second: ties must never drop the newest
            ttl_seconds=600,
            client=me,
            max_per_client=3,
        )
        for i in range(6)
    ]
    alive = [store.get_pending(raw, now=NOW + 5) is not None for raw in mine]
    assert alive[-1]
    assert alive[:2] == [False, False]  # the oldest second's two are gone first
    assert sum(alive) == 3
    assert store.get_pending(theirs, now=NOW + 5) is not None
