"""Conformance of the admin API token area of :class:`bridge.storage.Store` (SECURITY F4).

Run on SQLite and, with ``BRIDGE_TEST_DATABASE_URL``, on PostgreSQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from bridge.storage import Conflict, Database, Store, hash_token
from bridge.storage.admin_tokens import ADMIN_TOKEN_TOUCH_SECONDS
from tests.storage.test_repo import all_stored_text

NOW = 1_700_000_000


@pytest.fixture
def fresh_store(empty_database_url: str) -> Iterator[Store]:
    with Database(empty_database_url) as database:
        database.upgrade()
        yield Store(database)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_f4_a_token_is_stored_only_as_its_hash(fresh_store: Store) -> None:
    raw, row = fresh_store.create_admin_token("ci", created_by="cli:ops", now=NOW)
    assert raw.startswith("bat_")
    assert len(raw) >= 4 + 43
    assert row.id is not None
    assert (row.name, row.created_by, row.created_at) == (
        "ci",
        "cli:ops",
        NOW,
    )
    dump = all_stored_text(fresh_store.db)
    assert raw not in dump
    assert raw.removeprefix("bat_") not in dump
    assert hash_token(raw) in dump


def test_f4_a_token_is_found_by_its_raw_value_only(store: Store) -> None:
    raw, row = store.create_admin_token(unique("deploy"), created_by="cli:ops", now=NOW)
    found = store.find_admin_token(raw, now=NOW + 1)
    assert found is not None
    assert found.id == row.id
    assert store.find_admin_token(raw + "x", now=NOW) is None
    assert store.find_admin_token(hash_token(raw), now=NOW) is None
    assert store.find_admin_token("", now=NOW) is None


def test_f4_a_revoked_token_is_never_found_and_keeps_its_row(store: Store) -> None:
    name = unique("old")
    raw, row = store.create_admin_token(name, created_by="cli:ops", now=NOW)
    revoked = store.revoke_admin_token(name, now=NOW + 5)
    assert revoked is not None
    assert (revoked.id, revoked.revoked_at) == (row.id, NOW + 5)
    assert store.find_admin_token(raw, now=NOW + 6) is None
    assert store.revoke_admin_token(name, now=NOW + 7) is None  # once
    listed = {t.id: t for t in store.list_admin_tokens()}
    assert listed[row.id].revoked_at == NOW + 5


def test_tokens_are_revoked_by_id_too(store: Store) -> None:
    raw, row = store.create_admin_token(unique("by-id"), created_by="cli:ops", now=NOW)
    assert store.revoke_admin_token(str(row.id), now=NOW) is not None
    assert store.find_admin_token(raw, now=NOW) is None
    assert store.revoke_admin_token("9" * 40, now=NOW) is None  # no such id, no overflow
    assert store.revoke_admin_token(unique("nobody"), now=NOW) is None


def test_a_name_is_unique_among_live_tokens_and_free_again_once_revoked(store: Store) -> None:
    name = unique("ci")
    first, _ = store.create_admin_token(name, created_by="cli:ops", now=NOW)
    with pytest.raises(Conflict, match=name):
        store.create_admin_token(name, created_by="cli:ops", now=NOW)
    store.revoke_admin_token(name, now=NOW + 1)
    second, _row = store.create_admin_token(name, created_by="cli:ops", now=NOW + 2)
    assert first != second
    assert store.find_admin_token(second, now=NOW + 3) is not None
    same_name = [t for t in store.list_admin_tokens() if t.name == name]
    assert [t.revoked_at is None for t in same_name] == [False, True]


def test_use_is_recorded_at_most_once_a_minute(store: Store) -> None:
    raw, row = store.create_admin_token(unique("used"), created_by="cli:ops", now=NOW)
    assert row.last_used_at is None

    def stored_last_used() -> int | None:
        return next(t.last_used_at for t in store.list_admin_tokens() if t.id == row.id)

    assert store.find_admin_token(raw, now=NOW + 10) is not None
    assert stored_last_used() == NOW + 10
    store.find_admin_token(raw, now=NOW + 10 + ADMIN_TOKEN_TOUCH_SECONDS - 1)
    assert stored_last_used() == NOW + 10  # a read stays a read
    found = store.find_admin_token(raw, now=NOW + 10 + ADMIN_TOKEN_TOUCH_SECONDS)
    assert found is not None
    assert found.last_used_at == NOW + 10 + ADMIN_TOKEN_TOUCH_SECONDS
    assert stored_last_used() == NOW + 10 + ADMIN_TOKEN_TOUCH_SECONDS


def test_audit_events_are_filtered_by_actor_action_and_target(fresh_store: Store) -> None:
    for i, (actor, action, target) in enumerate(
        [
            ("api:ci", "registration.add", "portal"),
            ("cli:ops", "registration.add", "desk"),
            ("api:ci", "registration.remove", "portal"),
            ("api:ci", "registration.add", "forum"),
        ]
    ):
        fresh_store.audit(actor=actor, action=action, target=target, now=NOW + i)

    def targets(**filters: str) -> list[str]:
        return [e.target for e in fresh_store.list_audit(**filters)]

    assert targets(actor="api:ci") == ["forum", "portal", "portal"]
    assert targets(action="registration.add") == ["forum", "desk", "portal"]
    assert targets(actor="api:ci", target="portal") == ["portal", "portal"]
    assert targets(actor="api:ci", action="registration.add", target="portal") == ["portal"]
    assert targets(actor="api:") == []  # exact, not a prefix
    assert [e.target for e in fresh_store.list_audit(actor="api:ci", limit=1, offset=1)] == [
        "portal"
    ]
