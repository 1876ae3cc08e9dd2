"""``bridge admin token create|list|revoke``, called in-process as an operator would (F4)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge import cli
from bridge.storage import Database, Store, hash_token
from tests.conftest import DatabaseFactory
from tests.storage.test_repo import all_stored_text
from tests.test_cli import Run, make_config


@pytest.fixture
def database_url(database_factory: DatabaseFactory) -> str:
    """A database of each test's own: listings must see only that test's tokens."""
    return database_factory.migrated_url()


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    return make_config(tmp_path / "config", database_url)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    def call(*argv: str | Path) -> Run:
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        monkeypatch.setenv("USER", "ops")
        capsys.readouterr()
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return call


def audit(database_url: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    with Database(database_url) as db:
        events = Store(db).list_audit(limit=100)
    return [(e.actor, e.action, e.target, json.loads(e.detail_json)) for e in reversed(events)]


def test_f4_create_prints_the_token_alone_on_its_last_line_and_stores_only_its_hash(
    run: Any, config: Path, database_url: str
) -> None:
    result = run("admin", "token", "create", "--config", config, "--name", "ci")
    assert result.code == 0, result.err
    *before, last = result.out.splitlines()
    assert last.startswith("bat_")
    assert last.strip() == last
    assert len(last) == 4 + 43
    assert "shown once" in before[0]
    with Database(database_url) as db:
        found = Store(db).find_admin_token(last, now=0)
        dump = all_stored_text(db)
    assert found is not None
    assert found.name == "ci"
    assert found.created_by == "cli:ops"
    assert last not in dump
    assert hash_token(last) in dump
    assert audit(database_url) == [("cli:ops", "admin-token.create", "ci", {"id": found.id})]


def test_f4_the_last_line_is_what_a_script_captures(config: Path, tmp_path: Path) -> None:
    """``TOKEN=$(bridge admin token create ... | tail -n 1)`` works: a real process."""
    bridge = Path(sys.executable).with_name("bridge")
    done = subprocess.run(
        [bridge, "admin", "token", "create", "--config", config, "--name", "deploy"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    token = done.stdout.splitlines()[-1]
    assert token.startswith("bat_")
    assert token not in done.stderr


def test_f4_list_never_shows_a_token(run: Any, config: Path) -> None:
    first = run("admin", "token", "create", "--config", config, "--name", "ci").out.splitlines()[-1]
    second = run("admin", "token", "create", "--config", config, "--name", "terraform")
    token = second.out.splitlines()[-1]
    table = run("admin", "token", "list", "--config", config)
    assert table.code == 0
    header, *lines = table.out.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "CREATED"]
    assert [line.split()[1] for line in lines] == ["ci", "terraform"]
    listed = run("admin", "token", "list", "--config", config, "--json").json()
    assert [t["name"] for t in listed] == ["ci", "terraform"]
    assert set(listed[0]) == {
        "id",
        "name",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
    }
    assert listed[0]["created_by"] == "cli:ops"
    assert listed[0]["revoked_at"] is None
    for out in (table.out, json.dumps(listed)):
        assert first not in out
        assert token not in out
        assert hash_token(token) not in out


def test_f4_revoke_by_name_or_id_is_audited_and_the_token_stops_working(
    run: Any, config: Path, database_url: str
) -> None:
    ci = run("admin", "token", "create", "--config", config, "--name", "ci").out.splitlines()[-1]
    tf = run("admin", "token", "create", "--config", config, "--name", "tf").out.splitlines()[-1]
    result = run("admin", "token", "revoke", "--config", config, "ci")
    assert result.code == 0, result.err
    assert "revoked admin API token 1 (ci)" in result.out
    tf_id = run("admin", "token", "list", "--config", config, "--json").json()[1]["id"]
    assert run("admin", "token", "revoke", "--config", config, str(tf_id)).code == 0
    with Database(database_url) as db:
        assert Store(db).find_admin_token(ci, now=0) is None
        assert Store(db).find_admin_token(tf, now=0) is None
    listed = run("admin", "token", "list", "--config", config, "--json").json()
    assert all(t["revoked_at"] is not None for t in listed)
    assert [a[1:3] for a in audit(database_url)] == [
        ("admin-token.create", "ci"),
        ("admin-token.create", "tf"),
        ("admin-token.revoke", "ci"),
        ("admin-token.revoke", "tf"),
    ]
    again = run("admin", "token", "revoke", "--config", config, "ci")
    assert again.code == cli.EXIT_FAIL
    assert again.err == "bridge: no admin token 'ci' that is not revoked\n"


@pytest.mark.parametrize("name", ["", "12", "has space", "-dash", "x" * 65, "é"])
def test_create_refuses_names_that_cannot_be_typed_or_look_like_ids(
    run: Any, config: Path, database_url: str, name: str
) -> None:
    result = run("admin", "token", "create", "--config", config, f"--name={name}")
    assert result.code == cli.EXIT_FAIL
    assert "--name" in result.err
    assert "bat_" not in result.out
    assert audit(database_url) == []


def test_create_refuses_a_name_a_live_token_has(run: Any, config: Path) -> None:
    assert run("admin", "token", "create", "--config", config, "--name", "ci").code == 0
    again = run("admin", "token", "create", "--config", config, "--name", "ci")
    assert again.code == cli.EXIT_FAIL
    assert "an admin token named 'ci' exists" in again.err
    assert "bat_" not in again.out
    run("admin", "token", "revoke", "--config", config, "ci")
    assert run("admin", "token", "create", "--config", config, "--name", "ci").code == 0


def test_list_with_no_token_says_how_to_create_one(run: Any, config: Path) -> None:
    result = run("admin", "token", "list", "--config", config)
    assert result.code == 0
    assert "bridge admin token create --name NAME" in result.out
    assert run("admin", "token", "list", "--config", config, "--json").json() == []
