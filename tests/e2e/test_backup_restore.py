"""Backup and restore as the README tells an operator to do it (SECURITY G3).

A running ``bridge serve`` (SQLite, keys in the database sealed with a KEK) is
backed up with ``sqlite3 bridge.db ".backup FILE"`` while it serves; more happens
after the backup; then a new bridge starts on a copy of the backup with the same
KEK. What was issued before the backup still works, what was issued after is
unknown, and without the KEK the backup opens nothing.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.demo.simulator import create_simulator
from bridge.settings import load_settings
from tests.e2e.test_two_processes import REGISTRATIONS, portal, verify_at
from tests.oauth.rp import new_browser
from tests.support.bridge import Harness, write_config
from tests.support.leaks import register
from tests.support.process import bridge_process
from tests.support.servers import free_port, serve

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sqlite3") is None, reason="needs the sqlite3 command"),
]

KEK = base64.b64encode(secrets.token_bytes(32)).decode()
ENV = {"BRIDGE_KEY_STORE": "database", "BRIDGE_KEK": KEK}
register(KEK)  # no log line of the run may hold it


@pytest.fixture(scope="module")
def imis_url() -> Iterator[str]:
    with serve(create_simulator()) as url:
        yield url


def bridge_at(folder: Path, imis_url: str, port: int) -> Harness:
    config = write_config(
        folder,
        issuer=f"http://127.0.0.1:{port}",
        database_url="sqlite:///bridge.db",
        imis_url=imis_url,
        registrations=REGISTRATIONS,
    )
    settings = load_settings(config, env=ENV)
    return Harness(f"http://127.0.0.1:{port}", imis_url, config, settings, None)


def serve_args(bridge: Harness) -> tuple[str, ...]:
    return ("serve", "--config", str(bridge.config_dir), "--port", bridge.url.rsplit(":", 1)[1])


def test_g3_a_backup_taken_while_serving_restores_what_it_held(
    tmp_path: Path, imis_url: str, http: httpx.Client
) -> None:
    port = free_port()
    live = bridge_at(tmp_path / "live", imis_url, port)
    with bridge_process(tmp_path / "live", port, *serve_args(live), env=ENV):
        with new_browser(live) as browser:
            before = portal(live, http).tokens(browser)
        backup = tmp_path / "bridge-backup.db"
        subprocess.run(
            ["sqlite3", str(live.config_dir / "bridge.db"), f".backup {backup}"],
            check=True,
            timeout=30,
        )
        with new_browser(live) as browser:
            after = portal(live, http).tokens(browser)

    # A new machine: the configuration, the backup as bridge.db, the same KEK.
    restored = bridge_at(tmp_path / "restored", imis_url, port)
    shutil.copy(backup, restored.config_dir / "bridge.db")
    with bridge_process(tmp_path / "restored", port, *serve_args(restored), env=ENV):
        rp = portal(restored, http)
        verify_at(http, restored, before["id_token"], restored.settings.issuer)
        assert rp.userinfo(before["access_token"]).status_code == 200
        refreshed = rp.refresh(before["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        # Issued after the backup: unknown here (its relying party signs the user in again).
        assert rp.userinfo(after["access_token"]).status_code == 401
        assert rp.refresh(after["refresh_token"]).status_code == 400

    # Without the KEK the backup opens nothing: the start is refused.
    (tmp_path / "wrong").mkdir()
    other = {**ENV, "BRIDGE_KEK": base64.b64encode(secrets.token_bytes(32)).decode()}
    with (
        pytest.raises(AssertionError, match="configured one is"),
        bridge_process(tmp_path / "wrong", port, *serve_args(restored), env=other, timeout=30),
    ):
        pass
