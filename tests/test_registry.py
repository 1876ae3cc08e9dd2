"""The registry: file registrations over stored ones, unique names, secrets at rest."""

from __future__ import annotations

import json
import secrets
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.app import build_registry
from bridge.errors import BadRequest, InvalidRegistration
from bridge.keys import KeyStore, hash_secret, verify_secret
from bridge.registry import Registry, load_file_registrations
from bridge.settings import ConfigurationError, Problem, load_settings
from bridge.storage import Conflict, Database, Store
from tests.conftest import DatabaseFactory
from tests.support.profiles import PROFILES

ZENDESK_SECRET = "zendesk-shared-secret-" + "a" * 24


@pytest.fixture(scope="module")
def own_database_url(database_factory: DatabaseFactory) -> str:
    """This module's own database: its secrets are encrypted with its own keyring,
    which no other module's registry could decrypt."""
    return database_factory.migrated_url()


@pytest.fixture
def store(own_database_url: str) -> Iterator[Store]:
    with Database(own_database_url) as database:
        yield Store(database)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore.load_or_create(tmp_path_factory.mktemp("keys"))


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def file_config(folder: Path, registrations: dict[str, str]) -> Path:
    (folder / "registrations").mkdir(parents=True)
    (folder / "bridge.toml").write_text(
        'issuer = "https://sso.example.org"\n[imis]\nbase_url = "https://example.imiscloud.com"\n'
    )
    for slug, text in registrations.items():
        (folder / "registrations" / f"{slug}.toml").write_text(textwrap.dedent(text))
    return folder


def oidc_file(client_id: str) -> str:
    return f"""\
        name = "File Portal"
        profile = "oidc"
        client_id = "{client_id}"
        redirect_uris = ["https://portal.example.org/callback"]
        """


def registry_with_files(
    tmp_path: Path, store: Store, keys: KeyStore, files: dict[str, str]
) -> Registry:
    settings = load_settings(file_config(tmp_path / "config", files), {})
    return build_registry(settings, store, keys)


def oidc(client_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "Stored Portal",
        "profile": "oidc",
        "client_id": client_id,
        "redirect_uris": ["https://app.example.org/cb"],
        **extra,
    }


def zendesk(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Helpdesk",
        "profile": "zendesk",
        "subdomain": "contoso",
        "shared_secret": ZENDESK_SECRET,
        **extra,
    }


@pytest.fixture
def file_slug() -> str:
    return unique("file")


@pytest.fixture
def registry(tmp_path: Path, store: Store, keys: KeyStore, file_slug: str) -> Registry:
    return registry_with_files(tmp_path, store, keys, {file_slug: oidc_file(file_slug)})


# --- files are read-only ------------------------------------------------------------------


def test_file_registration_is_found_and_marked_read_only(
    registry: Registry, file_slug: str
) -> None:
    reg = registry.get(file_slug)
    assert reg is not None
    assert reg.read_only
    assert reg.source == "file"
    assert registry.by_client_id(file_slug) == reg


def test_file_registration_cannot_be_added_edited_or_removed(
    registry: Registry, file_slug: str
) -> None:
    with pytest.raises(BadRequest, match="read-only"):
        registry.add(file_slug, oidc(unique("c")), actor="test")
    with pytest.raises(BadRequest, match="read-only"):
        registry.edit(file_slug, {"name": "Renamed"}, actor="test")
    with pytest.raises(BadRequest, match="read-only"):
        registry.remove(file_slug)
    reg = registry.get(file_slug)
    assert reg is not None
    assert reg.name == "File Portal"


# --- unique slug and client_id ------------------------------------------------------------


def test_stored_registration_cannot_take_a_file_client_id(
    registry: Registry, file_slug: str, store: Store
) -> None:
    slug = unique("stored")
    with pytest.raises(BadRequest, match=f"{file_slug}.toml"):
        registry.add(slug, oidc(file_slug), actor="test")
    assert store.get_registration(slug) is None


def test_stored_slug_is_unique(registry: Registry) -> None:
    slug = unique("stored")
    registry.add(slug, zendesk(), actor="test")
    with pytest.raises(Conflict, match="already exists"):
        registry.add(slug, zendesk(), actor="test")


def test_stored_client_id_is_unique(registry: Registry) -> None:
    client_id = unique("client")
    first, second = unique("a"), unique("b")
    registry.add(first, oidc(client_id), actor="test")
    with pytest.raises(BadRequest, match=f"already used by '{first}'"):
        registry.add(second, oidc(client_id), actor="test")
    registry.add(second, oidc(unique("client")), actor="test")
    with pytest.raises(BadRequest, match=f"already used by '{first}'"):
        registry.edit(second, {"client_id": client_id}, actor="test")


def test_new_file_clashing_with_a_stored_slug_stops_start_up(
    tmp_path: Path, registry: Registry, store: Store, keys: KeyStore
) -> None:
    slug = unique("taken")
    registry.add(slug, oidc(unique("c")), actor="test")
    with pytest.raises(ConfigurationError) as caught:
        registry_with_files(tmp_path / "next", store, keys, {slug: oidc_file(unique("c"))})
    [problem] = caught.value.problems
    assert problem.file.endswith(f"registrations/{slug}.toml")
    assert f"slug {slug!r} is also a stored registration" in problem.reason
    assert f"bridge registrations remove {slug}" in problem.reason


def test_new_file_clashing_with_a_stored_client_id_stops_start_up(
    tmp_path: Path, registry: Registry, store: Store, keys: KeyStore
) -> None:
    slug, client_id = unique("stored"), unique("client")
    registry.add(slug, oidc(client_id), actor="test")
    file_slug = unique("file")
    with pytest.raises(ConfigurationError) as caught:
        registry_with_files(tmp_path / "next", store, keys, {file_slug: oidc_file(client_id)})
    [problem] = caught.value.problems
    assert problem.file.endswith(f"{file_slug}.toml")
    assert problem.key == "client_id"
    assert f"stored registration {slug!r}" in problem.reason


def test_file_problems_are_collected_for_start_up() -> None:
    from bridge.settings import RegistrationSource

    sink: list[Problem] = []
    sources = [
        RegistrationSource("a", "a.toml", {"profile": "oidc", "name": "A"}),
        RegistrationSource("b", "b.toml", {"profile": "zendesk", "name": "B"}),
    ]
    assert load_file_registrations(sources, sink, profiles=PROFILES, hash_secret=hash_secret) == []
    assert sorted((p.file, p.key) for p in sink) == [
        ("a.toml", "client_id"),
        ("a.toml", "redirect_uris"),
        ("b.toml", "shared_secret"),
        ("b.toml", "subdomain"),
    ]


# --- stored secrets -------------------------------------------------------------------------


def test_oidc_client_secret_is_stored_hashed(registry: Registry, store: Store) -> None:
    slug, secret = unique("portal"), secrets.token_urlsafe(32)
    reg = registry.add(slug, oidc(unique("c"), client_secret=secret), actor="test")
    row = store.get_registration(slug)
    assert row is not None
    assert row.secret_hash is not None
    assert secret not in row.model_dump_json()
    assert verify_secret(secret, row.secret_hash)
    assert not reg.options.is_public


def test_public_oidc_client_has_no_secret(registry: Registry, store: Store) -> None:
    slug = unique("spa")
    assert registry.add(slug, oidc(unique("c")), actor="test").options.is_public
    row = store.get_registration(slug)
    assert row is not None
    assert row.secret_hash is None
    assert row.secret_encrypted is None


def test_zendesk_secret_is_stored_encrypted(
    registry: Registry, store: Store, keys: KeyStore
) -> None:
    slug = unique("helpdesk")
    registry.add(slug, zendesk(), actor="test")
    row = store.get_registration(slug)
    assert row is not None
    assert row.secret_encrypted is not None
    assert ZENDESK_SECRET not in row.model_dump_json()
    assert keys.decrypt_secret(row.secret_encrypted) == ZENDESK_SECRET
    reg = registry.get(slug)
    assert reg is not None
    assert reg.options.shared_secret == ZENDESK_SECRET


def test_secret_hash_cannot_be_given_instead_of_a_secret(registry: Registry) -> None:
    slug = unique("portal")
    with pytest.raises(InvalidRegistration, match="client_secret_hash"):
        registry.add(slug, oidc(unique("c"), client_secret_hash=hash_secret("x")), actor="t")
    registry.add(slug, oidc(unique("c")), actor="test")
    with pytest.raises(InvalidRegistration, match="client_secret_hash"):
        registry.edit(slug, {"client_secret_hash": hash_secret("x" * 20)}, actor="test")


def test_edit_keeps_the_secret_unless_a_new_one_is_given(registry: Registry) -> None:
    slug, old, new = unique("portal"), "old-secret-0123456789", "new-secret-0123456789"
    registry.add(slug, oidc(unique("c"), client_secret=old), actor="test")
    edited = registry.edit(slug, {"name": "Renamed"}, actor="test")
    assert edited.name == "Renamed"
    stored_hash = edited.options.client_secret_hash
    assert stored_hash is not None
    assert verify_secret(old, stored_hash)
    rotated = registry.edit(slug, {"client_secret": new}, actor="test")
    rotated_hash = rotated.options.client_secret_hash
    assert rotated_hash is not None
    assert verify_secret(new, rotated_hash)
    assert not verify_secret(old, rotated_hash)


def test_edit_keeps_the_zendesk_secret(registry: Registry) -> None:
    slug = unique("helpdesk")
    registry.add(slug, zendesk(), actor="test")
    edited = registry.edit(slug, {"brand_hosts": ["help.contoso.com"]}, actor="test")
    assert edited.options.shared_secret == ZENDESK_SECRET
    assert edited.options.brand_hosts == ("help.contoso.com",)


def test_new_zendesk_secret_is_used_on_the_next_lookup_everywhere(
    registry: Registry, tmp_path: Path, store: Store, keys: KeyStore
) -> None:
    slug, new = unique("helpdesk"), "rotated-zendesk-secret-" + "b" * 20
    registry.add(slug, zendesk(), actor="test")
    before = registry.get(slug)
    assert before is not None
    assert before.options.shared_secret == ZENDESK_SECRET
    # Another process: its own registry over the same database.
    other = registry_with_files(tmp_path / "other", store, keys, {})
    registry.edit(slug, {"shared_secret": new}, actor="test")
    for reader in (registry, other):
        after = reader.get(slug)
        assert after is not None
        assert after.options.shared_secret == new


def test_edit_removes_a_key_given_as_none(registry: Registry) -> None:
    slug = unique("portal")
    registry.add(slug, oidc(unique("c"), access={"member_types": ["REG"]}), actor="test")
    edited = registry.edit(slug, {"access": None}, actor="test")
    assert edited.access.is_open


def test_profile_cannot_change(registry: Registry) -> None:
    slug = unique("helpdesk")
    registry.add(slug, zendesk(), actor="test")
    with pytest.raises(BadRequest, match="profile"):
        registry.edit(slug, {"profile": "oidc"}, actor="test")


def test_invalid_edit_is_refused_and_nothing_changes(registry: Registry) -> None:
    slug = unique("portal")
    registry.add(slug, oidc(unique("c")), actor="test")
    with pytest.raises(InvalidRegistration, match="redirect_uris"):
        registry.edit(slug, {"redirect_uris": ["http://evil.example.org/cb"]}, actor="test")
    reg = registry.get(slug)
    assert reg is not None
    assert reg.options.redirect_uris == ("https://app.example.org/cb",)


def test_to_data_never_holds_a_secret(registry: Registry, file_slug: str) -> None:
    oidc_secret = "portal-secret-" + secrets.token_hex(8)
    a, b = unique("portal"), unique("helpdesk")
    registry.add(a, oidc(unique("c"), client_secret=oidc_secret), actor="test")
    registry.add(b, zendesk(), actor="test")
    for slug in (a, b, file_slug):
        reg = registry.get(slug)
        assert reg is not None
        text = json.dumps(reg.to_data())
        assert oidc_secret not in text
        assert ZENDESK_SECRET not in text
        assert "hmac-sha256" not in text
        assert "secret_hash" not in text
    zendesk_data = registry.get(b).to_data()  # type: ignore[union-attr]
    assert zendesk_data["shared_secret_set"] is True
    assert registry.get(a).to_data()["client_type"] == "confidential"  # type: ignore[union-attr]


def test_all_lists_file_and_stored_registrations_by_slug(
    registry: Registry, file_slug: str
) -> None:
    slug = unique("stored")
    registry.add(slug, zendesk(), actor="test")
    everything = registry.all()
    assert [r.slug for r in everything] == sorted(r.slug for r in everything)
    sources = {r.slug: r.source for r in everything}
    assert sources[file_slug] == "file"
    assert sources[slug] == "database"


def test_remove_deletes_a_stored_registration(registry: Registry) -> None:
    slug = unique("stored")
    registry.add(slug, zendesk(), actor="test")
    assert registry.remove(slug)
    assert registry.get(slug) is None
    assert not registry.remove(slug)


def test_hand_edited_invalid_row_is_refused_loudly(registry: Registry, store: Store) -> None:
    slug = unique("portal")
    registry.add(slug, oidc(unique("c")), actor="test")
    row = store.get_registration(slug)
    assert row is not None
    options = json.loads(row.options_json)
    options["redirect_uris"] = ["http://evil.example.org/cb"]
    row.options_json = json.dumps(options)
    store.update_registration(row)
    try:
        with pytest.raises(InvalidRegistration, match="redirect_uris"):
            registry.get(slug)
    finally:  # the database is shared by the whole run: listing must keep working
        store.delete_registration(slug)


def test_secret_the_keyring_cannot_decrypt_names_the_remedy(
    registry: Registry, tmp_path: Path, store: Store
) -> None:
    slug = unique("helpdesk")
    registry.add(slug, zendesk(), actor="test")
    elsewhere = registry_with_files(
        tmp_path / "elsewhere", store, KeyStore.load_or_create(tmp_path / "other-keys"), {}
    )
    try:
        with pytest.raises(InvalidRegistration, match="cannot be decrypted") as caught:
            elsewhere.get(slug)
        assert f"rotate-secret {slug} --secret-stdin" in caught.value.message
        unreadable: list[Problem] = []
        listed = elsewhere.all(unreadable=unreadable)
        assert slug not in {r.slug for r in listed}
        assert f"registration {slug}" in {p.file for p in unreadable}
        assert all("cannot be decrypted" in p.reason for p in unreadable)
        with pytest.raises(InvalidRegistration):
            elsewhere.all()
        new = "re-pasted-zendesk-secret-" + "c" * 20
        assert (
            elsewhere.edit(slug, {"shared_secret": new}, actor="test").options.shared_secret == new
        )
    finally:
        store.delete_registration(slug)


# --- kept in memory -------------------------------------------------------------------------


class SpyStore:
    """The store, counting the calls the registry makes to it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


def spied_registry(
    store: Store, keys: KeyStore, *, cache_seconds: float = 60.0, cache_size: int = 1000
) -> tuple[Registry, SpyStore]:
    spy = SpyStore(store)
    registry = Registry(
        [],
        spy,
        profiles=PROFILES,
        hash_secret=hash_secret,
        encrypt=keys.encrypt_secret,
        decrypt=keys.decrypt_secret,
        cache_seconds=cache_seconds,
        cache_size=cache_size,
    )
    return registry, spy


def test_a_stored_registration_is_read_once_by_slug_and_once_by_client_id(
    store: Store, keys: KeyStore
) -> None:
    registry, spy = spied_registry(store, keys)
    slug, client_id = unique("helpdesk"), unique("c")
    registry.add(slug, oidc(client_id), actor="test")
    spy.calls.clear()
    for _ in range(5):
        assert registry.get(slug) == registry.by_client_id(client_id) is not None
    assert spy.calls == {
        "registrations_generation": 1,
        "get_registration": 1,
        "get_registration_by_client_id": 1,
    }
    assert registry.in_memory(slug=slug) == (True, registry.get(slug))
    assert registry.in_memory(client_id=client_id) == (True, registry.get(slug))


def test_an_unknown_client_id_is_remembered_as_unknown(store: Store, keys: KeyStore) -> None:
    registry, spy = spied_registry(store, keys)
    stranger = unique("stranger")
    for _ in range(5):
        assert registry.by_client_id(stranger) is None
        assert registry.get(stranger) is None
    assert spy.calls["get_registration_by_client_id"] == 1
    assert spy.calls["get_registration"] == 1
    assert registry.in_memory(client_id=stranger) == (True, None)
    assert registry.in_memory(client_id=unique("never-asked")) == (False, None)


def test_random_client_ids_cannot_grow_the_memory_kept(store: Store, keys: KeyStore) -> None:
    registry, spy = spied_registry(store, keys, cache_size=10)
    strangers = [unique("stranger") for _ in range(30)]
    for client_id in strangers:
        registry.by_client_id(client_id)
    assert len(registry._cache) == 10
    spy.calls.clear()
    registry.by_client_id(strangers[-1])  # the newest are kept
    assert spy.calls["get_registration_by_client_id"] == 0
    registry.by_client_id(strangers[0])  # the oldest went first
    assert spy.calls["get_registration_by_client_id"] == 1


def test_an_unreadable_row_is_not_kept(
    registry: Registry, tmp_path: Path, store: Store, keys: KeyStore
) -> None:
    slug = unique("helpdesk")
    registry.add(slug, zendesk(), actor="test")
    elsewhere, spy = spied_registry(store, KeyStore.load_or_create(tmp_path / "other-keys"))
    try:
        for _ in range(2):
            with pytest.raises(InvalidRegistration, match="cannot be decrypted"):
                elsewhere.get(slug)
        assert spy.calls["get_registration"] == 2
    finally:
        store.delete_registration(slug)


def test_a_change_in_this_process_is_seen_at_once(store: Store, keys: KeyStore) -> None:
    registry, _ = spied_registry(store, keys, cache_seconds=60)
    slug, client_id = unique("helpdesk"), unique("c")
    assert registry.get(slug) is None
    assert registry.by_client_id(client_id) is None
    registry.add(slug, oidc(client_id), actor="test")
    assert registry.by_client_id(client_id) == registry.get(slug) is not None
    registry.edit(slug, {"name": "Renamed"}, actor="test")
    assert registry.get(slug).name == "Renamed"  # type: ignore[union-attr]
    assert registry.by_client_id(client_id).name == "Renamed"  # type: ignore[union-attr]
    registry.remove(slug)
    assert registry.get(slug) is None
    assert registry.by_client_id(client_id) is None


def test_a_change_in_another_process_is_seen_once_the_generation_is_read(
    store: Store, keys: KeyStore
) -> None:
    writer, _ = spied_registry(store, keys)
    reader, spy = spied_registry(store, keys, cache_seconds=0.2)
    slug, new = unique("helpdesk"), "rotated-zendesk-secret-" + "d" * 20
    writer.add(slug, zendesk(), actor="test")
    try:
        assert reader.get(slug).options.shared_secret == ZENDESK_SECRET  # type: ignore[union-attr]
        writer.edit(slug, {"shared_secret": new}, actor="test")
        time.sleep(0.25)
        assert reader.get(slug).options.shared_secret == new  # type: ignore[union-attr]
        assert spy.calls["get_registration"] == 2
    finally:
        writer.remove(slug)
    time.sleep(0.25)
    assert reader.get(slug) is None


def test_an_unchanged_generation_keeps_what_is_kept(store: Store, keys: KeyStore) -> None:
    registry, spy = spied_registry(store, keys, cache_seconds=0)
    slug = unique("helpdesk")
    registry.add(slug, zendesk(), actor="test")
    spy.calls.clear()
    for _ in range(3):
        registry.get(slug)
    assert spy.calls == {"registrations_generation": 3, "get_registration": 1}


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "Stored\x00Portal"},
        {"redirect_uris": ["https://app.example.org/cb\x00"]},
        {"claims": {"organization\x00": "organization_name"}},
        {"access": {"member_types": ["REG\x00"]}},
    ],
)
def test_g5_a_value_holding_nul_is_refused(registry: Registry, changes: dict[str, Any]) -> None:
    """On every backend: PostgreSQL refuses NUL in text, so an admin form or the API
    that let one through got a 500 there instead of the form's 400."""
    data = oidc(unique("c"), **changes)
    with pytest.raises(InvalidRegistration, match="NUL"):
        registry.add(unique("nul"), data, actor="test")
    slug = unique("nul")
    registry.add(slug, oidc(unique("c")), actor="test")
    with pytest.raises(InvalidRegistration, match="NUL"):
        registry.edit(slug, changes, actor="test")
