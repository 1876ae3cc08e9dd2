"""Two ``bridge serve`` processes whose keys live in the database (SECURITY C3, G4).

``key_store = "database"`` and ``BRIDGE_KEK``: the processes share nothing but the
database (keys_dir is never created). A rotation made by the command line at a
third process publishes the new key at both before either signs with it, so an
ID token signed by one verifies at the other's JWKS at every moment.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy import text

from bridge import cli
from bridge.demo.simulator import create_simulator
from bridge.storage import Database
from tests.conftest import DatabaseFactory
from tests.e2e.test_two_processes import REGISTRATIONS, code_from, portal, verify_at
from tests.oauth.rp import jwks, new_browser, sign_in
from tests.support.bridge import Harness, served_bridge, write_config
from tests.support.leaks import register
from tests.support.process import bridge_process
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.slow

KEK = base64.b64encode(secrets.token_bytes(32)).decode()
ENV = {"BRIDGE_KEY_STORE": "database", "BRIDGE_KEK": KEK}
register(KEK)  # no log line of the run may hold it


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[tuple[Harness, Harness, str]]:
    tmp = tmp_path_factory.mktemp("keys-in-database")
    url = database_factory.migrated_url()
    with ExitStack() as stack:
        imis = stack.enter_context(serve(create_simulator()))
        port_a, port_b = free_port(), free_port()
        config = write_config(
            tmp / "config",
            issuer=f"http://127.0.0.1:{port_a}",
            database_url=url,
            imis_url=imis,
            registrations=REGISTRATIONS,
        )
        a, _ = stack.enter_context(served_bridge(tmp, config, port_a, imis, env=ENV))
        b, _ = stack.enter_context(served_bridge(tmp, config, port_b, imis, env=ENV))
        yield a, b, url


def kids(http: httpx.Client, bridge: Harness) -> set[str]:
    return {k["kid"] for k in jwks(http, bridge)["keys"]}


def test_g4_processes_share_the_keys_of_the_database_and_no_folder(
    cluster: tuple[Harness, Harness, str], http: httpx.Client
) -> None:
    a, b, _ = cluster
    assert kids(http, a) == kids(http, b)
    assert not (a.config_dir / "keys").exists()
    with new_browser(a) as browser:
        tokens = portal(a, http).tokens(browser)
    verify_at(http, b, tokens["id_token"], a.settings.issuer)
    assert http.get(f"{a.url}/readyz").json()["keys"] is True


def test_c3_g4_a_rotation_is_published_at_every_process_before_either_signs_with_it(
    cluster: tuple[Harness, Harness, str],
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b, url = cluster
    before = kids(http, a)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    # --immediate: publish, wait until both serving processes acknowledged, promote.
    assert cli.main(["keys", "rotate", "--config", str(a.config_dir), "--immediate"]) == 0
    said = capsys.readouterr().out
    assert "now signs new tokens" in said, said
    assert "waiting" not in said, said
    new = next(iter(kids(http, a) - before))
    assert new in kids(http, b)  # it was acknowledged there before it could sign

    # Until each process polls the vault (every second) it signs with the old key, which
    # stays published: every token verifies at the other process, at every moment, and
    # within 5 seconds both sign with the new key.
    for signer, verifier in ((a, b), (b, a)):
        deadline = time.monotonic() + 5
        signed_with = None
        while signed_with != new:
            assert time.monotonic() < deadline, f"{signer.url} still signs with {signed_with}"
            with new_browser(signer) as browser:
                rp = portal(signer, http)
                params = rp.authorize_params()
                authz = code_from(rp, sign_in(browser, rp.authorize_url(params), "jdoe"), params)
                tokens = rp.redeem(authz).json()
                signed_with = jwt.get_unverified_header(tokens["id_token"])["kid"]
                verify_at(http, verifier, tokens["id_token"], a.settings.issuer)
                # The other process verifies it too, as an id_token_hint.
                logout = browser.get(
                    f"{verifier.url}/end_session", params={"id_token_hint": tokens["id_token"]}
                )
                assert logout.status_code == 200, logout.text

    with Database(url) as db, db.session(write=False) as s:
        peers = s.connection().execute(text("SELECT instance, kids FROM key_vault_peers")).all()
    assert len(peers) == 2
    assert all(new in listed.split() for _, listed in peers)


def test_a_wrong_kek_is_refused_at_start_naming_both_key_ids(
    cluster: tuple[Harness, Harness, str], tmp_path: Path
) -> None:
    a, _, _ = cluster
    port = free_port()
    wrong = {**ENV, "BRIDGE_KEK": base64.b64encode(secrets.token_bytes(32)).decode()}
    args = ("serve", "--config", str(a.config_dir), "--port", str(port))
    with (
        pytest.raises(AssertionError, match="configured one is") as refused,
        bridge_process(tmp_path, port, *args, env=wrong, timeout=30),
    ):
        pass
    assert wrong["BRIDGE_KEK"] not in str(refused.value)
    assert KEK not in str(refused.value)
