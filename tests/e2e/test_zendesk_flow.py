"""Zendesk JWT remote login over real HTTP: the bridge, the iMIS simulator and the demo Zendesk.

The bridge runs with ``zendesk_base_url`` pointing at a demo Zendesk served on
its own loopback port, which verifies every token as Zendesk would and asks
the bridge's registry for the current shared secret. Browsers are httpx clients
with their own cookie jars. Covers SECURITY E1-E6 and the remote logout.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from bridge import cli
from bridge.demo.zendesk import create_demo_zendesk
from tests.support.bridge import Harness, hidden_fields, running_bridge, write_config
from tests.support.servers import free_port, serve

SECRET = "contoso-zendesk-shared-secret-0123456789"
OTHER_SECRET = "another-zendesk-shared-secret-9876543210"
#: How soon the bridge sees a change the CLI (another process) made.
CACHE_SECONDS = 0.2

HELPDESK = f"""
name = "Contoso Helpdesk"
profile = "zendesk"
subdomain = "https://Contoso.zendesk.com/"
shared_secret = "{SECRET}"
brand_hosts = ["support.contoso.com"]
"""
OPEN_DESK = f"""
name = "Open Helpdesk"
profile = "zendesk"
subdomain = "open"
shared_secret = "{OTHER_SECRET}"
refuse_shared_email = false
"""
STAFF_DESK = f"""
name = "Staff Desk"
profile = "zendesk"
subdomain = "staff"
shared_secret = "{SECRET}"

[access]
member_types = ["STAFF"]
message = "Only association staff can use the Staff Desk."
"""
MAPPED_DESK = f"""
name = "Mapped Desk"
profile = "zendesk"
subdomain = "mapped"
shared_secret = "{SECRET}"

[claims]
organization = "organization_name"
organization_id = "organization_id"
tags = "member_type"
user_fields.chapter = "Chapter"
"""
PORTAL = """
name = "Member Portal"
profile = "oidc"
client_id = "zd-portal"
redirect_uris = ["https://portal.example.org/callback"]
scopes = ["openid"]
"""

_ACTION = re.compile(r'<form id="zendesk-jwt"[^>]*action="([^"]+)"')


@dataclass
class Setup:
    bridge: Harness
    zendesk: str  # the demo Zendesk's base URL; subdomain pages live under /{subdomain}
    slugs: dict[str, str]  # subdomain -> registration, for the demo Zendesk's look-ups

    def browser(self) -> httpx.Client:
        return self.bridge.client()

    def secret(self, subdomain: str) -> str | None:
        slug = self.slugs.get(subdomain)
        registration = self.bridge.services.registry.get(slug) if slug else None
        return str(registration.options.shared_secret) if registration else None

    def remote_login_url(self, subdomain: str) -> str | None:
        slug = self.slugs.get(subdomain)
        return f"{self.bridge.url}/zendesk/{slug}" if slug else None


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Setup]:
    tmp: Path = tmp_path_factory.mktemp("zendesk")
    zendesk_port = free_port()
    zendesk = f"http://127.0.0.1:{zendesk_port}"
    registrations = {
        "helpdesk": HELPDESK,
        "open-desk": OPEN_DESK,
        "staff-desk": STAFF_DESK,
        "mapped-desk": MAPPED_DESK,
        "zd-portal": PORTAL,
    }
    extra = (
        f'zendesk_base_url = "{zendesk}/{{subdomain}}"\nregistry_cache_seconds = {CACHE_SECONDS}'
    )
    slugs = {
        "contoso": "helpdesk",
        "open": "open-desk",
        "staff": "staff-desk",
        "mapped": "mapped-desk",
    }
    # The database is shared with other test modules (their registrations are encrypted
    # with other keyrings), so the demo Zendesk looks registrations up by slug only.
    with running_bridge(tmp, database_url, registrations=registrations, extra=extra) as bridge:
        setup = Setup(bridge=bridge, zendesk=zendesk, slugs=slugs)
        receiver = create_demo_zendesk(setup.secret, setup.remote_login_url)
        with serve(receiver, port=zendesk_port):
            yield setup


@dataclass
class AutoPost:
    response: httpx.Response
    action: str
    jwt: str
    return_to: str | None

    @property
    def header_bytes(self) -> bytes:
        first = self.jwt.split(".")[0]
        return base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))

    def claims(self, secret: str = SECRET) -> dict[str, Any]:
        data: dict[str, Any] = jwt.decode(
            self.jwt, secret, algorithms=["HS256"], options={"verify_iat": False}
        )
        return data


def login(browser: httpx.Client, username: str, request_id: str | None = None) -> httpx.Response:
    """Submit the sign-in form like a person (for ``request_id``, or plain /login)."""
    page = browser.get("/login", params={"request": request_id} if request_id else None)
    fields = hidden_fields(page.text)
    return browser.post("/login", data={**fields, "username": username, "password": "password1"})


def remote_login(
    browser: httpx.Client, slug: str = "helpdesk", username: str | None = None, **params: str
) -> httpx.Response:
    """What Zendesk's redirect starts; signs in as ``username`` when asked to."""
    response = browser.get(f"/zendesk/{slug}", params=params)
    for _ in range(6):
        location = response.headers.get("location", "")
        if response.status_code != 303 or not location.startswith("/"):
            return response
        if location.startswith("/login"):
            assert username is not None, "the bridge asked for a sign-in"
            request_id = parse_qs(urlsplit(location).query)["request"][0]
            response = login(browser, username, request_id)
        else:
            response = browser.get(location)
    raise AssertionError("too many redirects")


def autopost(response: httpx.Response) -> AutoPost:
    assert response.status_code == 200, response.text
    match = _ACTION.search(response.text)
    assert match, response.text
    fields = hidden_fields(response.text)
    return AutoPost(
        response=response,
        action=html.unescape(match.group(1)),
        jwt=fields["jwt"],
        return_to=fields.get("return_to"),
    )


def text(response: httpx.Response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text)))


@pytest.fixture(scope="module")
def jane(setup: Setup) -> Iterator[httpx.Client]:
    """A browser signed in as Jane Doe (regular member, phone, organization)."""
    with setup.browser() as browser:
        assert login(browser, "jdoe").status_code == 303
        yield browser


# --- the round trip --------------------------------------------------------------


def test_new_user_is_sent_to_sign_in_then_gets_the_auto_post_form(setup: Setup) -> None:
    with setup.browser() as browser:
        first = browser.get("/zendesk/helpdesk", params={"return_to": "/hc/en-us"})
        assert first.status_code == 303
        assert first.headers["location"].startswith("/login?request=")
        post = autopost(remote_login(browser, username="clocal", return_to="/hc/en-us"))
    assert post.action == f"{setup.zendesk}/contoso/access/jwt"
    assert post.return_to == "/hc/en-us"
    assert post.claims()["email"] == "carla.lopez@example.org"
    assert post.claims()["phone"] == "+12025550143"
    headers = post.response.headers
    assert headers["cache-control"] == "no-store"
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert f"form-action {setup.zendesk} " in csp
    assert "'unsafe-inline'" not in csp
    page = post.response.text
    assert '<script src="/static/zendesk_autopost.js"></script>' in page
    noscript = page[page.index("<noscript>") : page.index("</noscript>")]
    assert '<button type="submit">Continue to Contoso Helpdesk</button>' in noscript


def test_auto_post_script_is_served_from_static(setup: Setup) -> None:
    response = httpx.get(f"{setup.bridge.url}/static/zendesk_autopost.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert 'getElementById("zendesk-jwt")' in response.text


def test_returning_session_gets_the_form_without_the_login_page(jane: httpx.Client) -> None:
    response = jane.get("/zendesk/helpdesk", params={"brand_id": "1", "locale_id": "1"})
    post = autopost(response)
    assert post.claims()["external_id"] == "23210"


def test_sign_in_at_zendesk_also_signs_in_to_oidc_apps(setup: Setup) -> None:
    with setup.browser() as browser:
        autopost(remote_login(browser, username="zoe"))
        page = browser.get("/login")
    assert page.status_code == 200
    assert "You are signed in" in page.text


def test_jwt_header_and_claims_are_exact(jane: httpx.Client) -> None:
    post = autopost(jane.get("/zendesk/helpdesk"))
    assert post.header_bytes == b'{"typ":"JWT","alg":"HS256"}'
    claims = post.claims()
    assert set(claims) == {"iat", "jti", "email", "name", "external_id", "phone"}
    assert isinstance(claims["iat"], int)
    assert claims["email"] == "jane.doe@example.org"
    assert claims["name"] == "Jane Doe"
    assert claims["external_id"] == "23210"
    assert isinstance(claims["external_id"], str)
    assert claims["phone"] == "+12025550100"


def test_jti_is_long_random_and_unique_across_100_tokens(jane: httpx.Client) -> None:
    jtis = [autopost(jane.get("/zendesk/helpdesk")).claims()["jti"] for _ in range(100)]
    assert len(set(jtis)) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22,}", jti) for jti in jtis)


def test_no_phone_claim_when_imis_has_none(setup: Setup) -> None:
    with setup.browser() as browser:
        claims = autopost(remote_login(browser, username="bsmith")).claims()
    assert "phone" not in claims
    assert claims["email"] == "bob.smith@example.org"


def test_name_falls_back_to_first_and_last(setup: Setup) -> None:
    with setup.browser() as browser:
        claims = autopost(remote_login(browser, username="dwhitfield")).claims()
    assert claims["name"] == "Dana Whitfield"
    assert "phone" in claims  # the extension is dropped by E.164 normalisation


def test_mapped_claims_reach_the_token(jane: httpx.Client) -> None:
    claims = autopost(jane.get("/zendesk/mapped-desk")).claims()
    assert claims["organization"] == "Contoso Ltd"
    assert claims["organization_id"] == "18000"
    assert claims["tags"] == ["REG"]
    assert claims["user_fields"] == {"chapter": "Capital"}
    assert "role" not in claims


def test_a_registration_mapping_role_is_refused_at_config_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_config(
        tmp_path / "config",
        issuer="http://127.0.0.1:9",
        database_url=f"sqlite:///{tmp_path / 'bridge.db'}",
        imis_url="http://127.0.0.1:9",
        registrations={
            "escalate": MAPPED_DESK + 'role = "member_type"\n',
        },
    )
    assert cli.main(["check-config", "--config", str(folder)]) != 0
    err = capsys.readouterr().err
    assert "claims.role" in err
    assert "never be mapped" in err


# --- delivery to (demo) Zendesk ---------------------------------------------------------


def test_demo_zendesk_accepts_the_token_and_follows_return_to(jane: httpx.Client) -> None:
    post = autopost(jane.get("/zendesk/helpdesk", params={"return_to": "/hc/en-us/articles/1"}))
    with httpx.Client(timeout=10) as zendesk:
        received = zendesk.post(post.action, data={"jwt": post.jwt, "return_to": post.return_to})
        assert received.status_code == 303
        assert received.headers["location"] == "/contoso/hc/en-us/articles/1"
        page = zendesk.get(post.action.replace("/access/jwt", "/hc/en-us/articles/1"))
    assert page.status_code == 200
    assert "Signed in as" in page.text
    assert "Jane Doe" in page.text
    assert "jane.doe@example.org" in page.text


def test_a_replayed_jti_is_refused_by_zendesk(jane: httpx.Client, setup: Setup) -> None:
    post = autopost(jane.get("/zendesk/helpdesk"))
    first = httpx.post(post.action, data={"jwt": post.jwt})
    again = httpx.post(post.action, data={"jwt": post.jwt})
    assert first.status_code == 303
    assert again.status_code == 302
    target = urlsplit(again.headers["location"])
    assert f"{target.scheme}://{target.netloc}" == setup.bridge.url
    assert target.path == "/zendesk/helpdesk/logout"
    query = parse_qs(target.query)
    assert query["kind"] == ["error"]
    assert "already been used" in query["message"][0]
    error_page = jane.get(again.headers["location"])
    assert "already used" in text(error_page)


# --- refusals ----------------------------------------------------------------------------


def test_no_primary_email_is_refused_with_a_clear_page(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    with setup.browser() as browser, caplog.at_level(logging.INFO, logger="bridge.zendesk"):
        response = remote_login(browser, username="noemail")
    assert response.status_code == 403
    assert "no primary email address" in text(response)
    assert "jwt" not in hidden_fields(response.text)
    assert "imis_id=23219 has no primary email" in caplog.text


def test_organization_record_cannot_sign_in(setup: Setup) -> None:
    with setup.browser() as browser:
        response = remote_login(browser, username="contoso")
    assert response.status_code == 403
    assert "organization" in text(response).lower()
    assert "jwt" not in hidden_fields(response.text)


def test_shared_primary_email_is_refused_and_the_admin_is_told_both_ids(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    with setup.browser() as browser, caplog.at_level(logging.INFO, logger="bridge.zendesk"):
        response = remote_login(browser, username="sam")
    assert response.status_code == 403
    page = text(response)
    assert "archers@example.org" in page
    assert "another person's iMIS account" in page
    assert "23217" not in page  # the other person's id is for the admin only
    assert "jwt" not in hidden_fields(response.text)
    refusal = [r.getMessage() for r in caplog.records if "shares primary email" in r.getMessage()]
    assert refusal
    assert "imis_id=23216" in refusal[0]
    assert "23217" in refusal[0]
    assert "23218" not in refusal[0]  # Robin cannot sign in, so is no risk


def test_shared_primary_email_is_allowed_when_switched_off(setup: Setup) -> None:
    with setup.browser() as browser:
        post = autopost(remote_login(browser, "open-desk", username="alex"))
    claims = post.claims(OTHER_SECRET)
    assert claims["email"] == "archers@example.org"
    assert claims["external_id"] == "23217"


def test_access_rule_refuses_with_its_message(jane: httpx.Client) -> None:
    response = jane.get("/zendesk/staff-desk")
    assert response.status_code == 403
    assert "Only association staff can use the Staff Desk." in text(response)
    assert "jwt" not in hidden_fields(response.text)


def test_access_rule_lets_staff_in(setup: Setup) -> None:
    with setup.browser() as browser:
        post = autopost(remote_login(browser, "staff-desk", username="manager"))
    assert post.claims()["external_id"] == "10001"


def test_imis_unavailable_is_a_503_with_retry_after(setup: Setup) -> None:
    with setup.browser() as browser:
        assert login(browser, "inactive").status_code == 303
        setup.bridge.set_faults(status=503, retry_after=7)
        try:
            response = browser.get("/zendesk/helpdesk")
        finally:
            setup.bridge.clear_faults()
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "try again" in text(response).lower()
    assert "jwt" not in hidden_fields(response.text)


@pytest.mark.parametrize("slug", ["nope", "zd-portal", "UPPER", "a" * 200])
def test_unknown_or_non_zendesk_registration_is_a_404(setup: Setup, slug: str) -> None:
    response = httpx.get(f"{setup.bridge.url}/zendesk/{slug}")
    assert response.status_code == 404
    assert "no Zendesk sign-in at this address" in text(response)


def test_continue_with_an_unknown_request_is_refused(setup: Setup) -> None:
    response = httpx.get(f"{setup.bridge.url}/zendesk/continue", params={"request": "forged"})
    assert response.status_code == 400
    assert "start again" in text(response)


# --- return_to (SECURITY E3) ------------------------------------------------------------------

ATTACKS = [
    "https://evil.example/",
    "https://contoso.zendesk.com.evil.example/hc",
    "//evil.example/",
    "\\\\evil.example/",
    "/\\evil.example/",
    "https://contoso.zendesk.com@evil.com/",
    "javascript:alert(document.cookie)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "http://contoso.zendesk.com/hc",
    "https://unconfigured-brand.example/hc",
    "/%2F%2Fevil.example/",
    "/%252F%252Fevil.example/",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "https://contoso.zendesk.com%40evil.com/",
    "/hc\r\nLocation: https://evil.example/",
    "/hc%0D%0ALocation:%20https://evil.example/",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_return_to_attack_is_dropped_and_the_form_still_goes_to_zendesk(
    jane: httpx.Client, setup: Setup, attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bridge.zendesk"):
        post = autopost(jane.get("/zendesk/helpdesk", params={"return_to": attack}))
    assert post.return_to is None
    assert 'name="return_to"' not in post.response.text
    assert post.action == f"{setup.zendesk}/contoso/access/jwt"
    assert "return_to dropped" in caplog.text


@pytest.mark.parametrize(
    "good",
    [
        "/hc/en-us/articles/1",
        "https://contoso.zendesk.com/agent/tickets/1",
        "https://support.contoso.com/hc/en-us",
    ],
)
def test_return_to_on_zendesk_or_a_brand_host_is_kept(jane: httpx.Client, good: str) -> None:
    post = autopost(jane.get("/zendesk/helpdesk", params={"return_to": good}))
    assert post.return_to == good


def test_return_to_survives_the_sign_in_page(setup: Setup) -> None:
    with setup.browser() as browser:
        attack = autopost(remote_login(browser, username="zoe", return_to="//evil.example"))
    with setup.browser() as browser:
        kept = autopost(
            remote_login(browser, username="bsmith", return_to="https://support.contoso.com/hc")
        )
    assert attack.return_to is None
    assert kept.return_to == "https://support.contoso.com/hc"


# --- the shared secret (SECURITY E6) ----------------------------------------------------------


def _cli(monkeypatch: pytest.MonkeyPatch, config: Path, *args: str, secret: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
    assert cli.main(["registrations", *args, "--config", str(config), "--secret-stdin"]) == 0


@dataclass
class StoredDesk:
    slug: str
    secret: str


@pytest.fixture
def stored_desk(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoredDesk]:
    """A Zendesk registration added with the CLI while the bridge runs; removed afterwards."""
    desk = StoredDesk(f"stored-{secrets.token_hex(3)}", "first-" + secrets.token_urlsafe(32))
    subdomain = f"s{secrets.token_hex(3)}"
    config = setup.bridge.config_dir
    settings = ["--set", "profile=zendesk", "--set", "name=Stored Desk"]
    _cli(monkeypatch, config, "add", desk.slug, *settings, "--set", f"subdomain={subdomain}",
         secret=desk.secret)  # fmt: skip
    setup.slugs[subdomain] = desk.slug
    yield desk
    del setup.slugs[subdomain]
    assert cli.main(["registrations", "remove", desk.slug, "--config", str(config)]) == 0


def test_a_new_shared_secret_is_used_on_the_next_sign_in_without_restart(
    setup: Setup, jane: httpx.Client, stored_desk: StoredDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = stored_desk.secret, "second-" + secrets.token_urlsafe(32)
    before = autopost(jane.get(f"/zendesk/{stored_desk.slug}"))
    assert before.claims(first)["email"] == "jane.doe@example.org"
    assert httpx.post(before.action, data={"jwt": before.jwt}).status_code == 303

    _cli(monkeypatch, setup.bridge.config_dir, "rotate-secret", stored_desk.slug, secret=second)
    time.sleep(CACHE_SECONDS + 0.05)  # the CLI is another process: within registry_cache_seconds

    after = autopost(jane.get(f"/zendesk/{stored_desk.slug}"))
    assert after.claims(second)["external_id"] == "23210"
    with pytest.raises(jwt.InvalidSignatureError):
        after.claims(first)
    assert httpx.post(after.action, data={"jwt": after.jwt}).status_code == 303
    # A token signed with the old secret is now refused by (demo) Zendesk.
    stale = jwt.encode(
        {**after.claims(second), "jti": secrets.token_urlsafe(16)}, first, algorithm="HS256"
    )
    refused = httpx.post(after.action, data={"jwt": stale})
    assert refused.status_code == 302
    assert "signature" in parse_qs(urlsplit(refused.headers["location"]).query)["message"][0]


# --- remote logout and errors ------------------------------------------------------------------


@contextmanager
def _signed_in_browser(setup: Setup, username: str) -> Iterator[httpx.Client]:
    with setup.browser() as browser:
        assert login(browser, username).status_code == 303
        yield browser


def test_remote_logout_ends_the_session_and_follows_a_valid_return_to(setup: Setup) -> None:
    with _signed_in_browser(setup, "zoe") as browser:
        cookies = dict(browser.cookies)
        response = browser.get(
            "/zendesk/helpdesk/logout",
            params={
                "email": "ZOE@example.org",
                "external_id": "23214",
                "brand_id": "1",
                "return_to": "https://contoso.zendesk.com/hc",
            },
        )
        assert response.status_code == 303
        assert response.headers["location"] == "https://contoso.zendesk.com/hc"
        assert browser.get("/zendesk/helpdesk").headers["location"].startswith("/login")
    with setup.bridge.client(cookies=cookies) as replay:  # the old cookie is dead server-side
        assert replay.get("/zendesk/helpdesk").headers["location"].startswith("/login")


def test_remote_logout_with_a_relative_return_to_goes_to_zendesk(setup: Setup) -> None:
    with _signed_in_browser(setup, "zoe") as browser:
        response = browser.get(
            "/zendesk/helpdesk/logout",
            params={"external_id": "23214", "return_to": "/hc/en-us"},
        )
    assert response.status_code == 303
    assert response.headers["location"] == f"{setup.zendesk}/contoso/hc/en-us"


@pytest.mark.parametrize("attack", ["https://evil.example/", "//evil.example", "javascript:x"])
def test_remote_logout_never_redirects_off_zendesk(setup: Setup, attack: str) -> None:
    with _signed_in_browser(setup, "zoe") as browser:
        response = browser.get(
            "/zendesk/helpdesk/logout", params={"external_id": "23214", "return_to": attack}
        )
        assert response.status_code == 200
        assert "You are signed out" in text(response)
        assert browser.get("/zendesk/helpdesk").headers["location"].startswith("/login")


def test_remote_logout_for_another_person_keeps_the_session(setup: Setup) -> None:
    with _signed_in_browser(setup, "zoe") as browser:
        response = browser.get(
            "/zendesk/helpdesk/logout",
            params={"email": "jane.doe@example.org", "external_id": "23210"},
        )
        assert response.status_code == 200
        assert autopost(browser.get("/zendesk/helpdesk")).claims()["external_id"] == "23214"


def test_zendesk_error_is_logged_and_shown_escaped_with_fallback_links(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    message = '<script>alert("x")</script> Invalid JWT signature'
    query = urlencode({"kind": "error", "message": message})
    with caplog.at_level(logging.WARNING, logger="bridge.zendesk"):
        response = httpx.get(f"{setup.bridge.url}/zendesk/helpdesk/logout?{query}")
    assert response.status_code == 200
    assert "<script>alert" not in response.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in response.text
    page = text(response)
    assert "shared secret" in page  # the hint for a bad signature
    assert f'href="{setup.zendesk}/contoso/access/normal"' in response.text
    assert f'href="{setup.zendesk}/contoso/access/sso_bypass"' in response.text
    assert "registration=helpdesk" in caplog.text
    assert "Invalid JWT signature" in caplog.text


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        ("The JWT has expired", "clock"),
        ("jti has already been used", "already used"),
    ],
)
def test_zendesk_error_hints(setup: Setup, message: str, hint: str) -> None:
    query = urlencode({"kind": "error", "message": message})
    response = httpx.get(f"{setup.bridge.url}/zendesk/helpdesk/logout?{query}")
    assert hint in text(response)


def test_fallback_links_go_to_the_real_zendesk_without_the_override(
    tmp_path: Path, database_url: str
) -> None:
    with running_bridge(tmp_path, database_url, registrations={"helpdesk": HELPDESK}) as bridge:
        query = urlencode({"kind": "error", "message": "Invalid JWT signature"})
        response = httpx.get(f"{bridge.url}/zendesk/helpdesk/logout?{query}")
    assert 'href="https://contoso.zendesk.com/access/normal"' in response.text
    assert 'href="https://contoso.zendesk.com/access/sso_bypass"' in response.text


def test_form_action_is_the_real_zendesk_without_the_override(
    tmp_path: Path, database_url: str
) -> None:
    with (
        running_bridge(tmp_path, database_url, registrations={"helpdesk": HELPDESK}) as bridge,
        bridge.client() as browser,
    ):
        post = autopost(remote_login(browser, username="jdoe", return_to="https://evil.example/"))
    assert post.action == "https://contoso.zendesk.com/access/jwt"
    assert post.return_to is None
    csp = post.response.headers["content-security-policy"]
    assert "form-action https://contoso.zendesk.com https://*.zendesk.com" in csp
    assert "https://support.contoso.com" in csp


@pytest.mark.parametrize(
    "path",
    [
        "/zendesk/helpdesk?return_to=%ff%fe&brand_id=%00&locale_id=-1",
        "/zendesk/helpdesk?return_to=" + "%2F" * 3000,
        "/zendesk/helpdesk?return_to=/a&return_to=//evil.example",
        "/zendesk/%ff%fe",
        "/zendesk/continue?request=%00",
        "/zendesk/continue?request=" + "x" * 500,
        "/zendesk/helpdesk/logout?kind=error&message=%ff%00%1b[31m",
        "/zendesk/helpdesk/logout?kind=error&message=" + "m" * 5000,
        "/zendesk/helpdesk/logout?email=%ff&external_id=%00&return_to=%ff",
    ],
)
def test_odd_input_is_never_a_server_error(jane: httpx.Client, path: str) -> None:
    response = jane.get(path)
    assert response.status_code < 500, response.text
