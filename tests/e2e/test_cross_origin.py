"""Apps on other origins, over real HTTP: CSP form-action (D7), CORS, advertised prompts.

The Chromium side (the flows landing on the app, fetch() from a page) is in
``tests/browser/test_cross_origin.py``; here are the exact headers: which
origin a page's ``form-action`` names, and which origin may read which answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.oauth.rp import Rp
from tests.routes.test_login import PORTAL
from tests.support.bridge import Harness, hidden_fields, running_bridge
from tests.support.relying_party import (
    SPA_CLIENT_ID,
    WEB_CLIENT_ID,
    WEB_SECRET,
    RelyingParty,
)

APP = RelyingParty(port=8443, url="https://app.example.org:8443")
SPA_ORIGIN = APP.url
OTHER_SPA = """
name = "Other SPA"
profile = "oidc"
client_id = "other-spa"
redirect_uris = ["https://other.example.org/cb"]
web_origins = ["https://other.example.org"]
"""
HELPDESK = """
name = "Helpdesk"
profile = "zendesk"
subdomain = "contoso"
shared_secret = "helpdesk-shared-secret-0123456789abcdef"
"""


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("cross-origin-http")
    registrations = {
        "app": APP.web_registration,
        "spa": APP.spa_registration(),
        "other-spa": OTHER_SPA,
        "member-portal": PORTAL,
        "helpdesk": HELPDESK,
    }
    with running_bridge(tmp, database_url, registrations=registrations) as harness:
        yield harness


@pytest.fixture
def app(bridge: Harness, http: httpx.Client) -> Rp:
    return Rp(bridge, http, WEB_CLIENT_ID, WEB_SECRET, f"{APP.url}/callback")


@pytest.fixture
def spa(bridge: Harness, http: httpx.Client) -> Rp:
    return Rp(bridge, http, SPA_CLIENT_ID, None, f"{APP.url}/spa/", scope="openid profile")


def form_action(response: httpx.Response) -> str:
    found = re.search(r"form-action ([^;]*)", response.headers["content-security-policy"])
    assert found, response.headers["content-security-policy"]
    return found.group(1)


# --- D7: form-action names exactly the registered target's origin ------------------------


def test_d7_sign_in_page_of_an_oidc_request_allows_exactly_the_apps_origin(
    app: Rp, browser: httpx.Client
) -> None:
    response = browser.get(app.authorize_url(app.authorize_params()))
    page = browser.get(response.headers["location"])
    assert page.status_code == 200
    assert form_action(page) == "'self' https://app.example.org:8443"

    # A wrong password re-renders the same form: same policy.
    fields = hidden_fields(page.text)
    wrong = browser.post("/login", data={**fields, "username": "jdoe", "password": "nope"})
    assert wrong.status_code == 401
    assert form_action(wrong) == "'self' https://app.example.org:8443"


def test_d7_sign_in_pages_that_end_on_the_bridge_allow_only_self(
    bridge: Harness, browser: httpx.Client
) -> None:
    assert form_action(browser.get("/login")) == "'self'"
    zendesk = browser.get("/zendesk/helpdesk")
    assert zendesk.status_code == 303
    assert form_action(browser.get(zendesk.headers["location"])) == "'self'"


def test_d7_logout_confirmation_allows_exactly_the_post_logout_origin(
    app: Rp, browser: httpx.Client
) -> None:
    app.tokens(browser)
    query = {"client_id": WEB_CLIENT_ID, "post_logout_redirect_uri": f"{APP.url}/signed-out"}
    confirm = browser.get(f"/end_session?{urlencode(query)}")
    assert "Sign out?" in confirm.text
    assert form_action(confirm) == "'self' https://app.example.org:8443"

    bare = browser.get("/end_session")
    assert "Sign out?" in bare.text
    assert form_action(bare) == "'self'"

    fields = hidden_fields(confirm.text)
    done = browser.post("/end_session", data=fields)
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"{APP.url}/signed-out")


# --- discovery --------------------------------------------------------------------------


def test_discovery_advertises_only_the_prompt_values_it_honours(
    bridge: Harness, http: httpx.Client
) -> None:
    """none -> login_required without a session, login -> the sign-in page (the
    conformance tests check both); consent and select_account change nothing."""
    metadata = http.get(f"{bridge.url}/.well-known/openid-configuration").json()
    assert metadata["prompt_values_supported"] == ["none", "login"]


def test_prompt_consent_and_select_account_are_accepted_but_change_nothing(
    app: Rp, browser: httpx.Client
) -> None:
    app.tokens(browser)
    for prompt in ("consent", "select_account"):
        params = app.authorize_params(prompt=prompt)
        assert app.authorization_from(browser.get(app.authorize_url(params)), params).code


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/.well-known/jwks.json"])
def test_discovery_and_jwks_are_readable_from_any_origin(
    bridge: Harness, http: httpx.Client, path: str
) -> None:
    response = http.get(f"{bridge.url}{path}", headers={"origin": "https://anywhere.example"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


# --- CORS on the token side ----------------------------------------------------------------


PREFLIGHTS = [("/token", "POST"), ("/userinfo", "GET"), ("/userinfo", "POST"), ("/revoke", "POST")]


@pytest.mark.parametrize(("path", "method"), PREFLIGHTS)
def test_preflight_from_a_listed_origin_is_allowed(
    bridge: Harness, http: httpx.Client, path: str, method: str
) -> None:
    response = http.options(
        f"{bridge.url}{path}",
        headers={
            "origin": SPA_ORIGIN,
            "access-control-request-method": method,
            "access-control-request-headers": "authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == SPA_ORIGIN
    assert method in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert "origin" in response.headers["vary"].lower()
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(
    ("origin", "method"),
    [
        ("https://evil.example", "POST"),
        ("https://app.example.org", "POST"),  # another port
        ("http://app.example.org:8443", "POST"),  # another scheme
        ("https://app.example.org:8443.evil.example", "POST"),
        ("https://app.example.org:8443/", "POST"),
        ("null", "POST"),
        (SPA_ORIGIN, "PUT"),
    ],
)
def test_preflight_from_an_unlisted_origin_or_for_another_method_is_refused(
    bridge: Harness, http: httpx.Client, origin: str, method: str
) -> None:
    response = http.options(
        f"{bridge.url}/token",
        headers={"origin": origin, "access-control-request-method": method},
    )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


def test_options_without_cors_says_what_is_allowed(bridge: Harness, http: httpx.Client) -> None:
    response = http.options(f"{bridge.url}/userinfo")
    assert response.status_code == 204
    assert response.headers["allow"] == "OPTIONS, GET, POST"


def test_public_client_reads_token_userinfo_and_revoke_from_its_origin(
    spa: Rp, browser: httpx.Client
) -> None:
    spa.headers = {"origin": SPA_ORIGIN}
    authz = spa.sign_in(browser)
    token = spa.redeem(authz)
    assert token.status_code == 200
    assert token.headers["access-control-allow-origin"] == SPA_ORIGIN
    assert "origin" in token.headers["vary"].lower()
    access = token.json()["access_token"]

    info = spa.http.get(
        f"{spa.url}/userinfo",
        headers={"authorization": f"Bearer {access}", "origin": SPA_ORIGIN},
    )
    assert info.status_code == 200
    assert info.headers["access-control-allow-origin"] == SPA_ORIGIN

    revoked = spa.revoke(access)
    assert revoked.status_code == 200
    assert revoked.headers["access-control-allow-origin"] == SPA_ORIGIN

    # An error is readable too, so the page can tell the person what happened.
    again = spa.redeem(authz)
    assert again.status_code == 400
    assert again.headers["access-control-allow-origin"] == SPA_ORIGIN


def test_an_origin_listed_by_another_client_cannot_read_this_clients_answers(
    spa: Rp, browser: httpx.Client
) -> None:
    other = "https://other.example.org"
    spa.headers = {"origin": other}
    token = spa.redeem(spa.sign_in(browser))
    assert token.status_code == 200
    assert "access-control-allow-origin" not in token.headers
    info = spa.http.get(
        f"{spa.url}/userinfo",
        headers={"authorization": f"Bearer {token.json()['access_token']}", "origin": other},
    )
    assert info.status_code == 200
    assert "access-control-allow-origin" not in info.headers


def test_a_confidential_clients_answers_are_never_shared_cross_origin(
    app: Rp, browser: httpx.Client
) -> None:
    app.headers = {"origin": SPA_ORIGIN}  # listed, but by the SPA
    token = app.redeem(app.sign_in(browser))
    assert token.status_code == 200
    assert "access-control-allow-origin" not in token.headers
    info = app.http.get(
        f"{app.url}/userinfo",
        headers={"authorization": f"Bearer {token.json()['access_token']}", "origin": SPA_ORIGIN},
    )
    assert info.status_code == 200
    assert "access-control-allow-origin" not in info.headers


def test_an_unknown_token_is_readable_only_by_a_listed_origin(
    bridge: Harness, http: httpx.Client
) -> None:
    for origin, readable in ((SPA_ORIGIN, True), ("https://evil.example", False)):
        response = http.get(
            f"{bridge.url}/userinfo",
            headers={"authorization": "Bearer not-a-token", "origin": origin},
        )
        assert response.status_code == 401
        assert ("access-control-allow-origin" in response.headers) is readable
        if readable:
            assert response.headers["access-control-expose-headers"] == "WWW-Authenticate"


def test_a_listed_origin_is_not_reflected_for_an_unrelated_request(
    bridge: Harness, http: httpx.Client
) -> None:
    """/introspect is for confidential servers only: no CORS at all."""
    response = http.post(
        f"{bridge.url}/introspect", data={"token": "x"}, headers={"origin": SPA_ORIGIN}
    )
    assert "access-control-allow-origin" not in response.headers
