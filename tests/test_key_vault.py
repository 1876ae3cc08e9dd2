"""Keys in the database (``key_store = "database"``), sealed with a key-encryption key
(SECURITY C3, G4): the sealing, two processes' stores on one database, rotation
coordinated through the database, ``bridge keys migrate``, and the settings."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bridge import cli
from bridge.keys import (
    KEYRING,
    MANIFEST,
    PEER_SILENCE_SECONDS,
    Kek,
    KeyStore,
    KeyStoreError,
    SealedVault,
)
from bridge.settings import ConfigurationError, load_settings
from bridge.storage import Database
from bridge.storage.key_vault import DatabaseVault
from tests.conftest import DatabaseFactory
from tests.support.bridge import write_config

ISSUER = "https://sso.example.org"


def new_kek() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def vault_db(database_factory: DatabaseFactory) -> Iterator[Database]:
    """A database of its own: the key vault is one per database."""
    with Database(database_factory.migrated_url()) as db:
        yield db


def sealed(db: Database, kek: bytes) -> SealedVault:
    return SealedVault(DatabaseVault(db), Kek(kek))


def claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": "rp", "sub": "1", "iat": now, "exp": now + 300}


def stored_blobs(db: Database) -> dict[str, bytes]:
    with db.session(write=False) as s:
        rows = s.connection().execute(text("SELECT name, sealed FROM key_vault")).all()
    return {name: bytes(blob) for name, blob in rows}


# --- sealing ----------------------------------------------------------------------------


def test_c3_a_sealed_blob_opens_only_with_its_kek_under_its_name() -> None:
    kek, other = Kek(new_kek()), Kek(new_kek())
    blob = kek.seal("RS256-x.pem", b"private key")
    assert b"private key" not in blob
    assert kek.open("RS256-x.pem", blob, "database") == b"private key"
    with pytest.raises(KeyStoreError, match=f"sealed with key-encryption key {kek.id.hex()}"):
        other.open("RS256-x.pem", blob, "database")
    with pytest.raises(KeyStoreError, match="altered"):
        kek.open("ES256-y.pem", blob, "database")  # moved to another name
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(KeyStoreError, match="altered"):
        kek.open("RS256-x.pem", tampered, "database")
    with pytest.raises(KeyStoreError, match="not a blob sealed"):
        kek.open("RS256-x.pem", b"\x02junk", "database")
    assert "private" not in repr(kek)
    assert kek.id.hex() in repr(kek)


def test_a_kek_is_32_bytes() -> None:
    with pytest.raises(ValueError):
        Kek(b"short")


# --- the store on the database ----------------------------------------------------------


def test_c3_keys_in_the_database_are_sealed_and_shared(vault_db: Database) -> None:
    kek = new_kek()
    first = KeyStore.load_or_create(sealed(vault_db, kek))
    blobs = stored_blobs(vault_db)
    assert {MANIFEST, KEYRING} <= set(blobs)
    assert sum(name.endswith(".pem") for name in blobs) == 2  # RS256 and ES256
    for blob in blobs.values():  # nothing in clear: no PEM, no JSON, no Fernet key
        assert b"PRIVATE KEY" not in blob
        assert b'"keys"' not in blob
    for entry in first.keyring_ids():
        assert all(entry.encode() not in blob for blob in blobs.values())

    # Another process on the same database: the same keys, not new ones.
    with Database(str(vault_db.engine.url.render_as_string(hide_password=False))) as again:
        second = KeyStore.load_or_create(sealed(again, kek))
        assert second.jwks() == first.jwks()
        token = first.sign_jwt(claims())
        assert second.verify_jwt(token, audience="rp", issuer=ISSUER)["sub"] == "1"
        assert second.decrypt_secret(first.encrypt_secret("s3cret")) == "s3cret"
        with pytest.raises(KeyStoreError, match="configured one is"):
            KeyStore.open(sealed(again, new_kek()))  # the wrong KEK opens nothing


def test_g4_processes_starting_together_make_one_key_set(vault_db: Database) -> None:
    kek = new_kek()
    url = vault_db.engine.url.render_as_string(hide_password=False)
    stores: list[KeyStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with Database(url) as db:
                stores.append(KeyStore.load_or_create(sealed(db, kek)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len({str(s.jwks()) for s in stores}) == 1
    assert sum(name.endswith(".pem") for name in stored_blobs(vault_db)) == 2


def test_c3_a_rotation_at_one_process_is_seen_by_another_at_its_next_poll(
    vault_db: Database,
) -> None:
    kek = new_kek()
    one = KeyStore.load_or_create(sealed(vault_db, kek))
    two = KeyStore.load_or_create(sealed(vault_db, kek))
    assert two.reload_if_changed() is False  # one primary-key read, nothing new
    result = one.rotate("RS256", retire_after_seconds=600, immediate=True)
    assert result.promoted
    assert two.reload_if_changed() is True
    assert two.jwks() == one.jwks()
    token = one.sign_jwt(claims())
    assert two.verify_jwt(token, audience="rp", issuer=ISSUER)["sub"] == "1"


def test_c3_g4_a_key_signs_only_once_every_serving_process_publishes_it(
    vault_db: Database,
) -> None:
    kek = new_kek()
    a = KeyStore.load_or_create(sealed(vault_db, kek), publish_lead_seconds=0)
    b = KeyStore.load_or_create(sealed(vault_db, kek), publish_lead_seconds=0)
    a.acknowledge("a")
    b.acknowledge("b")
    old = a.signing_key()[0]

    published = a.rotate("RS256", retire_after_seconds=600)
    assert published.published
    assert not published.promoted
    # The lead time is over (0 s), but b has not reloaded: a does not promote.
    waiting = a.rotate("RS256", retire_after_seconds=600)
    assert waiting.promoted is None
    assert waiting.waiting_for == ("b",)
    assert "1 has not yet: b." in waiting.describe()
    assert waiting.ready_at is None  # the lead is over: only b is awaited
    assert a.signing_key()[0] == old

    b.reload_if_changed()
    b.acknowledge("b")
    promoted = a.rotate("RS256", retire_after_seconds=600)
    assert promoted.promoted == published.published
    b.reload_if_changed()
    token = a.sign_jwt(claims())
    assert b.verify_jwt(token, audience="rp", issuer=ISSUER)["sub"] == "1"


def test_c3_an_immediate_rotation_waits_for_the_other_processes(vault_db: Database) -> None:
    kek = new_kek()
    a = KeyStore.load_or_create(sealed(vault_db, kek))
    b = KeyStore.load_or_create(sealed(vault_db, kek))
    a.acknowledge("a")
    b.acknowledge("b")
    stop = threading.Event()

    def follow() -> None:  # what housekeeping does at b, faster
        while not stop.is_set():
            if b.reload_if_changed():
                b.acknowledge("b")
            time.sleep(0.05)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        result = a.rotate("RS256", retire_after_seconds=600, immediate=True)
    finally:
        stop.set()
        follower.join(10)
    assert result.published
    assert result.promoted == result.published
    assert result.promoted in {k["kid"] for k in b.jwks()["keys"]}


def test_c3_an_immediate_rotation_does_not_promote_past_a_process_that_never_answers(
    vault_db: Database,
) -> None:
    kek = new_kek()
    a = KeyStore.load_or_create(sealed(vault_db, kek))
    KeyStore.load_or_create(sealed(vault_db, kek)).acknowledge("stuck")
    old = a.signing_key()[0]
    result = a.rotate("RS256", retire_after_seconds=600, immediate=True, wait_seconds=0.5)
    assert result.published
    assert result.promoted is None
    assert result.waiting_for == ("stuck",)
    assert a.signing_key()[0] == old  # published, not signing


def test_c3_a_silent_or_stopped_process_no_longer_holds_a_rotation_back(
    vault_db: Database,
) -> None:
    kek = new_kek()
    clock_now = [datetime.now(UTC)]
    a = KeyStore.load_or_create(
        sealed(vault_db, kek), publish_lead_seconds=0, clock=lambda: clock_now[0]
    )
    gone = KeyStore.load_or_create(sealed(vault_db, kek))
    gone.acknowledge("crashed")
    stopped = KeyStore.load_or_create(sealed(vault_db, kek))
    stopped.acknowledge("stopped")
    stopped.forget("stopped")  # a clean shutdown signs off
    a.rotate("RS256", retire_after_seconds=600)
    assert a.rotate("RS256", retire_after_seconds=600).waiting_for == ("crashed",)
    clock_now[0] += timedelta(seconds=PEER_SILENCE_SECONDS + 30)  # its clock started first
    assert a.rotate("RS256", retire_after_seconds=600).promoted


def test_a_folder_records_no_peers_and_keeps_its_lead_time(tmp_path: Path) -> None:
    store = KeyStore.load_or_create(tmp_path / "keys", publish_lead_seconds=0)
    store.acknowledge("me")
    assert store.vault.peers(datetime.now(UTC) - timedelta(hours=1)) == {}
    store.rotate("RS256", retire_after_seconds=60)
    assert store.rotate("RS256", retire_after_seconds=60).promoted


# --- bridge keys migrate ------------------------------------------------------------------


def kek_text(kek: bytes) -> str:
    return base64.b64encode(kek).decode()


def config_for(
    folder: Path, database_url: str, *, key_store: str = "files", kek: bytes | None = None
) -> Path:
    extra = f'key_store = "{key_store}"\n'
    if kek is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "kek").write_text(kek_text(kek) + "\n")
        extra += 'kek_file = "kek"\n'
    return write_config(
        folder,
        issuer=ISSUER,
        database_url=database_url,
        imis_url="https://example.imiscloud.com",
        extra=extra,
    )


def test_c3_keys_migrate_copies_the_folder_into_the_database_once(
    tmp_path: Path,
    database_factory: DatabaseFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = database_factory.migrated_url()
    kek = new_kek()
    folder = config_for(tmp_path / "config", url, kek=kek)
    files = KeyStore.load_or_create(folder / "keys")
    files.rotate("RS256", retire_after_seconds=600)  # a pending next key travels too
    token = files.sign_jwt(claims())
    secret = files.encrypt_secret("zendesk shared secret")

    assert cli.main(["keys", "migrate", "--config", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Copied 3 signing key(s) and the keyring (1 key(s))")
    assert Kek(kek).id.hex() in out
    assert 'key_store = "database"' in out
    assert kek_text(kek) not in out

    with Database(url) as db:
        moved = KeyStore.open(sealed(db, kek))
    assert moved.jwks() == files.jwks()
    assert moved.verify_jwt(token, audience="rp", issuer=ISSUER)["sub"] == "1"
    assert moved.decrypt_secret(secret) == "zendesk shared secret"

    assert cli.main(["keys", "migrate", "--config", str(folder), "--json"]) == 0
    assert '"copied": false' in capsys.readouterr().out  # a second run changes nothing

    # The bridge now reads its keys from the database: `bridge keys list` shows them.
    config_for(folder, url, key_store="database", kek=kek)
    assert cli.main(["keys", "list", "--config", str(folder)]) == 0
    listed = capsys.readouterr().out
    assert all(k["kid"] in listed for k in files.jwks()["keys"])


def test_keys_migrate_refuses_a_database_that_holds_other_keys(
    tmp_path: Path, database_factory: DatabaseFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    url = database_factory.migrated_url()
    kek = new_kek()
    with Database(url) as db:
        KeyStore.load_or_create(sealed(db, kek))  # a bridge started on the database already
        before = stored_blobs(db)
        folder = config_for(tmp_path / "config", url, kek=kek)
        KeyStore.load_or_create(folder / "keys")
        assert cli.main(["keys", "migrate", "--config", str(folder)]) == 1
        assert "already holds other keys" in capsys.readouterr().err
        assert stored_blobs(db) == before


def test_keys_migrate_needs_a_kek(
    tmp_path: Path, database_factory: DatabaseFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = config_for(tmp_path / "config", database_factory.migrated_url())
    KeyStore.load_or_create(folder / "keys")
    assert cli.main(["keys", "migrate", "--config", str(folder)]) == 1
    assert "BRIDGE_KEK" in capsys.readouterr().err


def test_keys_rotate_on_the_database_from_the_command_line(
    tmp_path: Path, database_factory: DatabaseFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    url = database_factory.migrated_url()
    kek = new_kek()
    folder = config_for(tmp_path / "config", url, key_store="database", kek=kek)
    with Database(url) as db:
        store = KeyStore.load_or_create(sealed(db, kek))
        assert cli.main(["keys", "rotate", "--config", str(folder), "--publish-lead", "0"]) == 0
        assert "Published new RS256 key" in capsys.readouterr().out
        assert cli.main(["keys", "rotate", "--config", str(folder), "--publish-lead", "0"]) == 0
        assert "now signs new tokens" in capsys.readouterr().out
        assert store.reload_if_changed()


# --- settings -----------------------------------------------------------------------------


def test_settings_need_a_kek_for_the_database_and_never_echo_it(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    url = database_factory.new_url()
    folder = config_for(tmp_path / "a", url, key_store="database")
    with pytest.raises(ConfigurationError, match="needs a key-encryption key"):
        load_settings(folder, env={})

    bad = "not-a-kek-" + secrets.token_hex(8)
    with pytest.raises(ConfigurationError) as refused:
        load_settings(folder, env={"BRIDGE_KEK": bad})
    assert "BRIDGE_KEK" in str(refused.value)
    assert bad not in str(refused.value)

    kek = new_kek()
    settings = load_settings(folder, env={"BRIDGE_KEK": kek_text(kek)})
    assert settings.key_store == "database"
    assert settings.kek == kek
    assert kek_text(kek) not in repr(settings)
    urlsafe = base64.urlsafe_b64encode(kek).decode().rstrip("=")
    assert load_settings(folder, env={"BRIDGE_KEK": urlsafe}).kek == kek

    from_file = config_for(tmp_path / "b", url, key_store="database", kek=kek)
    assert load_settings(from_file, env={}).kek == kek
    with pytest.raises(ConfigurationError, match="give the key-encryption key once"):
        load_settings(from_file, env={"BRIDGE_KEK": kek_text(kek)})
    (from_file / "kek").unlink()
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_settings(from_file, env={})

    with pytest.raises(ConfigurationError, match="must be one of files, database"):
        load_settings(config_for(tmp_path / "c", url, key_store="vault"), env={})


def test_check_config_opens_the_keys_in_the_database_with_the_kek(
    tmp_path: Path, database_factory: DatabaseFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    url = database_factory.migrated_url()
    kek = new_kek()
    folder = config_for(tmp_path / "config", url, key_store="database", kek=kek)
    assert cli.main(["check-config", "--config", str(folder), "--database"]) == 0
    assert "keys: created in the database on first start" in capsys.readouterr().out
    with Database(url) as db:
        KeyStore.load_or_create(sealed(db, kek))
    assert cli.main(["check-config", "--config", str(folder), "--database"]) == 0
    assert "keys:" not in capsys.readouterr().out
    (folder / "kek").write_text(kek_text(new_kek()))
    assert cli.main(["check-config", "--config", str(folder), "--database"]) != 0
    assert "configured one is" in capsys.readouterr().err


# --- changing the KEK ---------------------------------------------------------------------


def test_c3_a_previous_kek_opens_what_it_sealed_until_reseal_moves_it(vault_db: Database) -> None:
    old, new = new_kek(), new_kek()
    before = KeyStore.load_or_create(sealed(vault_db, old))
    both = SealedVault(DatabaseVault(vault_db), Kek(new), [Kek(old)])
    during = KeyStore.open(both)
    assert during.jwks() == before.jwks()
    during.rotate_keyring()  # a write meanwhile is sealed with the new KEK
    with pytest.raises(KeyStoreError, match="configured one is"):
        KeyStore.open(sealed(vault_db, new))  # the rest is still sealed with the old one

    resealed, blobs = both.reseal()
    assert resealed == blobs - 1  # all but the keyring written a moment ago
    assert both.reseal() == (0, blobs)  # a second run reseals nothing
    after = KeyStore.open(sealed(vault_db, new))
    assert after.jwks() == before.jwks()
    assert after.decrypt_secret(before.encrypt_secret("shared")) == "shared"
    with pytest.raises(KeyStoreError, match=f"configured one is {Kek(old).id.hex()}"):
        KeyStore.open(sealed(vault_db, old))


def test_keys_reseal_from_the_command_line(
    tmp_path: Path, database_factory: DatabaseFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    url = database_factory.migrated_url()
    old, new = new_kek(), new_kek()
    folder = config_for(tmp_path / "config", url, key_store="database", kek=new)
    with Database(url) as db:
        KeyStore.load_or_create(sealed(db, old))
    args = ["keys", "reseal", "--config", str(folder)]
    assert cli.main(args) == 1  # without the previous KEK nothing opens
    assert Kek(old).id.hex() in capsys.readouterr().err

    previous = {"BRIDGE_KEK_PREVIOUS": kek_text(old)}
    with pytest.MonkeyPatch.context() as env:
        for name, value in previous.items():
            env.setenv(name, value)
        assert cli.main(args) == 0
    said = capsys.readouterr().out
    assert said.startswith("Resealed 4 of 4 key blob(s)")  # manifest, keyring, RS256, ES256
    assert kek_text(old) not in said
    assert kek_text(new) not in said
    assert cli.main(["keys", "list", "--config", str(folder)]) == 0  # the new KEK alone


def test_a_process_silent_for_a_day_is_forgotten(vault_db: Database) -> None:
    """D8: crashed processes never sign off, and their rows do not pile up."""
    vault = DatabaseVault(vault_db)
    now = datetime.now(UTC)
    vault.acknowledge("crashed-long-ago", ["kid"], now - timedelta(days=2))
    vault.acknowledge("crashed-lately", ["kid"], now - timedelta(hours=1))
    vault.acknowledge("alive", ["kid"], now)
    assert set(vault.peers(now - timedelta(days=30))) == {"crashed-lately", "alive"}
