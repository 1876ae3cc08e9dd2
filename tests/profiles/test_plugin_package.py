"""A profile from another package: discovered, configured from TOML and served, core untouched.

A throwaway package (``echo_profile_plugin``) is written to a temporary folder with
its own ``.dist-info`` declaring an entry point in ``imis_bridge.profiles``, exactly
as ``pip install`` would leave it, and that folder is put on ``sys.path``. Nothing
in bridge/ names it. The test shows the catalogue finds it, a registration file
in a temporary configuration folder configures it (its secret marked "encrypt",
its claim mapping), the app mounts its routes under ``/echo``, and over real
HTTP a signed-in person gets its answer: the same claims OIDC userinfo releases,
after the registration's access rule was checked by the core.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bridge import cli, plugin
from bridge.plugin import SignInProfile, load_profiles
from tests.support.bridge import Harness, hidden_fields, running_bridge

PLUGIN = '''
"""A throwaway profile: answers with the released claims, signed with its own key."""

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from starlette.responses import JSONResponse, PlainTextResponse

from bridge.profiles import (
    CONTINUE,
    Endpoint,
    OptionField,
    OptionsSchema,
    continue_path,
    require_str,
    sign_in_path,
    sign_in_routes,
)


@dataclass(frozen=True)
class EchoOptions:
    greeting: str
    signing_key: str = field(default="", repr=False)

    @property
    def lookup_key(self):
        return None

    def to_data(self):
        return {"greeting": self.greeting}

    def summary(self):
        return {"signing_key_set": bool(self.signing_key)}


def parse(data, problems, hash_secret):
    greeting = require_str(data, "greeting", problems)
    key = data.get("signing_key", "")
    if not isinstance(key, str) or len(key) < 16:
        problems.add("signing_key", "must be at least 16 characters")
        key = ""
    return EchoOptions(greeting=greeting, signing_key=key)


SCHEMA = OptionsSchema(
    fields=(
        OptionField("greeting", "Greeting", "Said to every person", required=True),
        OptionField("signing_key", "Signing key", required=True, kind="secret", secret="encrypt"),
    ),
    parse=parse,
)


class EchoProfile:
    name = "echo"
    display_name = "Echo Profile"
    schema = SCHEMA
    reserved_slugs = frozenset({CONTINUE})
    not_found_message = "There is no echo here."
    expired_message = "Start again from the app."

    @property
    def continue_path(self):
        return continue_path(self.name)

    def claim_target(self, target):
        return None if target.isidentifier() and target.islower() else "lowercase names only"

    def routes(self):
        return sign_in_routes(self)

    def endpoints(self, issuer, registration):
        return [Endpoint("Sign-in URL", issuer + sign_in_path(self.name, registration.slug))]

    def read_request(self, request, registration):
        return {"state": request.query_params.get("state")}

    async def without_session(self, request, registration, params):
        return None

    def refused(self, request, registration, identity, message):
        return PlainTextResponse("refused: " + message, status_code=403)

    async def answer(self, request, registration, person, params):
        options = registration.options
        answer = {"greeting": options.greeting, "state": params.get("state")}
        payload = json.dumps({**answer, "claims": dict(person.claims)}, sort_keys=True)
        sig = hmac.new(options.signing_key.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return JSONResponse({"payload": payload, "sig": sig})


PROFILE = EchoProfile()
'''

KEY = "echo-signing-key-0123456789"
ECHO_APP = f"""
name = "Echo App"
profile = "echo"
greeting = "Hello from a plugin"
signing_key = "{KEY}"

[access]
member_types = ["REG"]

[claims]
chapter = "Chapter"
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder holding the installed package and its dist-info, put first on sys.path."""
    site = tmp_path_factory.mktemp("site-packages")
    package = site / "echo_profile_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "echo_profile_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: echo-profile-plugin\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[imis_bridge.profiles]\necho = echo_profile_plugin:PROFILE\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        yield site


@pytest.fixture(scope="module")
def bridge(
    plugin_path: Path, tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[Harness]:
    tmp = tmp_path_factory.mktemp("plugin")
    with running_bridge(tmp, database_url, registrations={"echo-app": ECHO_APP}) as harness:
        yield harness


def follow(browser: httpx.Client, path: str, username: str) -> httpx.Response:
    """Start at ``path`` like a browser, signing in as ``username`` when asked."""
    response = browser.get(path)
    for _ in range(6):
        location = response.headers.get("location", "")
        if response.status_code != 303 or not location.startswith("/"):
            return response
        if location.startswith("/login"):
            request_id = parse_qs(urlsplit(location).query)["request"][0]
            page = browser.get("/login", params={"request": request_id})
            fields = {**hidden_fields(page.text), "username": username, "password": "password1"}
            response = browser.post("/login", data=fields)
        else:
            response = browser.get(location)
    raise AssertionError("too many redirects")


def answer_of(response: httpx.Response, key: str = KEY) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    expected = hmac.new(key.encode(), body["payload"].encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(body["sig"], expected)
    payload: dict[str, Any] = json.loads(body["payload"])
    return payload


def test_the_plugin_is_discovered_through_its_entry_point(plugin_path: Path) -> None:
    profiles = load_profiles()
    assert list(profiles) == ["discourse", "echo", "oidc", "zendesk"]
    echo = profiles["echo"]
    assert isinstance(echo, SignInProfile)
    assert echo.display_name == "Echo Profile"
    assert type(echo).__module__ == "echo_profile_plugin"
    assert profiles.continue_paths()["echo"] == "/echo/continue"


def test_without_installed_profiles_the_remedy_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A source tree never installed has no entry points: say so, not "unknown profile"."""
    monkeypatch.setattr(plugin, "entry_points", lambda group: [])
    with pytest.raises(plugin.ProfileError, match=r"pip install -e \."):
        plugin.load_profiles()


def test_a_signed_in_person_gets_the_claims_userinfo_releases(bridge: Harness) -> None:
    with bridge.client() as browser:
        first = answer_of(follow(browser, "/echo/echo-app?state=s-1", "jdoe"))
        # The session is shared: a second visit answers at once, without the sign-in page.
        again = browser.get("/echo/echo-app", params={"state": "s-2"})
        second = answer_of(again)
    assert first["greeting"] == "Hello from a plugin"
    assert (first["state"], second["state"]) == ("s-1", "s-2")
    assert first["claims"] == {
        "sub": "23210",
        "name": "Jane Doe",
        "given_name": "Jane",
        "family_name": "Doe",
        "email": "jane.doe@example.org",
        "email_verified": False,
        "phone_number": "+12025550100",
        "chapter": "Capital",  # the registration's [claims] mapping
    }


def test_the_access_rule_is_checked_by_the_core(bridge: Harness) -> None:
    with bridge.client() as browser:
        response = follow(browser, "/echo/echo-app", "bsmith")  # a student, not REG
    assert response.status_code == 403
    assert response.text.startswith("refused: ")


def test_an_unknown_slug_is_the_plugins_404(bridge: Harness) -> None:
    with bridge.client() as browser:
        response = browser.get("/echo/no-such-app", headers={"accept": "application/json"})
    assert response.status_code == 404
    assert response.json()["message"] == "There is no echo here."


def test_a_stored_registration_keeps_the_plugins_secret_encrypted(bridge: Harness) -> None:
    services = bridge.services
    slug = "echo-stored"
    key = "another-echo-key-0123456789"
    data = {"name": "Stored Echo", "profile": "echo", "greeting": "Hi", "signing_key": key}
    services.registry.add(slug, data, actor="test")
    try:
        row = services.store.get_registration(slug)
        assert row is not None
        assert row.secret_encrypted
        assert row.secret_hash is None
        assert key not in row.options_json
        assert key not in row.secret_encrypted
        with bridge.client() as browser:
            payload = answer_of(follow(browser, f"/echo/{slug}", "bsmith"), key=key)
        assert payload["greeting"] == "Hi"
        assert payload["claims"]["sub"] == "23211"
    finally:
        services.registry.remove(slug)


def test_registrations_show_lists_the_plugins_endpoints(bridge: Harness) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(
            ["registrations", "show", "echo-app", "--config", str(bridge.config_dir), "--json"]
        )
    assert code == cli.EXIT_OK
    shown = json.loads(out.getvalue())
    assert shown["profile"] == "echo"
    assert shown["signing_key_set"] is True
    assert shown["endpoints"] == [{"label": "Sign-in URL", "url": f"{bridge.url}/echo/echo-app"}]
