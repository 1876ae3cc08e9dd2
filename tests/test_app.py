"""The app as a whole: built without I/O, started by its lifespan, health and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from bridge.app import create_app
from bridge.keys import KeyStore
from bridge.settings import ConfigurationError, ImisSettings, Settings, load_settings
from bridge.storage import Database
from tests.conftest import DatabaseFactory
from tests.storage.tcp_proxy import TcpProxy
from tests.support.bridge import write_config
from tests.support.servers import serve

UNREACHABLE = "postgresql+psycopg://bridge@127.0.0.1:1/bridge"
#: The discard port: these tests sign nobody in, so iMIS is never called.
NO_IMIS = "http://127.0.0.1:9"


def settings_for(
    folder: Path,
    database_url: str,
    registrations: dict[str, str] | None = None,
    *,
    keys_dir: Path | None = None,
) -> Settings:
    write_config(
        folder,
        issuer="http://127.0.0.1:8000",
        database_url=database_url,
        imis_url=NO_IMIS,
        registrations=registrations or {},
    )
    settings = load_settings(folder, {})
    return settings if keys_dir is None else replace(settings, keys_dir=keys_dir)


@pytest.fixture(scope="module")
def shared_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key folder for the module: generating RSA keys per test costs seconds."""
    folder = tmp_path_factory.mktemp("keys")
    KeyStore.load_or_create(folder)
    return folder


@pytest.fixture
def settings(tmp_path: Path, database_url: str, shared_keys: Path) -> Settings:
    return settings_for(tmp_path / "config", database_url, keys_dir=shared_keys)


class Running:
    """A started app and an HTTP client for it."""

    def __init__(self, app: Starlette, client: httpx.Client) -> None:
        self.app, self.client = app, client

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)


@contextmanager
def running(settings: Settings) -> Iterator[Running]:
    app = create_app(settings)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Running(app, client)


@pytest.fixture
def client(settings: Settings) -> Iterator[Running]:
    with running(settings) as started:
        yield started


def test_create_app_touches_nothing_before_start(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "config", "sqlite:///data/bridge.db")
    app = create_app(settings)
    assert not settings.keys_dir.exists()
    assert not (settings.config_dir / "data").exists()
    with serve(app) as url:
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
    assert any(settings.keys_dir.iterdir())
    assert (settings.config_dir / "data" / "bridge.db").exists()


def test_the_simulator_is_mounted_only_for_the_demo(settings: Settings) -> None:
    """Whatever [imis] says, only ``bridge demo``'s settings mount ``/_demo/*``."""

    def demo_paths(app: Starlette) -> list[str]:
        return [p for r in app.routes if (p := getattr(r, "path", "")).startswith("/_demo")]

    simulated = replace(settings, imis=ImisSettings(base_url="simulator"))
    assert demo_paths(create_app(simulated)) == []
    assert "/_demo/imis" in demo_paths(create_app(replace(simulated, demo=True)))


def test_healthz_answers(client: Running) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_reports_database_and_keys(client: Running) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": True, "keys": True}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_is_503_when_the_database_does_not_answer(client: Running) -> None:
    working = client.app.state.services
    unreachable = Database(UNREACHABLE, connect_timeout=1)
    client.app.state.services = replace(working, db=unreachable)
    try:
        response = client.get("/readyz")
    finally:
        unreachable.dispose()
        client.app.state.services = working
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": False, "keys": True}
    assert response.headers["retry-after"] == "5"
    assert client.get("/readyz").status_code == 200


def test_readyz_follows_a_postgresql_outage_and_recovery(
    tmp_path: Path, database_url: str, database_factory: DatabaseFactory, shared_keys: Path
) -> None:
    if database_factory.backend != "postgresql":
        pytest.skip("needs a database reached over the network (set BRIDGE_TEST_DATABASE_URL)")
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    try:
        through_proxy = url.set(host="127.0.0.1", port=proxy.port)
        settings = settings_for(
            tmp_path / "config",
            through_proxy.render_as_string(hide_password=False),
            keys_dir=shared_keys,
        )
        with running(settings) as client:
            assert client.get("/readyz").status_code == 200
            proxy.stop()
            down = client.get("/readyz")
            assert down.status_code == 503
            assert down.json()["database"] is False
            assert client.get("/healthz").status_code == 200  # the process is still up
            proxy.start()
            assert client.get("/readyz").status_code == 200
    finally:
        proxy.stop()


def test_start_up_fails_on_a_clash_with_a_stored_registration(
    tmp_path: Path, database_url: str, shared_keys: Path
) -> None:
    import secrets

    from bridge.app import build_registry, open_services

    slug = f"clash-{secrets.token_hex(4)}"
    first = settings_for(tmp_path / "one", database_url, keys_dir=shared_keys)
    services = open_services(first)
    try:
        services.registry.add(
            slug,
            {
                "name": "Stored",
                "profile": "oidc",
                "client_id": slug,
                "redirect_uris": ["https://app.example.org/cb"],
            },
            actor="test",
        )
        portal = f"""\
            name = "File"
            profile = "oidc"
            client_id = "other-{slug}"
            redirect_uris = ["https://app.example.org/cb"]
            """
        second = settings_for(tmp_path / "two", database_url, {slug: portal}, keys_dir=shared_keys)
        with pytest.raises(ConfigurationError) as caught:
            build_registry(second, services.store, services.keys)
        [problem] = caught.value.problems
        assert problem.file.endswith(f"{slug}.toml")
        assert "also a stored registration" in problem.reason
    finally:
        services.store.delete_registration(slug)
        asyncio.run(services.users.aclose())
        services.db.dispose()


def test_g2_readyz_is_503_while_the_keys_in_the_database_cannot_be_read_then_recovers(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """A key blob that stops opening (altered in the database) makes /readyz 503 at the
    next poll, while the keys in memory keep signing; put back, it is 200 again."""
    import base64
    import secrets
    import time

    from sqlalchemy import text

    url = database_factory.migrated_url()
    kek = secrets.token_bytes(32)
    settings = replace(settings_for(tmp_path / "config", url), key_store="database", kek=kek)

    def ready_is(client: Running, status: int) -> httpx.Response:
        deadline = time.monotonic() + 10  # the vault is polled every second
        while (answer := client.get("/readyz")).status_code != status:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.1)
        return answer

    def keyring(db: Database, blob: bytes | None = None) -> bytes:
        with db.session() as s:
            c = s.connection()
            if blob is not None:
                c.execute(
                    text("UPDATE key_vault SET sealed = :b WHERE name = 'keyring.json'"),
                    {"b": blob},
                )
                c.execute(text("UPDATE key_vault_state SET generation = generation + 1"))
            return bytes(
                c.execute(
                    text("SELECT sealed FROM key_vault WHERE name = 'keyring.json'")
                ).scalar_one()
            )

    with running(settings) as client, Database(url) as db:
        assert ready_is(client, 200).json()["keys"] is True
        good = keyring(db)
        keyring(db, good[:-1] + bytes([good[-1] ^ 1]))  # one bit flipped
        down = ready_is(client, 503)
        assert down.json() == {"status": "unavailable", "database": True, "keys": False}
        assert down.headers["retry-after"] == "5"
        assert client.get("/.well-known/jwks.json").status_code == 200  # the last good keys
        assert base64.b64encode(kek).decode() not in down.text
        keyring(db, good)
        assert ready_is(client, 200).json()["keys"] is True
