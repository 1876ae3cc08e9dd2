"""The ``bridge`` command line, called in-process as an operator would call it."""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import cli
from bridge.keys import KeyStore, verify_secret
from bridge.storage import Database, Store
from tests.conftest import DatabaseFactory
from tests.support.bridge import write_config

REPO_CONFIG = Path(__file__).parent.parent / "config"
EXAMPLE_VARIABLES = (
    "BRIDGE_PUBLIC_URL",
    "IMIS_BASE_URL",
    "IMIS_SERVICE_USER",
    "IMIS_SERVICE_PASSWORD",
    "PORTAL_CLIENT_SECRET",
    "ZENDESK_SHARED_SECRET",
    "FORUM_CONNECT_SECRET",
)
ZENDESK_SECRET = "pasted-zendesk-secret-" + "z" * 24
REDIRECT = '["https://app.example.org/callback"]'


@pytest.fixture(scope="module")
def shared_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key folder for the module: generating RSA keys per test costs seconds."""
    folder = tmp_path_factory.mktemp("keys")
    KeyStore.load_or_create(folder)
    return folder


def make_config(
    folder: Path,
    database_url: str,
    keys_dir: Path | None = None,
    registrations: dict[str, str] | None = None,
    extra: str = "",
) -> Path:
    write_config(
        folder,
        issuer="https://sso.example.org",
        database_url=database_url,
        imis_url="https://example.imiscloud.com",
        registrations=registrations or {},
        extra=extra,
    )
    if keys_dir is not None:
        main = folder / "bridge.toml"
        main.write_text(main.read_text().replace('keys_dir = "keys"', f'keys_dir = "{keys_dir}"'))
    return folder


@pytest.fixture(scope="module")
def database_url(database_factory: DatabaseFactory) -> str:
    """This module's own database: listing every registration must see only ours."""
    return database_factory.migrated_url()


@pytest.fixture
def config(tmp_path: Path, database_url: str, shared_keys: Path) -> Path:
    return make_config(tmp_path / "config", database_url, shared_keys)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``bridge serve`` configures the root logger; put pytest's set-up back after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    def call(*argv: str | Path, stdin: str = "") -> Run:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return call


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def add_oidc(run: Any, config: Path, slug: str, *extra: str) -> Run:
    result: Run = run(
        "registrations",
        "add",
        slug,
        "--config",
        config,
        "--set",
        "profile=oidc",
        "--set",
        "name=Member Portal",
        "--set",
        f"client_id={slug}",
        "--set",
        f"redirect_uris={REDIRECT}",
        *extra,
    )
    return result


def shown_secret(out: str) -> str:
    match = re.search(r"client_secret \(shown once[^)]*\): (\S+)", out)
    assert match, out
    return match.group(1)


def audit_actions(database_url: str, slug: str) -> list[tuple[str, dict[str, Any]]]:
    with Database(database_url) as db:
        events = Store(db).list_audit(limit=1000)
    return [(e.action, json.loads(e.detail_json)) for e in reversed(events) if e.target == slug]


def stored_hash(database_url: str, slug: str) -> str:
    with Database(database_url) as db:
        row = Store(db).get_registration(slug)
    assert row is not None
    assert row.secret_hash is not None
    return row.secret_hash


# --- check-config --------------------------------------------------------------------------


def test_check_config_ok_lists_file_registrations(run: Any, tmp_path: Path) -> None:
    portal = f"""\
        name = "Member Portal"
        profile = "oidc"
        client_id = "{unique("portal")}"
        redirect_uris = ["https://portal.example.org/callback"]
        """
    folder = make_config(
        tmp_path / "c", "sqlite:///bridge.db", registrations={"member-portal": portal}
    )
    result = run("check-config", "--config", folder)
    assert result.code == 0, result.err
    assert "configuration OK: issuer https://sso.example.org, 1 registration(s)" in result.out
    assert "member-portal" in result.out
    assert not (folder / "keys").exists()  # a check writes nothing
    assert not (folder / "bridge.db").exists()


def test_check_config_prints_one_line_per_problem(run: Any, tmp_path: Path) -> None:
    folder = make_config(
        tmp_path / "c",
        "sqlite:///bridge.db",
        registrations={"Bad_Name": 'name = "x"\nprofile = "oidc"\n'},
        extra="colour = 'blue'\n[tokens]\ncode_seconds = 'soon'\n",
    )
    result = run("check-config", "--config", folder)
    assert result.code == cli.EXIT_CONFIG
    lines = result.err.splitlines()
    assert lines[0] == "bridge: the configuration cannot be used:"
    assert len(lines) == 4, result.err
    assert f"  {folder / 'bridge.toml'}: colour: unknown key" in lines
    assert any("tokens.code_seconds: must be a whole number" in line for line in lines)
    assert any("Bad_Name.toml: file name 'Bad_Name' is not a valid slug" in line for line in lines)
    assert result.out == ""


def test_check_config_of_the_repository_examples_names_every_missing_variable(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in EXAMPLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    result = run("check-config", "--config", REPO_CONFIG)
    assert result.code == cli.EXIT_CONFIG
    problems = result.err.splitlines()[1:]
    assert len(problems) == len(EXAMPLE_VARIABLES), result.err
    for name in EXAMPLE_VARIABLES:
        assert sum(f"environment variable {name} is not set" in p for p in problems) == 1
    assert any(
        p.strip().startswith(f"{REPO_CONFIG.resolve()}/bridge.toml: issuer:") for p in problems
    )
    assert any("member-portal.toml: client_secret: environment" in p for p in problems)


def test_check_config_of_the_repository_examples_with_variables_set(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        "BRIDGE_PUBLIC_URL": "https://sso.example.org",
        "IMIS_BASE_URL": "https://example.imiscloud.com",
        "IMIS_SERVICE_USER": "bridge-service",
        "IMIS_SERVICE_PASSWORD": "service-password",
        "PORTAL_CLIENT_SECRET": secrets.token_urlsafe(32),
        "ZENDESK_SHARED_SECRET": secrets.token_urlsafe(40),
        "FORUM_CONNECT_SECRET": secrets.token_hex(32),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    result = run("check-config", "--config", REPO_CONFIG)
    assert result.code == 0, result.err
    assert "3 registration(s) in files" in result.out
    assert values["PORTAL_CLIENT_SECRET"] not in result.out + result.err
    assert values["ZENDESK_SHARED_SECRET"] not in result.out + result.err
    assert values["FORUM_CONNECT_SECRET"] not in result.out + result.err


def test_check_config_with_database(run: Any, config: Path) -> None:
    result = run("check-config", "--config", config, "--database")
    assert result.code == 0, result.err


def test_check_config_with_a_new_sqlite_file_says_it_is_created_and_creates_nothing(
    run: Any, tmp_path: Path
) -> None:
    folder = make_config(tmp_path / "c", "sqlite:///data/bridge.db")
    result = run("check-config", "--config", folder, "--database")
    assert result.code == 0, result.err
    assert f"database: {folder / 'data' / 'bridge.db'} is created on first start" in result.out
    assert f"keys: {folder / 'keys'} is created on first start" in result.out
    assert not (folder / "data").exists()
    assert not (folder / "keys").exists()


def test_check_config_with_an_sqlite_file_behind_says_it_upgrades_itself(
    run: Any, tmp_path: Path, shared_keys: Path
) -> None:
    folder = make_config(tmp_path / "c", "sqlite:///bridge.db", shared_keys)
    (folder / "bridge.db").touch()  # an empty SQLite database: no schema yet
    result = run("check-config", "--config", folder, "--database")
    assert result.code == 0, result.err
    assert "database: schema empty; SQLite upgrades it on first start" in result.out
    with Database(f"sqlite:///{folder / 'bridge.db'}") as db:
        assert db.schema_state() == "empty"  # checked, not upgraded


def test_check_config_with_a_postgresql_schema_behind_names_the_upgrade(
    run: Any, tmp_path: Path, empty_database_url: str, shared_keys: Path
) -> None:
    if not empty_database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (set BRIDGE_TEST_DATABASE_URL)")
    folder = make_config(tmp_path / "c", empty_database_url, shared_keys)
    result = run("check-config", "--config", folder, "--database")
    assert result.code == 1
    assert "run `bridge db upgrade" in result.err


# --- the iMIS simulator only in the demo ----------------------------------------------


def test_check_config_refuses_a_configuration_without_imis(run: Any, tmp_path: Path) -> None:
    """It used to pass, and ``serve`` then let the demo people sign in to real apps."""
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "bridge.toml").write_text('issuer = "https://sso.example.org"\n')
    result = run("check-config", "--config", folder)
    assert result.code == cli.EXIT_CONFIG
    assert result.err.splitlines()[1:] == [
        f"  {folder / 'bridge.toml'}: imis.base_url: is required: your iMIS site root (https://...)"
    ]


@pytest.mark.parametrize(
    ("extra", "env", "where"),
    [
        ("demo = true\n", {}, "bridge.toml: demo:"),
        ("", {"BRIDGE_DEMO": "true"}, "environment: BRIDGE_DEMO:"),
    ],
    ids=["file", "environment"],
)
def test_serve_refuses_to_run_the_demo(
    run: Any,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: str,
    env: dict[str, str],
    where: str,
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("started"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    main = config / "bridge.toml"
    main.write_text(extra + main.read_text())
    for command in ("serve", "check-config"):
        result = run(command, "--config", config)
        assert result.code == cli.EXIT_CONFIG, result.err
        [problem] = result.err.splitlines()[1:]
        assert where in problem
        assert "is set by `bridge demo` only" in problem


def test_commands_that_never_serve_work_on_the_demo_folder(
    run: Any, tmp_path: Path, shared_keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from bridge.demo.run import DEMO_CLIENT_SLUG, write_demo_config

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("started"))

    folder = write_demo_config(tmp_path / "demo", 8123)
    shutil.copytree(shared_keys, folder / "keys")
    result = run("registrations", "list", "--config", folder)
    assert result.code == 0, result.err
    assert DEMO_CLIENT_SLUG in result.out
    assert run("serve", "--config", folder).code == cli.EXIT_CONFIG


def test_imis_check_on_the_demo_folder_checks_the_built_in_simulator(
    run: Any, tmp_path: Path
) -> None:
    from bridge.demo.run import write_demo_config

    folder = write_demo_config(tmp_path / "demo", 8123)
    result = run("imis", "check", "--config", folder, "--user", "jdoe")
    assert result.code == 0, result.err
    assert "ok    base_url is 'simulator': checking the built-in simulator" in result.out
    assert "iMIS check passed" in result.out


# --- registrations ------------------------------------------------------------------------------


def test_add_oidc_prints_a_generated_secret_once(run: Any, config: Path, database_url: str) -> None:
    slug = unique("portal")
    result = add_oidc(run, config, slug)
    assert result.code == 0, result.err
    secret = shown_secret(result.out)
    assert len(secret) >= 43
    assert verify_secret(secret, stored_hash(database_url, slug))
    assert "confidential" in result.out
    for args in (("list",), ("list", "--json"), ("show", slug), ("show", slug, "--json")):
        again = run("registrations", *args, "--config", config)
        assert again.code == 0, again.err
        assert slug in again.out
        assert secret not in again.out + again.err


def test_add_json_keeps_stdout_parseable(run: Any, config: Path) -> None:
    slug = unique("portal")
    result = add_oidc(run, config, slug, "--json")
    assert result.code == 0, result.err
    assert result.json()["slug"] == slug
    assert shown_secret(result.err)


def test_add_public_client_has_no_secret(run: Any, config: Path, database_url: str) -> None:
    slug = unique("spa")
    result = add_oidc(run, config, slug, "--public", "--json")
    assert result.code == 0, result.err
    assert result.json()["client_type"] == "public"
    assert "client_secret" not in result.out + result.err
    with Database(database_url) as db:
        row = Store(db).get_registration(slug)
    assert row is not None
    assert row.secret_hash is None


def test_public_client_web_origins_are_set_and_validated_by_add_and_edit(
    run: Any, config: Path
) -> None:
    slug = unique("spa")
    origins = '["https://app.example.org"]'
    result = add_oidc(run, config, slug, "--public", "--set", f"web_origins={origins}", "--json")
    assert result.code == 0, result.err
    assert result.json()["web_origins"] == ["https://app.example.org"]

    refused = run("registrations", "edit", slug, "--config", config, "--set", "web_origins=['*']")
    assert refused.code != 0
    assert "web_origins[0]" in refused.err
    assert "wildcard" in refused.err

    edited = run(
        "registrations",
        "edit",
        slug,
        "--config",
        config,
        "--set",
        'web_origins=["https://app.example.org", "http://localhost:5173"]',
        "--json",
    )
    assert edited.code == 0, edited.err
    assert edited.json()["web_origins"] == ["https://app.example.org", "http://localhost:5173"]
    shown = run("registrations", "show", slug, "--config", config, "--json").json()
    assert shown["web_origins"] == ["https://app.example.org", "http://localhost:5173"]

    secret = run(
        "registrations", "edit", slug, "--config", config, "--secret-stdin", stdin="s" * 32 + "\n"
    )
    assert secret.code != 0
    assert "only for public clients" in secret.err


def test_add_zendesk_from_a_file_with_the_secret_on_stdin(
    run: Any, config: Path, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELPDESK_NAME", "Contoso Helpdesk")
    monkeypatch.delenv("ZENDESK_SHARED_SECRET", raising=False)
    spec = tmp_path / "helpdesk.toml"
    spec.write_text(
        'name = "${HELPDESK_NAME}"\nprofile = "zendesk"\nsubdomain = "contoso.zendesk.com"\n'
        'shared_secret = "${ZENDESK_SHARED_SECRET}"\n'  # replaced by stdin: no error
        'brand_hosts = ["support.contoso.com"]\n'
    )
    slug = unique("helpdesk")
    result = run(
        "registrations",
        "add",
        slug,
        "--config",
        config,
        "--file",
        spec,
        "--secret-stdin",
        stdin=ZENDESK_SECRET + "\n",
    )
    assert result.code == 0, result.err
    assert ZENDESK_SECRET not in result.out + result.err
    shown = run("registrations", "show", slug, "--config", config, "--json").json()
    assert shown["name"] == "Contoso Helpdesk"
    assert shown["subdomain"] == "contoso"
    assert shown["shared_secret_set"] is True
    with Database(database_url) as db:
        row = Store(db).get_registration(slug)
    assert row is not None
    assert row.secret_encrypted is not None
    assert ZENDESK_SECRET not in row.model_dump_json()


def test_readme_helpdesk_example_is_self_contained(
    run: Any, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's ``--file helpdesk.toml`` example shows the file it reads, and it works."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    heredoc = re.search(r"^cat > helpdesk\.toml <<'TOML'\n(.*?)^TOML$", readme, re.S | re.M)
    assert heredoc, "README: the helpdesk.toml example file is not shown"
    command = re.search(r"^printf .*\| bridge (registrations add helpdesk .*)$", readme, re.M)
    assert command
    monkeypatch.chdir(tmp_path)
    (tmp_path / "helpdesk.toml").write_text(heredoc.group(1))
    slug = unique("helpdesk")
    argv = command.group(1).replace("add helpdesk", f"add {slug}").split()
    result = run(*argv, "--config", config, stdin=ZENDESK_SECRET + "\n")
    assert result.code == 0, result.err
    shown = run("registrations", "show", slug, "--config", config, "--json").json()
    assert (shown["profile"], shown["shared_secret_set"]) == ("zendesk", True)


def test_add_from_a_file_expands_variables_and_reports_missing_ones(
    run: Any, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    spec = tmp_path / "portal.toml"
    spec.write_text(
        f'name = "Portal"\nprofile = "oidc"\nclient_id = "{unique("c")}"\n'
        f'redirect_uris = {REDIRECT}\nclient_secret = "${{NO_SUCH_SECRET}}"\n'
    )
    slug = unique("portal")
    result = run("registrations", "add", slug, "--config", config, "--file", spec)
    assert result.code == cli.EXIT_CONFIG
    assert f"{spec}: client_secret: environment variable NO_SUCH_SECRET is not set" in result.err
    assert run("registrations", "show", slug, "--config", config).code == 1


def test_add_from_a_file_that_is_not_toml(run: Any, config: Path, tmp_path: Path) -> None:
    spec = tmp_path / "broken.toml"
    spec.write_text("name = \n")
    result = run("registrations", "add", unique("x"), "--config", config, "--file", spec)
    assert result.code == cli.EXIT_CONFIG
    assert f"{spec}: not valid TOML" in result.err


def test_add_refuses_an_invalid_registration(run: Any, config: Path) -> None:
    slug = unique("portal")
    result = run(
        "registrations",
        "add",
        slug,
        "--config",
        config,
        "--set",
        "profile=oidc",
        "--set",
        "name=Portal",
        "--set",
        f"client_id={slug}",
        "--set",
        'redirect_uris=["http://app.example.org/cb"]',
    )
    assert result.code == 1
    assert "redirect_uris[0]" in result.err
    assert "must use https" in result.err
    assert "client_secret" not in result.out


def test_zendesk_secret_is_never_printed_or_taken_from_the_command_line_history(
    run: Any, config: Path
) -> None:
    slug = unique("helpdesk")
    result = run(
        "registrations",
        "add",
        slug,
        "--config",
        config,
        "--set",
        "profile=zendesk",
        "--set",
        "name=Helpdesk",
        "--set",
        "subdomain=contoso",
        "--secret-stdin",
        stdin=ZENDESK_SECRET,
    )
    assert result.code == 0, result.err
    assert ZENDESK_SECRET not in result.out + result.err
    assert "client_secret" not in result.out


def test_edit_changes_one_key_and_keeps_the_secret(
    run: Any, config: Path, database_url: str
) -> None:
    slug = unique("portal")
    secret = shown_secret(add_oidc(run, config, slug).out)
    result = run("registrations", "edit", slug, "--config", config, "--set", "name=New Name")
    assert result.code == 0, result.err
    assert "New Name" in result.out
    assert "client_secret (shown once" not in result.out
    assert verify_secret(secret, stored_hash(database_url, slug))


def test_edit_of_one_access_entry_keeps_the_others(run: Any, config: Path) -> None:
    slug = unique("portal")
    add_oidc(
        run,
        config,
        slug,
        "--public",
        "--set",
        'access.member_types=["REG"]',
        "--set",
        "access.message=Members only.",
    )
    result = run(
        "registrations",
        "edit",
        slug,
        "--config",
        config,
        "--json",
        "--set",
        'access.statuses=["A"]',
    )
    assert result.code == 0, result.err
    assert result.json()["access"] == {
        "member_types": ["REG"],
        "statuses": ["a"],
        "message": "Members only.",
    }
    result = run(
        "registrations",
        "edit",
        slug,
        "--config",
        config,
        "--json",
        "--unset",
        "access.message",
        "--unset",
        "access.statuses",
    )
    assert result.json()["access"] == {"member_types": ["REG"]}
    result = run("registrations", "edit", slug, "--config", config, "--json", "--unset", "access")
    assert "access" not in result.json()


def test_rotate_oidc_secret_prints_a_new_one_and_the_old_stops_verifying(
    run: Any, config: Path, database_url: str
) -> None:
    slug = unique("portal")
    old = shown_secret(add_oidc(run, config, slug).out)
    result = run("registrations", "rotate-secret", slug, "--config", config)
    assert result.code == 0, result.err
    new = shown_secret(result.out)
    assert new != old
    current = stored_hash(database_url, slug)
    assert verify_secret(new, current)
    assert not verify_secret(old, current)


def test_rotate_secret_of_a_public_client_is_refused(run: Any, config: Path) -> None:
    slug = unique("spa")
    add_oidc(run, config, slug, "--public")
    result = run("registrations", "rotate-secret", slug, "--config", config)
    assert result.code == 1
    assert "public client" in result.err
    shown = run("registrations", "show", slug, "--config", config, "--json").json()
    assert shown["client_type"] == "public"


def test_rotate_zendesk_secret_needs_the_secret_on_stdin(run: Any, config: Path) -> None:
    slug = unique("helpdesk")
    run(
        "registrations",
        "add",
        slug,
        "--config",
        config,
        "--set",
        "profile=zendesk",
        "--set",
        "name=Helpdesk",
        "--set",
        "subdomain=contoso",
        "--secret-stdin",
        stdin=ZENDESK_SECRET,
    )
    refused = run("registrations", "rotate-secret", slug, "--config", config)
    assert refused.code == 1
    assert "--secret-stdin" in refused.err
    new = "rotated-zendesk-secret-" + "n" * 24
    result = run(
        "registrations", "rotate-secret", slug, "--config", config, "--secret-stdin", stdin=new
    )
    assert result.code == 0, result.err
    assert new not in result.out + result.err
    empty = run(
        "registrations", "rotate-secret", slug, "--config", config, "--secret-stdin", stdin="\n"
    )
    assert empty.code == 1
    assert "no secret on standard input" in empty.err


def test_remove_deletes_and_every_change_is_audited(
    run: Any, config: Path, database_url: str
) -> None:
    slug = unique("portal")
    secret = shown_secret(add_oidc(run, config, slug).out)
    assert run("registrations", "edit", slug, "--config", config, "--set", "name=B").code == 0
    assert run("registrations", "rotate-secret", slug, "--config", config).code == 0
    result = run("registrations", "remove", slug, "--config", config)
    assert result.code == 0, result.err
    assert result.out.strip() == f"removed {slug}"
    assert run("registrations", "show", slug, "--config", config).code == 1
    assert run("registrations", "remove", slug, "--config", config).code == 1
    events = audit_actions(database_url, slug)
    assert [action for action, _ in events] == [
        "registration.add",
        "registration.edit",
        "registration.rotate-secret",
        "registration.remove",
    ]
    assert events[0][1] == {"fields": ["client_id", "name", "profile", "redirect_uris"]}
    assert events[1][1] == {"fields": ["name"]}
    assert secret not in json.dumps(events)


def test_file_registrations_cannot_be_changed_from_the_cli(
    run: Any, tmp_path: Path, database_url: str, shared_keys: Path
) -> None:
    slug = unique("file")
    portal = f"""\
        name = "File Portal"
        profile = "oidc"
        client_id = "{slug}"
        redirect_uris = ["https://portal.example.org/callback"]
        """
    folder = make_config(tmp_path / "c", database_url, shared_keys, {slug: portal})
    listed = run("registrations", "list", "--config", folder)
    assert re.search(rf"{slug}\s+oidc\s+file\s+File Portal", listed.out)
    for argv in (
        ("edit", slug, "--set", "name=X"),
        ("rotate-secret", slug),
        ("remove", slug),
    ):
        result = run("registrations", *argv, "--config", folder)
        assert result.code == 1
        assert "read-only" in result.err
    clash = add_oidc(run, folder, unique("stored"), "--set", f"client_id={slug}")
    assert clash.code == 1
    assert f"{slug}.toml" in clash.err


def test_registration_whose_secret_cannot_be_decrypted_can_be_repaired(
    run: Any, config: Path, tmp_path: Path, database_url: str
) -> None:
    slug = unique("helpdesk")
    add = ("registrations", "add", slug, "--set", "profile=zendesk", "--set", "name=Help")
    assert (
        run(
            *add,
            "--set",
            "subdomain=contoso",
            "--config",
            config,
            "--secret-stdin",
            stdin=ZENDESK_SECRET,
        ).code
        == 0
    )
    # Another keys folder (not shared between instances, or lost): another keyring.
    elsewhere = make_config(tmp_path / "elsewhere", database_url, tmp_path / "other-keys")
    listed = run("registrations", "list", "--config", elsewhere)
    assert listed.code == 1
    assert f"registration {slug}: shared_secret: cannot be decrypted" in listed.err
    assert f"rotate-secret {slug} --secret-stdin" in listed.err
    assert slug not in listed.out
    shown = run("registrations", "show", slug, "--config", elsewhere)
    assert shown.code == 1
    assert "cannot be decrypted" in shown.err
    repaired = run(
        "registrations",
        "rotate-secret",
        slug,
        "--config",
        elsewhere,
        "--secret-stdin",
        stdin="re-pasted-zendesk-secret-" + "r" * 20,
    )
    assert repaired.code == 0, repaired.err
    assert run("registrations", "show", slug, "--config", elsewhere).code == 0
    assert run("registrations", "remove", slug, "--config", elsewhere).code == 0


def test_set_without_a_value_is_refused(run: Any, config: Path) -> None:
    result = run("registrations", "add", unique("x"), "--config", config, "--set", "name")
    assert result.code == 1
    assert "--set needs key=value" in result.err


def test_show_of_an_unknown_registration(run: Any, config: Path) -> None:
    result = run("registrations", "show", "nobody-here", "--config", config)
    assert result.code == 1
    assert result.err.strip() == "bridge: no registration 'nobody-here'"


# --- keys ---------------------------------------------------------------------------------------


def test_keys_list_json_and_rotate(run: Any, tmp_path: Path, shared_keys: Path) -> None:
    keys_dir = tmp_path / "keys"
    shutil.copytree(shared_keys, keys_dir)
    folder = make_config(tmp_path / "c", "sqlite:///bridge.db", keys_dir)
    listed = run("keys", "list", "--config", folder, "--json")
    assert listed.code == 0, listed.err
    before = listed.json()
    assert {(k["alg"], k["state"]) for k in before["keys"]} == {
        ("RS256", "current"),
        ("ES256", "current"),
    }
    assert before["keyring"]["ids"]
    rotated = run("keys", "rotate", "--config", folder, "--alg", "ES256", "--json")
    assert rotated.code == 0, rotated.err
    published = rotated.json()["published"]
    assert published
    after = run("keys", "list", "--config", folder, "--json").json()
    states = {k["kid"]: (k["state"], k["in_jwks"]) for k in after["keys"]}
    assert states[published] == ("next", True)
    table = run("keys", "list", "--config", folder)
    assert published in table.out
    assert "Keyring: 1 key(s)" in table.out


def test_keys_list_before_any_key_exists(run: Any, tmp_path: Path) -> None:
    folder = make_config(tmp_path / "c", "sqlite:///bridge.db")
    result = run("keys", "list", "--config", folder)
    assert result.code == 1
    assert "no keys here" in result.err


# --- database -------------------------------------------------------------------------------------


def test_db_upgrade_on_an_empty_database(run: Any, tmp_path: Path, empty_database_url: str) -> None:
    folder = make_config(tmp_path / "c", empty_database_url)
    result = run("db", "upgrade", "--config", folder)
    assert result.code == 0, result.err
    assert "was empty, now current" in result.out
    with Database(empty_database_url) as db:
        assert db.schema_state() == "current"
    again = run("db", "upgrade", "--config", folder)
    assert "was current, now current" in again.out


def test_d8_db_purge_removes_expired_rows_and_prints_what_went(
    run: Any, tmp_path: Path, empty_database_url: str
) -> None:
    folder = make_config(tmp_path / "c", empty_database_url)
    assert run("db", "upgrade", "--config", folder).code == 0
    now = int(time.time())
    with Database(empty_database_url) as db:
        store = Store(db)
        for ttl in (-10, -10, 600):
            store.create_pending(kind="oidc", registration="a", params={}, now=now, ttl_seconds=ttl)
        store.create_session(
            imis_id="1001",
            username="jdoe",
            identity_json="{}",
            auth_time=now - 100,
            now=now - 100,
            lifetime_seconds=10,
        )
        store.record_failure(["user:jdoe"], now=now - 2 * 24 * 3600)

    result = run("db", "purge", "--config", folder)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "removed 4 expired row(s); the audit trail is kept"
    counts = dict(line.strip().rsplit(maxsplit=1) for line in lines[1:])
    assert counts == {
        "sessions": "1",
        "pending requests": "2",
        "codes": "0",
        "tokens": "0",
        "grants": "0",
        "throttle counters": "1",
        "sign-in counts": "0",
    }
    again = run("db", "purge", "--config", folder, "--json")
    assert again.code == 0
    assert set(again.json().values()) == {0}
    with Database(empty_database_url) as db, db.engine.connect() as connection:
        live = connection.exec_driver_sql("SELECT count(*) FROM pending_requests").scalar()
    assert live == 1


@pytest.mark.parametrize("command", [("db", "purge"), ("audit", "list")])
def test_d8_db_purge_refuses_a_database_that_is_not_set_up(
    run: Any, tmp_path: Path, empty_database_url: str, command: tuple[str, str]
) -> None:
    folder = make_config(tmp_path / "c", empty_database_url)
    result = run(*command, "--config", folder)
    assert result.code == 1
    assert "run `bridge db upgrade" in result.err


def test_unreachable_database_is_one_line(run: Any, tmp_path: Path) -> None:
    url = "postgresql+psycopg://bridge@127.0.0.1:1/bridge"
    folder = make_config(tmp_path / "c", url)
    result = run("db", "upgrade", "--config", folder)
    assert result.code == 1
    [line] = result.err.splitlines()
    assert line.startswith("bridge: the database cannot be reached: OperationalError")


def test_serve_refuses_a_postgresql_schema_that_is_behind(
    run: Any,
    tmp_path: Path,
    empty_database_url: str,
    shared_keys: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not empty_database_url.startswith("postgresql"):
        pytest.skip("SQLite upgrades itself; only a shared PostgreSQL waits for the operator")
    import uvicorn

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server must not start")

    monkeypatch.setattr(uvicorn, "run", never)
    folder = make_config(tmp_path / "c", empty_database_url, shared_keys)
    result = run("serve", "--config", folder)
    assert result.code == 1
    [reason] = [line for line in result.err.splitlines() if line.startswith("bridge:")]
    assert reason.endswith(f"run `bridge db upgrade --config {folder}`")
    assert "Traceback" not in result.err
    # bridge.app.open_services leaves its Database undisposed when ensure_schema
    # raises; collect the pooled connection here, quietly, so that no later test
    # trips over its ResourceWarning. (A short-lived CLI process does not care.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_serve_checks_everything_before_starting_the_server(
    run: Any, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from starlette.applications import Starlette

    started: list[tuple[object, dict[str, object]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append((app, kw)))
    result = run("serve", "--config", config, "--port", "8765")
    assert result.code == 0, result.err
    [(app, options)] = started
    assert isinstance(app, Starlette)
    assert options["port"] == 8765
    assert options["host"] == "127.0.0.1"
    assert "serving https://sso.example.org on http://127.0.0.1:8765" in result.out


def test_serve_with_a_bad_config_does_not_start(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("started"))
    folder = make_config(tmp_path / "c", "sqlite:///bridge.db", extra="[tokens]\nfoo = 1\n")
    result = run("serve", "--config", folder)
    assert result.code == cli.EXIT_CONFIG
    assert "tokens.foo: unknown key" in result.err


# --- a command needs only the variables it uses -------------------------------------------------


@pytest.fixture
def example_config(tmp_path: Path, shared_keys: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repository's example configuration, with none of its variables set."""
    for name in EXAMPLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "config"
    shutil.copytree(REPO_CONFIG, folder)
    shutil.copytree(shared_keys, tmp_path / "keys")  # its keys_dir is "../keys"
    return folder


def test_registrations_commands_need_no_secret_in_the_environment(
    run: Any, example_config: Path
) -> None:
    listed = run("registrations", "list", "--config", example_config)
    assert listed.code == 0, listed.err
    assert "contoso-helpdesk" in listed.out
    assert "member-portal" in listed.out
    portal = run("registrations", "show", "member-portal", "--config", example_config, "--json")
    assert portal.code == 0, portal.err
    assert portal.json()["client_type"] == "confidential"
    desk = run("registrations", "show", "contoso-helpdesk", "--config", example_config, "--json")
    assert desk.json()["shared_secret_set"] is True
    slug = unique("app")
    assert add_oidc(run, example_config, slug).code == 0
    edited = run("registrations", "edit", slug, "--config", example_config, "--set", "name=App")
    assert edited.code == 0, edited.err
    assert run("registrations", "rotate-secret", slug, "--config", example_config).code == 0
    assert run("registrations", "remove", slug, "--config", example_config).code == 0


def test_keys_commands_need_no_secret_in_the_environment(run: Any, example_config: Path) -> None:
    listed = run("keys", "list", "--config", example_config)
    assert listed.code == 0, listed.err
    rotated = run("keys", "rotate", "--config", example_config, "--alg", "ES256")
    assert rotated.code == 0, rotated.err


def test_db_upgrade_needs_no_secret_in_the_environment(run: Any, example_config: Path) -> None:
    result = run("db", "upgrade", "--config", example_config)
    assert result.code == 0, result.err
    assert "was empty, now current" in result.out


def test_a_command_names_the_unset_variable_of_a_value_it_uses(
    run: Any, example_config: Path
) -> None:
    main = example_config / "bridge.toml"
    main.write_text(main.read_text().replace('"sqlite:///../bridge.db"', '"${DATABASE_URL}"'))
    result = run("db", "upgrade", "--config", example_config)
    assert result.code == cli.EXIT_CONFIG
    assert result.err.splitlines()[1:] == [
        f"  {main.resolve()}: database_url: environment variable DATABASE_URL is not set"
    ]
    assert not (example_config / "bridge.db").exists()  # no default used in its place
    imis = run("imis", "check", "--config", example_config)
    assert imis.code == cli.EXIT_CONFIG
    problems = imis.err.splitlines()[1:]
    for name in ("IMIS_BASE_URL", "IMIS_SERVICE_USER", "IMIS_SERVICE_PASSWORD"):
        assert sum(f"environment variable {name} is not set" in p for p in problems) == 1
    assert len(problems) == 3


def test_serve_still_needs_every_variable(
    run: Any, example_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("started"))
    result = run("serve", "--config", example_config)
    assert result.code == cli.EXIT_CONFIG
    problems = result.err.splitlines()[1:]
    for name in EXAMPLE_VARIABLES:
        assert sum(f"environment variable {name} is not set" in p for p in problems) == 1


# --- help -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        ((), ["serve", "demo", "check-config", "registrations", "keys", "db"]),
        (("serve",), ["--config", "--host", "--port", "--workers"]),
        (("demo",), ["--port", "--client-port", "--dir"]),
        (("check-config",), ["--config", "--database"]),
        (("db", "upgrade"), ["--config"]),
        (("db", "purge"), ["--config", "--json", "expired"]),
        (("imis", "check"), ["--config", "--user"]),
        (("imis-simulator",), ["--port", "--people", "--latency-ms"]),
        (("registrations",), ["list", "show", "add", "edit", "remove", "rotate-secret"]),
        (("registrations", "list"), ["--config", "--json"]),
        (("registrations", "show"), ["--config", "--json", "slug"]),
        (("registrations", "add"), ["--file", "--set", "--public", "--secret-stdin"]),
        (("registrations", "edit"), ["--file", "--set", "--unset", "--secret-stdin"]),
        (("registrations", "remove"), ["--config", "slug"]),
        (("registrations", "rotate-secret"), ["--secret-stdin"]),
        (("keys", "list"), ["--config", "--json"]),
        (("keys", "rotate"), ["--alg", "--immediate", "--now", "--json"]),
    ],
)
def test_help_of_every_command(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], mentions: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for word in mentions:
        assert word in out


def test_python_dash_m_bridge_help() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: bridge")


# --- audit trail ---------------------------------------------------------------------------


@pytest.fixture
def trail(run: Any, tmp_path: Path, empty_database_url: str, shared_keys: Path) -> Path:
    """A configuration whose database is set up and holds no audit event yet."""
    folder = make_config(tmp_path / "c", empty_database_url, shared_keys)
    assert run("db", "upgrade", "--config", folder).code == 0
    return folder


def test_audit_list_shows_the_newest_changes_first(run: Any, trail: Path) -> None:
    folder = trail
    assert add_oidc(run, folder, "portal").code == 0
    edit = run("registrations", "edit", "portal", "--config", folder, "--set", "name=Portal")
    assert edit.code == 0, edit.err

    result = run("audit", "list", "--config", folder, "--json")
    assert result.code == 0, result.err
    events = result.json()
    assert [(e["action"], e["target"]) for e in events] == [
        ("registration.edit", "portal"),
        ("registration.add", "portal"),
    ]
    assert events[0]["detail"] == {"fields": ["name"]}
    assert events[0]["actor"].startswith("cli:")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", events[0]["time"])

    newest = run("audit", "list", "--config", folder, "--limit", "1")
    assert newest.code == 0, newest.err
    header, *lines = newest.out.splitlines()
    assert header.split()[:3] == ["TIME", "(UTC)", "ACTOR"]
    assert len(lines) == 1
    assert "registration.edit" in lines[0]
    assert '{"fields":["name"]}' in lines[0]
    assert "secret" not in result.out


def test_audit_list_escapes_control_characters(
    run: Any, trail: Path, empty_database_url: str
) -> None:
    folder = trail
    with Database(empty_database_url) as db:
        Store(db).audit(actor="evil\x1b[2J", action="login.failed", target="t\r", now=0)
    result = run("audit", "list", "--config", folder)
    assert result.code == 0, result.err
    assert "\x1b" not in result.out
    assert "\r" not in result.out
    assert "evil\\x1b[2J" in result.out


def test_audit_list_on_an_empty_trail_and_bad_limits(run: Any, trail: Path) -> None:
    folder = trail
    assert run("audit", "list", "--config", folder).out == "no audit events\n"
    assert run("audit", "list", "--config", folder, "--json").json() == []
    for bad in ("0", "-3", "ten"):
        with pytest.raises(SystemExit) as exited:
            run("audit", "list", "--config", folder, "--limit", bad)
        assert exited.value.code == 2


def test_serve_with_workers_gives_them_a_private_fresh_metrics_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with cli._multiprocess_metrics():
        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert folder.is_dir()
        assert folder.stat().st_mode & 0o777 == 0o700
        assert not any(folder.iterdir())
        (folder / "counter_123.db").write_bytes(b"")
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert not folder.exists()


def test_serve_with_workers_empties_the_operators_metrics_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("kept")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with cli._multiprocess_metrics():
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
        assert not (tmp_path / "counter_123.db").exists()
    assert (tmp_path / "notes.txt").exists()
