"""Settings: every bad value stops start-up with one problem naming file, key and reason."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from bridge.identity import Identity
from bridge.profiles import AccessRule, parse_access
from bridge.settings import (
    ENVIRONMENT,
    ConfigurationError,
    Problem,
    Problems,
    Settings,
    load_settings,
)
from tests.support.profiles import PROFILES

ISSUER = 'issuer = "https://sso.example.org"\n'
IMIS = 'base_url = "https://example.imiscloud.com"\n'
PORTAL = """\
    name = "Member Portal"
    profile = "oidc"
    client_id = "member-portal"
    client_secret = "portal-secret-0123456789"
    redirect_uris = ["https://portal.example.org/callback"]
    """
HELPDESK = """\
    name = "Helpdesk"
    profile = "zendesk"
    subdomain = "contoso"
    shared_secret = "zendesk-shared-secret-0123456789abcdef"
    """


def with_imis(main: str) -> str:
    """``main`` with the required ``[imis] base_url``, unless it says something of its own."""
    if re.search(r"^imis\s*=|^\[imis\][^\[]*^base_url", main, re.MULTILINE):
        return main
    if re.search(r"^\[imis\]$", main, re.MULTILINE):
        return re.sub(r"^\[imis\]\n", "[imis]\n" + IMIS, main, count=1, flags=re.MULTILINE)
    return main + "\n[imis]\n" + IMIS


def write(folder: Path, main: str = ISSUER, registrations: Mapping[str, str] | None = None) -> Path:
    """A config folder; ``main`` gets the required ``[imis] base_url`` (see :func:`with_imis`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bridge.toml").write_text(with_imis(textwrap.dedent(main)))
    if registrations is not None:
        (folder / "registrations").mkdir(exist_ok=True)
        for name, text in registrations.items():
            (folder / "registrations" / f"{name}.toml").write_text(textwrap.dedent(text))
    return folder


def load(folder: Path, env: Mapping[str, str] | None = None) -> Settings:
    return load_settings(folder, env or {}, check_registrations=PROFILES.check_files)


def problems_of(folder: Path, env: Mapping[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigurationError) as caught:
        load(folder, env)
    return caught.value.problems


def only_problem(folder: Path, env: Mapping[str, str] | None = None) -> Problem:
    problems = problems_of(folder, env)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# --- bridge.toml ----------------------------------------------------------------


def test_minimal_config_loads_with_documented_defaults(tmp_path: Path) -> None:
    settings = load(write(tmp_path))
    assert settings.issuer == "https://sso.example.org"
    assert settings.imis.base_url == "https://example.imiscloud.com"
    assert not settings.demo
    assert settings.tokens.code_seconds == 60
    assert settings.login.device_cookie_seconds == 365 * 24 * 3600
    assert settings.login.pending_per_address == 50
    assert settings.purge_interval_seconds == 600
    assert settings.registry_cache_seconds == 2
    assert settings.registrations == ()
    assert settings.secure_cookies


def test_repository_example_config_loads_when_its_variables_are_set() -> None:
    env = {
        "BRIDGE_PUBLIC_URL": "https://sso.example.org/",
        "IMIS_BASE_URL": "https://example.imiscloud.com",
        "IMIS_SERVICE_USER": "bridge-service",
        "IMIS_SERVICE_PASSWORD": "service-password",
        "PORTAL_CLIENT_SECRET": "portal-secret-0123456789",
        "ZENDESK_SHARED_SECRET": "z" * 40,
        "FORUM_CONNECT_SECRET": "f" * 64,
    }
    settings = load(Path(__file__).parent.parent / "config", env)
    assert settings.issuer == "https://sso.example.org"
    assert {r.slug for r in settings.registrations} == {
        "contoso-helpdesk",
        "member-forum",
        "member-portal",
    }


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ISSUER + 'isuer = "x"\n'))
    assert problem.file == str(tmp_path / "bridge.toml")
    assert (problem.key, problem.reason) == ("isuer", "unknown key")


def test_unknown_table_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ISSUER + "[imsi]\nbase_url = 'x'\n"))
    assert (problem.key, problem.reason) == ("imsi", "unknown key")


def test_unknown_section_key_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ISSUER + "[tokens]\ncode_second = 30\n"))
    assert (problem.key, problem.reason) == ("tokens.code_second", "unknown key")


def test_section_that_is_not_a_table_is_reported_once(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ISSUER + 'imis = "simulator"\n'))
    assert (problem.key, problem.reason) == ("imis", "must be a table")


def test_text_where_a_number_belongs_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ISSUER + '[tokens]\ncode_seconds = "sixty"\n'))
    assert problem.key == "tokens.code_seconds"
    assert problem.reason == "must be a whole number, not 'sixty'"


def test_list_where_text_belongs_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ISSUER + '[ui]\norganization_name = ["Contoso"]\n'))
    assert (problem.key, problem.reason) == ("ui.organization_name", "must be a string, not list")


@pytest.mark.parametrize(
    ("line", "key", "reason"),
    [
        ("[tokens]\ncode_seconds = -1", "tokens.code_seconds", "must not be negative"),
        ("[imis]\ntimeout = true", "imis.timeout", "must be a number, not bool"),
        ('[imis]\ntimeout = "nan"', "imis.timeout", "must be a finite number"),
        ('[imis]\nemails_verified = "maybe"', "imis.emails_verified", "must be true or false"),
        ("[admin]\nusers = [1]", "admin.users", "must be a list of strings"),
        ('log_level = "loud"', "log_level", "must be one of debug, info, warning, error"),
        ('log_format = "xml"', "log_format", "must be one of auto, json, text"),
        ('keys_dir = ""', "keys_dir", "must not be empty"),
        ('[ui]\nsupport_email = "help"', "ui.support_email", "must be an email address"),
        ("[login]\npending_per_address = 0", "login.pending_per_address", "must be at least 1"),
        ("[tokens]\ncode_seconds = 61", "tokens.code_seconds", "must be at most 60"),
        (
            "[tokens]\nrefresh_reuse_grace_seconds = 86400",
            "tokens.refresh_reuse_grace_seconds",
            "must be at most 60 (a retry needs seconds, not minutes)",
        ),
        ("purge_interval_seconds = -1", "purge_interval_seconds", "must not be negative"),
        ("registry_cache_seconds = -1", "registry_cache_seconds", "must not be negative"),
        (
            "registry_cache_seconds = 60",
            "registry_cache_seconds",
            "must be at most 5 (a changed or removed registration",
        ),
    ],
)
def test_bad_value_names_key_and_reason(tmp_path: Path, line: str, key: str, reason: str) -> None:
    problem = only_problem(write(tmp_path, ISSUER + line + "\n"))
    assert problem.key == key
    assert problem.reason.startswith(reason)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    problem = only_problem(tmp_path)
    assert (problem.file, problem.reason) == (str(tmp_path / "bridge.toml"), "file not found")


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, "issuer = \n"))
    assert problem.reason.startswith("not valid TOML")


def test_missing_issuer_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, 'log_level = "info"\n'))
    assert problem.key == "issuer"
    assert problem.reason.startswith("is required")


def test_empty_issuer_from_an_empty_variable_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, 'issuer = "${PUBLIC_URL}"\n'), {"PUBLIC_URL": ""})
    assert (problem.key, problem.reason[:11]) == ("issuer", "is required")


def test_missing_env_variable_names_variable_file_and_key(tmp_path: Path) -> None:
    folder = write(tmp_path, ISSUER + '[imis]\nbase_url = "${IMIS_BASE_URL}"\n')
    problem = only_problem(folder)  # and no second complaint about the empty URL
    assert problem.file == str(folder / "bridge.toml")
    assert problem.key == "imis.base_url"
    assert problem.reason == "environment variable IMIS_BASE_URL is not set"
    assert "IMIS_BASE_URL" in str(problem)
    assert "bridge.toml: imis.base_url" in str(problem)


def test_env_variable_is_substituted_inside_a_string(tmp_path: Path) -> None:
    folder = write(tmp_path, 'issuer = "https://${HOST}/sso"\n')
    assert load(folder, {"HOST": "id.example.org"}).issuer == "https://id.example.org/sso"


def test_bridge_env_overrides_top_level_and_section_keys(tmp_path: Path) -> None:
    folder = write(tmp_path, ISSUER + '[imis]\nbase_url = "https://old.example.org"\n')
    settings = load(
        folder,
        {
            "BRIDGE_ISSUER": "https://id.example.org",
            "BRIDGE_IMIS__BASE_URL": "https://new.imiscloud.com",
            "BRIDGE_TOKENS__CODE_SECONDS": "30",
            "BRIDGE_IMIS__EMAILS_VERIFIED": "true",
            "BRIDGE_ADMIN__USERS": "manager, auditor",
            "BRIDGE_REGISTRY_CACHE_SECONDS": "0.5",
            "BRIDGE_CONFIG_DIR": "/elsewhere",  # used by `serve --workers`; not a setting
        },
    )
    assert settings.registry_cache_seconds == 0.5
    assert settings.issuer == "https://id.example.org"
    assert settings.imis.base_url == "https://new.imiscloud.com"
    assert settings.tokens.code_seconds == 30
    assert isinstance(settings.tokens.code_seconds, int)
    assert settings.imis.emails_verified is True
    assert settings.admin.users == ("manager", "auditor")


def test_bad_override_is_reported_against_the_variable(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path), {"BRIDGE_TOKENS__CODE_SECONDS": "soon"})
    assert (problem.file, problem.key) == (ENVIRONMENT, "BRIDGE_TOKENS__CODE_SECONDS")
    assert problem.reason == "must be a whole number, not 'soon'"


def test_misspelt_override_of_a_known_section_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path), {"BRIDGE_IMIS__BASEURL": "https://x.example.org"})
    assert (problem.file, problem.key) == (ENVIRONMENT, "BRIDGE_IMIS__BASEURL")
    assert problem.reason == "unknown key imis.baseurl"


@pytest.mark.parametrize(
    "issuer", ["http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"]
)
def test_http_issuer_is_allowed_on_localhost(tmp_path: Path, issuer: str) -> None:
    settings = load(write(tmp_path, f'issuer = "{issuer}"\n'))
    assert settings.issuer == issuer
    assert not settings.secure_cookies


@pytest.mark.parametrize(
    ("issuer", "reason"),
    [
        ("http://sso.example.org", "must use https"),
        ("https://sso.example.org/?tenant=1", "must not have a query or fragment"),
        ("https://sso.example.org/#x", "must not have a query or fragment"),
        ("ftp://sso.example.org", "must be an http/https URL"),
        ("sso.example.org", "must be an http/https URL"),
        ("https://sso example.org", "must be a URL without spaces"),
        ("https://admin:pw@sso.example.org", "must not contain a user name or password"),
    ],
)
def test_bad_issuer_is_refused(tmp_path: Path, issuer: str, reason: str) -> None:
    problem = only_problem(write(tmp_path, f'issuer = "{issuer}"\n'))
    assert problem.key == "issuer"
    assert problem.reason.startswith(reason)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('[imis]\nbase_url = "example.imiscloud.com"', "imis.base_url"),
        ('[imis]\nbase_url = "javascript:alert(1)"', "imis.base_url"),
        ('[ui]\nlogo_url = "logo.svg"', "ui.logo_url"),
        ('[ui]\nforgot_password_url = "https://"', "ui.forgot_password_url"),
        ('zendesk_base_url = "not a url"', "zendesk_base_url"),
    ],
)
def test_invalid_url_is_refused(tmp_path: Path, line: str, key: str) -> None:
    problem = only_problem(write(tmp_path, ISSUER + line + "\n"))
    assert problem.key == key


def test_valid_urls_are_kept(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        ISSUER
        + '[imis]\nbase_url = "https://example.imiscloud.com"\n'
        + '[ui]\nlogo_url = "https://www.example.org/logo.svg"\n'
        + 'support_email = "help@example.org"\n',
    )
    settings = load(folder)
    assert settings.imis.base_url == "https://example.imiscloud.com"
    assert settings.ui.logo_url == "https://www.example.org/logo.svg"


def test_service_username_without_password_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ISSUER + '[imis]\nservice_username = "svc"\n'))
    assert problem.key == "imis.service_password"
    assert "imis.service_username" in problem.reason


def test_service_password_without_username_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ISSUER + '[imis]\nservice_password = "pw"\n'))
    assert problem.key == "imis.service_username"


# --- [imis] base_url: required; the simulator only in the demo --------------------


def test_imis_base_url_is_required(tmp_path: Path) -> None:
    """Without it, the bridge used to run the demo's simulator: demo people could sign in."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "bridge.toml").write_text(ISSUER)  # no [imis] at all
    problem = only_problem(tmp_path)
    assert (problem.file, problem.key) == (str(tmp_path / "bridge.toml"), "imis.base_url")
    assert problem.reason == "is required: your iMIS site root (https://...)"


@pytest.mark.parametrize("allow_demo", [False, True])
def test_the_simulator_is_refused_outside_the_demo(tmp_path: Path, allow_demo: bool) -> None:
    folder = write(tmp_path, ISSUER + '[imis]\nbase_url = "simulator"\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings(folder, {}, allow_demo=allow_demo)
    [problem] = caught.value.problems
    assert problem.key == "imis.base_url"
    assert "runs only in `bridge demo`" in problem.reason


def test_demo_is_refused_in_a_configuration_file(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ISSUER + "demo = true\n"))
    assert (problem.file, problem.key) == (str(tmp_path / "bridge.toml"), "demo")
    assert problem.reason.startswith("is set by `bridge demo` only")


def test_demo_is_refused_from_the_environment(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path), {"BRIDGE_DEMO": "true"})
    assert (problem.file, problem.key) == (ENVIRONMENT, "BRIDGE_DEMO")
    assert problem.reason.startswith("is set by `bridge demo` only")


@pytest.mark.parametrize(
    "url", ["http://evil.example/{subdomain}", "https://zendesk.attacker.example/{subdomain}"]
)
def test_e3_zendesk_base_url_is_refused_outside_the_demo(tmp_path: Path, url: str) -> None:
    """SECURITY E3: the JWT is posted to that origin and return_to may point at it, so
    a real bridge always uses https://{subdomain}.zendesk.com."""
    problem = only_problem(write(tmp_path, ISSUER + f'zendesk_base_url = "{url}"\n'))
    assert problem.key == "zendesk_base_url"
    assert problem.reason.startswith("is for `bridge demo` and tests only")


def test_zendesk_base_url_is_accepted_for_the_demo_and_tests(tmp_path: Path) -> None:
    folder = write(tmp_path, ISSUER + 'zendesk_base_url = "http://127.0.0.1:9/{subdomain}"\n')
    settings = load_settings(folder, {}, allow_demo=True)
    assert settings.zendesk_base_url == "http://127.0.0.1:9/{subdomain}"


def test_the_demo_loads_its_simulator_when_allowed(tmp_path: Path) -> None:
    folder = write(tmp_path, ISSUER + 'demo = true\n[imis]\nbase_url = "simulator"\n')
    settings = load_settings(folder, {}, allow_demo=True)
    assert settings.demo
    assert settings.imis.uses_simulator


@pytest.mark.parametrize(
    "url",
    [
        "http://example.imiscloud.com",
        "http://10.0.0.5:8080",
        "http://127.0.0.1.example.org",
        "http://localhost.example.org",
        "http://[::2]",
    ],
)
def test_plain_http_to_a_remote_imis_is_refused(tmp_path: Path, url: str) -> None:
    """Members' passwords go to iMIS: never in clear over a network."""
    problem = only_problem(write(tmp_path, ISSUER + f'[imis]\nbase_url = "{url}"\n'))
    assert problem.key == "imis.base_url"
    assert problem.reason.startswith("must use https: passwords would cross the network")


@pytest.mark.parametrize(
    "url",
    [
        "https://example.imiscloud.com",
        "http://localhost:8100",
        "http://LOCALHOST:8100",
        "http://127.0.0.1:8100",
        "http://127.8.9.10",
        "http://[::1]:8100/imis",
    ],
)
def test_https_or_a_local_imis_is_accepted(tmp_path: Path, url: str) -> None:
    settings = load(write(tmp_path, ISSUER + f'[imis]\nbase_url = "{url}"\n'))
    assert settings.imis.base_url == url


# --- ${ENV} left unresolved for commands that do not use it --------------------------


SECRET_CONFIG = """\
    issuer = "${PUBLIC_URL}"
    database_url = "${DATABASE_URL}"
    [imis]
    base_url = "${IMIS_URL}"
    service_username = "${IMIS_USER}"
    service_password = "${IMIS_PASSWORD}"
    """


def lazy(folder: Path, env: Mapping[str, str] | None = None) -> Settings:
    return load_settings(
        folder, env or {}, check_registrations=PROFILES.check_files, resolve_env=False
    )


def test_unresolved_keys_are_listed_and_refused_only_when_required(tmp_path: Path) -> None:
    folder = write(tmp_path, SECRET_CONFIG)
    settings = lazy(folder, {"DATABASE_URL": "sqlite:///x.db"})
    assert settings.database_url.endswith("/x.db")
    assert {key for key, _ in settings.unresolved} == {
        "issuer",
        "imis.base_url",
        "imis.service_username",
        "imis.service_password",
    }
    settings.require("database_url", "keys_dir", "tokens")
    with pytest.raises(ConfigurationError) as caught:
        settings.require("imis")
    assert [(p.key, p.reason) for p in caught.value.problems] == [
        ("imis.base_url", "environment variable IMIS_URL is not set"),
        ("imis.service_username", "environment variable IMIS_USER is not set"),
        ("imis.service_password", "environment variable IMIS_PASSWORD is not set"),
    ]
    assert all(p.file == str(folder / "bridge.toml") for p in caught.value.problems)


def test_an_unresolved_key_never_falls_back_to_its_default_silently(tmp_path: Path) -> None:
    settings = lazy(write(tmp_path, SECRET_CONFIG))
    with pytest.raises(ConfigurationError) as caught:
        settings.require("database_url")
    [problem] = caught.value.problems
    assert (problem.key, problem.reason) == (
        "database_url",
        "environment variable DATABASE_URL is not set",
    )


def test_resolving_every_variable_is_still_the_default(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, SECRET_CONFIG))
    assert len(problems) == 5
    assert all(p.reason.startswith("environment variable") for p in problems)


def test_unresolved_registration_secrets_keep_the_registration_usable(tmp_path: Path) -> None:
    from bridge.registry import UnresolvedSecret, load_file_registrations

    portal = PORTAL.replace('"portal-secret-0123456789"', '"${PORTAL_SECRET}"')
    desk = HELPDESK.replace('"zendesk-shared-secret-0123456789abcdef"', '"${DESK_SECRET}"')
    folder = write(tmp_path, registrations={"portal": portal, "desk": desk})
    settings = lazy(folder)
    sink: list[Problem] = []
    regs = {
        r.slug: r
        for r in load_file_registrations(
            settings.registrations, sink, profiles=PROFILES, hash_secret=str
        )
    }
    assert sink == []
    assert regs["portal"].to_data()["client_type"] == "confidential"
    assert regs["desk"].to_data()["shared_secret_set"] is True
    secret = regs["desk"].options.shared_secret
    assert isinstance(secret, UnresolvedSecret)
    with pytest.raises(ConfigurationError) as caught:
        secret.encode("utf-8")  # what signing a Zendesk JWT does first
    [problem] = caught.value.problems
    assert problem.file == str(folder / "registrations" / "desk.toml")
    assert (problem.key, problem.reason) == (
        "shared_secret",
        "environment variable DESK_SECRET is not set",
    )


def test_an_unresolved_client_secret_verifies_nothing(tmp_path: Path) -> None:
    from bridge.keys import hash_secret, verify_secret
    from bridge.registry import load_file_registrations

    portal = PORTAL.replace('"portal-secret-0123456789"', '"${PORTAL_SECRET}"')
    settings = lazy(write(tmp_path, registrations={"portal": portal}))
    [reg] = load_file_registrations(
        settings.registrations, [], profiles=PROFILES, hash_secret=hash_secret
    )
    stored = reg.options.client_secret_hash
    assert stored is not None
    assert not any(verify_secret(guess, stored) for guess in ("", "${PORTAL_SECRET}", stored))


def test_other_unresolved_registration_values_are_still_problems(tmp_path: Path) -> None:
    portal = PORTAL.replace('"member-portal"', '"${PORTAL_ID}"')
    problem = only_problem_lazy(write(tmp_path, registrations={"portal": portal}))
    assert (problem.key, problem.reason) == (
        "client_id",
        "environment variable PORTAL_ID is not set",
    )


def only_problem_lazy(folder: Path) -> Problem:
    with pytest.raises(ConfigurationError) as caught:
        lazy(folder)
    [problem] = caught.value.problems
    return problem


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://db.example.org/bridge", "must be sqlite:///PATH or postgresql+psycopg://"),
        ("sqlite:///:memory:", "a SQLite URL needs a file"),
        ("sqlite://", "a SQLite URL needs a file"),
    ],
)
def test_unusable_database_url_is_refused(tmp_path: Path, url: str, reason: str) -> None:
    problem = only_problem(write(tmp_path, ISSUER + f'database_url = "{url}"\n'))
    assert problem.key == "database_url"
    assert problem.reason.startswith(reason)


def test_database_url_password_is_never_echoed(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ISSUER + 'database_url = "bridge:s3cret@db/x"\n'))
    assert "s3cret" not in str(problem)


def test_postgresql_url_uses_psycopg(tmp_path: Path) -> None:
    folder = write(tmp_path, ISSUER + 'database_url = "postgresql://bridge@db.example.org/b"\n')
    assert load(folder).database_url == "postgresql+psycopg://bridge@db.example.org/b"


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        """\
        issuer = "http://sso.example.org"
        colour = "blue"
        [tokens]
        code_seconds = "sixty"
        [ui]
        logo_url = "logo.svg"
        """,
        {"portal": 'name = "Portal"\nprofile = "oidc"\nclient_id = "portal"\n'},
    )
    problems = problems_of(folder)
    where = sorted((Path(p.file).name, p.key) for p in problems)
    assert where == [
        ("bridge.toml", "colour"),
        ("bridge.toml", "issuer"),
        ("bridge.toml", "tokens.code_seconds"),
        ("bridge.toml", "ui.logo_url"),
        ("portal.toml", "redirect_uris"),
    ]
    message = str(ConfigurationError(problems))
    assert len(message.splitlines()) == 5


def test_relative_paths_are_resolved_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write(
        tmp_path / "conf",
        ISSUER + 'database_url = "sqlite:///data/bridge.db"\nkeys_dir = "secrets/keys"\n',
    )
    monkeypatch.chdir(tmp_path)
    settings = load_settings("conf", {})
    assert settings.config_dir == folder.resolve()
    assert settings.database_url == f"sqlite:///{folder.resolve() / 'data' / 'bridge.db'}"
    assert settings.keys_dir == folder.resolve() / "secrets" / "keys"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    folder = write(
        tmp_path, ISSUER + f'database_url = "sqlite:///{tmp_path}/x.db"\nkeys_dir = "/srv/keys"\n'
    )
    settings = load(folder)
    assert settings.database_url == f"sqlite:///{tmp_path}/x.db"
    assert settings.keys_dir == Path("/srv/keys")


def test_log_level_is_normalised_for_uvicorn(tmp_path: Path) -> None:
    assert load(write(tmp_path, ISSUER + 'log_level = "INFO"\n')).log_level == "info"


def test_log_format_is_auto_unless_set_in_the_file_or_the_environment(tmp_path: Path) -> None:
    folder = write(tmp_path, ISSUER + 'log_format = "Text"\n')
    assert load(write(tmp_path / "bare", ISSUER)).log_format == "auto"
    assert load(folder).log_format == "text"
    assert load(folder, {"BRIDGE_LOG_FORMAT": "json"}).log_format == "json"


# --- registration files ------------------------------------------------------------


def test_registration_files_are_read_with_their_slug(tmp_path: Path) -> None:
    settings = load(write(tmp_path, registrations={"portal": PORTAL, "helpdesk": HELPDESK}))
    assert [(r.slug, r.data["profile"]) for r in settings.registrations] == [
        ("helpdesk", "zendesk"),
        ("portal", "oidc"),
    ]


@pytest.mark.parametrize("stem", ["Portal", "my_portal", "-portal", "p" * 64])
def test_registration_file_with_a_bad_slug_name_is_refused(tmp_path: Path, stem: str) -> None:
    problem = only_problem(write(tmp_path, registrations={stem: PORTAL}))
    assert problem.file.endswith(f"{stem}.toml")
    assert "not a valid slug" in problem.reason


def test_slug_of_63_characters_is_accepted(tmp_path: Path) -> None:
    settings = load(write(tmp_path, registrations={"p" * 63: PORTAL}))
    assert settings.registrations[0].slug == "p" * 63


def test_duplicate_client_id_across_files_names_both_files(tmp_path: Path) -> None:
    folder = write(tmp_path, registrations={"a-portal": PORTAL, "b-portal": PORTAL})
    problem = only_problem(folder)
    assert problem.file == str(folder / "registrations" / "b-portal.toml")
    assert problem.key == "client_id"
    assert str(folder / "registrations" / "a-portal.toml") in problem.reason


def test_unknown_registration_key_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, registrations={"portal": PORTAL + "redirect_uri = 1\n"}))
    assert problem.file.endswith("portal.toml")
    assert (problem.key, problem.reason) == ("redirect_uri", "unknown key for profile 'oidc'")


def test_registration_cannot_smuggle_a_secret_hash(tmp_path: Path) -> None:
    text = PORTAL + 'client_secret_hash = "hmac-sha256$x$y"\n'
    assert only_problem(write(tmp_path, registrations={"portal": text})).key == (
        "client_secret_hash"
    )


def test_missing_secret_variable_in_a_registration_is_reported_once(tmp_path: Path) -> None:
    text = PORTAL.replace('"portal-secret-0123456789"', '"${PORTAL_SECRET}"')
    problem = only_problem(write(tmp_path, registrations={"portal": text}))
    assert (problem.key, problem.reason) == (
        "client_secret",
        "environment variable PORTAL_SECRET is not set",
    )


def test_registration_with_unknown_profile_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, registrations={"x": 'name = "X"\nprofile = "saml"\n'}))
    assert problem.key == "profile"


def test_registration_name_must_be_text(tmp_path: Path) -> None:
    text = PORTAL.replace('name = "Member Portal"', "name = 2024")
    problem = only_problem(write(tmp_path, registrations={"portal": text}))
    assert (problem.key, problem.reason) == ("name", "must be a string, not int")


# --- OIDC registrations (the options themselves: tests/profiles/test_oidc_options.py) ---


def test_oidc_problems_are_reported_against_the_registration_file(tmp_path: Path) -> None:
    text = PORTAL.replace("https://portal.example.org/callback", "http://portal.example.org/cb")
    text += 'scopes = ["profile"]\n'
    folder = write(tmp_path, registrations={"portal": text})
    problems = problems_of(folder)
    assert {p.file for p in problems} == {str(folder / "registrations" / "portal.toml")}
    assert sorted(p.key for p in problems) == ["redirect_uris[0]", "scopes"]


# --- Zendesk registrations -------------------------------------------------------------


def zendesk_problems(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    problems = problems_of(write(tmp_path, registrations={"helpdesk": text}))
    return [(p.key, p.reason) for p in problems]


def test_zendesk_custom_domain_as_subdomain_points_to_brand_hosts(tmp_path: Path) -> None:
    text = HELPDESK.replace('"contoso"', '"support.contoso.com"')
    [(key, reason)] = zendesk_problems(tmp_path, text)
    assert key == "subdomain"
    assert "custom domain" in reason
    assert "brand_hosts" in reason


@pytest.mark.parametrize(
    "given", ["contoso", "contoso.zendesk.com", "https://contoso.zendesk.com/", "Contoso"]
)
def test_zendesk_subdomain_is_normalised(tmp_path: Path, given: str) -> None:
    from bridge.registry import load_file_registrations

    settings = load(write(tmp_path, registrations={"helpdesk": HELPDESK.replace("contoso", given)}))
    [reg] = load_file_registrations(settings.registrations, [], profiles=PROFILES, hash_secret=str)
    assert reg.options.subdomain == "contoso"


def test_zendesk_short_shared_secret_is_refused(tmp_path: Path) -> None:
    text = HELPDESK.replace("zendesk-shared-secret-0123456789abcdef", "too-short")
    [(key, reason)] = zendesk_problems(tmp_path, text)
    assert key == "shared_secret"
    assert "too short" in reason


def test_zendesk_role_mapping_is_refused(tmp_path: Path) -> None:
    text = HELPDESK + '[claims]\nrole = "member_type"\n'
    [(key, reason)] = zendesk_problems(tmp_path, text)
    assert key == "claims.role"
    assert "must not grant Zendesk privileges" in reason


@pytest.mark.parametrize("host", ["https://support.contoso.com", "support", "a/b.example.org"])
def test_zendesk_bad_brand_host_is_refused(tmp_path: Path, host: str) -> None:
    text = HELPDESK + f'brand_hosts = ["help.contoso.com", "{host}"]\n'
    [(key, reason)] = zendesk_problems(tmp_path, text)
    assert key == "brand_hosts[1]"
    assert "not a host name" in reason


def test_zendesk_oidc_keys_are_unknown(tmp_path: Path) -> None:
    text = HELPDESK + 'client_id = "helpdesk"\n'
    assert zendesk_problems(tmp_path, text) == [("client_id", "unknown key for profile 'zendesk'")]


# --- access rules ---------------------------------------------------------------------------


def rule(**lists: object) -> AccessRule:
    sink: list[Problem] = []
    parsed = parse_access(lists, Problems("test.toml", sink))
    assert sink == []
    return parsed


def person(**fields: str) -> Identity:
    base = {"imis_id": "100", "username": "pat", "full_name": "Pat Doe"}
    return Identity(**{**base, **fields})  # type: ignore[arg-type]


def test_empty_access_rule_lets_everyone_in() -> None:
    assert parse_access(None, Problems("t", [])).refusal(person()) is None


def test_listed_imis_id_is_always_allowed() -> None:
    access = rule(member_types=["STAFF"], imis_ids=["100", 23210])
    assert access.refusal(person(member_type="REG")) is None
    assert access.refusal(person(imis_id="23210")) is None
    assert access.refusal(person(imis_id="101")) is not None


def test_only_imis_ids_means_only_those_people() -> None:
    access = rule(imis_ids=["100"])
    assert access.refusal(person()) is None
    assert access.refusal(person(imis_id="7")) is not None


def test_every_given_list_must_match() -> None:
    access = rule(member_types=["reg"], statuses=["A"])
    ok = person(member_type="REG", status="Active", status_id="A")
    assert access.refusal(ok) is None
    assert access.refusal(person(member_type="REG", status_id="I")) is not None
    assert access.refusal(person(member_type="STU", status_id="A")) is not None


def test_status_matches_by_id_or_name() -> None:
    access = rule(statuses=["active"])
    assert access.refusal(person(status="Active", status_id="A")) is None
    by_id = rule(statuses=["a"])
    assert by_id.refusal(person(status="Active", status_id="A")) is None
    assert by_id.refusal(person(status="Inactive", status_id="I")) is not None


def test_organization_matches_by_id_or_name() -> None:
    member = person(organization_id="18000", organization_name="Contoso Ltd")
    assert rule(organizations=["18000"]).refusal(member) is None
    assert rule(organizations=[18000]).refusal(member) is None
    assert rule(organizations=["contoso ltd"]).refusal(member) is None
    assert rule(organizations=["Fabrikam"]).refusal(member) is not None
    alnum = person(organization_id="ORG-7")
    assert rule(organizations=["ORG-7"]).refusal(alnum) is None


def test_person_without_the_attribute_is_refused() -> None:
    assert rule(member_types=["REG"]).refusal(person()) is not None


def test_refusal_uses_the_custom_message() -> None:
    access = rule(member_types=["REG"], message="Members only.")
    assert access.refusal(person(member_type="STU")) == "Members only."
    default = rule(member_types=["REG"]).refusal(person(member_type="STU"))
    assert default is not None
    assert "not among those allowed" in default


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ({"member_type": ["REG"]}, "access.member_type"),
        ({"statuses": "A"}, "access.statuses"),
        ({"statuses": []}, "access.statuses"),
        ({"imis_ids": [""]}, "access.imis_ids"),
        ({"message": ""}, "access.message"),
        ("REG", "access"),
    ],
)
def test_bad_access_rule_is_refused(value: object, key: str) -> None:
    sink: list[Problem] = []
    parse_access(value, Problems("t.toml", sink))
    assert [p.key for p in sink] == [key]


def test_access_rule_in_a_registration_file(tmp_path: Path) -> None:
    from bridge.registry import load_file_registrations

    text = PORTAL + '[access]\nmember_types = ["REG"]\nmessage = "Members only."\n'
    settings = load(write(tmp_path, registrations={"portal": text}))
    [reg] = load_file_registrations(settings.registrations, [], profiles=PROFILES, hash_secret=str)
    assert reg.access.to_data() == {"member_types": ["REG"], "message": "Members only."}
    assert reg.imis_properties == ("MemberType",)


def test_a_registration_cannot_take_a_reserved_slug(tmp_path: Path) -> None:
    """/zendesk/continue is a fixed path: a registration named 'continue' could never be reached."""
    from tests.support.profiles import is_valid_slug

    assert not is_valid_slug("continue")
    assert is_valid_slug("continue-helpdesk")


# --- [metrics] --------------------------------------------------------------------------


def test_metrics_are_on_for_this_machine_only_by_default(tmp_path: Path) -> None:
    metrics = load(write(tmp_path)).metrics
    assert metrics.enabled
    assert [str(n) for n in metrics.allow] == ["127.0.0.1/32", "::1/128"]
    assert metrics.allows("127.0.0.1")
    assert metrics.allows("::1")
    assert metrics.allows("::ffff:127.0.0.1")
    assert not metrics.allows("127.0.0.2")
    assert not metrics.allows("192.0.2.7")
    assert not metrics.allows("testclient")
    assert not metrics.allows(None)


def test_metrics_allow_list_from_the_file(tmp_path: Path) -> None:
    metrics = load(
        write(tmp_path, ISSUER + '\n[metrics]\nallow = ["10.0.0.0/8", "2001:db8::/32"]\n')
    ).metrics
    assert metrics.allows("10.1.2.3")
    assert metrics.allows("2001:db8::5")
    assert not metrics.allows("127.0.0.1")


def test_metrics_allow_list_and_switch_from_the_environment(tmp_path: Path) -> None:
    env = {"BRIDGE_METRICS__ALLOW": "192.0.2.0/24, ::1/128", "BRIDGE_METRICS__ENABLED": "false"}
    metrics = load(write(tmp_path), env).metrics
    assert [str(n) for n in metrics.allow] == ["192.0.2.0/24", "::1/128"]
    assert not metrics.enabled
    assert not metrics.allows("192.0.2.1")


@pytest.mark.parametrize("network", ["10.0.0.1/8", "localhost", "10.0.0.0/33"])
def test_a_metrics_allow_entry_that_is_not_a_network_is_refused(
    tmp_path: Path, network: str
) -> None:
    problem = only_problem(write(tmp_path, ISSUER + f'\n[metrics]\nallow = ["{network}"]\n'))
    assert problem.key == "metrics.allow"
    assert problem.reason == f"{network!r} is not a network such as 10.0.0.0/8 or ::1/128"
